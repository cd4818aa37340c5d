"""One preprocessing path from canonical uint8 pixels to encoder input, and frozen features.

Why one function: evaluation (embeddings, probes, fine-tuning metrics) and serving
(`ssl_assets.inference`) must feed the network exactly the same tensors, or offline metrics
say nothing about deployed predictions. Both start from canonical images (RGB uint8,
N x R x R x 3, as `ssl_assets.data.canonical.canonicalise` makes them and the catalog stores
them) and go through `preprocess`, which follows the encoder's recorded `preprocessing` dict:
scale to [0, 1] (`value_range`), resize to `input_size` if R differs (bilinear, antialiased),
optional grayscale for 1-channel encoders, then `(x - mean) / std`. The training loop's
per-epoch monitor embeds its fixed subset with `embed_images` too, so the collapse and kNN
figures watched during training are computed exactly like the ones reported after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_assets.ml.augment import normalize, rgb_to_grayscale


def as_nchw_uint8(images: np.ndarray | Tensor) -> Tensor:
    """N x H x W x C uint8 (catalog layout, numpy or torch) -> N x C x H x W uint8 tensor."""
    t = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if t.dim() != 4 or t.dtype != torch.uint8:
        raise ValueError(f"expected N x H x W x C uint8 images, got {t.dtype} {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2)


def preprocess(
    images: np.ndarray | Tensor,
    preprocessing: Mapping[str, Any],
    device: torch.device | str | None = None,
) -> Tensor:
    """Images -> normalised float32 N x C x S x S encoder input, as `preprocessing` says.

    uint8 input (numpy or torch) is N x R x R x 3, the catalog layout, scaled by 1/255;
    floating input is an N x 3 x R x R tensor already in [0, 1] (an augmented batch). Then:
    resize to `input_size` if needed, grayscale for a 1-channel encoder, map [0, 1] to
    `value_range`, and `(x - mean) / std`.
    """
    if isinstance(images, Tensor) and images.is_floating_point():
        x = images if device is None else images.to(device)
    else:
        t = as_nchw_uint8(images)
        x = (t if device is None else t.to(device)).float().div_(255.0)  # uint8 moves cheaper
    size = int(preprocessing["input_size"])
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    channels = int(preprocessing.get("channels", 3))
    if channels == 1 and x.shape[1] == 3:
        x = rgb_to_grayscale(x)
    elif x.shape[1] != channels:
        raise ValueError(f"encoder expects {channels} channels, images have {x.shape[1]}")
    lo, hi = (float(v) for v in preprocessing.get("value_range", (0.0, 1.0)))
    if (lo, hi) != (0.0, 1.0):
        x = x * (hi - lo) + lo
    return normalize(x.contiguous(), preprocessing["mean"], preprocessing["std"])


def _device_of(module: nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _batches(n: int, batch_size: int) -> Iterable[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@torch.no_grad()
def map_batches(
    module: nn.Module,
    images: np.ndarray | Tensor,
    preprocessing: Mapping[str, Any],
    batch_size: int = 256,
) -> Tensor:
    """`module(preprocess(batch))` over `images` in batches, in eval mode, without gradients,
    concatenated on the CPU as float32. Every submodule's train/eval flag is restored
    afterwards, so evaluating mid-training leaves the training setup (frozen BatchNorm layers
    in eval mode included) exactly as it was."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    device = _device_of(module)
    outs: list[Tensor] = []
    try:
        for sl in _batches(int(images.shape[0]), batch_size):
            x = preprocess(images[sl], preprocessing, device)
            outs.append(module(x).float().cpu())
    finally:
        for m, training in modes:
            m.training = training
    if not outs:
        raise ValueError("no images")
    return torch.cat(outs)


def embed_images(
    backbone: nn.Module,
    images: np.ndarray | Tensor,
    preprocessing: Mapping[str, Any] | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Frozen-encoder features (N x out_dim float32 numpy) of canonical uint8 images.

    `preprocessing` defaults to the one the backbone carries (for a loaded encoder: the one
    recorded next to its weights). `images` may be a memory-mapped catalog array: it is read
    one batch at a time, so embedding a large catalog does not copy it into memory first.
    """
    prep = preprocessing if preprocessing is not None else backbone.preprocessing
    return map_batches(backbone, images, prep, batch_size).numpy()  # type: ignore[arg-type]


def encode_labels(values: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
    """Label values (strings or ints) -> `(int codes, class_names)`, names sorted as strings
    ("10" before "2"), so the same label set always gets the same codes (and a saved head's
    columns stay interpretable through `class_names`)."""
    names = sorted({str(v) for v in values})
    index = {name: i for i, name in enumerate(names)}
    return np.asarray([index[str(v)] for v in values], dtype=np.int64), names


def encoder_embedder(
    model_dir: Path, read_pixels: Callable[[pd.DataFrame], np.ndarray]
) -> tuple[Callable[[pd.DataFrame], np.ndarray], str]:
    """(embed(catalog rows) -> unit vectors from a trained encoder, the name recorded with what
    it decided): how curation's semantic tier pins a named encoder instead of the cheap pinned
    embedding. `read_pixels(rows)` reads the rows' canonical pixels."""
    from ssl_assets.ml.encoder_io import ENCODER_META, load_encoder

    if not (model_dir / ENCODER_META).is_file():
        raise ValueError(
            f"{model_dir.name!r} is neither 'pinned' nor an encoder in {model_dir.parent}"
        )
    backbone, meta = load_encoder(model_dir)

    def embed(rows: pd.DataFrame) -> np.ndarray:
        if rows.empty:
            return np.zeros((0, int(meta["out_dim"])), np.float32)
        features = embed_images(backbone, read_pixels(rows), meta["preprocessing"])
        return features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)

    return embed, f"encoder:{model_dir.name}:{meta.get('weights_sha256', '')[:12]}"


def semantic_embedder(
    name: str,
    read_rows: Callable[..., np.ndarray],
    model_dir: Callable[[str], Path],
) -> tuple[Callable[[pd.DataFrame], np.ndarray], str]:
    """Curation's semantic embedder by name: "pinned" (the cheap, versioned pinned embedding)
    or the id of a trained encoder whose directory is `model_dir(name)` (`encoder_embedder`).
    `read_rows(rows, suffix)` reads catalog arrays. Returns (embed, the name recorded with
    every decision it makes)."""
    from ssl_assets.curation.embedders import pinned_embedder

    if name == "pinned":
        return pinned_embedder(read_rows)
    return encoder_embedder(model_dir(name), read_rows)
