"""Curation end to end on a temporary lake: catalog, three dedup tiers, splits, overrides, gates."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from dagster import materialize
from PIL import Image, ImageEnhance

from resources.lake import READY_MARKER
from ssl_assets.assets.curation_assets import (
    curated_images,
    duplicates,
    image_catalog,
    quality_issues,
)
from ssl_assets.assets.ingest_assets import raw_images
from ssl_assets.data.catalog import BatchCatalog, save_staged_catalog, take_staged_catalog
from ssl_assets.data.manifest import image_id_for
from tests.factories import add_partitions, resources_for, smooth_image, tree_snapshot

CURATION = [duplicates, quality_issues, curated_images]


def _save(img: Image.Image, path, fmt: str = "PNG", **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **kwargs)


def _land(lake, batch: str, images: dict[str, Image.Image], pins: dict[str, str] | None = None):
    batch_dir = lake.landing_dir / batch
    for rel, img in images.items():
        fmt = {"bmp": "BMP", "jpg": "JPEG"}.get(rel.rsplit(".", 1)[-1], "PNG")
        _save(img, batch_dir / rel, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    if pins:
        rows = "\n".join(f"{rel},{split}" for rel, split in pins.items())
        (batch_dir / "metadata.csv").write_text(f"path,split\n{rows}\n")
    (batch_dir / READY_MARKER).write_text("")


def _ingest(lake, store, instance, batch: str, **kwargs):
    add_partitions(instance, batch)
    return materialize(
        [raw_images, image_catalog],
        partition_key=batch,
        instance=instance,
        resources=resources_for(lake, store),
        **kwargs,
    )


def _curate(lake, store, instance, **kwargs):
    return materialize(CURATION, instance=instance, resources=resources_for(lake, store), **kwargs)


def _rows(store, batch: str) -> dict:
    df = store.query("SELECT * FROM curated_images WHERE batch = ?", [batch])
    paths = store.query("SELECT image_id, rel_path FROM images WHERE batch = ?", [batch])
    df = df.merge(paths, on="image_id")
    return {r.rel_path: r for r in df.itertuples()}


def _originals(seeds) -> dict[str, Image.Image]:
    return {f"a_originals/{s:02d}.png": smooth_image(s) for s in seeds}


def _rotated_jpeg(seed: int) -> bytes:
    """A JPEG whose EXIF says "rotate 90° clockwise to display" (orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    smooth_image(seed).crop((0, 0, 48, 40)).save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


def _decode_metric(store, batch: str) -> float:
    rows = store.query(
        "SELECT value FROM stage_metrics WHERE asset = 'image_catalog' AND partition = ? "
        "AND metric = 'decoded_at_ingest' ORDER BY recorded_at DESC LIMIT 1",
        [batch],
    )
    return float(rows["value"].iloc[0])


def test_catalog_decodes_once_into_memory_mapped_arrays(lake, store, instance):
    _land(lake, "cat", {**_originals(range(3)), "gray.png": smooth_image(9).convert("L")})
    (lake.landing_dir / "cat" / "rotated.jpg").write_bytes(_rotated_jpeg(7))
    assert _ingest(lake, store, instance, "cat").success
    # Ingestion's validating decode was the only one: image_catalog took its staged arrays over.
    assert _decode_metric(store, "cat") == 1.0
    assert not list((lake.root_path / "staging").rglob("*.npy"))
    catalog = store.query("SELECT * FROM image_catalog ORDER BY array_row")
    assert len(catalog) == 5 and catalog["version"].unique().tolist() == ["r32-pad"]
    array = np.load(lake.path(catalog["array_path"].iloc[0]), mmap_mode="r")
    assert (
        isinstance(array, np.memmap) and array.shape == (5, 32, 32, 3) and array.dtype == np.uint8
    )
    gray = catalog[catalog["image_id"] == image_id_for("cat", "gray.png")].iloc[0]
    pixels = array[gray["array_row"]]
    assert (pixels[..., 0] == pixels[..., 1]).all()  # grayscale became RGB, channels equal
    assert (gray["orig_width"], gray["orig_height"]) == (48, 48)
    rotated = catalog[catalog["image_id"] == image_id_for("cat", "rotated.jpg")].iloc[0]
    assert (rotated["orig_width"], rotated["orig_height"]) == (40, 48)  # EXIF applied

    # Without a staged catalog, image_catalog decodes the files itself, to the same bytes.
    staged_pixels = np.array(array)
    result = materialize(
        [image_catalog],
        partition_key="cat",
        instance=instance,
        resources=resources_for(lake, store),
    )
    assert result.success and _decode_metric(store, "cat") == 0.0
    again = store.query("SELECT * FROM image_catalog ORDER BY array_row")
    columns = ["image_id", "array_row", "pixel_hash", "phash", "dhash", "orig_width", "orig_height"]
    assert again[columns].equals(catalog[columns])
    assert np.array_equal(np.load(lake.path(again["array_path"].iloc[0])), staged_pixels)


def test_a_staged_catalog_is_only_used_for_the_rows_it_was_decoded_from(tmp_path):
    ok_rows = pd.DataFrame({"image_id": ["a", "b"], "content_hash": ["h1", "h2"]})
    catalog = BatchCatalog(
        arrays=np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3),
        index=pd.DataFrame(
            {
                "image_id": ["a", "b"],
                "array_row": [0, 1],
                "pixel_hash": ["p1", "p2"],
                "orig_width": [4, 4],
                "orig_height": [4, 4],
            }
        ),
        failures=pd.DataFrame(columns=["image_id", "reason", "detail"]),
    )
    staged = tmp_path / "staging" / "b.npy"
    save_staged_catalog(catalog, ["h1", "h2"], staged)
    stale = ok_rows.assign(content_hash=["h1", "changed"])
    assert take_staged_catalog(staged, stale, tmp_path / "catalog" / "b.npy") is None
    assert take_staged_catalog(staged, ok_rows.head(1), tmp_path / "catalog" / "b.npy") is None
    assert staged.is_file()  # left alone
    taken = take_staged_catalog(staged, ok_rows, tmp_path / "catalog" / "b.npy")
    assert taken is not None and np.array_equal(taken.arrays, catalog.arrays)
    assert taken.index.equals(catalog.index) and not staged.exists()


