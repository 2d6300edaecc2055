"""SST-2 (GLUE): from the Hugging Face hub or from a local folder in GLUE's layout.

A local folder holds ``train.tsv`` and ``dev.tsv`` (GLUE's files: header ``sentence<TAB>label``,
one example a line, label 0/1) and optionally a labeled ``test.tsv`` in the same format. Which
source is used: the ``data`` argument, else the environment variable ``CRISP_SST2_DIR``, else the
hub (``glue``/``sst2``; its test split has no labels, so hub runs have no test evaluation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "CRISP_SST2_DIR"
HUB = "hub"
SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file, line and problem."""


@dataclass
class Split:
    """One split: sentences and 0/1 labels in file order (``idx`` = position)."""

    name: str
    sentences: list[str]
    labels: list[int]
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def resolve_source(data: str | os.PathLike | None) -> str:
    """The data source actually used: a folder path or ``"hub"``."""
    if data is None or str(data) == "":
        data = os.environ.get(ENV_VAR) or HUB
    return HUB if str(data) == HUB else str(Path(data))


def load_sst2(data: str | os.PathLike | None = None) -> dict[str, Split]:
    """``{"train", "dev"[, "test"]}`` splits of SST-2 from ``data`` (see module docstring)."""
    source = resolve_source(data)
    if source == HUB:
        return _load_hub()
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(
            f"SST-2 data folder {folder} does not exist; pass --data with a folder holding train.tsv and "
            f"dev.tsv (GLUE layout) or set {ENV_VAR}"
        )
    splits = {}
    for name, filename in SPLIT_FILES.items():
        path = folder / filename
        if not path.exists():
            if name == "test":
                continue
            raise DataError(f"{path}: file not found; an SST-2 folder needs train.tsv and dev.tsv (GLUE layout)")
        splits[name] = read_glue_tsv(path, name)
    return splits


def read_glue_tsv(path: str | os.PathLike, name: str | None = None) -> Split:
    """Read one GLUE-format SST-2 file, checking every line."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: file is empty; expected a header 'sentence<TAB>label' and one example per line")
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    sentences, labels = [], []
    for number, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}, line {number}: not valid UTF-8 (byte {line[err.start]:#04x} at column {err.start + 1})") from None
        if number == 1:
            if text != "sentence\tlabel":
                raise DataError(f"{path}, line 1: header is {text[:60]!r}, expected 'sentence<TAB>label' (GLUE's SST-2 layout)")
            continue
        parts = text.split("\t")
        if len(parts) != 2:
            raise DataError(f"{path}, line {number}: expected 2 tab-separated fields (sentence, label), found {len(parts)}")
        sentence, label = parts
        if label not in ("0", "1"):
            raise DataError(f"{path}, line {number}: label {label[:20]!r} is not 0 or 1")
        if not sentence.strip():
            raise DataError(f"{path}, line {number}: empty sentence")
        sentences.append(sentence)
        labels.append(int(label))
    if not labels:
        raise DataError(f"{path}: has a header but no examples")
    return Split(name or path.stem, sentences, labels, str(path))


def _load_hub() -> dict[str, Split]:
    try:
        from datasets import load_dataset
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise DataError(f"loading SST-2 from the hub needs the 'datasets' package; or pass --data FOLDER / set {ENV_VAR}") from err
    try:
        glue = load_dataset("glue", "sst2")
    except Exception as err:  # network, cache, hub errors: one message
        raise DataError(
            f"could not load glue/sst2 from the Hugging Face hub ({type(err).__name__}: {str(err)[:200]}); "
            f"offline, pass --data with a local GLUE-format folder or set {ENV_VAR}"
        ) from None
    splits = {"train": glue["train"], "dev": glue["validation"]}
    return {name: Split(name, list(ds["sentence"]), list(ds["label"]), "hub:glue/sst2") for name, ds in splits.items()}
