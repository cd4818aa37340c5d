"""Fast, resumable in-memory data path for SSL training on the curated catalog arrays.

Why this shape:

- The curation stage has already decoded every admitted image once into memory-mapped uint8
  arrays (`N x R x R x 3` `.npy` files). Training therefore never decodes an image: the selected
  rows are copied once into one contiguous uint8 tensor (`N x 3 x R x R`, about 3 KB per 32x32
  image, 150 MB for CIFAR-10), and a batch is a single `index_select` of that tensor (tens of
  microseconds for 256 images), handed to the batched tensor augmentation (`augment.py`).
- NCHW is stored rather than NHWC because the augmentation (`grid_sample`) and the convolutions
  expect NCHW; measured on 2 CPU cores at 32x32 / batch 256, converting each batch from NHWC
  (permute, contiguous or not) was no faster than one conversion at load time, and advanced
  indexing (`images[idx]`) was ~20x slower than `index_select`.
- No `DataLoader` worker processes: with the arrays in memory there is nothing left to do in a
  worker but the augmentation, which is vectorised over the batch and uses torch's intra-op
  threads (or the GPU). Worker processes would copy batches through shared memory, compete with
  the training step for the same cores, and make the sampler state (what a resumed run must
  reproduce) live in other processes. The training loop instead augments the next batch in one
  worker *thread* (torch ops release the GIL), sharing this tensor without copies.
- The sampler is a pure function of `(seed, epoch)` plus a position: the permutation of an epoch
  is drawn from a generator seeded with both, so a run resumed from a checkpoint that recorded
  `(epoch, position)` visits exactly the batches the uninterrupted run would have. Under DDP each
  rank takes a strided share (`perm[rank::world]`) of the equal-length prefix of the
  permutation, and incomplete batches are dropped, so every rank runs the same number of steps
  (a requirement of collective ops) and the ranks' batches concatenated equal one process's
  global batch.
- Photos are another matter: at 256 px an image is 192 KiB, so copying a 100,000-image catalog
  into memory would take 19 GB. `open_images` therefore keeps small-image selections in memory
  (`ImageSet`, the path above) and reads larger ones one batch at a time from the catalog
  files (`StreamedImages`: one positioned read per row, in ascending file order, into a buffer
  the size of the batch), so memory stays flat in the number of images. The reads go through
  `os.preadv`, not a memory map: pages of a mapped file count towards the process's resident
  memory until the kernel reclaims them, reads into a batch buffer do not; and they release
  the GIL, so the training loop's prefetch thread reads and augments the next batch while the
  current one trains.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: one part of a split: `(array path, row indices)` or `(array path, row indices, labels)`;
#: rows `None` means every row of the array
Part = Sequence[Any]


def stable_seed(*values: int | str) -> int:
    """A 63-bit seed mixing `values` (stable across processes and Python versions)."""
    digest = hashlib.blake2b(json.dumps([str(v) for v in values]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@dataclass
class ImageSet:
    """Decoded images as one contiguous uint8 tensor (N x C x R x R) and optional int labels."""

    images: Tensor
    labels: Tensor | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"expected N x C x H x W uint8 images, got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels is not None and self.labels.shape[0] != self.images.shape[0]:
            raise ValueError("labels and images differ in length")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def batch(self, indices: Tensor) -> Tensor:
        """The uint8 images at `indices` (one `index_select`, contiguous NCHW)."""
        return torch.index_select(self.images, 0, indices.to(self.images.device))

    def to(self, device: torch.device | str) -> ImageSet:
        labels = self.labels.to(device) if self.labels is not None else None
        return ImageSet(self.images.to(device), labels)

    def subset(self, indices: Tensor) -> ImageSet:
        labels = self.labels[indices] if self.labels is not None else None
        return ImageSet(self.batch(indices), labels)

    def nhwc(self, indices: Tensor) -> Tensor:
        """The images at `indices` in the catalog layout (N x R x R x C uint8, on the CPU)."""
        return self.batch(indices).cpu().permute(0, 2, 3, 1)

    @property
    def nbytes(self) -> int:
        return int(self.images.numel())


#: `open_images` keeps a selection in memory when its images are at most this many pixels a
#: side (small-image catalogs, where a batch read per step would cost more than the copy) ...
IN_MEMORY_MAX_SIDE = 64
#: ... and the whole selection is at most this large; anything else is streamed
IN_MEMORY_MAX_BYTES = 1 << 30


class StreamedImages:
    """Catalog rows read a batch at a time from their `.npy` files (see the module docstring).

    Same interface as `ImageSet` where the training loop uses it: `len`, `resolution`,
    `batch(indices)` (N x C x R x R uint8), `nhwc(indices)`, `labels`, `nbytes`. Files stay
    open (one descriptor each) until `close()`; reads are positioned, so threads may share it.
    """

    def __init__(self, parts: Sequence[Part]) -> None:
        self._lock = threading.Lock()
        self._fds: list[int] = []
        if not parts:
            raise ValueError("no data: the split has no parts")
        self._offsets: list[int] = []
        files, rows, label_chunks, have_labels = [], [], [], set()
        shape: tuple[int, ...] | None = None
        for part in parts:
            path, part_rows, labels = _part_fields(part)
            array = np.load(path, mmap_mode="r")
            if array.ndim != 4 or array.dtype != np.uint8 or not array.flags.c_contiguous:
                raise ValueError(
                    f"{path}: expected N x R x R x C uint8, got {array.dtype} {array.shape}"
                )
            if shape is None:
                shape = array.shape[1:]
            elif array.shape[1:] != shape:
                raise ValueError(f"{path}: image shape {array.shape[1:]} differs from {shape}")
            n = array.shape[0]
            part_rows = np.arange(n, dtype=np.int64) if part_rows is None else part_rows
            if part_rows.size and (part_rows.min() < 0 or part_rows.max() >= n):
                raise IndexError(f"{path}: row index out of range [0, {n})")
            self._offsets.append(int(array.offset))
            self._fds.append(os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)))
            files.append(np.full(part_rows.size, len(self._fds) - 1, dtype=np.int64))
            rows.append(part_rows)
            have_labels.add(labels is not None)
            if labels is not None:
                if labels.shape[0] != part_rows.size:
                    raise ValueError(f"{path}: {labels.shape[0]} labels for {part_rows.size} rows")
                label_chunks.append(labels)
            del array
        if len(have_labels) > 1:
            raise ValueError("labels must be given for every part or for none")
        assert shape is not None
        self.shape = shape  # R x R x C
        self.row_bytes = int(np.prod(shape))
        self._file = np.concatenate(files)
        self._row = np.concatenate(rows)
        self.labels = torch.from_numpy(np.concatenate(label_chunks)) if label_chunks else None

    def __len__(self) -> int:
        return int(self._row.size)

    @property
    def resolution(self) -> int:
        return int(self.shape[1])

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def nhwc(self, indices: Tensor) -> Tensor:
        """The images at `indices` as N x R x R x C uint8, read from the files (sorted by file
        and row, so reads go forward through each file, then put back in the asked order)."""
        idx = indices.cpu().numpy().astype(np.int64, copy=False)
        out = np.empty((idx.size, *self.shape), dtype=np.uint8)
        order = np.lexsort((self._row[idx], self._file[idx]))
        for pos in order:
            i = idx[pos]
            fd, row = self._fds[int(self._file[i])], int(self._row[i])
            offset = self._offsets[int(self._file[i])] + row * self.row_bytes
            got = os.preadv(fd, [memoryview(out[pos]).cast("B")], offset)
            if got != self.row_bytes:
                raise OSError(f"short read of catalog row {row}: {got} of {self.row_bytes} bytes")
        return torch.from_numpy(out)

    def batch(self, indices: Tensor) -> Tensor:
        """The images at `indices` as one contiguous N x C x R x R uint8 tensor."""
        return self.nhwc(indices).permute(0, 3, 1, 2).contiguous()

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def __del__(self) -> None:
        self.close()


def _selection(parts: Sequence[Part]) -> tuple[int, int]:
    """(largest image side, total bytes) of what `parts` select, from the arrays' headers."""
    side, total = 0, 0
    for part in parts:
        path, rows, _ = _part_fields(part)
        array = np.load(path, mmap_mode="r")
        n = array.shape[0] if rows is None else rows.size
        side = max(side, *array.shape[1:3]) if array.ndim == 4 else side
        total += n * int(np.prod(array.shape[1:]))
        del array
    return side, total


