"""What travels to a lent GPU machine for ``crisp campaign``, and how it is put back together there.

The GPU machine (README, "Running on a lent GPU") has Python 3.12, torch and transformers but no package
registry, no model hub, no ``datasets`` and no papermill. :func:`prepare` builds the payload folder here
(``.campaign/``, ignored by git; the device tool sends it when a call names it in ``carry``)::

    .campaign/manifest.json          what is inside, sizes, checksums, the commit it was prepared from
    .campaign/minilm/                MiniLM's config and tokenizer files, and its weights in float16,
                                     byte-planes compressed (model.safetensors.f16z, ~37 MiB instead of 87)
    .campaign/sst2.tar.gz            the SST-2 copy (train.tsv, dev.tsv, test.tsv)
    .campaign/wheels/*.whl           papermill, ipykernel and what they need that the GPU machine lacks

Weights: float16 halves MiniLM's float32 checkpoint (45 MB); splitting each 16-bit word into its low and high
byte planes before zlib shrinks it further (the high bytes, sign and exponent, repeat a lot), so that the
payload plus the repository fits one call's 64 MiB. :func:`crisp.study.models.load` reads the float16 checkpoint back
in float32, so GPU runs start from MiniLM's weights rounded to float16 (relative error below 2^-11 per weight;
recorded in the manifest). :func:`unpack_payload` (run by ``crisp campaign``) restores the folder, extracts
SST-2 and installs the wheels into a private site folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

PAYLOAD = Path(".campaign")
CARRY_LIMIT = 64 * 2**20  # the device tool: working tree + carried paths, per call
MAGIC = b"CRISPF16Z1\n"
WEIGHTS = "model.safetensors.f16z"
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
WHEEL_ROOTS = ("papermill", "ipykernel")  # the run notebook's executor and its kernel
# Not carried: IPython imports jedi (and parso) and ipykernel imports debugpy only when present (tab completion, the
# debugger); together ~10 MiB the payload cannot spare. tzdata: only pandas on Windows needs it.
WHEEL_SKIP = frozenset({"jedi", "parso", "debugpy", "tzdata"})
# On the GPU machine already (the device docs' KINDS.md, "Python packages already there"), by normalized name.
GPU_HAS = frozenset("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cycler cython filelock
fonttools frozenlist fsspec h11 h5py hf-xet httpcore httpx huggingface-hub hypothesis idna iniconfig jinja2 joblib
kiwisolver lxml markdown markdown-it-py markupsafe matplotlib mdurl mpmath msgpack multidict networkx ninja numpy
packaging pandas pathspec patsy pillow pip pluggy portalocker propcache protobuf psutil pyarrow pygments pyparsing
pytest python-dateutil pyyaml regex requests rich safetensors scipy seaborn setuptools shellingham six sympy
tabulate tokenizers torch tqdm transformers triton typer typing-extensions urllib3 wheel wrapt xxhash yarl
zipp""".split())
PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            *[x for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64",
                          "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_12_x86_64",
                          "manylinux2010_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64", "any")
              for x in ("--platform", p)]]


class PayloadError(RuntimeError):
    """The payload is missing, incomplete or too large; the message says which part."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- weights: float16, byte planes, zlib ------------------------------------------------------------------------


def pack_weights(source: Path, target: Path) -> dict:
    """Write ``source`` (a float32 safetensors file) as float16 byte planes compressed with zlib; return facts."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(source))
    half, worst = {}, 0.0
    for name, t in tensors.items():
        if t.is_floating_point():
            h = t.to(torch.float16)
            if not torch.isfinite(h).all():
                raise PayloadError(f"{source}: tensor {name} does not fit float16")
            normal = t.abs() >= torch.finfo(torch.float16).tiny  # relative rounding of values float16 holds as normal
            if normal.any():
                worst = max(worst, float(((h.float() - t).abs() / t.abs())[normal].max()))
            half[name] = h.contiguous()
        else:
            half[name] = t.contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "model.safetensors"
        save_file(half, str(plain), metadata={"format": "pt"})
        data = plain.read_bytes()
    low, high = zlib.compress(data[0::2], 9), zlib.compress(data[1::2], 9)  # byte planes of the 16-bit words
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as out:
        out.write(MAGIC + struct.pack("<QQ", len(data), len(low)) + low + high)
    os.replace(partial, target)
    return {"file": target.name, "bytes": target.stat().st_size, "float16_bytes": len(data),
            "sha256_float16": hashlib.sha256(data).hexdigest(), "max_relative_rounding": worst}


def unpack_weights(packed: Path, target: Path) -> None:
    """Restore the float16 ``model.safetensors`` written by :func:`pack_weights`."""
    blob = packed.read_bytes()
    if not blob.startswith(MAGIC):
        raise PayloadError(f"{packed} is not a packed weights file (bad header)")
    size, n_low = struct.unpack_from("<QQ", blob, len(MAGIC))
    start = len(MAGIC) + 16
    low, high = zlib.decompress(blob[start:start + n_low]), zlib.decompress(blob[start + n_low:])
    data = bytearray(size)
    data[0::2], data[1::2] = low, high
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(bytes(data))
    os.replace(partial, target)


# --- preparing here ----------------------------------------------------------------------------------------------


