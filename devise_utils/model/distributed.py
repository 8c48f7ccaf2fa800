"""Training on several processes (GPUs or CPU cores, one machine or several), fastai's way.

A launcher (``accelerate launch`` or ``torchrun``) starts one process per device and sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. :func:`start` joins its process group through
HuggingFace Accelerate (NCCL on GPUs, gloo on CPU); fastai's ``learn.distrib_ctx()``
(:func:`fit_context`) then wraps the model in DistributedDataParallel and each DataLoader in
fastai's ``DistributedDL``, which hands every process its own shard of each epoch. Around
that, the study needs one writer: rank 0 prepares the data and writes every file, the other
ranks wait for it (:func:`main_first`, :func:`barrier`) and only read.

Launched as one plain process, every function here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.distributed as dist
from fastai.distributed import DistributedDL
from fastai.torch_core import num_distrib, rank_distrib

from devise_utils.core.errors import DataError


def world_size() -> int:
    """Processes training together (1 without a launcher)."""
    return max(1, num_distrib())


def rank() -> int:
    return rank_distrib()


def is_main() -> bool:
    """Whether this process writes files (rank 0, or the only process)."""
    return rank_distrib() == 0


def launched() -> bool:
    """Whether a launcher started several processes."""
    return num_distrib() > 1


def start(device: str) -> None:
    """Join the launcher's process group: Accelerate picks the backend (NCCL for ``cuda``,
    gloo for ``cpu``) and binds this process to its GPU (``LOCAL_RANK``)."""
    if launched() and not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=device == "cpu")


def stop() -> None:
    """Leave the process group (no barrier: a rank that failed must not wait for the others;
    the launcher then stops them)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if launched() and dist.is_initialized():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (it writes the caches); the others run it once it has
    finished, finding everything already written."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


@contextmanager
def alone() -> Iterator[None]:
    """Run the block as a one-process job on this rank alone (fastai gathers every loss
    across processes while ``WORLD_SIZE`` > 1, which would wait for ranks that are not
    training): the LR range test, which rank 0 runs and caches for the others."""
    saved = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("WORLD_SIZE", None)
        else:
            os.environ["WORLD_SIZE"] = saved


def fit_context(learn, device: str):
    """fastai's ``learn.distrib_ctx()`` under a launcher (BatchNorm statistics synchronised
    across GPUs; plain BatchNorm on CPU, which SyncBatchNorm does not support), else nothing."""
    if not launched():
        return nullcontext(learn)
    on_gpu = torch.device(device).type == "cuda"
    return learn.distrib_ctx(sync_bn=on_gpu, cpu=not on_gpu)


def check_same(value: Any, what: str, fix: str) -> None:
    """A DataError unless every rank holds the same ``value`` (e.g. the data fingerprint)."""
    if not (launched() and dist.is_initialized()):
        return
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    odd = [r for r, v in enumerate(values) if v != values[0]]
    if odd:
        raise DataError(f"rank {odd[0]} has another {what} than rank 0 ({values[odd[0]]!r} vs "
                        f"{values[0]!r}); {fix}")


def _broadcast(self, t: list[int], src: int) -> list[int]:
    """fastai's ``DistributedDL._broadcast`` (rank 0's shuffled indices to every rank) on the
    process group's device: NCCL needs a CUDA tensor, gloo a CPU one (fastai 2.8.12 always
    moves it to CUDA, which fails on a CPU-only machine)."""
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    x = torch.tensor(t, dtype=torch.long, device=device)
    dist.broadcast(x, src)
    return x.cpu().tolist()


DistributedDL._broadcast = _broadcast