def test_a_catalog_rebuild_never_opens_a_file_swapped_for_a_fifo_or_a_bigger_file(tmp_path):
    """Another catalog version decodes the landed files again: a file replaced by a FIFO after
    ingestion must not hang it, a grown one must not be read whole."""
    import hashlib
    import os

    from ssl_assets.data.canonical import CanonicalSpec
    from ssl_assets.data.catalog import build_batch_catalog

    batch_dir = tmp_path / "b"
    rows = []
    for name in ("keep.png", "fifo.png", "grown.png"):
        _save(smooth_image(len(rows) + 1), batch_dir / name)
        data = (batch_dir / name).read_bytes()
        rows.append((name, name, hashlib.sha256(data).hexdigest(), len(data)))
    ok_rows = pd.DataFrame(rows, columns=["image_id", "rel_path", "content_hash", "bytes"])
    (batch_dir / "fifo.png").unlink()
    os.mkfifo(batch_dir / "fifo.png")
    with (batch_dir / "grown.png").open("ab") as fh:
        fh.write(b"\0" * 1000)
    catalog = build_batch_catalog(batch_dir, ok_rows, CanonicalSpec(16, "pad"))
    assert catalog.index["image_id"].tolist() == ["keep.png"]
    failures = dict(zip(catalog.failures["image_id"], catalog.failures["reason"], strict=True))
    assert failures == {"fifo.png": "not_a_regular_file", "grown.png": "changed_since_ingest"}


