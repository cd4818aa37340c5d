"""Decode an image once into the canonical form that every later stage reads.

Canonical = RGB uint8, square `resolution` x `resolution`, with the aspect ratio handled by an
explicit choice:

- `pad`: fit the longer side, pad the shorter one symmetrically with black (nothing is lost);
- `center_crop`: fit the shorter side and crop the centre (nothing is padded);
- `stretch`: resize both sides independently (aspect ratio is not kept).

EXIF orientation is applied first and alpha is dropped, so the same picture saved as PNG, BMP or
JPEG-with-metadata decodes to the same native pixels (what exact deduplication hashes).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

Aspect = Literal["pad", "center_crop", "stretch"]

#: Largest canonical resolution (and model input size) accepted, from config or from a model
#: directory's JSON. Why 1024: the catalogs here are 32-64 px and a photo profile would use
#: 256-px catalogs with 224-px crops, so 1024 leaves 4x headroom; yet it bounds what a
#: malformed or hostile model.json can ask for (30,000 px made predicting one image take 45 s
#: and 13.8 GB; at 1024 px one image is 3 MB of uint8, 12 MB as float32).
MAX_RESOLUTION = 1024


def check_resolution(value: object, what: str = "resolution") -> int:
    """`value` as a resolution in pixels, a whole number in 1..MAX_RESOLUTION; else ValueError."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number of pixels, got {value!r}")
    if not 1 <= value <= MAX_RESOLUTION:
        raise ValueError(f"{what} {value} is outside 1..{MAX_RESOLUTION} pixels")
    return value


@dataclass(frozen=True)
class CanonicalSpec:
    resolution: int = 32
    aspect: Aspect = "pad"

    def __post_init__(self) -> None:
        check_resolution(self.resolution, "canonical resolution")
        if self.aspect not in ASPECTS:
            raise ValueError(f"unknown aspect handling {self.aspect!r}; use one of {ASPECTS}")

    @property
    def version(self) -> str:
        """Arrays of different specs never mix: the version names the folder they live in."""
        return f"r{self.resolution}-{self.aspect}"

    @classmethod
    def from_version(cls, version: str) -> CanonicalSpec:
        """Inverse of `version`: "r32-pad" -> CanonicalSpec(32, "pad")."""
        resolution, _, aspect = version.partition("-")
        if not resolution.startswith("r") or not resolution[1:].isdigit() or aspect not in ASPECTS:
            raise ValueError(
                f"not a catalog version (r<resolution>-<{'|'.join(ASPECTS)}>): {version!r}"
            )
        return cls(resolution=int(resolution[1:]), aspect=aspect)  # type: ignore[arg-type]


ASPECTS: tuple[str, ...] = ("pad", "center_crop", "stretch")
_TO_RGB = frozenset({"1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})


def rgb_pixels(img: Image.Image) -> np.ndarray:
    """Native-resolution RGB pixels (H x W x 3 uint8) of an opened image, EXIF orientation applied.

    The one conversion every path uses (ingestion's validating decode, `decode_rgb`, inference),
    so that the same file always yields the same pixels. `img` is decoded and may be transposed
    in place.
    """
    ImageOps.exif_transpose(img, in_place=True)  # no copy when there is nothing to rotate
    if img.mode in _TO_RGB:
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def decode_rgb(data: bytes) -> np.ndarray:
    """Native-resolution RGB pixels (H x W x 3 uint8, writable), EXIF orientation applied."""
    with Image.open(io.BytesIO(data)) as img:
        return rgb_pixels(img).copy()


def canonicalise(rgb: np.ndarray, spec: CanonicalSpec) -> np.ndarray:
    """Resize native RGB pixels to the canonical square, handling aspect as `spec` says."""
    h, w = rgb.shape[:2]
    r = spec.resolution
    if h == w == r:
        return rgb
    img = Image.fromarray(rgb)
    if spec.aspect == "stretch" or h == w:
        return np.asarray(img.resize((r, r), Image.Resampling.BICUBIC, reducing_gap=3.0))
    if spec.aspect == "pad":
        scale = r / max(h, w)
    elif spec.aspect == "center_crop":
        scale = r / min(h, w)
    else:
        raise ValueError(f"unknown aspect handling {spec.aspect!r}")
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0))
    out = np.zeros((r, r, 3), dtype=np.uint8)
    if spec.aspect == "pad":
        top, left = (r - nh) // 2, (r - nw) // 2
        out[top : top + nh, left : left + nw] = resized
    else:
        top, left = (nh - r) // 2, (nw - r) // 2
        out[:] = resized[top : top + r, left : left + r]
    return out


def pixel_hash(rgb: np.ndarray) -> str:
    """SHA-256 hex digest of an H x W x 3 uint8 image's shape and decoded pixel bytes.

    Two files hash equal iff they decode to the same pixels at native resolution, whatever their
    format or metadata.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {rgb.shape} {rgb.dtype}")
    digest = hashlib.sha256(f"rgb8:{rgb.shape[0]}x{rgb.shape[1]}:".encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()