def open_images(parts: Sequence[Part], in_memory: bool | None = None) -> ImageSet | StreamedImages:
    """The selected catalog rows as an in-memory `ImageSet` or as `StreamedImages`.

    `in_memory=None` decides by size: in memory when the images are at most
    `IN_MEMORY_MAX_SIDE` pixels a side and the selection at most `IN_MEMORY_MAX_BYTES`.
    """
    if in_memory is None:
        side, total = _selection(parts)
        in_memory = side <= IN_MEMORY_MAX_SIDE and total <= IN_MEMORY_MAX_BYTES
    return load_images(parts) if in_memory else StreamedImages(parts)


def _part_fields(part: Sequence[Any]) -> tuple[Path, np.ndarray | None, np.ndarray | None]:
    if len(part) not in (2, 3):
        raise ValueError(f"a part is (path, rows) or (path, rows, labels), got {len(part)} items")
    path = Path(part[0])
    rows = None if part[1] is None else np.asarray(part[1], dtype=np.int64)
    labels = None if len(part) == 2 or part[2] is None else np.asarray(part[2], dtype=np.int64)
    return path, rows, labels


def load_images(parts: Sequence[Part], channels_first: bool = True) -> ImageSet:
    """Copy the selected rows of each catalog array into one contiguous uint8 tensor.

    Each part is `(path, rows)` or `(path, rows, labels)`; `rows=None` takes every row. Arrays
    are memory-mapped and their rows read in ascending order (sequential I/O), then put back in
    the requested order. Labels must be given for all parts or none.
    """
    if not parts:
        raise ValueError("no data: the split has no parts")
    chunks: list[np.ndarray] = []
    label_chunks: list[np.ndarray] = []
    have_labels: set[bool] = set()
    shape: tuple[int, ...] | None = None
    for part in parts:
        path, rows, labels = _part_fields(part)
        array = np.load(path, mmap_mode="r")
        if array.ndim != 4 or array.dtype != np.uint8:
            raise ValueError(
                f"{path}: expected N x R x R x C uint8, got {array.dtype} {array.shape}"
            )
        if shape is None:
            shape = array.shape[1:]
        elif array.shape[1:] != shape:
            raise ValueError(f"{path}: image shape {array.shape[1:]} differs from {shape}")
        if rows is None:
            chunk = np.array(array)  # a copy: the memmap stays read-only on disk
        else:
            if rows.size and (rows.min() < 0 or rows.max() >= array.shape[0]):
                raise IndexError(f"{path}: row index out of range [0, {array.shape[0]})")
            order = np.argsort(rows, kind="stable")
            chunk = np.empty((rows.size, *array.shape[1:]), dtype=np.uint8)
            chunk[order] = array[rows[order]]
        chunks.append(chunk)
        have_labels.add(labels is not None)
        if labels is not None:
            if labels.shape[0] != chunk.shape[0]:
                raise ValueError(f"{path}: {labels.shape[0]} labels for {chunk.shape[0]} rows")
            label_chunks.append(labels)
    if len(have_labels) > 1:
        raise ValueError("labels must be given for every part or for none")
    nhwc = torch.from_numpy(np.concatenate(chunks) if len(chunks) > 1 else chunks[0])
    images = nhwc.permute(0, 3, 1, 2).contiguous() if channels_first else nhwc.contiguous()
    labels_t = torch.from_numpy(np.concatenate(label_chunks)) if label_chunks else None
    return ImageSet(images, labels_t)


