"""Run folders: where a run's files go, how they are written (atomically), and how they are read.

One run (model x protocol x configuration x seed) writes one folder::

    data/runs/<model>/<protocol>/<config>/seed-<n>/
        metrics.json          everything about the run; written last, so its presence = finished
        history.csv           step, epoch, train loss/accuracy, validation loss/accuracy
        layer_sparsity.csv    step, layer, target and realized sparsity (training batches)
        attention_stats.csv   layer, head, dense and sparse entropy on the dev set
        predictions_dev.csv   idx,label,pred,prob_pos (idx = row in dev.tsv)
        predictions_test.csv  same for the labeled test split, when there is one
        checkpoints/          while running only (ignored by git), removed when the run finishes
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

RUN_FILES = ("metrics.json", "history.csv", "layer_sparsity.csv", "attention_stats.csv", "predictions_dev.csv")
DEFAULT_ROOT = Path("data") / "runs"


class RunExistsError(FileExistsError):
    """A finished run would be overwritten."""


class OutputError(OSError):
    """The output folder cannot be written."""


def run_dir(root, model: str, protocol: str, config: str, seed: int) -> Path:
    return Path(root) / model / protocol / config / f"seed-{seed}"


def is_finished(folder) -> bool:
    return (Path(folder) / "metrics.json").is_file()


def check_writable(folder) -> None:
    """Create ``folder`` if needed and make sure files can be written there."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise OutputError(f"output folder {folder} is not writable ({existing} is a file); choose another with --output")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OutputError(f"output folder {folder} is not writable ({err.strerror}); choose another with --output") from None


def check_creatable(folder) -> None:
    """Make sure ``folder`` could be created and written, without creating it (a test file in its nearest
    existing ancestor comes and goes): an unwritable output fails before anything slow starts."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise OutputError(f"output folder {folder} is not writable ({existing} is a file); choose another with --output")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OutputError(f"output folder {folder} is not writable ({err.strerror}); choose another with --output") from None


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary readable files
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path, obj) -> None:
    """Write ``obj`` as JSON via a temporary file and a rename: readers see all or nothing."""
    _atomic(path, lambda h: h.write(json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n"))


def write_csv(path, frame: pd.DataFrame) -> None:
    _atomic(path, lambda h: frame.to_csv(h, index=False, lineterminator="\n"))


def read_json(path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def git_commit(cwd=None) -> str:
    """The commit of the checkout holding ``crisp`` (``-dirty`` when it has changes), or ``unknown``."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict:
    """Device and software versions, for provenance."""
    import torch
    import transformers

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return {
        "device": device,
        "device_type": "cuda" if torch.cuda.is_available() else "cpu",
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
    }


def hardware(metrics: dict) -> str:
    """``<device type>-<precision>`` of a run (``cpu-fp32``, ``cuda-bf16`` ...): runs are compared only within one.

    Runs written before either was recorded were all trained on a CPU in float32."""
    kind = metrics.get("device_type") or ("cpu" if str(metrics.get("device", "cpu")).startswith("cpu") else "cuda")
    return f"{kind}-{metrics.get('precision') or 'fp32'}"


def config_within(label: str, hardware_name: str) -> str:
    """A run's config label without its precision suffix (``baseline-bf16`` is ``baseline`` within ``cuda-bf16``)."""
    precision = hardware_name.split("-", 1)[-1]
    return label if precision == "fp32" else label.removesuffix(f"-{precision}")


def load_metrics(root=DEFAULT_ROOT) -> pd.DataFrame:
    """One row per finished run under ``root``: the flat fields of each ``metrics.json``."""
    rows = []
    for path in sorted(Path(root).glob("**/metrics.json")):
        m = read_json(path)
        row = {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
        if "step_batch" not in row and isinstance(m.get("train_config"), dict):  # runs written before it was recorded
            row["step_batch"] = f"{m['train_config'].get('batch_size')} x {m['train_config'].get('grad_accum')}"
        row["hardware"] = hardware(m)
        row["run_dir"] = str(path.parent)
        rows.append(row)
    return pd.DataFrame(rows)


def load_table(root, filename: str) -> pd.DataFrame:
    """Concatenate ``filename`` of every finished run under ``root``, tagged with the run's identity."""
    frames = []
    for path in sorted(Path(root).glob("**/metrics.json")):
        file = path.parent / filename
        if not file.is_file():
            continue
        m = read_json(path)
        frame = pd.read_csv(file)
        frame.insert(0, "hardware", hardware(m))
        for key in ("model", "protocol", "config", "seed"):
            frame.insert(0, key, m[key])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
