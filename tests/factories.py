"""Tiny image files and batches made on the fly, and a snapshot of a tree to prove it unchanged."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from dagster import DagsterInstance
from PIL import Image

from resources.lake import READY_MARKER, LakeResource
from ssl_assets.partitions import batch_partitions


def random_image(size: tuple[int, int] = (16, 16), mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr)


def write_image(path: Path, fmt: str | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    random_image(**kwargs).save(path, format=fmt)
    return path


def make_batch(lake: LakeResource, batch: str, n: int = 4, ready: bool = True) -> Path:
    """A batch folder with `n` distinct small PNGs under images/."""
    batch_dir = lake.landing_dir / batch
    for i in range(n):
        write_image(
            batch_dir / "images" / f"img_{i:03d}.png",
            seed=int(hashlib.sha256(f"{batch}/{i}".encode()).hexdigest()[:8], 16),
        )
    if ready:
        (batch_dir / READY_MARKER).write_text("")
    return batch_dir


def tree_snapshot(root: Path) -> dict[str, tuple]:
    """Bytes hash (or link target) and mtime of every entry under `root`, links not followed."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                snap[str(p.relative_to(root))] = ("link", os.readlink(p), st.st_mtime_ns)
            elif p.is_file():
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                snap[str(p.relative_to(root))] = ("file", digest, st.st_mtime_ns)
    return snap


def add_partitions(instance: DagsterInstance, *batches: str) -> None:
    instance.add_dynamic_partitions(batch_partitions.name, list(batches))


def smooth_image(seed: int, size: int = 48) -> Image.Image:
    """A photo-like image: a smooth random colour field plus a random ellipse and bar.

    Distinct seeds give clearly distinct pictures; resizing, re-encoding or a small crop keeps
    its look (unlike white noise), as with real photos.
    """
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    from PIL import ImageDraw

    draw = ImageDraw.Draw(base)
    x0, y0 = rng.integers(0, size // 2, size=2)
    w, h = rng.integers(size // 4, size // 2, size=2)
    draw.ellipse((x0, y0, x0 + w, y0 + h), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    bx = int(rng.integers(0, size - 6))
    draw.rectangle((bx, 0, bx + 5, size - 1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return base


def resources_for(lake: LakeResource, store, profile: str = "tiny", **overrides) -> dict:
    """Every resource the assets use, for the tiny profile, on the test's lake and store."""
    from ssl_assets.definitions import build_resources

    resources = build_resources(lake.root, profile)
    resources.update(lake=lake, metadata=store, **overrides)
    return resources
