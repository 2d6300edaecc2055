"""The library (``crisp``) stands on torch and transformers alone; the study lives in its subpackages.

The bare install itself (a fresh venv, ``pip install .``) is ``.ci/bare_install``; these tests check the same
promise in this environment, where the study's dependencies are installed.
"""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import crisp

LIBRARY = Path(crisp.__file__).parent
ALLOWED = {"torch", "transformers", "crisp"} | set(sys.stdlib_module_names)


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield (node.module or "", node.level)
            if node.level == 1 and not node.module:
                yield from ((alias.name, 1) for alias in node.names)


def test_library_modules_import_only_torch_transformers_and_the_library():
    offenders = []
    for path in sorted(LIBRARY.glob("*.py")):
        for name, level in _imports(path):
            top = name.split(".")[0]
            if level == 0 and top not in ALLOWED:
                offenders.append(f"{path.name}: {name}")
            if level >= 1 and top in ("study", "analysis"):
                offenders.append(f"{path.name}: .{name}")
    assert not offenders, offenders


def test_importing_and_using_the_library_loads_none_of_the_study_dependencies():
    # transformers may load what it likes; what `import crisp` and `crisp.enable` add must not be the study's
    code = textwrap.dedent("""
        import sys
        import torch
        from transformers import BertConfig, BertForSequenceClassification

        torch.manual_seed(0)
        model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                         num_attention_heads=2, intermediate_size=32)).eval()
        ids = torch.randint(0, 50, (1, 9))
        with torch.no_grad():
            dense = model(input_ids=ids).logits
        before = set(sys.modules)
        import crisp
        with torch.no_grad():
            crisp.enable(model, crisp.CrispConfig(sparsity=0.0))
            same = model(input_ids=ids).logits
            crisp.disable(model)
        assert torch.allclose(dense, same, atol=1e-6)
        added = sorted({m.split(".")[0] for m in set(sys.modules) - before})
        study = [m for m in set(sys.modules) - before if m.startswith(("crisp.study", "crisp.analysis"))]
        print("added:", ",".join(added), "study:", ",".join(study))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    added = done.stdout.split("added:")[1].split("study:")[0].strip().split(",")
    assert not {"pandas", "scipy", "accelerate"} & set(added), added
    assert done.stdout.strip().endswith("study:"), done.stdout


def test_the_study_names_its_extra_when_a_dependency_is_missing(monkeypatch):
    from crisp import _extras

    monkeypatch.setattr(_extras.importlib.util, "find_spec", lambda name: None if name == "scipy" else object())
    try:
        _extras.require("crisp.analysis", ("numpy", "pandas", "scipy"))
    except ImportError as error:
        assert "crisp.analysis needs scipy" in str(error) and "pip install 'crisp[study]'" in str(error)
    else:
        raise AssertionError("no ImportError for a missing scipy")


def test_the_cli_is_the_study_entry_point():
    pyproject = (LIBRARY.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert 'crisp = "crisp.study.cli:main"' in pyproject
    assert '"crisp", "crisp.study", "crisp.analysis"' in pyproject
