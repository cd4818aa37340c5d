"""Quality scores and flags on real images: each issue is caught, clean images are not flagged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from sklearn.datasets import load_digits

from ssl_assets.curation.decisions import allowed_reasons
from ssl_assets.curation.image_issues import (
    ISSUES,
    REGISTRY,
    PixelChunk,
    PixelIssue,
    default_excluding,
    default_thresholds,
    geometry_scores,
    quality_flags,
    quality_scores,
    register,
    unregister,
)


def smooth_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    low = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = (int(v) for v in rng.integers(0, size - 8, 2))
        w, h = (int(v) for v in rng.integers(4, 24, 2))
        draw.rectangle(
            [x0, y0, x0 + w, y0 + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3))
        )
    return np.asarray(img)


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.stack([smooth_image(rng) for _ in range(30)])


def square_sizes(n: int, side: int = 64) -> np.ndarray:
    return np.tile([side, side], (n, 1))


def flags_for(images: np.ndarray, sizes: np.ndarray | None = None) -> tuple:
    sizes = square_sizes(len(images)) if sizes is None else sizes
    scores = quality_scores(images, sizes)
    return scores, quality_flags(scores)


def test_clean_images_raise_no_flag_and_scores_are_bounded(clean):
    scores, flags = flags_for(clean)
    assert len(scores) == len(clean) and list(flags.columns) == [f"is_{k}" for k in ISSUES]
    assert not flags.to_numpy().any()
    score_columns = [c for c in scores.columns if c.endswith("_score")]
    assert ((scores[score_columns] >= 0) & (scores[score_columns] <= 1)).all().all()


def test_each_pixel_issue_is_flagged(clean):
    base = clean[:4]
    dark = (base * 0.15).astype(np.uint8)
    light = (255 - (255 - base.astype(np.int16)) * 0.03).astype(np.uint8)
    blurred = np.stack(
        [np.asarray(Image.fromarray(x).filter(ImageFilter.GaussianBlur(3))) for x in base]
    )
    constant = np.full_like(base, 90)
    luma = (base @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    gray = np.repeat(luma[..., None], 3, axis=3)
    batch = np.concatenate([clean, dark, light, blurred, constant, gray])
    _, flags = flags_for(batch)
    rows = {
        name: slice(30 + 4 * k, 34 + 4 * k)
        for k, name in enumerate(["dark", "light", "blurry", "low_information", "grayscale"])
    }
    for issue, part in rows.items():
        assert flags[f"is_{issue}"].iloc[part].all(), issue
    assert not flags.iloc[:30].to_numpy().any()
    # Flat images count as low information, not as blurry (cleanvision's contrast term).
    assert not flags["is_blurry"].iloc[rows["low_information"]].any()
    assert not flags["is_dark"].iloc[rows["light"]].any()
    assert not flags["is_light"].iloc[rows["dark"]].any()


def test_grayscale_digits_upscaled_are_flagged_grayscale():
    digits = load_digits().images[:10]
    up = [
        np.asarray(Image.fromarray((d * 255 / 16).astype(np.uint8)).resize((32, 32)))
        for d in digits
    ]
    rgb = np.stack([np.repeat(x[..., None], 3, axis=2) for x in up])
    _, flags = flags_for(rgb, square_sizes(10, 8))
    assert flags["is_grayscale"].all()


def test_odd_size_and_aspect_ratio_are_relative_to_the_dataset(clean):
    sizes = square_sizes(len(clean), 256)
    sizes[0] = (24, 24)  # tiny original
    sizes[1] = (2000, 2000)  # huge original
    sizes[2] = (200, 800)  # 4:1 panorama
    _, flags = flags_for(clean, sizes)
    assert flags.index[flags["is_odd_size"]].tolist() == [0, 1]
    assert flags.index[flags["is_odd_aspect_ratio"]].tolist() == [2]
    # Judged against an existing dataset of panoramas, a panorama is normal and a square is odd.
    reference = np.tile([200, 800], (50, 1))
    geometry = geometry_scores(np.array([[200, 800], [256, 256]]), reference)
    assert geometry["odd_aspect_ratio_score"].tolist() == pytest.approx([1.0, 0.25])
    scores = quality_scores(clean[:2], np.array([[200, 800], [256, 256]]))
    flagged = quality_flags(scores, reference_sizes=reference)["is_odd_aspect_ratio"]
    assert flagged.tolist() == [False, True]


def test_thresholds_are_frozen_and_configurable(clean):
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGISTRY["dark"].threshold = 0.5  # type: ignore[misc]
    with pytest.raises(TypeError):
        REGISTRY["dark"] = REGISTRY["light"]  # type: ignore[index]
    thresholds = default_thresholds()
    thresholds["dark"] = 0.99  # a copy: the registry's default does not move
    assert default_thresholds()["dark"] == REGISTRY["dark"].threshold < 0.99
    scores = quality_scores(clean, square_sizes(len(clean)))
    flags = quality_flags(scores, {**thresholds, "dark": 1.01, "blurry": 0.0})
    assert flags["is_dark"].all() and not flags["is_blurry"].any()
    # A partial mapping overrides only the issues it names; an unknown name is refused.
    assert (
        quality_flags(scores, {"dark": 1.01})
        .drop(columns="is_dark")
        .equals(quality_flags(scores).drop(columns="is_dark"))
    )
    with pytest.raises(ValueError, match="unknown issues"):
        quality_flags(scores, {"darkk": 0.5})


def test_inputs_are_validated(clean):
    with pytest.raises(ValueError):
        quality_scores(clean, square_sizes(3))
    with pytest.raises(ValueError):
        quality_scores(clean.astype(np.float32), square_sizes(len(clean)))


def test_defaults_are_cleanvision_issue_set_and_thresholds():
    assert list(ISSUES) == [
        "dark",
        "light",
        "blurry",
        "low_information",
        "grayscale",
        "odd_size",
        "odd_aspect_ratio",
    ]
    assert default_thresholds() == {
        "dark": 0.37,
        "light": 0.05,
        "blurry": 0.29,
        "low_information": 0.3,
        "grayscale": 0.02,
        "odd_size": 0.2,
        "odd_aspect_ratio": 0.35,
    }
    assert default_excluding() == ["dark", "light", "blurry", "low_information"]
    assert all(REGISTRY[name].description for name in ISSUES)


def _saturation_score(chunk: PixelChunk) -> np.ndarray:
    """1 - mean HSV saturation (max - min) / max: low when colours are garish everywhere."""
    x = chunk.rgb.reshape(len(chunk), -1, 3)
    top = x.max(axis=2).astype(np.float32)
    spread = top - x.min(axis=2)
    saturation = np.divide(spread, top, out=np.zeros_like(top), where=top > 0)
    return 1 - saturation.mean(axis=1)


@pytest.fixture
def saturated():
    """An extra issue type in the global registry, removed again after the test."""
    issue = register(
        PixelIssue(
            name="saturated",
            description="Oversaturated: garish colours almost everywhere.",
            threshold=0.1,
            excludes=True,
            score=_saturation_score,
        )
    )
    try:
        yield issue
    finally:
        unregister("saturated")
    assert "saturated" not in ISSUES


def test_a_new_issue_type_is_one_registered_object(clean, saturated):
    # Vivid pixels: one channel full, one empty, the third random -> HSV saturation 1 everywhere.
    rng = np.random.default_rng(3)
    vivid = np.zeros((4, 64, 64, 3), np.uint8)
    channels = rng.permuted(np.tile([0, 1, 2], (4, 64, 64, 1)), axis=3)
    values = np.stack(
        [np.full((4, 64, 64), 255), np.zeros((4, 64, 64)), rng.integers(0, 256, (4, 64, 64))],
        axis=3,
    ).astype(np.uint8)
    np.put_along_axis(vivid, channels, values, axis=3)
    batch = np.concatenate([clean, vivid])
    scores = quality_scores(batch, square_sizes(len(batch)))
    assert list(ISSUES)[-1] == "saturated"
    assert "saturated_score" in scores.columns
    flags = quality_flags(scores)
    assert list(flags.columns) == [f"is_{k}" for k in ISSUES]
    assert flags.index[flags["is_saturated"]].tolist() == list(range(len(clean), len(batch)))
    # Its threshold is configurable like the others, and it excludes by default.
    assert not quality_flags(scores, {"saturated": 0.0})["is_saturated"].any()
    assert default_thresholds()["saturated"] == saturated.threshold
    assert "saturated" in default_excluding()
    # Curation accepts it as a reason to exclude an image.
    assert allowed_reasons()[-1] == "saturated"
    # The built-in scores are untouched by the extra issue.
    without = scores.drop(columns="saturated_score")
    unregister("saturated")
    try:
        assert without.equals(quality_scores(batch, square_sizes(len(batch))))
    finally:
        register(saturated)


def test_register_refuses_duplicates_and_bad_names():
    with pytest.raises(ValueError, match="already registered"):
        register(REGISTRY["dark"])
    bad = PixelIssue(
        name="Bad Name", description="-", threshold=0.5, excludes=False, score=_saturation_score
    )
    with pytest.raises(ValueError, match="snake_case"):
        register(bad)
    assert "Bad Name" not in ISSUES


def test_a_registered_issue_reaches_the_quality_issues_asset(lake, store, instance, saturated):
    """End to end: with the one extra object registered, cataloging scores it, quality_issues
    flags it with its own threshold and default action, and curation excludes for it."""
    from dagster import materialize
    from PIL import Image

    from resources.lake import READY_MARKER
    from ssl_assets.assets.curation_assets import (
        curated_images,
        duplicates,
        image_catalog,
        quality_issues,
    )
    from ssl_assets.assets.ingest_assets import raw_images
    from tests.factories import add_partitions, resources_for, smooth_image

    batch_dir = lake.landing_dir / "b1"
    batch_dir.mkdir(parents=True)
    for s in range(6):
        smooth_image(s).save(batch_dir / f"plain_{s}.png")
    rng = np.random.default_rng(5)
    for k in range(2):  # one channel full, one empty: saturation 1 everywhere
        vivid = np.zeros((48, 48, 3), np.uint8)
        vivid[..., k] = 255
        vivid[..., 2] = rng.integers(0, 256, (48, 48))
        Image.fromarray(vivid).save(batch_dir / f"vivid_{k}.png")
    (batch_dir / READY_MARKER).write_text("")
    add_partitions(instance, "b1")
    resources = resources_for(lake, store)
    assert materialize(
        [raw_images, image_catalog], partition_key="b1", instance=instance, resources=resources
    ).success
    assert materialize(
        [duplicates, quality_issues, curated_images], instance=instance, resources=resources
    ).success
    flagged = store.query(
        "SELECT i.rel_path, q.excludes, q.threshold FROM quality_issues q "
        "JOIN images i USING (image_id) WHERE q.issue = 'saturated' ORDER BY 1"
    )
    assert flagged["rel_path"].tolist() == ["vivid_0.png", "vivid_1.png"]
    assert flagged["excludes"].all() and (flagged["threshold"] == saturated.threshold).all()
    reasons = store.query(
        "SELECT i.rel_path, c.reasons FROM curated_images c JOIN images i USING (image_id)"
    ).set_index("rel_path")["reasons"]
    assert "saturated" in reasons["vivid_0.png"] and "saturated" not in reasons["plain_0.png"]
