"""The files a campaign brings back, and putting them into ``data/`` afterwards.

The device tool returns at most 8 files of at most 16 MiB from its output folder. :func:`pack_runs` writes every
*finished* run folder (``metrics.json`` present) of a results tree as ``runs.tar.gz``, split into parts of at
most 15 MiB (``runs.tar.gz.00``, ``.01`` ...); :func:`pack_bench` writes the benchmark files as ``bench.tar.gz``;
:func:`write_manifest` writes ``manifest.json`` (every part with its size and sha256, the runs inside). Each file
is written under a ``.partial`` name and renamed when complete, so the folder never holds a half-written file.
Checkpoints, locks and notebooks in progress are left out; an unfinished run is left out whole.

:func:`unpack` (``crisp campaign-unpack``) checks the parts against the manifest, then puts each run folder under
the runs root (``data/runs/<model>/<protocol>/<config>/seed-<n>/``, a folder written whole and renamed into
place; a finished run already there is kept and reported) and the benchmark files under the bench root.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

PART_BYTES = 15 * 2**20  # under the device tool's 16 MiB per file
MAX_FILES = 8  # the device tool returns at most 8 files from $OUT
MANIFEST = "manifest.json"
LEFT_OUT = ("checkpoints",)  # folders of a run folder never packed; files starting with "." neither


class PackError(RuntimeError):
    """A pack would break the limits, or the files to unpack are incomplete or corrupt; the message says which."""


def finished_runs(root: Path) -> list[Path]:
    """Run folders under ``root`` holding ``metrics.json`` (finished), sorted."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("metrics.json") if p.parent.name.startswith("seed-")) if root.is_dir() else []


def _run_files(folder: Path):
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and rel.parts[0] not in LEFT_OUT and not any(part.startswith(".") for part in rel.parts):
            yield path


def _tar_bytes(entries) -> bytes:
    """A gzip tar of ``(arcname, path)`` entries, in memory (a campaign's results are a few MiB)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for arcname, path in entries:
            tar.add(path, arcname=arcname, recursive=False)
    return buffer.getvalue()


def _write(path: Path, blob: bytes) -> dict:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(blob)
    os.replace(partial, path)
    return {"file": path.name, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}


def pack_runs(root: Path, out: Path, max_parts: int = MAX_FILES - 3) -> dict:
    """Pack every finished run under ``root`` into ``out/runs.tar.gz.NN``; return the manifest entry."""
    root, out = Path(root), Path(out)
    runs = finished_runs(root)
    entries = [(f"runs/{path.relative_to(root).as_posix()}", path) for run in runs for path in _run_files(run)]
    blob = _tar_bytes(entries)
    parts = [blob[i:i + PART_BYTES] for i in range(0, len(blob), PART_BYTES)] or [blob]
    if len(parts) > max_parts:
        raise PackError(f"{len(runs)} runs pack to {len(blob) / 2**20:.1f} MiB: {len(parts)} parts of 15 MiB, "
                        f"more than the {max_parts} files left under the limit of {MAX_FILES}")
    out.mkdir(parents=True, exist_ok=True)
    files = [_write(out / f"runs.tar.gz.{i:02d}", part) for i, part in enumerate(parts)]
    return {"kind": "runs", "parts": files, "sha256": hashlib.sha256(blob).hexdigest(),
            "runs": [run.relative_to(root).as_posix() for run in runs]}


def pack_bench(folder: Path, out: Path) -> dict | None:
    """Pack the files of a ``crisp bench`` output folder into ``out/bench.tar.gz`` (None if there are none)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    if not files:
        return None
    blob = _tar_bytes((f"bench/{p.relative_to(folder).as_posix()}", p) for p in files)
    if len(blob) > PART_BYTES:
        raise PackError(f"benchmark files pack to {len(blob) / 2**20:.1f} MiB, over one file's 15 MiB")
    entry = _write(Path(out) / "bench.tar.gz", blob)
    return {"kind": "bench", "parts": [entry], "sha256": entry["sha256"],
            "files": [p.relative_to(folder).as_posix() for p in files]}


def write_manifest(out: Path, packs: list[dict], facts: dict) -> Path:
    """Write ``out/manifest.json`` and check the whole folder against the device tool's limits."""
    out = Path(out)
    path = out / MANIFEST
    _write(path, (json.dumps({**facts, "packs": [p for p in packs if p]}, indent=1) + "\n").encode())
    files = [p for p in out.iterdir() if p.is_file()]
    if len(files) > MAX_FILES or any(p.stat().st_size >= 16 * 2**20 for p in files):
        raise PackError(f"{out} holds {len(files)} files (largest {max(p.stat().st_size for p in files) / 2**20:.1f} "
                        f"MiB); the device tool returns at most {MAX_FILES} of under 16 MiB")
    return path


# --- after the lease ---------------------------------------------------------------------------------------------


def _joined(pack: dict, where: dict[str, Path]) -> bytes:
    blob = b""
    for part in pack["parts"]:
        if part["file"] not in where:
            raise PackError(f"part {part['file']} is missing (the manifest lists {len(pack['parts'])} parts)")
        data = where[part["file"]].read_bytes()
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise PackError(f"{where[part['file']]}: checksum differs from the manifest (damaged or from another campaign)")
        blob += data
    if hashlib.sha256(blob).hexdigest() != pack["sha256"]:
        raise PackError(f"the {pack['kind']} parts joined do not match the manifest's checksum")
    return blob


def unpack(files, runs_root="data/runs", bench_root="data/bench", log=print) -> dict:
    """Put a campaign's packed files (``manifest.json`` among them, or a folder holding them) into the results trees.

    Returns ``{"added": [...], "kept": [...], "bench": [...]}`` (run folders relative to ``runs_root``).
    """
    paths = [Path(f) for f in files]
    paths = [q for p in paths for q in (sorted(p.iterdir()) if p.is_dir() else [p])]
    where = {p.name: p for p in paths}
    if MANIFEST not in where:
        raise PackError(f"no {MANIFEST} among the files given; pass every file the campaign returned")
    manifest = json.loads(where[MANIFEST].read_text(encoding="utf-8"))
    runs_root, bench_root = Path(runs_root), Path(bench_root)
    report = {"added": [], "kept": [], "bench": []}
    for pack in manifest["packs"]:
        blob = _joined(pack, where)
        with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            tar.extractall(tmp, filter="data")
            if pack["kind"] == "runs":
                for rel in pack["runs"]:
                    _place_run(Path(tmp) / "runs" / rel, runs_root / rel, rel, report)
            else:
                for rel in pack["files"]:
                    target = bench_root / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(Path(tmp) / "bench" / rel, target.with_name(target.name + ".partial"))
                    os.replace(target.with_name(target.name + ".partial"), target)
                    report["bench"].append(rel)
    log(f"unpacked: {len(report['added'])} run(s) added under {runs_root}, {len(report['kept'])} already there "
        f"kept, {len(report['bench'])} benchmark file(s) under {bench_root}")
    for rel in report["kept"]:
        log(f"  kept (a finished run is already there): {rel}")
    return report


def _place_run(source: Path, target: Path, rel: str, report: dict) -> None:
    if (target / "metrics.json").is_file():
        report["kept"].append(rel)
        return
    if not (source / "metrics.json").is_file():
        raise PackError(f"packed run {rel} has no metrics.json")
    if target.exists():  # an unfinished run here (checkpoints, maybe a live lock): never touched
        raise PackError(f"{target} holds an unfinished run; finish or remove it, then unpack again")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    os.replace(staging, target)
    report["added"].append(rel)
