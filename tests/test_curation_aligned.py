"""The aligned tier on made scenes: moved, cropped and re-toned copies are found, different
pictures with the same layout (two different cars on one background) are not merged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from dagster import materialize
from PIL import Image, ImageDraw, ImageEnhance

from resources.curation_settings import CURATION_FILE
from resources.lake import READY_MARKER
from ssl_assets.assets.curation_assets import (
    curated_images,
    duplicates,
    image_catalog,
    quality_issues,
)
from ssl_assets.assets.ingest_assets import raw_images
from ssl_assets.curation.aligned import AlignSettings, aligned_scores, verified
from ssl_assets.curation.dedup import DedupConfig, find_edges
from ssl_assets.curation.hashing import phash64
from ssl_assets.curation.semantic import pinned_embed
from ssl_assets.data.canonical import pixel_hash
from ssl_assets.data.manifest import image_id_for
from tests.factories import add_partitions, resources_for

SIZE = 32


def background(seed: int) -> tuple[np.ndarray, int]:
    """A textured sky over darker ground: a smooth colour field plus mid-frequency texture."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(60, 256, (3, 3, 3), dtype=np.uint8))
    arr = np.asarray(field.resize((SIZE, SIZE), Image.Resampling.BICUBIC)).astype(np.float32)
    noise = Image.fromarray(rng.integers(0, 256, (SIZE // 3, SIZE // 3), dtype=np.uint8))
    texture = np.asarray(noise.resize((SIZE, SIZE), Image.Resampling.BILINEAR), np.float32)
    arr += (texture[..., None] - 128) * 0.35
    horizon = int(rng.integers(SIZE * 5 // 8, SIZE * 3 // 4))
    arr[horizon:] *= 0.55
    return np.clip(arr, 0, 255).astype(np.uint8), horizon


def scene(background_seed: int, car_seed: int) -> np.ndarray:
    """A toy car (body, cabin, two wheels) standing on the horizon of a background."""
    pixels, horizon = background(background_seed)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng(10_000 + car_seed)

    def colour() -> tuple[int, ...]:
        return tuple(int(c) for c in rng.integers(0, 256, 3))

    width = int(rng.integers(SIZE * 4 // 10, SIZE * 6 // 10))
    x0 = int(rng.integers(2, SIZE - width - 2))
    height = int(rng.integers(SIZE // 6, SIZE // 4))
    y1 = horizon + 2
    y0 = y1 - height
    draw.rectangle((x0, y0, x0 + width, y1), fill=colour())
    cabin = int(rng.integers(width // 3, width * 2 // 3))
    cx = x0 + int(rng.integers(0, width - cabin + 1))
    top = y0 - height * 2 // 3
    draw.polygon([(cx, y0), (cx + cabin, y0), (cx + cabin - 2, top), (cx + 2, top)], fill=colour())
    r = max(2, height // 2)
    for wx in (x0 + r + 1, x0 + width - r - 1):
        draw.ellipse((wx - r, y1 - r, wx + r, y1 + r), fill=(20, 20, 20))
    return np.asarray(img)


def shifted(x: np.ndarray, dy: int = 2, dx: int = -2) -> np.ndarray:
    padded = np.pad(x, ((2, 2), (2, 2), (0, 0)), mode="edge")
    return padded[2 - dy : 2 - dy + SIZE, 2 - dx : 2 - dx + SIZE]


def cropped(x: np.ndarray, fraction: float = 0.1, corner: bool = True) -> np.ndarray:
    k = round(SIZE * fraction)
    at = 0 if corner else k // 2
    part = Image.fromarray(x[at : at + SIZE - k, at : at + SIZE - k])
    return np.asarray(part.resize((SIZE, SIZE), Image.Resampling.BICUBIC))


def contrasted(x: np.ndarray, factor: float = 1.5) -> np.ndarray:
    return np.asarray(ImageEnhance.Contrast(Image.fromarray(x)).enhance(factor))


def toned(x: np.ndarray, gamma: float = 0.6) -> np.ndarray:
    return np.round(255 * (x / 255.0) ** gamma).astype(np.uint8)


COPIES = {
    "shifted_2px": shifted,
    "cropped_10pc": cropped,
    "cropped_10pc_centre": lambda x: cropped(x, corner=False),
    "contrast": contrasted,
    "tone": toned,
}


@pytest.mark.parametrize("kind", list(COPIES))
def test_moved_cropped_and_retoned_copies_verify(kind):
    originals = np.stack([scene(s, s) for s in range(8)])
    copies = np.stack([COPIES[kind](x) for x in originals])
    assert verified(aligned_scores(originals, copies)).all()
    assert not verified(aligned_scores(originals, copies[::-1])).any()  # other scenes


def test_same_layout_different_car_is_not_a_copy_though_its_pixels_correlate():
    first = np.stack([scene(s, s) for s in range(8)])
    second = np.stack([scene(s, s + 100) for s in range(8)])  # same backgrounds, other cars
    scores = aligned_scores(first, second)
    assert not verified(scores).any()
    # what the gradient check is for: the shared background alone correlates this well
    assert scores["pixel_ncc"].max() >= AlignSettings().min_ncc
    assert scores["pixel_gradient"].max() < AlignSettings().min_gradient


def test_mirrored_copies_are_copies_only_when_the_setting_says_so():
    originals = np.stack([scene(s, s) for s in range(6)])
    mirrored = originals[:, :, ::-1]
    assert not verified(aligned_scores(originals, mirrored)).any()
    setting = AlignSettings(mirror=True)
    assert verified(aligned_scores(originals, mirrored, setting), setting).all()


def _frame(images: np.ndarray, side: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(len(images))],
            "pixel_hash": [pixel_hash(x) for x in images],
            "phash": phash64(images),
            "orig_width": side,
            "orig_height": side,
        }
    )


def test_images_too_small_natively_are_never_aligned():
    originals = [scene(s, s) for s in range(6)]
    images = np.stack(originals + [shifted(x) for x in originals])
    emb = pinned_embed(images)
    old = _frame(images[:0], SIZE)

    def edges(side: int) -> pd.DataFrame:
        return find_edges(
            _frame(images, side),
            emb,
            old,
            emb[:0],
            DedupConfig(),
            read_pixels=lambda rows: images[rows.index.to_numpy()],
        )

    found = edges(SIZE)
    aligned = found[found["tier"] == "aligned"]
    # every copy the embedding proposes (cosine >= aligned_min_similarity) is verified, and
    # nothing else is: the shift moves some embeddings too far to be proposed at all
    proposed = {
        (k, k + 6) for k in range(6) if emb[k] @ emb[k + 6] >= DedupConfig().aligned_min_similarity
    }
    assert len(proposed) >= 4
    assert set(zip(aligned["left"], aligned["right"], strict=True)) == proposed
    assert aligned["pixel_gradient"].ge(DedupConfig().aligned_min_gradient).all()
    assert "aligned" not in set(edges(8)["tier"])  # 8x8 originals upscaled: not judged


def _land(lake, batch: str, images: dict[str, np.ndarray]) -> None:
    batch_dir = lake.landing_dir / batch
    for rel, pixels in images.items():
        (batch_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(batch_dir / rel)
    (batch_dir / READY_MARKER).write_text("")


def _curate_scenes(lake, store, instance) -> dict[str, pd.Series]:
    images = {f"a_scene_{s}.png": scene(s, s) for s in range(10)}
    images |= {f"b_{kind}.png": f(scene(k, k)) for k, (kind, f) in enumerate(COPIES.items())}
    images |= {f"c_other_car_{s}.png": scene(s, s + 100) for s in range(5, 10)}
    _land(lake, "scenes", images)
    add_partitions(instance, "scenes")
    resources = resources_for(lake, store)
    ingest = [raw_images, image_catalog]
    assert materialize(
        ingest, partition_key="scenes", instance=instance, resources=resources
    ).success
    curation = [duplicates, quality_issues, curated_images]
    assert materialize(curation, instance=instance, resources=resources).success
    rows = store.query(
        "SELECT i.rel_path, c.*, d.tier, d.settings FROM curated_images c "
        "JOIN images i USING (image_id) JOIN duplicates d USING (image_id)"
    )
    return {r.rel_path: r for _, r in rows.iterrows()}


def test_curation_finds_the_copies_and_keeps_the_look_alikes(lake, store, instance):
    rows = _curate_scenes(lake, store, instance)
    for k, kind in enumerate(COPIES):
        copy = rows[f"b_{kind}.png"]
        assert not copy["include"], kind
        assert copy["group_id"] == image_id_for("scenes", f"a_scene_{k}.png"), kind
    assert rows["b_shifted_2px.png"]["tier"] == "aligned"  # no hash or embedding tier finds it
    for s in range(5, 10):  # a different car on the same background: kept, a group of its own
        twin = rows[f"c_other_car_{s}.png"]
        assert twin["include"] and twin["group_id"] == twin["image_id"]
    settings = json.loads(rows["b_shifted_2px.png"]["settings"])
    assert settings["source"] == "defaults" and settings["aligned_min_gradient"] == 0.88
    pairs = store.query("SELECT * FROM duplicate_pairs WHERE tier = 'aligned'")
    assert len(pairs) and pairs["pixel_ncc"].notna().all() and pairs["settings"].notna().all()


def test_the_lake_settings_file_decides_and_is_recorded(lake, store, instance):
    lake.path(CURATION_FILE).write_text(json.dumps({"aligned": False}))
    rows = _curate_scenes(lake, store, instance)
    shifted_copy = rows["b_shifted_2px.png"]
    assert shifted_copy["include"] and shifted_copy["group_id"] == shifted_copy["image_id"]
    settings = json.loads(shifted_copy["settings"])
    assert settings["aligned"] is False and settings["source"] == CURATION_FILE
