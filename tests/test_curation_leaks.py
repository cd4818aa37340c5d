"""The leak report: pinned test images that copy pinned train images are in `split_leaks` with
their training match, tier and scores, and each held-out split's leak rate is a gate."""

from __future__ import annotations

import io

import numpy as np
from dagster import AssetCheckSeverity, materialize
from PIL import Image

from resources.lake import READY_MARKER
from ssl_assets.assets.curation_assets import (
    curated_images,
    duplicates,
    image_catalog,
    quality_issues,
)
from ssl_assets.assets.ingest_assets import raw_images
from ssl_assets.data.manifest import image_id_for
from tests.factories import add_partitions, resources_for
from tests.test_curation_aligned import scene, shifted

CURATION = [duplicates, quality_issues, curated_images]


def _land(lake, batch: str, images: dict, split: str) -> None:
    batch_dir = lake.landing_dir / batch
    batch_dir.mkdir(parents=True)
    for rel, pixels in images.items():
        Image.fromarray(pixels).save(batch_dir / rel)
    rows = "\n".join(f"{rel},{split}" for rel in images)
    (batch_dir / "metadata.csv").write_text(f"path,split\n{rows}\n")
    (batch_dir / READY_MARKER).write_text("")


def _jpeg(pixels: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _curate(lake, store, instance, **config):
    run_config = {"ops": {"curated_images": {"config": config}}} if config else None
    return materialize(
        CURATION,
        instance=instance,
        resources=resources_for(lake, store),
        run_config=run_config,
        raise_on_error=False,
    )


def _setup(lake, store, instance) -> None:
    train = {f"train_{s:02d}.png": scene(s, s) for s in range(12)}
    test = {"leak_shifted.png": shifted(scene(3, 3)), "leak_jpeg.png": _jpeg(scene(7, 7))}
    test |= {f"fresh_{s:02d}.png": scene(s, s) for s in range(40, 62)}
    _land(lake, "train", train, "train")
    _land(lake, "test", test, "test")
    for batch in ("train", "test"):
        add_partitions(instance, batch)
        result = materialize(
            [raw_images, image_catalog],
            partition_key=batch,
            instance=instance,
            resources=resources_for(lake, store),
        )
        assert result.success


def test_leaks_are_reported_with_their_match_tier_and_scores(lake, store, instance):
    _setup(lake, store, instance)
    result = _curate(lake, store, instance)
    assert result.success
    leaks = store.split_leaks().set_index("held_out_id")
    expected = {
        image_id_for("test", "leak_shifted.png"): image_id_for("train", "train_03.png"),
        image_id_for("test", "leak_jpeg.png"): image_id_for("train", "train_07.png"),
    }
    assert set(leaks.index) == set(expected)
    for held_out, train in expected.items():
        row = leaks.loc[held_out]
        assert row["train_id"] == train and row["held_out_split"] == "test"
        assert not row["held_out_included"] and row["train_included"]
        assert row["pixel_ncc"] > 0.85 and row["cosine"] > 0.5
    assert leaks.loc[image_id_for("test", "leak_shifted.png"), "tier"] == "aligned"

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["leak_rate_test"].passed and checks["leak_rate_val"].passed
    assert "2 of 24 test images" in checks["leak_rate_test"].description
    gate = store.query("SELECT details FROM gate_results WHERE check_name = 'leak_rate_test'")[
        "details"
    ].iloc[0]
    assert '"value": 0.0833' in gate and '"leaked": 2' in gate
    metrics = store.query(
        "SELECT metric, value FROM stage_metrics WHERE asset = 'curated_images' "
        "AND metric LIKE 'leak%'"
    )
    assert dict(metrics.itertuples(index=False))["leak_rate_test"] == 2 / 24
    shown = result.asset_materializations_for_node("curated_images")[0].metadata
    assert "data:image/png;base64" in shown["split_leaks"].value


def test_the_leak_gates_fail_on_a_high_rate_or_an_included_leak(lake, store, instance):
    _setup(lake, store, instance)
    strict = _curate(lake, store, instance, max_leak_rate=0.05)
    checks = {e.check_name: e for e in strict.get_asset_check_evaluations()}
    assert not checks["leak_rate_test"].passed
    assert "8.33% of test duplicates training images" in checks["leak_rate_test"].description
    assert checks["leak_rate_test"].severity == AssetCheckSeverity.WARN  # a rate only warns
    assert strict.success

    leak = image_id_for("test", "leak_jpeg.png")
    lake.path("overrides.csv").write_text(f"image_id,action,who,why\n{leak},include,ana,test\n")
    forced = _curate(lake, store, instance)
    checks = {e.check_name: e for e in forced.get_asset_check_evaluations()}
    assert not checks["leak_rate_test"].passed
    assert "1 test images are still included" in checks["leak_rate_test"].description
    assert checks["leak_rate_test"].severity == AssetCheckSeverity.ERROR  # an included leak blocks
    rows = store.split_leaks()
    included = rows[rows["held_out_included"]]["held_out_id"].tolist()
    assert included == [leak]
