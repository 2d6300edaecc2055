"""Command line: ``crisp train``, ``crisp grid``. A thin argument layer over :mod:`crisp.study.train`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from ..configs import CONFIGS
from .data import DataError
from . import models
from .models import ModelError
from .results import OutputError, RunExistsError

USER_ERRORS = (ValueError, DataError, ModelError, RunExistsError, OutputError, FileNotFoundError)


def _train_options(parser: argparse.ArgumentParser, skip=()) -> None:
    """One ``--option`` per :class:`crisp.study.train.TrainConfig` field, with its default and help."""
    from .train import PROTOCOLS, TrainConfig

    parser.add_argument("--protocol", default="full", choices=sorted(PROTOCOLS),
                        help="preset: full = the paper's recipe on all data; small = 4,000 sentences, 1 epoch, batch 16x1; "
                             "n500, n2000, n8000 = the data-size sweep (stratified nested subsets, 40/10/5 epochs, 64 x 1)")
    for field in dataclasses.fields(TrainConfig):
        if field.name in skip or field.name == "protocol":
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
        help_text = field.metadata.get("help", "")
        if "bool" in kind:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"{help_text} (default: {field.default})")
            continue
        convert = int if kind.startswith("int") else float if kind.startswith("float") else str
        parser.add_argument(flag, type=convert, default=None, metavar=field.name.upper(),
                            help=f"{help_text} (default: {field.default})")


def _overrides(args, skip=()) -> dict:
    from .train import TrainConfig

    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in skip and f.name != "protocol"]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` → [0..4], ``"1,3,5"`` → [1, 3, 5]."""
    seeds, ranges = [], []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-")
                ranges.append((part.strip(), int(lo), int(hi)))
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ValueError(f"--seeds must look like 0-4 or 1,3,5, got {text!r}") from None
    for part, lo, hi in ranges:
        if hi < lo:
            raise ValueError(f"--seeds range {part} is reversed (no seed from {lo} up to {hi}); write it {hi}-{lo}")
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seeds must name non-negative integers, got {text!r}")
    return seeds


def parse_configs(text: str) -> list[str]:
    from .train import TRAIN_CONFIGS

    names = [c.strip() for c in text.split(",") if c.strip()]
    for name in names:
        if name not in TRAIN_CONFIGS:
            raise ValueError(f"unknown configuration {name!r}; choose from {', '.join(TRAIN_CONFIGS)}")
    return names


def cmd_train(args) -> int:
    from .train import make_config, train

    cfg = make_config(args.protocol, **_overrides(args))
    folder = train(cfg)
    from ..distributed import is_main

    if is_main():  # under torchrun: one line, from process 0
        print(f"finished: {folder}")
    return 0


def cmd_grid(args) -> int:
    from .grid import run_plan
    from .train import make_config

    configs, seeds = parse_configs(args.configs), parse_seeds(args.seeds)
    plan = [make_config(args.protocol, **_overrides(args, skip=("config", "seed")), config=c, seed=s)
            for s in seeds for c in configs]  # seed by seed: a stopped grid leaves complete pairs
    models.resolve(plan[0].model)  # an unknown model fails once, now, not once per run
    if args.launcher:
        from .launch import JobOptions, submit

        options = JobOptions(partition=args.partition, gpus=args.gpus_per_job, cpus=args.cpus_per_job,
                             mem_gb=args.mem_gb, time_min=args.time_min, log_dir=args.log_dir)
        outcomes = submit(plan, args.launcher, workers=args.workers, notebooks=args.notebooks, options=options,
                          wait=not args.no_wait)
    else:
        outcomes = run_plan(plan, workers=args.workers, notebooks=args.notebooks)
    count = {k: sum(o.status == k for o in outcomes) for k in ("done", "skipped", "busy", "failed", "submitted")}
    print(f"grid: {count['done']} run(s) done, {count['skipped']} skipped, {count['busy']} busy elsewhere, "
          f"{count['failed']} failed" + (f", {count['submitted']} submitted" if count["submitted"] else ""))
    for o in outcomes:
        if o.status == "failed":
            print(f"  failed: {o.head}: {o.detail}")
    return 1 if count["failed"] else 0


