"""Command line: ``crisp train``, ``crisp grid``. A thin argument layer over :mod:`crisp.train`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from .configs import CONFIGS
from .data import DataError
from .models import ModelError
from .results import OutputError, RunExistsError

USER_ERRORS = (ValueError, DataError, ModelError, RunExistsError, OutputError, FileNotFoundError)


def _train_options(parser: argparse.ArgumentParser, skip=()) -> None:
    """One ``--option`` per :class:`crisp.train.TrainConfig` field, with its default and help."""
    from .train import PROTOCOLS, TrainConfig

    parser.add_argument("--protocol", default="full", choices=sorted(PROTOCOLS),
                        help="preset: full = the paper's recipe on all data; small = 4,000 sentences, 1 epoch")
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
    seeds = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-")
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ValueError(f"--seeds must look like 0-4 or 1,3,5, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seeds must name non-negative integers, got {text!r}")
    return seeds


def parse_configs(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    for name in names:
        if name not in CONFIGS:
            raise ValueError(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
    return names


def cmd_train(args) -> int:
    from .train import make_config, train

    cfg = make_config(args.protocol, **_overrides(args))
    folder = train(cfg)
    print(f"finished: {folder}")
    return 0


def cmd_grid(args) -> int:
    from .results import is_finished
    from .train import make_config, train

    configs, seeds = parse_configs(args.configs), parse_seeds(args.seeds)
    plan = [make_config(args.protocol, **_overrides(args, skip=("config", "seed")), config=c, seed=s)
            for c in configs for s in seeds]
    failures, done = [], 0
    for number, cfg in enumerate(plan, 1):
        head = f"[{number}/{len(plan)}] {cfg.label} seed {cfg.seed}"
        if is_finished(cfg.folder) and not cfg.overwrite:
            print(f"{head}: skipped, finished run in {cfg.folder}", flush=True)
            continue
        resuming = (cfg.folder / "checkpoints").is_dir()
        print(f"{head}: {'resuming unfinished run' if resuming else 'starting'} in {cfg.folder}", flush=True)
        started = time.perf_counter()
        try:
            if args.notebooks:
                from .notebook_runs import run_notebook

                run_notebook(cfg)
            else:
                train(cfg)
        except KeyboardInterrupt:
            raise
        except Exception as err:  # one failed run does not stop the grid
            failures.append((head, f"{type(err).__name__}: {err}"))
            print(f"{head}: FAILED: {type(err).__name__}: {err}", flush=True)
            continue
        done += 1
        print(f"{head}: done in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"grid: {done} run(s) done, {len(plan) - done - len(failures)} skipped, {len(failures)} failed")
    for head, why in failures:
        print(f"  failed: {head}: {why}")
    return 1 if failures else 0


def cmd_padding(args) -> int:
    from .padding import write_study

    folder = write_study(args.output, args.model, args.data, args.sentences)
    print(f"written: {folder}")
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
    g.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated (default: %(default)s)")
    g.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 1,3,5 (default: %(default)s)")
    g.add_argument("--notebooks", action="store_true",
                   help="run each through the papermill run notebook, keeping the executed copy in the run folder")
    _train_options(g, skip=("config", "seed"))
    g.set_defaults(func=cmd_grid)

    d = sub.add_parser("padding", help="measure realized sparsity under dynamic vs pad-to-512 padding",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Forward passes only: realized per-layer sparsity over real tokens with dynamic "
                                   "padding and with the paper's pad-to-512, plus SST-2's token-length histogram.")
    d.add_argument("--model", default="minilm", help="model name or folder")
    d.add_argument("--data", default=None, help="SST-2 folder (default: $CRISP_SST2_DIR, else the hub)")
    d.add_argument("--sentences", type=int, default=128, help="first N dev sentences")
    d.add_argument("--output", default="data/padding", help="results root")
    d.set_defaults(func=cmd_padding)
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
