"""The few `torch.distributed` helpers the objectives need, safe to call without a process group.

Why: contrastive objectives (SimCLR, arXiv:2002.05709) get their negatives from the whole global
batch, so under data parallelism the embeddings of every rank must be gathered *with* gradients
(`torch.distributed.nn.functional.all_gather`, whose backward sums the incoming gradients over
ranks). MoCo's queue (arXiv:1911.05722) and DINO's centre (arXiv:2104.14294) only need plain,
gradient-free gathers / reductions so that every rank keeps the same buffer. When no process group
is initialised (tests, single-process training) every helper degrades to the identity.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group is initialised and has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """World size of the default process group, 1 without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """Rank in the default process group, 0 without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate `x` from all ranks along dim 0, keeping the autograd graph to every rank.

    The backward of `torch.distributed.nn.functional.all_gather` sums the gradients that all ranks
    computed for this rank's slice, so with DDP's gradient averaging the parameter gradients equal
    those of one process on the concatenated batch. All ranks must pass the same shape.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # deprecated in favour of the private `_functional_collectives`, whose backward needs
        # reduce-scatter (not available on gloo); this one works on gloo and NCCL
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*all_gather")
        return torch.cat(all_gather(x.contiguous()), dim=0)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate `x` (detached) from all ranks along dim 0, in rank order."""
    if not is_distributed():
        return x.detach()
    x = x.detach().contiguous()
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x)
    return torch.cat(out, dim=0)


@torch.no_grad()
def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum `x` over ranks (returns a new tensor; identity without a process group)."""
    x = x.detach().clone()
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x
