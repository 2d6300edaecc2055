"""The grid through a job scheduler: one job per (configuration, seed), submitted with submitit.

``crisp grid --launcher slurm`` submits the unfinished runs of the plan as one Slurm job array (partition, GPUs,
CPUs, memory and time limit as options; ``--workers`` caps how many array tasks run at once);
``--launcher local`` runs them as jobs on this machine through submitit's local executor, ``--workers`` at a
time. Each job is :func:`crisp.study.grid._worker`: it takes the run folder's ``.running`` lock, logs to
``<run folder>/worker.log`` and trains (or resumes) the run. Finished runs are skipped before submission,
exactly as without a launcher, so submitting the same grid again only sends what is left.

submitit keeps its own files (pickled jobs, scheduler logs) under ``--log-dir`` (default ``.submitit/``,
ignored by git).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .grid import LOG_NAME, Outcome, RunBusyError, _printer, _worker, check_workers, triage
from .train import TrainConfig

LAUNCHERS = ("local", "slurm")


@dataclass
class JobOptions:
    """What each job asks of the scheduler (Slurm); the local executor uses ``time_min`` and ``gpus``."""

    partition: str | None = None  # Slurm partition (None: the cluster's default)
    gpus: int = 0  # GPUs per job
    cpus: int = 4  # CPU cores per job
    mem_gb: int = 16  # memory per job
    time_min: int = 240  # wall-time limit per job, minutes
    log_dir: str = ".submitit"  # submitit's job files and scheduler logs


def _executor(launcher: str, options: JobOptions, workers: int):
    try:
        import submitit
    except ImportError:
        raise ValueError("--launcher needs the package submitit: pip install 'crisp[cluster]'") from None
    folder = Path(options.log_dir) / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=launcher)
    params = dict(name="crisp", timeout_min=options.time_min, gpus_per_node=options.gpus, cpus_per_task=options.cpus,
                  mem_gb=options.mem_gb, slurm_array_parallelism=workers)
    if options.partition:
        params["slurm_partition"] = options.partition
    executor.update_parameters(**params)
    return executor


def submit(plan: list[TrainConfig], launcher: str, workers: int = 1, notebooks: bool = False,
           options: JobOptions | None = None, wait: bool = True, out=None) -> list[Outcome]:
    """Run the unfinished configs of ``plan`` as scheduler jobs; returns an :class:`Outcome` per planned run.

    ``local`` always waits, running ``workers`` jobs at a time. ``slurm`` submits one job array and, unless
    ``wait``, returns at once with the submitted runs marked ``"submitted"`` (their job ids printed).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    check_workers(workers)
    say = _printer(out)
    options = options or JobOptions()
    outcomes, todo = triage(plan, say)
    if not todo:
        return outcomes
    executor = _executor(launcher, options, workers)
    threads = options.cpus if launcher == "slurm" else max(1, (os.cpu_count() or 1) // workers)
    if launcher == "slurm":
        jobs = executor.map_array(_worker, [c for _, c in todo], [notebooks] * len(todo), [threads] * len(todo))
        for (head, cfg), job in zip(todo, jobs):
            say(f"{head}: submitted as Slurm job {job.job_id} (log: {cfg.folder / LOG_NAME})")
        if not wait:
            return outcomes + [Outcome(head, "submitted", job.job_id) for (head, _), job in zip(todo, jobs)]
        return outcomes + [_collect(head, cfg, job, say) for (head, cfg), job in zip(todo, jobs)]
    # local: a sliding window of `workers` jobs
    pending, running = list(todo), []
    while pending or running:
        while pending and len(running) < workers:
            head, cfg = pending.pop(0)
            job = executor.submit(_worker, cfg, notebooks, threads)
            say(f"{head}: started as local job {job.job_id} in {cfg.folder}")
            running.append((head, cfg, job))
        finished = [r for r in running if r[2].done()]
        for item in finished:
            running.remove(item)
            outcomes.append(_collect(*item, say))
        if not finished:
            time.sleep(0.5)
    return outcomes


def _collect(head: str, cfg: TrainConfig, job, say) -> Outcome:
    """Wait for ``job`` and turn its result into an :class:`Outcome`."""
    try:
        seconds = job.result()
    except Exception as err:  # submitit re-raises the job's exception (as FailedJobState text for scheduler deaths)
        text = str(err)
        if RunBusyError.__name__ in text or isinstance(err, RunBusyError):
            say(f"{head}: not started: {text.splitlines()[-1] if text else err}")
            return Outcome(head, "busy", text)
        # submitit wraps the job's traceback in its own message: name the job's own exception line
        raised = [line.strip() for line in text.splitlines() if re.match(r"\s*[\w.]+(Error|Exception|Interrupt): ", line)]
        first = raised[-1] if raised else f"{type(err).__name__}: {text.strip().splitlines()[0] if text.strip() else ''}"
        say(f"{head}: FAILED: {first} (log: {cfg.folder / LOG_NAME})")
        return Outcome(head, "failed", first)
    say(f"{head}: done in {seconds:.0f} s")
    return Outcome(head, "done", seconds=seconds)