def test_tiers_catch_copies_and_keep_distinct_images(lake, store, instance):
    base = {s: smooth_image(s) for s in range(1, 9)}
    copies = {
        "b_copies/same_pixels.bmp": base[1],  # other bytes, identical decoded pixels
        "b_copies/reencoded.jpg": base[2],
        "b_copies/resized.png": base[3].resize((40, 40), Image.Resampling.BICUBIC),
        "b_copies/cropped.png": base[4].crop((1, 1, 47, 47)).resize((48, 48)),
        "b_copies/brighter.png": ImageEnhance.Brightness(base[5]).enhance(1.1),
    }
    _land(lake, "b1", {**_originals(base), **copies})
    before = tree_snapshot(lake.landing_dir)
    assert _ingest(lake, store, instance, "b1").success
    result = _curate(lake, store, instance)
    assert result.success

    rows = _rows(store, "b1")
    for s in base:  # every original is kept and the representative of its group
        r = rows[f"a_originals/{s:02d}.png"]
        assert r.include and r.reasons == "" and r.group_id == r.image_id
    expected = {
        "b_copies/same_pixels.bmp": ({"exact_duplicate"}, 1),
        "b_copies/reencoded.jpg": ({"near_duplicate"}, 2),
        "b_copies/resized.png": ({"near_duplicate"}, 3),
        "b_copies/cropped.png": ({"near_duplicate", "semantic_duplicate"}, 4),
        "b_copies/brighter.png": ({"near_duplicate", "semantic_duplicate"}, 5),
    }
    for rel, (reasons, seed) in expected.items():
        r = rows[rel]
        dup_reasons = set(r.reasons.split(",")) & {
            "exact_duplicate",
            "near_duplicate",
            "semantic_duplicate",
        }
        assert not r.include and len(dup_reasons) == 1 and dup_reasons <= reasons, (rel, r.reasons)
        assert r.group_id == image_id_for("b1", f"a_originals/{seed:02d}.png")
        assert r.split == rows[f"a_originals/{seed:02d}.png"].split
    groups = store.query("SELECT group_id, count(*) AS n FROM curated_images GROUP BY group_id")
    assert len(groups) == len(base)  # no two distinct originals merged
    assert tree_snapshot(lake.landing_dir) == before  # curation only reads the landing zone
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "curated_images_suite": True,
        "excluded_fraction_per_batch": True,
        "no_group_across_splits": True,
        "leak_rate_val": True,
        "leak_rate_test": True,
    }


def test_later_batch_is_deduplicated_against_earlier_ones_and_old_splits_stay(
    lake, store, instance
):
    _land(lake, "b1", _originals(range(1, 13)))
    assert _ingest(lake, store, instance, "b1").success
    assert _curate(lake, store, instance).success
    splits_before = store.query("SELECT * FROM splits ORDER BY image_id")
    assert set(splits_before["split"]) <= {"train", "val", "test"}

    buf = io.BytesIO()
    smooth_image(3).save(buf, format="JPEG", quality=90)
    later = {
        "copy_of_03.jpg": Image.open(io.BytesIO(buf.getvalue())),
        "copy_of_07.bmp": smooth_image(7),
        **{f"new_{s}.png": smooth_image(s) for s in range(20, 26)},
    }
    _land(lake, "b2", later)
    assert _ingest(lake, store, instance, "b2").success
    assert _curate(lake, store, instance).success

    splits_after = store.query("SELECT * FROM splits ORDER BY image_id")
    old = splits_after[splits_after["image_id"].isin(splits_before["image_id"])]
    columns = ["image_id", "group_id", "split", "source", "assigned_at"]
    assert old[columns].reset_index(drop=True).equals(splits_before[columns])
    rows1, rows2 = _rows(store, "b1"), _rows(store, "b2")
    for copy, seed in (("copy_of_03.jpg", 3), ("copy_of_07.bmp", 7)):
        original = rows1[f"a_originals/{seed:02d}.png"]
        assert rows2[copy].group_id == original.image_id
        assert rows2[copy].split == original.split and not rows2[copy].include
        assert original.include  # the earlier image stays the kept one
    assert all(rows2[f"new_{s}.png"].include for s in range(20, 26))


def test_pinned_test_image_duplicating_pinned_train_image_is_cross_split(lake, store, instance):
    train = _originals(range(1, 7))
    _land(lake, "cifar-train", train, pins={rel: "train" for rel in train})
    test_images = {"leak.png": smooth_image(2).resize((44, 44)), "fresh.png": smooth_image(40)}
    _land(lake, "cifar-test", test_images, pins={rel: "test" for rel in test_images})
    for batch in ("cifar-train", "cifar-test"):
        assert _ingest(lake, store, instance, batch).success
    result = _curate(lake, store, instance)
    assert result.success

    rows = _rows(store, "cifar-test")
    leak = rows["leak.png"]
    assert not leak.include and leak.reasons == "cross_split_duplicate"
    assert leak.split == "test"  # its own pin, recorded; the group stays in train
    assert leak.group_id == image_id_for("cifar-train", "a_originals/02.png")
    assert rows["fresh.png"].include and rows["fresh.png"].split == "test"
    assert all(r.split == "train" and r.include for r in _rows(store, "cifar-train").values())
    detail = store.query("SELECT detail FROM splits WHERE cross_split")["detail"].tolist()
    assert detail == ["pinned test but its duplicate group is in train"]


