"""Which micro-batches a training run trains on, in order, and their views, optionally prefetched.

Why a plan and a thread: the sampler's epoch permutation is a function of `(seed, epoch)` and
each micro-batch's augmentation seeds its own generator from `(seed, rank, step, micro-step)`,
so the sequence of micro-batches from any resume point is known in advance and a view's values
do not depend on when it is computed. That lets one worker thread augment the next micro-batch
while the current one trains (`ViewSource(prefetch=True)`) without changing a single value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from torch import Tensor

from ssl_assets.ml.data import EpochSampler


@dataclass(frozen=True)
class MicroBatch:
    """Micro-batch `micro` of optimiser step `step`: this rank's image `indices`."""

    step: int
    micro: int
    indices: Tensor


def plan_micro_batches(
    sampler: EpochSampler,
    *,
    step: int,
    epoch: int,
    step_in_epoch: int,
    end_step: int,
    steps_per_epoch: int,
    accumulate: int,
    micro_size: int,
) -> Iterator[MicroBatch]:
    """Every micro-batch from the resume point (`step`, `epoch`, `step_in_epoch`) up to
    `end_step`, in order: `accumulate` micro-batches of `micro_size` images per optimiser
    step, `steps_per_epoch` steps per epoch, cut from this rank's epoch permutation."""
    k = step_in_epoch
    while step < end_step:
        indices = sampler.rank_indices(epoch)
        while k < steps_per_epoch and step < end_step:
            for m in range(accumulate):
                first = (k * accumulate + m) * micro_size
                yield MicroBatch(step, m, indices[first : first + micro_size])
            step += 1
            k += 1
        epoch += 1
        k = 0


class ViewSource:
    """Augmented views of planned micro-batches, in order; with `prefetch`, the next one is
    computed in a worker thread while the caller trains on the current one.

    Why a thread and not DataLoader workers: the work is a handful of vectorised torch ops on
    an in-memory batch, which release the GIL; a thread shares the uint8 tensor and the
    result without copies. Each micro-batch seeds its own generator, so values do not depend
    on whether (or when) it was computed ahead.
    """

    def __init__(
        self,
        plan: Iterator[MicroBatch],
        make: Callable[[MicroBatch], list[Tensor]],
        prefetch: bool = True,
    ) -> None:
        self._plan = plan
        self._make = make
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ssl-augment") if prefetch else None
        self._pending: tuple[MicroBatch, Future[list[Tensor]]] | None = None

    def _submit(self) -> None:
        mb = next(self._plan, None)
        if mb is not None and self._pool is not None:
            self._pending = (mb, self._pool.submit(self._make, mb))
        else:
            self._pending = None

    def next(self, step: int, micro: int) -> list[Tensor]:
        """Views of micro-batch `micro` of optimiser step `step` (must follow the plan)."""
        if self._pool is None:
            mb = next(self._plan)
            views = self._make(mb)
        else:
            if self._pending is None:
                self._submit()
            if self._pending is None:
                raise StopIteration("the plan has no more micro-batches")
            mb, future = self._pending
            views = future.result()
            self._submit()
        if (mb.step, mb.micro) != (step, micro):
            raise RuntimeError(f"planned micro-batch {mb.step}/{mb.micro}, asked {step}/{micro}")
        return views

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
