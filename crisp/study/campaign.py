"""``crisp campaign``: one prepared command that turns a lent GPU's few minutes into the paper's scale.

Run from the repository root on the GPU machine (README, "Running on a lent GPU"), it goes through these
stages, logging each to ``<out>/campaign.log``, and stops early if one that matters fails:

1. ``machine``: CUDA, bf16, torch and transformers versions (refused without CUDA unless ``dry_run``).
2. ``payload``: MiniLM, SST-2 and the wheels from the payload folder (:mod:`crisp.study.campaign_payload`).
3. ``device tests``: ``tests/test_device.py`` with ``--crisp-device cuda``; a failure stops the campaign.
4. ``training``: the plan (:func:`plan`), ``workers`` runs at once, each in a fresh process (the workers machinery
   of :mod:`crisp.study.grid`), within a wall-clock budget (:func:`train_within`): a run starts only if it is expected
   to finish before the deadline, and runs still training at the deadline are stopped and left out.
5. ``pack runs``: every finished run folder (:mod:`crisp.study.campaign_pack`), before anything else can go wrong.
6. ``bench``: eager, SDPA and Crisp at SST-2 lengths, padded to 512, at 128 and 512, and at long contexts.
7. ``pack bench`` and the manifest: at most 8 files in ``out``, each under 16 MiB.

``dry_run`` rehearses every stage on the CPU in under a minute: a tiny random model, a few steps, a few runs,
the device tests' quick part on the CPU, the benchmark's quick sizes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

from . import campaign_pack, campaign_payload
from ..configs import CONFIGS

# The pad-to-512 readings of the paper (crisp.study.readings) as training options. pad512-raw-row is exactly
# TrainConfig(paper_padding=True, granularity="row"): every sentence padded to 512 and padding keys competing in the
# row top-k on their raw scores (crisp.attention's count_padding). pad512-maskfirst has no training option: there the
# padding mask enters the scores first, so padding never wins a place and each row keeps its top 512 - floor(s*512)
# real keys. At the paper's fixed ratios that is every real key of every SST-2 sentence (measured: realized sparsity
# 0 at 0.6 and 0.8 on dev and a train sample, data/padding/minilm/readings.csv), i.e. dense attention on pad-to-512
# inputs, which is the baseline-paperpad run of pad512-raw-row; the adaptive configurations would differ only where a
# layer's ratio exceeds 1 - length/512. Training it would need a mask-first option in crisp.attention; not built.
PAD512_TRAINABLE = {"pad512-raw-row": {"paper_padding": True, "granularity": "row"}}
PAD512_NOT_TRAINED = {"pad512-maskfirst": "no training option: with the mask first, every real key of an SST-2 "
                                          "sentence is kept at ratios 0.6 and 0.8 (dense; its baseline is "
                                          "baseline-paperpad of pad512-raw-row); see crisp/study/campaign.py"}


@dataclasses.dataclass
class Settings:
    """One campaign. Defaults: the real one on a lent H200; :func:`dry_run_settings` gives the CPU rehearsal."""

    out: str = "campaign-out"  # the 8 files come here (the device tool's $OUT)
    payload: str = str(campaign_payload.PAYLOAD)  # what `crisp campaign-prepare` built (carried to the machine)
    work: str | None = None  # runs and benchmark files while the campaign runs (None: a fresh temporary folder)
    model: str = "minilm"
    seeds: str = "0-19"  # the main grid: 4 configurations x these seeds, protocol full, 64 x 1, bf16
    pad_seeds: str = "0-4"  # the pad-to-512 grid: 4 configurations x these seeds
    configs: str = ",".join(CONFIGS)
    precision: str = "bf16"
    workers: int | None = None  # runs at once (None: one per CPU core, at most 16)
    budget_min: float = 8.0  # wall clock for training
    limit_min: float = 9.5  # the whole command (the device tool stops a command at 10 minutes)
    run_minutes: float = 4.0  # expected minutes of one run until some have finished (then: the slowest seen)
    bench_min: float = 1.5  # kept free for the benchmark after training
    train_overrides: dict = dataclasses.field(default_factory=dict)  # the dry run's tiny recipe
    dry_run: bool = False


def dry_run_settings(out: str, work: str | None = None, data: str | None = None) -> Settings:
    """The CPU rehearsal: tiny-bert, 64 sentences, 1 epoch, 3 runs at once plus one the budget will likely skip."""
    # max_length 64: pad-to-512's path (paper_padding pads to max_length) at a length a loaded CPU trains in seconds
    overrides = {"train_size": 64, "epochs": 1.0, "batch_size": 16, "eval_batch_size": 64, "max_length": 64}
    if data is not None:
        overrides["data"] = str(data)
    return Settings(out=out, work=work, model="tiny-bert", seeds="0-1", pad_seeds="0", configs="baseline,aggressive_sparse",
                    workers=3, budget_min=1.0, limit_min=3.0, run_minutes=0.05, bench_min=0.3,
                    train_overrides=overrides, dry_run=True)


class Log:
    """Lines to the terminal and to ``<out>/campaign.log``, each with the minutes since the start."""

    def __init__(self, path: Path):
        self.path, self.started = path, time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a", encoding="utf-8")

    def __call__(self, text: str) -> None:
        line = f"[{(time.monotonic() - self.started) / 60:5.2f} min] {text}"
        print(line, flush=True)
        self.handle.write(line + "\n")
        self.handle.flush()


# --- stages -----------------------------------------------------------------------------------------------------


def check_machine(dry_run: bool, log) -> dict:
    import torch
    import transformers

    facts = {"torch": torch.__version__, "transformers": transformers.__version__, "python": sys.version.split()[0],
             "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        facts.update(device=torch.cuda.get_device_name(0), cuda_version=torch.version.cuda,
                     bf16=torch.cuda.is_bf16_supported(), memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
    log("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    if not facts["cuda"] and not dry_run:
        raise RuntimeError("torch sees no CUDA device; `crisp campaign` is for a lent GPU (rehearse with --dry-run)")
    if facts["cuda"] and not facts["bf16"]:
        raise RuntimeError(f"{facts['device']} does not support bf16, the campaign's precision")
    return facts


def device_tests(dry_run: bool, log) -> int:
    """``tests/test_device.py`` in this process (pytest's own runner), on CUDA; the dry run takes its quick part."""
    import pytest

    from .notebook_runs import repo_root

    tests = repo_root() / "tests" / "test_device.py"
    args = [str(tests), "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=", "--crisp-device",
            "cpu" if dry_run else "cuda"]
    if dry_run:
        args += ["-k", "topk_softmax and float32"]  # the same path, the CPU, seconds
    log(f"device tests: pytest {' '.join(args[1:])}")
    code = int(pytest.main(args))
    log(f"device tests: {'passed' if code == 0 else f'FAILED (pytest exit code {code})'}")
    return code


def _seeds(text: str) -> list[int]:
    from .cli import parse_seeds

    return parse_seeds(text)


def plan(s: Settings, runs: Path, data) -> list[tuple[object, bool]]:
    """``(TrainConfig, through_notebook)`` in order: the main grid seed by seed (its first run through the papermill
    run notebook), then the pad-to-512 grid seed by seed. Protocol full, 64 sentences as one micro-batch."""
    from .cli import parse_configs
    from .train import make_config

    configs = parse_configs(s.configs)
    common = {"model": s.model, "batch_size": 64, "grad_accum": 1, "precision": s.precision, "data": str(data),
              "output": str(runs), "progress": False, **s.train_overrides}
    out = [(make_config("full", **common, config=c, seed=seed), False) for seed in _seeds(s.seeds) for c in configs]
    for options in PAD512_TRAINABLE.values():
        out += [(make_config("full", **common, **options, config=c, seed=seed), False)
                for seed in _seeds(s.pad_seeds) for c in configs]
    if out:
        out[0] = (out[0][0], True)
    return out


# Passed to every run's process: a forkserver started earlier (e.g. by an earlier campaign in the same Python) may
# hold another environment.
CHILD_ENV = ("PYTHONPATH", "CRISP_MINILM_DIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CRISP_SST2_DIR",
             "PYTORCH_NVML_BASED_CUDA_CHECK")


def _child(cfg, notebook: bool, threads: int, env: dict) -> float:
    """Body of a run's process: this campaign's environment, then :func:`crisp.study.grid._worker` (one run, its log)."""
    from . import grid

    for key in CHILD_ENV:
        if env.get(key) is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = env[key]
    return grid._worker(cfg, notebook, threads)


def _context(start: bool = False):
    """Fresh processes forked from a server that imported torch, transformers and the trainer once (and touched no
    device): each run starts in a clean process, as with ``spawn`` in :mod:`crisp.study.grid`, without paying the imports
    again (seconds per run on a GPU machine's 16 workers, ~20 s on a loaded 2-core CI machine). ``start``: start the
    server now; its imports then run while the device tests do."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "transformers", "crisp.study.train", "crisp.study.trainer", "crisp.study.grid"])
    if start:
        from multiprocessing import forkserver

        forkserver.ensure_running()
    return context


# A pad-to-512 run takes this many of the `workers` places: each step holds 64 x 512 tokens instead of SST-2's ~25, and
# Crisp keeps [64, 12, 512, 512] score tensors per layer for the backward pass (several GiB per run), so 16 at once
# could exhaust even an H200's memory.
PAD512_SLOTS = 4


def _kind(cfg) -> str:
    return "pad512" if cfg.paper_padding else "dynamic"


def train_within(todo, deadline: float, workers: int, run_seconds: float, log) -> dict:
    """Train ``todo`` (``(cfg, notebook)`` pairs), ``workers`` places at once, each run in a fresh process of its own
    (a pad-to-512 run takes :data:`PAD512_SLOTS` places).

    A run starts only if ``now + expected <= deadline``; ``expected`` is the longest finished run of its kind
    (dynamic padding or pad-to-512), else of any kind, else ``run_seconds``. At ``deadline`` runs still training are
    stopped (their folders hold no ``metrics.json``, so nothing packs them). Returns ``{"done": [...], "failed":
    [...], "stopped": [...], "not_started": [...]}`` of run labels.
    """
    from . import grid, results

    context = _context()
    env = {key: os.environ.get(key) for key in CHILD_ENV}
    threads = max(1, (os.cpu_count() or 1) // workers)
    pending, running, took = list(todo), {}, {"dynamic": [], "pad512": []}
    slots = lambda cfg: min(workers, PAD512_SLOTS) if cfg.paper_padding else 1  # noqa: E731
    report = {"done": [], "failed": [], "stopped": [], "not_started": []}
    name = lambda cfg: f"{cfg.label} seed {cfg.seed}"  # noqa: E731
    while pending or running:
        now = time.monotonic()
        while pending and sum(slots(c) for c, _, _ in running.values()) + slots(pending[0][0]) <= workers:
            seen = took[_kind(pending[0][0])] or took["dynamic"] + took["pad512"]
            expected = max(seen) if seen else run_seconds
            if now + expected > deadline:
                report["not_started"] += [name(cfg) for cfg, _ in pending]
                log(f"training: {len(pending)} run(s) not started: expected {expected / 60:.1f} min each, "
                    f"{max(0.0, deadline - now) / 60:.1f} min left")
                pending = []
                break
            cfg, notebook = pending.pop(0)
            process = context.Process(target=_child, args=(cfg, notebook, threads, env), daemon=False)
            process.start()  # the first one waits for the fork server's imports
            now = time.monotonic()
            running[process] = (cfg, notebook, now)
            log(f"training: started {name(cfg)}{' (papermill run notebook)' if notebook else ''} "
                f"[{len(running)} running, {len(pending)} waiting]")
        for process in [p for p in running if not p.is_alive()]:
            cfg, notebook, started = running.pop(process)
            process.join()
            seconds = time.monotonic() - started
            if process.exitcode == 0 and results.is_finished(cfg.folder):
                took[_kind(cfg)].append(seconds)
                report["done"].append(name(cfg))
                log(f"training: done {name(cfg)} in {seconds / 60:.2f} min")
            else:
                report["failed"].append(name(cfg))
                log(f"training: FAILED {name(cfg)} (exit code {process.exitcode}; log: {cfg.folder / grid.LOG_NAME})")
        if running and time.monotonic() > deadline:
            for process, (cfg, _, started) in running.items():
                process.terminate()
            for process, (cfg, _, started) in running.items():
                process.join(timeout=20)
                if process.is_alive():
                    process.kill()
                    process.join()
                report["stopped"].append(name(cfg))
                log(f"training: stopped {name(cfg)} at the deadline after {(time.monotonic() - started) / 60:.2f} "
                    f"min; left out")
            running = {}
        time.sleep(0.5)
    return report


def bench_stage(work: Path, quick: bool, log) -> Path:
    """The benchmark on this machine's device: SST-2 lengths, pad-to-512, 128, 512, then long contexts."""
    import numpy as np
    import pandas as pd

    from . import bench
    from .notebook_runs import repo_root

    lengths_csv = repo_root() / "data" / "padding" / "minilm" / "sst2_lengths.csv"
    hist = pd.read_csv(lengths_csv)
    train = hist[hist["split"] == "train"]
    sst2 = np.repeat(train["length"].to_numpy(), train["count"].to_numpy())
    out = work / "bench"
    if quick:
        quick_variants = ["sdpa", "crisp-0.8-row-uniform"]  # plus eager, always timed
        runs = [("", ["tiny"], {"sst2": ("sst2", 8, 1), "L32": (32, 2, 1)}, quick_variants, 1, 0),
                ("long", ["tiny"], {"L640": (640, 1, 1)}, quick_variants, 1, 0)]
    else:
        runs = [("", ["minilm", "distilbert"], {"sst2": ("sst2", 64, 4), "sst2-pad512": ("sst2-pad512", 8, 1),
                                               "L128": (128, 16, 1), "L512": (512, 4, 1)}, None, 5, 2),
                ("long", ["minilm"], {"L2048": (2048, 2, 1), "L8192": (8192, 1, 1)},
                 ["sdpa", "crisp-0-row", "crisp-0.8-row-uniform", "crisp-0.8-row-adaptive", "crisp-0.8-head-uniform"], 5, 2)]
    for tag, shapes, settings, only, repeats, warmup in runs:
        started = time.monotonic()
        frame = bench.run(shapes, settings, repeats=repeats, warmup=warmup, sst2_lengths=sst2, progress=False, only=only)
        path = bench.write(frame, out, tag=tag, extra={"settings": {k: list(map(str, v)) for k, v in settings.items()},
                                                        "repeats": repeats, "warmup": warmup, "quick": quick,
                                                        "variants": only or "all", "source": "crisp campaign"})
        log(f"bench: {path.name} ({len(frame)} rows) in {(time.monotonic() - started) / 60:.2f} min")
    return out


# --- the campaign ------------------------------------------------------------------------------------------------


def run(s: Settings) -> int:
    """Run every stage; return 0 when at least one run finished and packed, 1 otherwise."""
    from .notebook_runs import repo_root

    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    clash = [p.name for p in out.iterdir()]
    if clash:
        raise ValueError(f"output folder {out} is not empty ({', '.join(sorted(clash)[:3])}); give an empty one")
    started = time.monotonic()
    hard_end = started + 60 * s.limit_min
    log = Log(out / "campaign.log")
    work = Path(s.work) if s.work else Path(tempfile.mkdtemp(prefix="crisp-campaign-"))
    root = str(repo_root())
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # torch.cuda.is_available() through NVML, without initialising CUDA: the run processes' fork server imports
    # torch and transformers, and a process forked after CUDA was initialised cannot use it
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    log(f"campaign: {'DRY RUN (CPU rehearsal) ' if s.dry_run else ''}out {out}, work {work}, "
        f"training budget {s.budget_min} min, command limit {s.limit_min} min")
    facts = {"settings": dataclasses.asdict(s), "machine": check_machine(s.dry_run, log)}
    facts["payload"] = campaign_payload.unpack_payload(s.payload, work, log, wheels=not s.dry_run)["manifest"]
    packs = []
    try:
        _context(start=True)  # the run processes' fork server imports torch and the trainer meanwhile
        code = device_tests(s.dry_run, log)
        facts["device_tests"] = "passed" if code == 0 else f"failed ({code})"
        if code != 0:
            log("campaign: stopped early: the device tests failed (nothing trained)")
            return 1
        todo = plan(s, work / "runs", work / "sst2")
        train_start = time.monotonic()
        deadline = min(train_start + 60 * s.budget_min, hard_end - 60 * s.bench_min - 20)
        for reading, why in PAD512_NOT_TRAINED.items():
            log(f"plan: {reading} not trained: {why}")
        workers = s.workers or min(16, os.cpu_count() or 1)
        log(f"training: {len(todo)} run(s) planned, {workers} at once, until {(deadline - started) / 60:.2f} min")
        facts["training"] = train_within(todo, deadline, workers, 60 * s.run_minutes, log)
        packs.append(campaign_pack.pack_runs(work / "runs", out))
        log(f"pack: {len(packs[-1]['runs'])} finished run(s) in {len(packs[-1]['parts'])} part(s)")
        campaign_pack.write_manifest(out, packs, facts)  # the runs are safe from here on
        if time.monotonic() + 60 * s.bench_min <= hard_end + 20:
            try:
                bench_stage(work, s.dry_run, log)
            except Exception as err:  # e.g. out of memory at a long context: the runs are packed already
                log(f"bench: FAILED: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}")
            packs.append(campaign_pack.pack_bench(work / "bench", out))  # the files written before any failure
        else:
            log("bench: skipped, too little time left before the command limit")
        return 0 if packs and packs[0]["runs"] else 1
    finally:
        facts["minutes"] = (time.monotonic() - started) / 60
        log(f"campaign: finished after {facts['minutes']:.2f} min")
        campaign_pack.write_manifest(out, packs, facts)
        log.handle.close()


def main(argv=None) -> int:  # python -m crisp.study.campaign ...: the same as `crisp campaign`
    from .cli import main as cli_main

    return cli_main(["campaign", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