def test_a_partial_split_pin_curates_pinned_rows_keep_their_pin_the_rest_are_drawn(
    lake, store, instance
):
    """metadata.csv pins only some images (the other rows' split is empty): the missing pins
    are missing (pandas 3 reads them as NaN, not None), so those images are drawn by hash."""
    images = _originals(range(1, 13))
    pinned = {rel: "test" for rel in list(images)[:4]}
    _land(lake, "partial", images)
    rows = "\n".join(f"{rel},{pinned.get(rel, '')}" for rel in images)
    (lake.landing_dir / "partial" / "metadata.csv").write_text(f"path,split\n{rows}\n")
    assert _ingest(lake, store, instance, "partial").success
    assert _curate(lake, store, instance).success
    assert _curate(lake, store, instance).success  # and every later run too

    splits = store.query("SELECT image_id, split, source FROM splits")
    by_id = {r.image_id: r for r in splits.itertuples()}
    assert len(by_id) == len(images)
    for rel in images:
        row = by_id[image_id_for("partial", rel)]
        if rel in pinned:
            assert (row.split, row.source) == ("test", "pin")
        else:
            assert row.source == "hash" and row.split in ("train", "val", "test")
    assert {by_id[image_id_for("partial", r)].split for r in images if r not in pinned} != {"test"}


@pytest.mark.parametrize("missing", [None, float("nan"), pd.NA, "", "  "])
def test_a_missing_pin_is_no_pin_whatever_pandas_makes_of_it(missing):
    from ssl_assets.curation.splits import SplitConfig, assign_splits, hash_split

    groups = pd.DataFrame(
        {
            "image_id": ["a", "b"],
            "group_id": ["a", "b"],
            "role": ["representative", "representative"],
            "linked_groups": [[], []],
            "pixel_hash": ["h1", "h2"],
            "pin": pd.Series(["val", missing], dtype=object),
        }
    )
    out = assign_splits(groups, {}, SplitConfig()).set_index("image_id")
    assert (out.loc["a", "split"], out.loc["a", "source"]) == ("val", "pin")
    assert out.loc["b", "split"] == hash_split("h2", SplitConfig())
    assert out.loc["b", "source"] == "hash"


def test_overrides_are_honoured_and_recorded(lake, store, instance):
    _land(
        lake,
        "b1",
        {**_originals(range(1, 6)), "b_copies/dup.bmp": smooth_image(1)},
    )
    assert _ingest(lake, store, instance, "b1").success
    assert _curate(lake, store, instance).success
    dup = image_id_for("b1", "b_copies/dup.bmp")
    keep = image_id_for("b1", "a_originals/03.png")
    assert not _rows(store, "b1")["b_copies/dup.bmp"].include

    lake.path("overrides.csv").write_text(
        "image_id,action,who,why\n"
        f"{dup},unmerge,ana,a different photo that happens to look the same\n"
        f"{keep},exclude,ben,contains a face\n"
    )
    assert _curate(lake, store, instance).success
    rows = _rows(store, "b1")
    assert rows["b_copies/dup.bmp"].include and rows["b_copies/dup.bmp"].group_id == dup
    assert "unmerged" in rows["b_copies/dup.bmp"].annotations
    assert not rows["a_originals/03.png"].include
    assert rows["a_originals/03.png"].reasons == "forced_exclude"
    recorded = store.query("SELECT image_id, action, who, why FROM overrides ORDER BY who")
    assert recorded["who"].tolist() == ["ana", "ben"]
    # importing the same file again adds nothing
    assert _curate(lake, store, instance).success
    assert len(store.query("SELECT * FROM overrides")) == 2


