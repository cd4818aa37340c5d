"""The photo setting's data path: canonical photos without constant borders."""

from __future__ import annotations

import numpy as np

from ssl_assets.data.canonical import CanonicalSpec, canonicalise
from ssl_assets.definitions import build_resources
from tests.photo_factory import ASPECTS, photo, photo_size


def _constant_border_lines(img: np.ndarray) -> int:
    """How many of the four outermost rows/columns hold a single colour."""
    lines = [img[0], img[-1], img[:, 0], img[:, -1]]
    return sum(int((line == line[0]).all()) for line in lines)


def test_the_photo_profiles_canonical_photos_have_no_constant_border(tmp_path):
    spec = build_resources(str(tmp_path / "lake"), "photo")["image_spec"].spec
    assert (spec.resolution, spec.aspect) == (256, "center_crop")
    for seed in range(len(ASPECTS)):
        img, _ = photo(seed, *photo_size(seed))
        assert img.size[0] != img.size[1]
        out = canonicalise(np.asarray(img), spec)
        assert out.shape == (256, 256, 3)
        assert _constant_border_lines(out) == 0, (seed, img.size)
        # what the small-image profiles do (pad) is exactly what the photo setting avoids
        padded = canonicalise(np.asarray(img), CanonicalSpec(256, "pad"))
        assert _constant_border_lines(padded) == 2
