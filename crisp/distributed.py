"""Data-parallel training (``torchrun``, ``accelerate launch``): what Crisp must agree on across processes.

Under data parallelism every process (rank) sees its own shard of each batch. Three things would
silently drift apart or be written twice without this module:

- the adaptive controller's concentration measurements: each rank measures its own shard, so the
  per-layer ratios it allocates would differ between ranks. :func:`mean_across_ranks` averages the
  measurements before ratios are allocated, so every rank applies the same ratios on every step;
- realized-sparsity counts and training accuracy: summed over ranks (:func:`sum_across_ranks`) before
  they are logged;
- files: evaluation and every file of the run folder are written by rank 0 only (:func:`is_main`).

With one process (or no ``torch.distributed`` process group) every function is a no-op.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def _device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over all ranks (float64, on the caller's device); unchanged with one process."""
    if not active():
        return values
    work = values.detach().to(_device(), torch.float64).clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(values.device)


def mean_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` averaged over all ranks; unchanged with one process."""
    return sum_across_ranks(values) / world_size() if active() else values


def check_same_across_ranks(values, what: str) -> None:
    """Raise ``RuntimeError`` unless ``values`` (a list of floats) is identical on every rank."""
    if not active():
        return
    mine = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_device())
    gathered = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(gathered, mine)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        spread = float(torch.stack(gathered).amax(0).sub(torch.stack(gathered).amin(0)).max())
        raise RuntimeError(f"{what} differ between ranks (largest spread {spread:.3g}): data-parallel runs must agree")


def barrier() -> None:
    if active():
        dist.barrier()