def test_quality_flags_exclude_or_only_annotate(lake, store, instance):
    dark = Image.fromarray(np.full((48, 48, 3), 6, dtype=np.uint8))
    gray = smooth_image(8).convert("L")
    _land(lake, "q", {**_originals(range(1, 6)), "dark.png": dark, "gray.png": gray})
    assert _ingest(lake, store, instance, "q").success
    assert _curate(lake, store, instance).success
    rows = _rows(store, "q")
    assert not rows["dark.png"].include and "dark" in rows["dark.png"].reasons.split(",")
    assert rows["gray.png"].include and "grayscale" in rows["gray.png"].annotations.split(",")
    issues = store.query(
        "SELECT issue, excludes FROM quality_issues WHERE image_id = ?",
        [image_id_for("q", "gray.png")],
    )
    assert issues.to_dict("records") == [{"issue": "grayscale", "excludes": False}]


def test_failed_gate_blocks_catalog_in_the_run_and_curation_later(lake, store, instance):
    batch_dir = lake.landing_dir / "bad"
    _land(lake, "bad", _originals(range(1, 3)))
    for i in range(4):
        (batch_dir / f"broken_{i}.jpg").write_bytes(b"not a jpeg")
    result = _ingest(lake, store, instance, "bad", raise_on_error=False)
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == {"raw_images"}  # the blocking check stopped image_catalog
    assert store.query("SELECT * FROM image_catalog").empty

    # A later run that asks for the catalog anyway is refused, and says why.
    later = materialize(
        [image_catalog],
        partition_key="bad",
        instance=instance,
        resources=resources_for(lake, store),
        raise_on_error=False,
    )
    assert not later.success
    failure = later.get_step_failure_events()[0].step_failure_data.error.message
    assert "not admitted" in failure and "raw_manifest_suite" in failure
    _land(lake, "good", _originals(range(5, 8)))
    assert _ingest(lake, store, instance, "good").success
    assert _curate(lake, store, instance).success
    assert set(store.query("SELECT batch FROM curated_images")["batch"]) == {"good"}


def test_excluded_fraction_gate_blocks_a_batch_that_is_mostly_duplicates(lake, store, instance):
    _land(lake, "b1", _originals(range(1, 5)))
    assert _ingest(lake, store, instance, "b1").success
    assert _curate(lake, store, instance).success
    _land(lake, "b2", {f"again_{s}.bmp": smooth_image(s) for s in range(1, 5)})
    assert _ingest(lake, store, instance, "b2").success
    result = _curate(lake, store, instance, raise_on_error=False)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["excluded_fraction_per_batch"].passed
    assert "excluded_fraction[b2]=1" in checks["excluded_fraction_per_batch"].description
    gate = store.query(
        "SELECT passed FROM gate_results WHERE check_name = 'excluded_fraction_per_batch' "
        "ORDER BY recorded_at"
    )
    assert gate["passed"].tolist() == [True, False]


@pytest.mark.parametrize("aspect", ["pad", "center_crop", "stretch"])
def test_aspect_handling_is_explicit(aspect):
    from ssl_assets.data.canonical import CanonicalSpec, canonicalise

    wide = np.zeros((20, 60, 3), dtype=np.uint8)
    wide[:, 20:40] = 255  # a white square in the middle of a black strip
    out = canonicalise(wide, CanonicalSpec(30, aspect))  # type: ignore[arg-type]
    assert out.shape == (30, 30, 3)
    if aspect == "pad":
        assert out[:5].max() == 0 and out[-5:].max() == 0  # black bars above and below
    if aspect == "center_crop":
        assert out[:, 12:18].min() > 200  # the square fills the centre


def test_semantic_tier_refuses_embeddings_of_another_pinned_embedder_version(lake, store, instance):
    _land(lake, "old", _originals(range(1, 4)))
    assert _ingest(lake, store, instance, "old").success
    # as if "old" had been catalogued by an earlier version of the pinned embedder
    with store.transaction() as con:
        con.execute("UPDATE image_catalog SET embedder = 'pinned-v1:test' WHERE batch = 'old'")
    _land(lake, "new", _originals(range(4, 6)))
    assert _ingest(lake, store, instance, "new").success
    result = materialize(
        [duplicates],
        instance=instance,
        resources=resources_for(lake, store),
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "pinned-v1:test" in failure and "re-materialize image_catalog" in failure
    assert store.query("SELECT * FROM duplicates").empty
