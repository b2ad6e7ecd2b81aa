"""Training in several processes with PyTorch's DistributedDataParallel (DDP).

A process joins a process group when torchrun describes one in its environment (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT); `pixelchat train --nproc N` starts N such
processes with torchrun's own launcher. Without those variables nothing here changes a run: it is
the single-process run.
"""

from __future__ import annotations

import os
import sys
import uuid
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn as nn

BACKENDS = ("gloo", "nccl")


def launched() -> bool:
    """Whether torchrun (or a launcher like it) started this process as part of a group."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def backend() -> str | None:
    return dist.get_backend() if dist.is_initialized() else None


def default_threads() -> int | None:
    """Torch threads for a process that shares this machine with others of its group: the cores split
    evenly among them. None (torch's default, every core) for a process alone on its machine."""
    share = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if share <= 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // share)


def check_device(device: str, backend_name: str | None) -> None:
    """Refuse, before any work, a device or backend this machine cannot run."""
    if backend_name == "nccl" and device != "cuda":
        raise ValueError("the nccl backend runs on GPUs: add --device cuda, or use --backend gloo on the CPU")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device cuda, but torch {torch.__version__} finds no CUDA device on this machine")


def check_batch(batch_size: int, processes: int) -> None:
    """The global batch is split evenly: every process takes batch_size / processes samples."""
    if batch_size % processes:
        raise ValueError(f"a batch of {batch_size} does not split evenly among {processes} processes: "
                         f"give a --batch-size that is a multiple of {processes}")


def check_launch(processes: int, batch_size: int, device: str) -> None:
    """What `--nproc` needs, checked in the launching process before any other starts."""
    if processes < 1:
        raise ValueError(f"--nproc must be at least 1, got {processes}")
    if launched():
        raise ValueError("--nproc starts its own processes; under torchrun leave it out (--nproc_per_node says how many)")
    check_batch(batch_size, processes)
    if device == "cuda" and processes > torch.cuda.device_count():
        raise ValueError(f"--nproc {processes} with --device cuda needs a GPU per process; "
                         f"this machine has {torch.cuda.device_count()}")


@contextmanager
def process_group(device: str, backend_name: str | None):
    """Join the group torchrun describes for the duration of the block: nccl for GPUs, gloo on the CPU
    (or ``backend_name``). Nothing happens without torchrun's variables, or in a process that has
    joined a group already."""
    if not launched() or dist.is_initialized():
        yield
        return
    if device == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend_name or ("nccl" if device == "cuda" else "gloo"))
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def average(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over the group's processes (``x`` itself in a single process)."""
    if not dist.is_initialized():
        return x
    x = x.clone()
    dist.all_reduce(x)  # gloo has no AVG reduction
    return x / dist.get_world_size()


def from_rank0(table: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """Rank 0's (N, D) float ``table`` in every process (the others pass None), on the CPU."""
    if not dist.is_initialized():
        return table
    shape = torch.tensor(list(table.shape) if rank() == 0 else [0, 0], device=device)
    dist.broadcast(shape, 0)
    table = table.float().to(device) if rank() == 0 else torch.empty(shape.tolist(), device=device)
    dist.broadcast(table, 0)
    return table.cpu()


def agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` in every process: decisions taken on one clock (a time budget) must be the same
    everywhere, or one process waits forever for the others in a collective."""
    if not dist.is_initialized():
        return flag
    x = torch.tensor([int(flag)], device=device)
    dist.broadcast(x, 0)
    return bool(x.item())


class Objective(nn.Module):
    """``fn(net, *args)`` as the forward of a module holding ``net``, so that DDP sees a whole step.

    DDP averages gradients through hooks that its forward arms for the next backward. A GAN step calls
    several of a network's methods (D.features, D.logits, D.attribute_logits) and differentiates D's
    output with autograd.grad(create_graph=True) for the gradient penalty. Inside one forward, all of
    it feeds one backward() in which each parameter's gradient reaches its DDP hook exactly once: the
    penalty's inner autograd.grad differentiates with respect to inputs only and fires no hook, and its
    graph is differentiated again by that backward (the use the PyTorch maintainers recommend,
    pytorch/pytorch#63812)."""

    def __init__(self, net: nn.Module, fn):
        super().__init__()
        self.net, self.fn = net, fn

    def forward(self, *args):
        return self.fn(self.net, *args)


def wrap(module: nn.Module, device: torch.device, *, find_unused_parameters: bool = False) -> nn.Module:
    """``module`` under DDP in a process group (its gradients averaged over processes), else itself.
    DDP starts by copying rank 0's parameters and buffers to every process."""
    if not dist.is_initialized():
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                               find_unused_parameters=find_unused_parameters)


def launch(processes: int, args: list[str]) -> int:
    """Run ``python ARGS`` in ``processes`` processes on this machine through torchrun's launcher (its
    rendezvous on a free local port, no restarts); returns 0, or the exit code of the first process
    that failed (each prints its own error)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0)
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 1  # killed by a signal
    return 0
