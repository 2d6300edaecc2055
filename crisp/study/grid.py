"""A grid of runs (configurations x seeds): one after another, or ``workers`` at once on one machine.

``crisp grid`` builds the plan (seed by seed, so a stopped grid leaves complete pairs) and hands it to
:func:`run_plan`. A finished run (its ``metrics.json`` exists) is skipped, an unfinished one resumes from
its last checkpoint (that is :func:`crisp.study.train.train`'s job), and a failed run does not stop the others.

With ``workers > 1`` each run trains in a fresh process of its own (``spawn``, one run per process, so
CUDA memory and torch state never carry over from one run to the next). The processes share the
machine: on a GPU, several small runs fill the device better than one; on a CPU, the cores are split
between the workers (``torch.set_num_threads``). A worker's output goes to ``<run folder>/worker.log``
(ignored by git) instead of the terminal, where the grid prints one line per run as it starts and ends.
A run folder being trained holds ``.running`` (the process id and host), so two grids started on the
same results tree never train the same run at once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import recipe, results
from .train import TrainConfig, _launched_world_size

LOCK_NAME, LOG_NAME = ".running", "worker.log"


class RunBusyError(RuntimeError):
    """Another live process is training this run folder."""


@dataclass
class Outcome:
    """What happened to one planned run."""

    head: str  # "[3/8] baseline seed 1"
    status: str  # "done" | "skipped" | "busy" | "failed"
    detail: str = ""
    seconds: float = 0.0


def _head(number: int, total: int, cfg: TrainConfig) -> str:
    return f"[{number}/{total}] {cfg.label} seed {cfg.seed}"


@contextlib.contextmanager
def claim(folder: Path):
    """Hold ``<folder>/.running`` while a run trains; raise :class:`RunBusyError` if a live process holds it.

    A lock left by a process that no longer exists on this host is taken over (a killed grid leaves one).
    """
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = lock.read_text(encoding="utf-8").split() if lock.is_file() else []
            if len(owner) == 2 and owner[1] == socket.gethostname() and owner[0].isdigit() and not _alive(int(owner[0])):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise RunBusyError(f"{folder} is being trained by process {' on '.join(owner) or '(unknown)'}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(me)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_one(cfg: TrainConfig, notebooks: bool = False) -> Path:
    """Train ``cfg`` (directly, or through the papermill run notebook) while holding its folder's lock."""
    with claim(cfg.folder):
        if notebooks:
            from .notebook_runs import run_notebook

            return run_notebook(cfg)
        from .train import train

        return train(cfg)


def _worker(cfg: TrainConfig, notebooks: bool, threads: int | None) -> float:
    """Body of a worker process: its own log file, its share of the CPU threads, one run."""
    import torch

    if threads:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # a papermill kernel started from here inherits it
    cfg.folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(cfg.folder / LOG_NAME, "a", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {cfg.label} seed {cfg.seed}", flush=True)
        run_one(cfg, notebooks)
    return time.perf_counter() - started


def check_workers(workers) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")


def _printer(out):
    out = out or sys.stdout
    return lambda text: print(text, file=out, flush=True)


def triage(plan: list[TrainConfig], say) -> tuple[list[Outcome], list[tuple[str, TrainConfig]]]:
    """Finished runs (skipped, unless ``overwrite``) as outcomes, and the ``(head, config)`` pairs still to run."""
    outcomes, todo = [], []
    for number, cfg in enumerate(plan, 1):
        head = _head(number, len(plan), cfg)
        if results.is_finished(cfg.folder) and not cfg.overwrite:
            diff = recipe.differences(recipe.of_run(results.read_json(cfg.folder / "metrics.json")),
                                      recipe.identity(dataclasses.asdict(cfg), _launched_world_size()))
            if diff:  # a finished run of another recipe in this folder (an old "-custom" one): neither skip nor overwrite
                why = (f"the finished run in {cfg.folder} has another recipe ({'; '.join(diff)}, recorded vs asked); "
                       f"move it away or pass --overwrite")
                say(f"{head}: FAILED: {why}")
                outcomes.append(Outcome(head, "failed", why))
                continue
            say(f"{head}: skipped, finished run in {cfg.folder}")
            outcomes.append(Outcome(head, "skipped"))
        else:
            todo.append((head, cfg))
    return outcomes, todo


def run_plan(plan: list[TrainConfig], workers: int = 1, notebooks: bool = False, out=None) -> list[Outcome]:
    """Run every config of ``plan``; ``workers`` at a time in separate processes when ``workers > 1``.

    Prints one line per run to ``out`` (default stdout) and returns an :class:`Outcome` per run.
    """
    check_workers(workers)
    say = _printer(out)
    outcomes, todo = triage(plan, say)
    if workers == 1:
        for head, cfg in todo:
            outcomes.append(_sequential(head, cfg, notebooks, say))
        return outcomes
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                                  max_tasks_per_child=1)
    with pool:
        running = {}
        for head, cfg in todo:
            running[pool.submit(_worker, cfg, notebooks, threads)] = (head, cfg)
        say(f"grid: {len(todo)} run(s) on {workers} worker processes ({threads} CPU thread(s) each); "
            f"each run logs to <run folder>/{LOG_NAME}")
        for future in concurrent.futures.as_completed(running):
            head, cfg = running[future]
            try:
                seconds = future.result()
            except RunBusyError as err:
                outcomes.append(Outcome(head, "busy", str(err)))
                say(f"{head}: not started: {err}")
                continue
            except Exception as err:  # one failed run does not stop the grid
                why = f"{type(err).__name__}: {err}"
                outcomes.append(Outcome(head, "failed", why))
                say(f"{head}: FAILED: {why} (log: {cfg.folder / LOG_NAME})")
                continue
            outcomes.append(Outcome(head, "done", seconds=seconds))
            say(f"{head}: done in {seconds:.0f} s")
    return outcomes


def _sequential(head: str, cfg: TrainConfig, notebooks: bool, say) -> Outcome:
    resuming = (cfg.folder / "checkpoints").is_dir()
    say(f"{head}: {'resuming unfinished run' if resuming else 'starting'} in {cfg.folder}")
    started = time.perf_counter()
    try:
        run_one(cfg, notebooks)
    except KeyboardInterrupt:
        raise
    except RunBusyError as err:
        say(f"{head}: not started: {err}")
        return Outcome(head, "busy", str(err))
    except Exception as err:  # one failed run does not stop the grid
        say(f"{head}: FAILED: {type(err).__name__}: {err}")
        return Outcome(head, "failed", f"{type(err).__name__}: {err}")
    seconds = time.perf_counter() - started
    say(f"{head}: done in {seconds:.0f} s")
    return Outcome(head, "done", seconds=seconds)
