"""The photo setting's data path: canonical photos without constant borders, and training
images read a batch at a time from the catalog files (memory flat in the number of images)."""

from __future__ import annotations

import numpy as np
import torch

from ssl_assets.data.canonical import CanonicalSpec, canonicalise
from ssl_assets.definitions import build_resources
from ssl_assets.ml.data import ImageSet, StreamedImages, load_images, open_images
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


def _catalog(tmp_path, n: int, size: int, seed: int = 0) -> list[list]:
    rng = np.random.default_rng(seed)
    parts = []
    for k, rows in enumerate((n // 2, n - n // 2)):
        path = tmp_path / f"part{k}.npy"
        np.save(path, rng.integers(0, 256, (rows, size, size, 3), dtype=np.uint8))
        parts.append([str(path), list(range(rows - 1, -1, -1))])  # rows in reverse order
    return parts


def test_streamed_batches_equal_the_in_memory_ones(tmp_path):
    parts = _catalog(tmp_path, 10, 96)
    memory, streamed = load_images(parts), StreamedImages(parts)
    assert len(streamed) == len(memory) == 10 and streamed.nbytes == memory.nbytes
    idx = torch.tensor([7, 0, 3, 3, 9, 5])
    assert torch.equal(streamed.batch(idx), memory.batch(idx))
    assert torch.equal(streamed.nhwc(idx), memory.nhwc(idx))
    streamed.close()


def test_photo_sized_catalogs_are_streamed_small_ones_copied(tmp_path):
    assert isinstance(open_images(_catalog(tmp_path, 4, 32)), ImageSet)
    assert isinstance(open_images(_catalog(tmp_path, 4, 256)), StreamedImages)
    assert isinstance(open_images(_catalog(tmp_path, 4, 256), in_memory=True), ImageSet)


def test_training_on_streamed_images_ends_with_the_same_weights_as_in_memory(tmp_path):
    from ssl_assets.ml.config import TrainConfig
    from ssl_assets.ml.train import train

    parts = _catalog(tmp_path, 16, 80)
    digests = []
    for in_memory in (True, False):
        cfg = TrainConfig(
            backbone="small_cnn",
            backbone_kwargs={"widths": [8, 16], "strides": [4, 2], "input_size": 64},
            objective={"hidden_dim": 16, "out_dim": 8},
            batch_size=8,
            max_steps=2,
            in_memory=in_memory,
            deterministic=True,
            num_threads=1,
            checkpoint_every=0,
        )
        result = train(cfg, parts, tmp_path / f"ckpt{in_memory}")
        assert result.completed and result.step == 2
        digests.append(result.model_sha256)
    assert digests[0] == digests[1]


def test_read_rows_returns_rows_in_the_asked_order_across_arrays(lake):
    import pandas as pd

    arrays = {}
    for name in ("a", "b"):
        path = lake.path("catalog", "v", f"{name}.npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays[name] = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3) + (
            100 if name == "b" else 0
        )
        np.save(path, arrays[name])
    names, rows = list("aabbab"), [3, 0, 4, 1, 2, 2]
    catalog = pd.DataFrame({"array_path": [f"catalog/v/{n}.npy" for n in names], "array_row": rows})
    expected = np.stack([arrays[n][r] for n, r in zip(names, rows, strict=True)])
    np.testing.assert_array_equal(lake.read_rows(catalog), expected)


def test_embeddings_read_the_catalog_a_batch_at_a_time(lake):
    import pandas as pd

    from ssl_assets.ml.backbones import build_backbone
    from ssl_assets.ml.evaluate.features import embed_images

    rng = np.random.default_rng(2)
    for name in ("a", "b"):
        path = lake.path("catalog", "r64-center_crop", f"{name}.npy")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8))
    catalog = pd.DataFrame(
        {
            "array_path": [f"catalog/r64-center_crop/{n}.npy" for n in "abab"] * 2,
            "array_row": [0, 4, 1, 3, 2, 2, 4, 0],
        }
    )
    rows = lake.row_batches(catalog)
    assert rows.shape == (8,)
    np.testing.assert_array_equal(rows[3:7], lake.read_rows(catalog)[3:7])
    backbone = build_backbone("small_cnn", widths=[8, 16], strides=[2, 2])
    whole = embed_images(backbone, lake.read_rows(catalog), batch_size=3)
    np.testing.assert_array_equal(embed_images(backbone, rows, batch_size=3), whole)
