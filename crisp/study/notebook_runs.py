"""Runs through the parameterized notebook ``notebooks/run.ipynb`` (``crisp grid --notebooks``).

The notebook is a thin record of one run: it validates its parameters (:func:`check_parameters`),
calls :func:`crisp.study.train.train` and prints and plots a summary. :func:`run_notebook` executes it with
papermill for a :class:`~crisp.study.train.TrainConfig` and keeps the executed copy in the run folder::

    <run folder>/run.ipynb          after a successful run
    <run folder>/run-failed.ipynb   after a failed one (red error cells; removed by a later success)

While it runs the copy is ``<run folder>/.run-in-progress.ipynb`` (papermill saves it after every cell).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from pathlib import Path

from . import data as data_mod
from . import recipe, results
from .train import PROTOCOLS, TrainConfig, make_config

NOTEBOOK = Path("notebooks") / "run.ipynb"
DONE_NAME, FAILED_NAME, PARTIAL_NAME = "run.ipynb", "run-failed.ipynb", ".run-in-progress.ipynb"

# The notebook's own parameters, besides ``options`` (any other TrainConfig field, by name).
NOTEBOOK_PARAMETERS = ("model", "config", "seed", "protocol", "data", "output", "train_size", "epochs",
                       "batch_size", "grad_accum", "granularity", "paper_padding", "overwrite", "progress",
                       "logging_steps")

_EXPECTED = {  # TrainConfig's annotation -> (accepted types, words for the message)
    "str": ((str,), "a string"),
    "str | None": ((str, type(None)), "a string or None"),
    "int": ((int,), "an integer"),
    "int | None": ((int, type(None)), "an integer or None"),
    "float": ((int, float), "a number"),
    "float | None": ((int, float, type(None)), "a number or None"),
    "bool": ((bool,), "True or False"),
}


class NotebookRunError(RuntimeError):
    """The run notebook failed; the message names the executed copy, the cell and the error."""


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_parameters(**params) -> TrainConfig:
    """The :class:`TrainConfig` for the notebook's parameters, or one ``ValueError`` naming the bad one.

    ``params``: any :class:`TrainConfig` fields by name, plus ``options``, a dict of more of them (the
    notebook's way to pass fields it has no parameter for, e.g. ``{"learning_rate": 1e-05}``).

    Types are checked here (papermill passes whatever it is given); names, ranges and combinations
    are checked by :func:`crisp.study.train.make_config`. ``protocol`` must be a preset name; values that
    change its recipe add a tag per difference to the name (``small-n200-b64``, :mod:`crisp.study.recipe`). ``output=None`` gives a fresh temporary folder,
    ``data=None`` means ``$CRISP_SST2_DIR``, else the hub; a data folder must exist.
    """
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    options = params.pop("options", None)
    if options is not None:
        if not isinstance(options, dict):
            raise ValueError(f"parameter options = {_show(options)} ({type(options).__name__}): expected a dict "
                             f"of other training options, e.g. {{'learning_rate': 1e-05}}")
        twice = sorted(set(options) & set(params))
        if twice:
            raise ValueError(f"parameter options sets {', '.join(twice)}, which the notebook takes as parameter(s) of its own")
        params.update(options)
    for name, value in params.items():
        if name not in fields:
            raise ValueError(f"unknown parameter {name} = {_show(value)}; expected a crisp.study.train.TrainConfig field "
                             f"({', '.join(fields)})")
        if name in ("data", "output") and isinstance(value, os.PathLike):
            params[name] = value = os.fspath(value)
        kind = "str | None" if name == "output" else str(fields[name].type)  # output None: a temporary folder
        if kind not in _EXPECTED:  # a field type added to TrainConfig later: its own validation applies
            continue
        types, words = _EXPECTED[kind]
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise ValueError(f"parameter {name} = {_show(value)} ({type(value).__name__}): expected {words}")
    if isinstance(params.get("model"), str) and not params["model"].strip():
        raise ValueError("parameter model = '': expected a model name, hub id or checkpoint folder")
    for name in ("epochs", "learning_rate", "weight_decay", "max_grad_norm"):
        if name in params:
            params[name] = float(params[name])  # 1 and 1.0 give the same run
    source = data_mod.resolve_source(params.get("data"))
    if source != data_mod.HUB and not Path(source).is_dir():
        where = (f"{_show(params['data'])}" if params.get("data") not in (None, "")
                 else f"None, so ${data_mod.ENV_VAR} = {_show(os.environ.get(data_mod.ENV_VAR))}")
        raise data_mod.DataError(f"parameter data = {where}: {source} is not a folder; expected an SST-2 folder "
                                 f"with train.tsv and dev.tsv (GLUE layout), or 'hub'")
    protocol = params.pop("protocol", "full")
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise ValueError(f"parameter protocol = {_show(protocol)}: expected one of {', '.join(PROTOCOLS)}")
    output = params.pop("output", None)
    cfg = make_config(protocol, **params, output=str(output) if output is not None else "unset")
    if output is None:  # only once everything else is valid: no stray temporary folders
        cfg = dataclasses.replace(cfg, output=tempfile.mkdtemp(prefix="crisp-run-"))
    return cfg


def notebook_parameters(cfg: TrainConfig) -> dict:
    """Parameters that make the notebook train exactly ``cfg``, with paths made absolute."""
    params = dataclasses.asdict(cfg)
    params["protocol"] = recipe.preset_of(cfg.protocol)
    params["output"] = str(Path(cfg.output).resolve())
    if params["data"] not in (None, "", data_mod.HUB):
        params["data"] = str(Path(params["data"]).resolve())
    if Path(cfg.model).expanduser().exists():  # a local checkpoint folder; hub ids and short names stay
        params["model"] = str(Path(cfg.model).expanduser().resolve())
    options = {k: params.pop(k) for k in list(params) if k not in NOTEBOOK_PARAMETERS}
    return {**params, "options": options}


def repo_root() -> Path:
    """The folder holding ``notebooks/run.ipynb``, found by walking up from this package."""
    for folder in Path(__file__).resolve().parents:
        if (folder / NOTEBOOK).is_file():
            return folder
    raise FileNotFoundError(f"no {NOTEBOOK} above {Path(__file__).resolve().parent}; run notebooks from a checkout of the repository")


def run_notebook(cfg: TrainConfig, template=None) -> Path:
    """Train ``cfg`` by executing the run notebook; return the run folder (holding ``run.ipynb``).

    Paths in ``cfg`` (output, data, a local model folder) are made absolute, so the kernel, which runs
    in the repository root, sees the same files as the caller. A finished run raises
    :class:`~crisp.study.results.RunExistsError` unless ``cfg.overwrite``. A failure raises
    :class:`NotebookRunError`, one line: the kept ``run-failed.ipynb``, the failing cell (its index
    in the executed notebook, counting papermill's injected-parameters cell, and its ``In [n]``; the
    kept copy also has papermill's two error banners inserted), the error type and its first line.
    """
    import papermill

    template = Path(template) if template is not None else repo_root() / NOTEBOOK
    if not template.is_file():
        raise FileNotFoundError(f"run notebook {template} not found")
    params = notebook_parameters(cfg)
    target = copy.copy(cfg)  # not dataclasses.replace: no validation here, the notebook reports problems
    target.output, target.data, target.model = params["output"], params["data"], params["model"]
    folder = target.folder
    try:
        planned = check_parameters(**params)
    except ValueError:
        planned = None  # the notebook's validation cell reports it, naming its cell
    if planned is not None and planned != target:
        raise ValueError(f"the run notebook cannot reproduce this configuration (protocol {cfg.protocol!r} with "
                         f"these values); build it with crisp.study.train.make_config")
    if results.is_finished(folder) and not cfg.overwrite:  # as train() would, without a kernel or a failed copy
        raise results.RunExistsError(f"{folder} holds a finished run; pass --overwrite to replace it, or another --output / --seed")
    folder.mkdir(parents=True, exist_ok=True)
    partial, done, failed = folder / PARTIAL_NAME, folder / DONE_NAME, folder / FAILED_NAME
    try:
        papermill.execute_notebook(str(template), str(partial), parameters=params, kernel_name="python3",
                                   cwd=str(_cwd(template)),
                                   progress_bar=False)
    except papermill.PapermillExecutionError as err:
        _keep(partial, failed)
        message = (str(err.evalue).strip().splitlines() or [""])[0]
        raise NotebookRunError(f"{failed}: cell {err.cell_index} (In [{err.exec_count}]) raised "
                               f"{err.ename}: {message}") from None
    except BaseException as err:  # dead kernel, interrupt: keep what was written
        _keep(partial, failed)
        if isinstance(err, Exception):
            first = (str(err).strip().splitlines() or [""])[0]
            raise NotebookRunError(f"{failed}: notebook did not finish: {type(err).__name__}: {first}") from err
        raise
    os.replace(partial, done)
    failed.unlink(missing_ok=True)
    return folder


def _keep(partial: Path, failed: Path) -> None:
    if partial.exists():
        os.replace(partial, failed)


def _cwd(template: Path) -> Path:
    """The kernel's working directory: the repository root (paths passed in are absolute anyway)."""
    try:
        return repo_root()
    except FileNotFoundError:
        return template.resolve().parent