def cmd_padding(args) -> int:
    from .padding import STEPS, run_step

    steps = [x.strip() for x in args.steps.split(",") if x.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown or not steps:
        raise ValueError(f"--steps must name some of {', '.join(STEPS)}, got {args.steps!r}")
    demo = tuple(x.strip() for x in args.demo_readings.split(",") if x.strip())
    for step in steps:
        print(f"padding study: {step}", flush=True)
        folder = run_step(step, args.output, args.model, args.data, train_sentences=args.train_sentences,
                          batch_size=args.batch_size, seed=args.seed, steps=args.train_steps, demo_ids=demo,
                          pad512_minutes=args.pad512_minutes,
                          log=lambda text: print(text, flush=True))
    print(f"written: {folder}")
    return 0


def cmd_summary(args) -> int:
    from ..analysis import report, summary

    sel = report.select(args.runs, model=args.model, protocol=args.protocol, hardware=args.hardware)
    print(report.coverage(sel), flush=True)  # what it sees: finished, used and left-out seeds
    where = summary.write(sel, args.output)
    print(f"\n{sel.label}\n\n{(where / 'verdict.md').read_text(encoding='utf-8')}\nwritten: {where}")
    return 0


def cmd_bench(args) -> int:
    import numpy as np
    import pandas as pd

    from . import bench

    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for shape in shapes:
        if shape not in bench.SHAPES:
            raise ValueError(f"unknown model shape {shape!r}; choose from {', '.join(bench.SHAPES)}")
    hist = pd.read_csv(args.lengths) if args.lengths else None
    if hist is not None:
        train = hist[hist["split"] == "train"]
        sst2 = np.repeat(train["length"].to_numpy(), train["count"].to_numpy())
    else:
        sst2 = None
    if args.overhead:  # a training step at SST-2 lengths: the paper's configurations vs dense eager, fp32 and bf16
        return _bench_overhead(args, bench, sst2, shapes)
    settings = {"sst2": ("sst2", 64, args.sst2_batches), "sst2-pad512": ("sst2-pad512", args.batch_pad512, 1),
                "L128": (128, args.batch_128, 1), "L512": (512, args.batch_512, 1)}
    if args.settings:
        wanted = [w.strip() for w in args.settings.split(",") if w.strip()]
        unknown = sorted(set(wanted) - set(settings))
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(settings)}")
        settings = {k: v for k, v in settings.items() if k in wanted}
    if args.output is None:
        args.output = tempfile.mkdtemp(prefix="crisp-bench-quick-") if args.quick else "data/bench"
    if args.quick:  # a check that the benchmark works (CI), not a measurement
        settings = {"sst2": ("sst2", 8, 1), "L32": (32, 2, 1)} if sst2 is not None else {"L32": (32, 2, 1)}
    if sst2 is None:
        settings = {k: v for k, v in settings.items() if not k.startswith("sst2")}
    if args.long_context and args.demo_32k:  # once, not in CI: a tiny decoder's training step at 32k tokens
        import torch

        from . import bench_longcontext as lc

        fit = (128, 256, 384) if args.quick else (1024, 2048, 4096, 8192, 12288)  # saved: first two; peaks: last 3
        if args.threads:  # the children's (each step) and this process's (its device label)
            torch.set_num_threads(args.threads)
        load = os.getloadavg()[0]
        frame = lc.demo(length=512 if args.quick else 32768, fit_lengths=fit, threads=args.threads or None)
        path = bench.write(frame, args.output, tag=args.tag or "longcontext-demo32k", extra={
            "kind": "longcontext", "demo": True, "quick": args.quick, **bench.hardware_labels(),
            "threads": int(frame.threads[0]), "load_average_1min_at_start": load,
            "note": "one training step per path, each in a fresh process capped by RLIMIT_AS: the long-context path, "
                    "then the plain path at the same length under the same cap; the plain path's saved bytes fitted "
                    "from the same model at two short lengths and its peak from three (see "
                    "crisp.study.bench_longcontext.demo)"})
        print(frame.T.to_string())
        print(f"written: {path}")
        return 0
    if args.long_context:  # one attention call with backward at 1k-16k tokens (crisp.study.bench_longcontext)
        import torch

        from . import bench_longcontext as lc

        if args.threads:
            torch.set_num_threads(args.threads)
        lengths = (256, 512) if args.quick else lc.LENGTHS
        load = os.getloadavg()[0]
        frame = lc.run(lengths, repeats=args.repeats, warmup=args.warmup, time_up_to=args.time_up_to)
        path = bench.write(frame, args.output, tag=args.tag or "longcontext", extra={
            "kind": "longcontext", "quick": args.quick, "repeats": args.repeats, "warmup": args.warmup,
            "lengths": list(lengths), "time_up_to": args.time_up_to, **bench.hardware_labels(),
            "load_average_1min_at_start": load,
            "note": "one run; from 8192 tokens on one round and no warm-up; times carry whatever else ran on the "
                    "machine (load_average_1min_at_start; on a shared machine run with --threads 1: a process whose "
                    "threads wait for one another on a contended core measures the contention); saved bytes are exact"})
        cols = ["setting", "variant", "median_s", "time_ratio_to_eager", "saved_mb", "saved_ratio_to_sdpa", "skipped"]
        print(frame[[c for c in cols if c in frame]].round(3).to_string(index=False))
        print(f"written: {path}")
        return 0
    if args.compile:  # compiled vs eager Crisp training step (fixed lengths and/or SST-2 lengths)
        settings = {k: v for k, v in settings.items() if k in ("sst2", "L128")} or settings
        frame = bench.run_compiled(shapes, settings, repeats=args.repeats, warmup=args.warmup, sst2_lengths=sst2)
        # its own folder: the cost chapter reads every data/bench/bench-*.csv as a variant table
        path = bench.write(frame, str(Path(args.output) / "compile"), tag=args.tag or "compile",
                           extra={"settings": {k: list(map(str, v)) for k, v in settings.items()}, "repeats": args.repeats,
                                  "quick": args.quick, "warmup": args.warmup, "lengths": args.lengths or None,
                                  "lengths_train_sentences": None if sst2 is None else int(len(sst2))})
        print(frame[["model_shape", "setting", "variant", "median_s", "paired_ratio_to_eager_crisp", "compile_s",
                     "graph_breaks", "recompiles"]].round(3).to_string(index=False))
        print(f"written: {path}")
        return 0
    only = [v.strip() for v in args.variants.split(",") if v.strip()] or None
    bench.select_variants(only)  # a bad name fails here, before any timing
    frame = bench.run(shapes, settings, repeats=args.repeats, warmup=args.warmup, sst2_lengths=sst2, only=only)
    path = bench.write(frame, args.output, tag=args.tag, extra={"settings": {k: list(map(str, v)) for k, v in settings.items()},
                                             "repeats": args.repeats, "warmup": args.warmup, "quick": args.quick,
                                             "variants": only or "all"})
    cols = ["model_shape", "setting", "mode", "variant", "median_s", "ratio_to_eager", "saved_ratio_to_eager"]
    print(frame[cols].round(3).to_string(index=False))
    if args.profile:
        text = bench.profile(shapes[0], sst2 if sst2 is not None else 32)
        (path.parent / (path.stem + "-profile.txt")).write_text(text)
        print(text)
    print(f"written: {path}")
    return 0