def data_fingerprint(parts: Sequence[Part]) -> str:
    """Hash of what a split selects: array paths, their shapes and the row indices (+ labels).

    The curated arrays are immutable per catalog version (the version is in the path), so paths
    and rows identify the snapshot; shapes guard against a path being reused for other data.
    """
    h = hashlib.sha256()
    for part in parts:
        path, rows, labels = _part_fields(part)
        array = np.load(path, mmap_mode="r")
        h.update(str(path.resolve()).encode())
        h.update(json.dumps([list(array.shape), str(array.dtype)]).encode())
        h.update(b"all" if rows is None else rows.tobytes())
        h.update(b"-" if labels is None else labels.tobytes())
    return h.hexdigest()[:16]


class EpochSampler:
    """Seeded, resumable, rank-sharded batches of indices into an `ImageSet`.

    Epoch `e` uses `randperm(n)` drawn from a generator seeded with `(seed, e)`; rank `r` of
    `world_size` takes `perm[:m * world_size][r::world_size]` with `m = n // world_size`, in
    batches of `batch_size` (per rank), dropping the last incomplete one. `batches(epoch, start)`
    resumes at batch `start` of that epoch; `(epoch, position)` is all a checkpoint needs.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        if batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"bad sampler settings: batch {batch_size}, rank {rank}/{world_size}")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = shuffle
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{num_samples} samples are not enough for one batch of {batch_size} per rank "
                f"on {world_size} rank(s)"
            )

    @property
    def samples_per_rank(self) -> int:
        return self.num_samples // self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return self.samples_per_rank // self.batch_size

    def permutation(self, epoch: int) -> Tensor:
        """The global order of epoch `epoch` (identical on every rank)."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        gen = torch.Generator().manual_seed(stable_seed("epoch", self.seed, epoch))
        return torch.randperm(self.num_samples, generator=gen)

    def rank_indices(self, epoch: int) -> Tensor:
        """This rank's share of epoch `epoch`, batches_per_epoch * batch_size indices."""
        perm = self.permutation(epoch)[: self.samples_per_rank * self.world_size]
        mine = perm[self.rank :: self.world_size]
        return mine[: self.batches_per_epoch * self.batch_size]

    def batches(self, epoch: int, start: int = 0) -> Iterator[Tensor]:
        """Batches of epoch `epoch` from batch index `start` on."""
        if not 0 <= start <= self.batches_per_epoch:
            raise ValueError(f"start {start} outside [0, {self.batches_per_epoch}]")
        idx = self.rank_indices(epoch)
        for b in range(start, self.batches_per_epoch):
            yield idx[b * self.batch_size : (b + 1) * self.batch_size]