def travel_bytes(repo: Path) -> int:
    """Bytes of the working tree the device tool sends: tracked files and untracked files git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, check=True).stdout.split(b"\0")
    return sum((repo / os.fsdecode(p)).stat().st_size for p in listed if p and (repo / os.fsdecode(p)).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def download_wheels(target: Path, log=print) -> list[str]:
    """``pip download`` papermill and ipykernel with their dependencies for the GPU machine (CPython 3.12, x86-64
    Linux), then drop what it already has (:data:`GPU_HAS`) and what is not needed (:data:`WHEEL_SKIP`)."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", *PLATFORM, "-d", tmp, *WHEEL_ROOTS]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise PayloadError(f"pip download {' '.join(WHEEL_ROOTS)} failed: {tail}")
        kept = []
        for wheel in sorted(Path(tmp).glob("*.whl")):
            name = _norm(wheel.name.split("-")[0])
            if name in GPU_HAS or name in WHEEL_SKIP:
                continue
            shutil.copy2(wheel, target / wheel.name)
            kept.append(wheel.name)
    log(f"  wheels: {len(kept)} ({folder_bytes(target) / 2**20:.1f} MiB): {', '.join(kept)}")
    return kept


def prepare(to=PAYLOAD, data=None, wheels: bool = True, repo=None, log=print) -> dict:
    """Build the payload folder ``to`` (replaced whole); refuse if repository + payload exceed one call's 64 MiB."""
    from . import data as data_mod
    from . import models, results

    repo = Path(repo) if repo is not None else Path.cwd()
    to = Path(to)
    source = Path(data_mod.resolve_source(data))
    if not (source / "train.tsv").is_file():
        raise PayloadError(f"SST-2 folder {source} has no train.tsv; give --data or set ${data_mod.ENV_VAR}")
    minilm = Path(models.minilm_path())
    building = to.with_name(to.name + ".partial")
    shutil.rmtree(building, ignore_errors=True)
    (building / "minilm").mkdir(parents=True)
    log(f"payload: MiniLM from {minilm}")
    for name in MODEL_FILES:
        shutil.copy2(minilm / name, building / "minilm" / name)
    weights = pack_weights(minilm / "model.safetensors", building / "minilm" / WEIGHTS)
    log(f"  weights: float16, {weights['float16_bytes'] / 2**20:.1f} MiB -> {weights['bytes'] / 2**20:.1f} MiB "
        f"(max relative rounding {weights['max_relative_rounding']:.1e})")
    with tarfile.open(building / "sst2.tar.gz", "w:gz") as tar:
        for name in ("train.tsv", "dev.tsv", "test.tsv"):
            if (source / name).is_file():
                tar.add(source / name, arcname=f"sst2/{name}")
    log(f"  SST-2 from {source}: {(building / 'sst2.tar.gz').stat().st_size / 2**20:.1f} MiB")
    kept = download_wheels(building / "wheels", log) if wheels else []
    manifest = {"created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "commit": results.git_commit(repo),
                "weights": weights, "sst2_source": str(source), "wheels": kept,
                "wheel_roots": list(WHEEL_ROOTS), "wheels_skipped": sorted(WHEEL_SKIP)}
    manifest["payload_bytes"] = folder_bytes(building)
    (building / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(to, ignore_errors=True)
    os.replace(building, to)
    tree = travel_bytes(repo)
    manifest["tree_bytes"], manifest["travel_bytes"] = tree, tree + folder_bytes(to)
    log(f"payload {to}: {folder_bytes(to) / 2**20:.1f} MiB; with the working tree ({tree / 2**20:.1f} MiB) "
        f"{manifest['travel_bytes'] / 2**20:.1f} MiB of the 64 MiB one call may send")
    if manifest["travel_bytes"] > CARRY_LIMIT:
        raise PayloadError(f"working tree + payload = {manifest['travel_bytes'] / 2**20:.1f} MiB, over the device "
                           f"tool's 64 MiB per call; commit or remove untracked files, or carry {to / 'minilm'} "
                           f"in a call of its own")
    return manifest


# --- unpacking there ---------------------------------------------------------------------------------------------


def unpack_payload(payload, work: Path, log=print, wheels: bool = True) -> dict:
    """Restore MiniLM into ``work/minilm``, SST-2 into ``work/sst2`` and (``wheels``) the wheels into ``work/site``.

    Sets ``$CRISP_MINILM_DIR`` and puts ``work/site`` first on ``sys.path`` and ``$PYTHONPATH`` (so worker
    processes and the notebook's kernel see the same packages). Returns ``{"sst2": folder, "manifest": ...}``.
    """
    from . import models

    payload = Path(payload)
    if not (payload / "manifest.json").is_file():
        raise PayloadError(f"no payload at {payload} (no manifest.json): run `crisp campaign-prepare` here and name "
                           f"{payload} in the device call's carry")
    manifest = json.loads((payload / "manifest.json").read_text(encoding="utf-8"))
    model = work / "minilm"
    model.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copy2(payload / "minilm" / name, model / name)
    unpack_weights(payload / "minilm" / WEIGHTS, model / "model.safetensors")
    if _sha256(model / "model.safetensors") != manifest["weights"]["sha256_float16"]:
        raise PayloadError(f"{payload / 'minilm' / WEIGHTS}: restored weights do not match the manifest's checksum")
    os.environ[models.MINILM_ENV] = str(model)
    with tarfile.open(payload / "sst2.tar.gz") as tar:
        tar.extractall(work, filter="data")
    log(f"payload: MiniLM (float16 weights) in {model}, SST-2 in {work / 'sst2'}")
    found = sorted((payload / "wheels").glob("*.whl")) if (payload / "wheels").is_dir() else []
    if found and not wheels:
        log(f"payload: {len(found)} wheels left uninstalled (they are for the GPU machine's CPython 3.12)")
    elif found:
        wheels = found
        site = work / "site"
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise PayloadError(f"installing {len(wheels)} wheels failed: "
                               f"{(done.stderr.strip().splitlines() or ['(no output)'])[-1]}")
        sys.path.insert(0, str(site))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        log(f"payload: {len(wheels)} wheels installed in {site}")
    else:
        log("payload: no wheels (using the packages installed here)")
    return {"sst2": work / "sst2", "manifest": manifest}