def _bench_overhead(args, bench, sst2, shapes) -> int:
    """``crisp bench --overhead``: :func:`crisp.study.bench.run_overhead`, written as ``bench-<device>-<shape>-overhead``."""
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    shape = shapes[0] if len(shapes) == 1 else "minilm"
    lengths = sst2 if sst2 is not None else np.arange(6, 41)  # no histogram: lengths 6-40, evenly
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    batch, n_batches = (8, 1) if args.quick else (64, args.sst2_batches)
    output = args.output or (tempfile.mkdtemp(prefix="crisp-bench-quick-") if args.quick else "data/bench")
    configs = [v.strip() for v in args.variants.split(",") if v.strip()] or list(bench.OVERHEAD_CONFIGS)
    unknown = sorted(set(configs) - set(bench.OVERHEAD_CONFIGS))
    if unknown:
        raise ValueError(f"--overhead --variants takes configuration names; unknown: {', '.join(unknown)} "
                         f"(choose from {', '.join(bench.OVERHEAD_CONFIGS)})")
    frame = bench.run_overhead("tiny" if args.quick else shape, lengths, batch, n_batches, repeats=args.repeats,
                               warmup=args.warmup, precisions=precisions, configs=configs)
    labels = bench.hardware_labels()
    note = ("ratios to dense eager attention at the same precision, taken in one process (variants interleaved in a "
            "fresh random order each round); wall and process-CPU clocks")
    if not labels["native_bf16"]:
        note += ("; this CPU has no native bfloat16 (no avx512_bf16/amx_bf16): bf16 autocast runs emulated, several "
                 "times slower than fp32, so its ratios describe that slow path")
    path = bench.write(frame, output, tag=args.tag or f"{frame.model_shape[0]}-overhead", extra={
        "kind": "overhead", "quick": args.quick, "repeats": args.repeats, "warmup": args.warmup,
        "precisions": precisions, "lengths": args.lengths or "6-40 evenly", "batch_size": batch, "batches": n_batches,
        "targets": bench.OVERHEAD_TARGETS, **labels, "note": note})
    cols = ["precision", "variant", "median_wall_s", "paired_ratio_wall", "paired_ratio_wall_q25", "paired_ratio_wall_q75",
            "paired_ratio_cpu", "realized_sparsity", "target", "met"]
    print(frame[cols].round(3).to_string(index=False))
    if args.profile:  # where Crisp's extra time goes, per operator (fp32, uniform_sparse)
        table = bench.overhead_profile("tiny" if args.quick else shape, lengths, batch, n_batches,
                                       repeats=1 if args.quick else 3)
        text = (f"# torch.profiler self CPU time (ms) of one training step ({frame.widths[0]} tokens wide batches of "
                f"{batch}), fp32, dense eager vs uniform_sparse, median of {1 if args.quick else 3} alternated runs; "
                f"{labels['cpu_capability']}, {labels['threads']} threads, torch {labels['torch']}\n")
        (path.parent / (path.stem + "-profile.txt")).write_text(text + table.round(2).to_string(index=False) + "\n")
        print(table.head(15).round(2).to_string(index=False))
    print(f"written: {path}")
    return 0


