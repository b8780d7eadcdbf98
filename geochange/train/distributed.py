"""Training on several processes or hosts with torch DistributedDataParallel, launched by ``torchrun``.

``geochange train ... --ddp`` under ``torchrun --nproc-per-node N`` (one or several hosts): each process
trains on its share of every epoch's shuffled samples, DDP averages the gradients (gloo on the CPU,
NCCL on GPUs), rank 0 writes checkpoints and metrics. As in PyTorch Lightning, DDP wraps a module
whose forward *is* the model's ``training_step``, so a model may call any part of its network.
After each epoch rank 0's buffers (BN running statistics) are copied to every rank (:func:`sync_buffers`).
Work done between epochs (``start_epoch``) runs on every rank on the same data and seeds, so its
results agree, unless a model splits it: the trainer sets ``data.dist`` (:func:`context`), a model
hands each rank whole batches of the work (:meth:`Dist.batches`), collects the results on rank 0
(:func:`gather`) or on every rank (:func:`gather_all`) and sends what rank 0 fitted to all
(:func:`broadcast`). CDCluster's re-clustering does so: features are extracted by every rank for its
share of the sample, rank 0 runs the k-means, the centroids and the refitted classifier are broadcast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from geochange.errors import GeochangeError


@dataclass
class Dist:
    """Where this process stands: ``rank`` of ``world`` processes (1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    joined: bool = False  # this run joined the process group (and leaves it); False when the caller had

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, positions: np.ndarray) -> np.ndarray:
        """This rank's share of ``positions``: every ``world``-th one, the list first wrapped around to a
        multiple of ``world`` so that every rank runs the same number of steps (DDP needs that)."""
        if self.world == 1:
            return positions
        n = -(-len(positions) // self.world) * self.world
        padded = np.resize(positions, n)
        return padded[self.rank::self.world]

    def batches(self, positions: np.ndarray, batch_size: int) -> np.ndarray:
        """This rank's whole batches of ``positions``: batch ``i`` (of ``batch_size`` in order) goes to
        rank ``i % world``, nothing is repeated. Each batch is the one a single process forms, so
        results that depend on the batch (BN on batch statistics) are the same on any number of ranks."""
        positions = np.asarray(positions, np.int64)
        if self.world == 1:
            return positions
        chunks = [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
        mine = chunks[self.rank::self.world]
        return np.concatenate(mine) if mine else np.zeros(0, np.int64)


def context(data) -> Dist:
    """The :class:`Dist` of a training run, from the trainer's ``TrainData`` (which sets ``data.dist``);
    a single process for anything else (e.g. a model trained by hand)."""
    ctx = getattr(data, "dist", None)
    return ctx if isinstance(ctx, Dist) else Dist()


def setup(ddp: bool, device: str) -> tuple[Dist, str]:
    """Join the process group torchrun describes (``ddp``) and pick this rank's device."""
    if not ddp:
        return Dist(), device
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise GeochangeError("--ddp: start the training with torchrun, e.g. "
                             "torchrun --nproc-per-node 2 -m geochange train MODEL --data DIR --ddp")
    local = int(os.environ.get("LOCAL_RANK", 0))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    joined = not _initialised()
    if joined:
        import_before_group()
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local, joined), device


def import_before_group() -> None:
    """Import what DDP imports before the group exists. ``torch.distributed.nn.functional`` (which DDP
    imports on first use) takes ``group.WORLD`` as a default argument: imported while a group exists, it
    holds that group for good, so ``destroy_process_group`` cannot end it, and gloo's worker threads
    outlive the interpreter. Freeing the last collective's work on one of them during the interpreter's
    finalisation aborts the process ("terminate called without an active exception"): a SIGABRT at
    exit, now and then, under CPU contention (similar reports: pytorch/pytorch#72366, #107298). A script
    that holds its own group across several trainings calls this before ``init_process_group``."""
    import torch.distributed.nn.functional  # noqa: F401


def teardown(ctx: Dist) -> None:
    """Leave the process group (after the last checkpoint is written) if :func:`setup` joined it; a
    group the caller set up (several trainings in one launch) stays for the next."""
    if ctx.world > 1 and _initialised():
        import torch.distributed as dist

        dist.barrier()
        if ctx.joined:
            dist.destroy_process_group()


def wrap(model, ctx: Dist, device: str):
    """The callable that runs a training step: DDP over the model's step when distributed."""
    if ctx.world == 1:
        return model.training_step
    import torch
    from torch.nn.parallel import DistributedDataParallel

    class StepModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model.net

        def forward(self, batch: dict, epoch: int) -> dict:
            return model.training_step(batch, epoch)

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DistributedDataParallel(StepModule(), device_ids=ids, find_unused_parameters=True)


def sync_buffers(module, ctx: Dist) -> None:
    """Rank 0's buffers (BN running statistics) on every rank. DDP hands them round at the start of each
    forward, so after an epoch's last step every rank holds its own last update; this makes them agree
    before work between epochs (which may evaluate the network) and at the end."""
    if ctx.world == 1:
        return
    import torch.distributed as dist

    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)


def mean_over_ranks(values: dict[str, float], ctx: Dist) -> dict[str, float]:
    """Average logged scalars over the ranks."""
    if ctx.world == 1 or not values:
        return values
    import torch
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / ctx.world for k, v in zip(keys, t.tolist())}


def gather(array: np.ndarray, ctx: Dist) -> np.ndarray | None:
    """Concatenate every rank's ``array`` on rank 0 (None elsewhere), e.g. features for k-means."""
    if ctx.world == 1:
        return array
    import torch.distributed as dist

    parts: list | None = [None] * ctx.world if ctx.main else None
    dist.gather_object(array, parts, dst=0)
    return np.concatenate(parts) if ctx.main else None


def gather_all(obj, ctx: Dist) -> list:
    """Every rank's ``obj`` (any picklable value), in rank order, on every rank."""
    if ctx.world == 1:
        return [obj]
    import torch.distributed as dist

    parts: list = [None] * ctx.world
    dist.all_gather_object(parts, obj)
    return parts


def broadcast(obj, ctx: Dist):
    """Rank 0's ``obj`` on every rank (e.g. the centroids it computed)."""
    if ctx.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: Dist) -> None:
    if ctx.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _initialised() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()