def fixed_subset(n: int, size: int, seed: int, salt: str = "subset") -> Tensor:
    """A fixed, seeded choice of `min(size, n)` indices out of `n`, sorted."""
    gen = torch.Generator().manual_seed(stable_seed(salt, seed))
    return torch.randperm(n, generator=gen)[: min(size, n)].sort().values


def synthetic_shapes(
    n: int, size: int = 32, seed: int = 0, num_classes: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (N x size x size x 3 uint8, the catalog layout) of one coloured shape on a
    coloured, noisy background, and the shape class as label (disc, square, horizontal bar,
    vertical bar, cross, ring for up to 6 classes). For tests and smoke runs: structured
    enough that SSL has something to learn, generated in milliseconds, no files needed."""
    if not 1 <= num_classes <= 6:
        raise ValueError("num_classes must be in 1..6")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy = rng.uniform(0.3, 0.7, n)[:, None, None] * size
    cx = rng.uniform(0.3, 0.7, n)[:, None, None] * size
    r = rng.uniform(0.15, 0.3, n)[:, None, None] * size
    dy, dx = np.abs(yy[None] - cy), np.abs(xx[None] - cx)
    dist = np.sqrt(dy**2 + dx**2)
    masks = np.stack(
        [
            dist <= r,
            (dy <= r) & (dx <= r),
            (dy <= r / 3) & (dx <= r),
            (dy <= r) & (dx <= r / 3),
            ((dy <= r / 3) & (dx <= r)) | ((dy <= r) & (dx <= r / 3)),
            (dist <= r) & (dist >= r / 2),
        ]
    )
    mask = masks[labels, np.arange(n)][..., None]
    background = rng.integers(0, 256, (n, 1, 1, 3)).astype(np.float32)
    foreground = rng.integers(0, 256, (n, 1, 1, 3)).astype(np.float32)
    noise = rng.normal(0.0, 12.0, (n, size, size, 3)).astype(np.float32)
    images = np.where(mask, foreground, background) + noise
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)