def cmd_campaign(args) -> int:
    from . import campaign
    from .campaign_pack import PackError
    from .campaign_payload import PayloadError

    if args.dry_run:
        settings = campaign.dry_run_settings(args.out, work=args.work, data=args.data)
    else:
        settings = campaign.Settings(out=args.out, work=args.work, seeds=args.seeds, pad_seeds=args.pad_seeds)
    given = {"payload": args.payload, "workers": args.workers, "budget_min": args.budget_min,
             "limit_min": args.limit_min, "run_minutes": args.run_minutes}
    for name, value in given.items():  # what the command line sets; the rest is the real or the dry-run default
        if value is not None:
            setattr(settings, name, value)
    try:
        return campaign.run(settings)
    except (PackError, PayloadError, RuntimeError) as err:
        raise ValueError(str(err)) from None


def cmd_campaign_prepare(args) -> int:
    from .campaign_payload import PayloadError, prepare

    try:
        prepare(args.to, data=args.data, wheels=not args.no_wheels, log=lambda text: print(text, flush=True))
    except PayloadError as err:
        raise ValueError(str(err)) from None
    return 0


def cmd_campaign_unpack(args) -> int:
    from .campaign_pack import PackError, unpack

    try:
        unpack(args.files, runs_root=args.runs, bench_root=args.bench)
    except PackError as err:
        raise ValueError(str(err)) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crisp", description="Crisp attention: train and evaluate the paper's configurations on SST-2.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train and evaluate one configuration with one seed",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train one configuration with one seed and write its run folder.\n"
                                   "Example: crisp train --model minilm --config aggressive_sparse --seed 0 "
                                   "--data ../shared/data/sst2 --protocol small")
    _train_options(p)
    p.set_defaults(func=cmd_train)

    g = sub.add_parser("grid", help="run configurations x seeds, skipping finished runs",
                       description="Run every (configuration, seed) pair; finished runs are skipped, unfinished "
                                   "ones resume from their last checkpoint, failures are reported at the end.")
    g.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: the paper's four (the default) and the regularizers attn_dropout, label_smoothing")
    g.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 1,3,5 (default: %(default)s)")
    g.add_argument("--workers", type=int, default=1,
                   help="runs trained at once, each in its own process (a GPU fits many small runs; on a CPU the "
                        "cores are split between them) (default: %(default)s)")
    g.add_argument("--launcher", choices=("local", "slurm"), default=None,
                   help="submit one job per run through submitit: slurm (a job array; --workers caps the tasks "
                        "running at once) or local (jobs on this machine, --workers at a time); default: no scheduler")
    g.add_argument("--partition", default=None, help="Slurm partition (default: the cluster's)")
    g.add_argument("--gpus-per-job", type=int, default=0, help="GPUs per job (default: %(default)s)")
    g.add_argument("--cpus-per-job", type=int, default=4, help="CPU cores per Slurm job (default: %(default)s)")
    g.add_argument("--mem-gb", type=int, default=16, help="memory per Slurm job in GB (default: %(default)s)")
    g.add_argument("--time-min", type=int, default=240, help="wall-time limit per job in minutes (default: %(default)s)")
    g.add_argument("--log-dir", default=".submitit", help="submitit's job files and logs (default: %(default)s)")
    g.add_argument("--no-wait", action="store_true", help="slurm: return once the array is submitted")
    g.add_argument("--notebooks", action="store_true",
                   help="run each through the papermill run notebook, keeping the executed copy in the run folder")
    _train_options(g, skip=("config", "seed"))
    g.set_defaults(func=cmd_grid)

    d = sub.add_parser("padding", help="measure every reading of the paper's padding on the encoder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Every reading of the paper's pad-to-512 (crisp.study.readings) inside the encoder as "
                                   "loaded: realized per-layer sparsity over real (query, key) pairs at 0.6 and 0.8 on "
                                   "the dev set and a seeded train sample, differences of the mask-first readings from "
                                   "dense, a short pad-to-512 training run dense vs mask-first, and SST-2's token-length "
                                   "histogram. Each step writes <output>/<model>/parts/ and re-assembles readings.csv.")
    d.add_argument("--model", default="minilm", help="model name or folder")
    d.add_argument("--data", default=None, help="SST-2 folder (default: $CRISP_SST2_DIR, else the hub)")
    d.add_argument("--steps", default="dev,train,training", help="parts to run: dev, train, training")
    d.add_argument("--train-sentences", type=int, default=1024, help="size of the seeded train sample")
    d.add_argument("--batch-size", type=int, default=16, help="sentences per forward (dynamic padding: per batch)")
    d.add_argument("--seed", type=int, default=0, help="train sample, classifier head and training seed")
    d.add_argument("--train-steps", type=int, default=10, help="optimizer steps of the training demonstration")
    d.add_argument("--demo-readings", default="pad512-maskfirst-finfo-row",
                   help="comma-separated mask-first readings trained beside dense in the demonstration")
    d.add_argument("--pad512-minutes", type=float, default=None,
                   help="time budget of the pad-to-512 readings per split (seeded random order; default: no limit)")
    d.add_argument("--output", default="data/padding", help="results root")
    d.set_defaults(func=cmd_padding)

    s = sub.add_parser("summary", help="write the summary table of a grid (what the book reads) from its predictions",
                       description="Compute per-configuration accuracies with CIs, paired comparisons, McNemar, "
                                   "correlation and the verdict from the runs' per-sentence predictions and write "
                                   "them to <output>/<model>/<protocol>/. Without --model/--protocol: the grid the "
                                   "book reports (crisp.analysis.report.select).")
    s.add_argument("--runs", default=None, help="runs root (default: $CRISP_RUNS_DIR, else data/runs)")
    s.add_argument("--model", default=None, help="model of the grid, e.g. minilm (default: the book's grid)")
    s.add_argument("--protocol", default=None, help="protocol of the grid, e.g. full (default: the book's grid)")
    s.add_argument("--hardware", default=None, help="device type and precision of the grid, e.g. cpu-fp32 or cuda-bf16 "
                                                   "(default: the book's grid)")
    s.add_argument("--output", default=None, help="summary root (default: summary/ beside the runs root, e.g. data/summary)")
    s.set_defaults(func=cmd_summary)

    b = sub.add_parser("bench", help="time and size every attention variant, ratios to eager dense",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Forward+backward and inference time, and memory saved for backward, of eager, "
                                   "SDPA and Crisp variants in one process (random weights).")
    b.add_argument("--shapes", default="minilm,distilbert", help="model shapes: minilm, distilbert, tiny")
    b.add_argument("--lengths", default="data/padding/minilm/sst2_lengths.csv",
                   help="SST-2 length histogram (from `crisp padding`); empty string: fixed lengths only")
    b.add_argument("--sst2-batches", type=int, default=4, help="length-grouped batches of 64 per SST-2 step")
    b.add_argument("--batch-pad512", type=int, default=8, help="batch size of SST-2 sentences padded to 512")
    b.add_argument("--batch-128", type=int, default=16, help="batch size at length 128")
    b.add_argument("--batch-512", type=int, default=4, help="batch size at length 512")
    b.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    b.add_argument("--warmup", type=int, default=2, help="untimed warm-up repeats")
    b.add_argument("--overhead", action="store_true",
                   help="a training step at SST-2 lengths (batches of 64): the paper's four configurations vs dense "
                        "eager, fp32 and bf16 autocast, many interleaved rounds; written as bench-<device>-<shape>-overhead.csv "
                        "(with --profile: where the extra time goes, per operator)")
    b.add_argument("--precisions", default="fp32,bf16", help="--overhead: precisions to time (fp32, bf16 autocast)")
    b.add_argument("--threads", type=int, default=0, help="--overhead, --long-context (and --demo-32k): torch threads (default 0: torch's own)")
    b.add_argument("--settings", default="", help="comma-separated subset of: sst2, sst2-pad512, L128, L512 (default: all)")
    b.add_argument("--variants", default="", help="comma-separated subset of variants (eager is always timed; default: all); "
                                                "with --overhead: configuration names, e.g. uniform_sparse,aggressive_sparse")
    b.add_argument("--tag", default="", help="suffix of the results file name, to keep several benchmark runs")
    b.add_argument("--quick", action="store_true", help="tiny sizes: checks that it works, measures nothing")
    b.add_argument("--profile", action="store_true", help="also write a torch.profiler table of a Crisp training step")
    b.add_argument("--compile", action="store_true",
                   help="time Crisp 0.8 training steps eager vs torch.compile (settings sst2 and L128 only; written to <output>/compile/)")
    b.add_argument("--long-context", action="store_true",
                   help="one attention call with backward at 1k, 4k, 8k, 16k tokens: eager, SDPA, Crisp and Crisp's "
                        "long-context path; written as bench-<device>-longcontext.csv")
    b.add_argument("--demo-32k", action="store_true",
                   help="--long-context: once, not in CI: a training step of a tiny 2-layer decoder at 32k tokens on the "
                        "long-context path and on the plain path (each in a fresh process, memory capped), beside the "
                        "plain path's fitted saved bytes and peak; "
                        "written as bench-<device>-longcontext-demo32k.csv")
    b.add_argument("--time-up-to", type=int, default=None,
                   help="--long-context: time lengths up to this many tokens, only size the saved tensors above it")
    b.add_argument("--output", default=None,
                   help="results folder (default: data/bench; with --quick a fresh temporary folder, so a check never "
                        "lands beside the measurements)")
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("campaign", help="on a lent GPU: device tests, the 20-seed and pad-to-512 grids, bench, packed",
                       description="One command for a lent GPU (README, 'Running on a lent GPU'): checks the machine, "
                                   "runs tests/test_device.py on CUDA (stops if they fail), trains MiniLM protocol full "
                                   "(64 x 1, bf16) 4 configurations x --seeds, then the pad-to-512 reading x --pad-seeds, "
                                   "as many at once as --workers, within --budget-min (a run starts only if it should "
                                   "finish in time; unfinished ones are left out), benchmarks, and packs every finished "
                                   "run, the benchmark files and the log into at most 8 files of under 16 MiB in --out.")
    c.add_argument("--out", required=True, help="output folder, empty or new (on the device machine: $OUT)")
    c.add_argument("--payload", default=None, help="the folder `crisp campaign-prepare` built (default: .campaign)")
    c.add_argument("--work", default=None, help="runs and benchmark files while it runs (default: a temporary folder)")
    c.add_argument("--seeds", default="0-19", help="seeds of the main grid (default: %(default)s)")
    c.add_argument("--pad-seeds", default="0-4", help="seeds of the pad-to-512 grid (default: %(default)s)")
    c.add_argument("--workers", type=int, default=None, help="runs at once (default: one per CPU core, at most 16)")
    c.add_argument("--budget-min", type=float, default=None, help="wall-clock minutes for training (default: 8; dry run 1)")
    c.add_argument("--limit-min", type=float, default=None,
                   help="minutes the whole command may take (default: 9.5; the device tool stops a command at 10)")
    c.add_argument("--run-minutes", type=float, default=None,
                   help="expected minutes of one run until runs have finished, then the slowest finished run (default: 4)")
    c.add_argument("--dry-run", action="store_true",
                   help="rehearse every stage on the CPU: tiny-bert, a few steps, quick benchmark (under a minute)")
    c.add_argument("--data", default=None, help="dry run: the SST-2 folder (default: the payload's)")
    c.set_defaults(func=cmd_campaign)

    cp = sub.add_parser("campaign-prepare", help="build the payload a lent GPU needs (weights, SST-2, wheels)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                        description="Build the folder carried to the GPU machine: MiniLM in float16 (compressed), "
                                    "the SST-2 copy, and wheels for papermill and ipykernel minus what the machine "
                                    "has; refuses if the working tree plus the payload exceed one call's 64 MiB.")
    cp.add_argument("--to", default=".campaign", help="payload folder (ignored by git; replaced whole)")
    cp.add_argument("--data", default=None, help="SST-2 folder (default: $CRISP_SST2_DIR)")
    cp.add_argument("--no-wheels", action="store_true", help="leave the wheels out (a CPU rehearsal needs none)")
    cp.set_defaults(func=cmd_campaign_prepare)

    cu = sub.add_parser("campaign-unpack", help="put a campaign's returned files into data/runs and data/bench",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                        description="Check the files against their manifest, then add every packed run folder under "
                                    "--runs (a finished run already there is kept) and the benchmark files under --bench.")
    cu.add_argument("files", nargs="+", help="the returned files (manifest.json among them), or their folder")
    cu.add_argument("--runs", default="data/runs", help="runs root")
    cu.add_argument("--bench", default="data/bench", help="benchmark folder")
    cu.set_defaults(func=cmd_campaign_unpack)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"crisp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crisp: interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
