"""Re-curation: a dry run lists the changes and writes nothing; moving images that evaluated a
promoted model is refused unless forced; a forced run records every split move."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dagster import materialize
from PIL import Image

from resources.curation_settings import CURATION_FILE
from resources.lake import READY_MARKER
from ssl_assets import cli
from ssl_assets import recurate as recurate_cmd
from ssl_assets.assets.curation_assets import (
    curated_images,
    duplicates,
    image_catalog,
    quality_issues,
)
from ssl_assets.assets.ingest_assets import raw_images
from ssl_assets.data.manifest import image_id_for
from tests.factories import add_partitions, resources_for
from tests.test_curation_aligned import scene, shifted, toned

CURATION = [duplicates, quality_issues, curated_images]
STRICT = {"aligned": False, "near_max_distance": 0, "semantic_threshold": 0.9999}
COPIES = 16
TABLES = ("duplicates", "duplicate_pairs", "splits", "curated_images", "recurations")


def _curate(lake, store, instance) -> None:
    assert materialize(CURATION, instance=instance, resources=resources_for(lake, store)).success


@pytest.fixture
def curated(lake, store, instance):
    """A lake curated under strict settings: the copies stay apart, each with its own split."""
    lake.path(CURATION_FILE).write_text(json.dumps(STRICT))
    images = {f"a_{s:02d}.png": scene(s, s) for s in range(COPIES + 4)}
    for s in range(COPIES):
        images[f"b_copy_{s:02d}.png"] = (shifted if s % 2 else toned)(scene(s, s))
    batch_dir = lake.landing_dir / "b1"
    batch_dir.mkdir(parents=True)
    for rel, pixels in images.items():
        Image.fromarray(np.asarray(pixels)).save(batch_dir / rel)
    (batch_dir / READY_MARKER).write_text("")
    add_partitions(instance, "b1")
    ingest = [raw_images, image_catalog]
    resources = resources_for(lake, store)
    assert materialize(ingest, partition_key="b1", instance=instance, resources=resources).success
    _curate(lake, store, instance)
    assert store.query("SELECT count(DISTINCT group_id) AS n FROM curated_images")["n"][0] == len(
        images
    )
    return lake


def _snapshot(store, lake) -> dict:
    out = {t: store.query(f"SELECT * FROM {t}") for t in TABLES}  # noqa: S608
    out = {t: df.sort_values(list(df.columns[:2])).reset_index(drop=True) for t, df in out.items()}
    out["file"] = lake.path(CURATION_FILE).read_text()
    return out


def _same(a: dict, b: dict) -> bool:
    return a["file"] == b["file"] and all(a[t].equals(b[t]) for t in TABLES)


def _promote(store) -> None:
    store.register_model(
        model_id="m1",
        kind="finetuned",
        path="models/m1",
        content_hash=None,
        config={},
        metrics={},
        lineage={},
        status="candidate",
        reason="",
        run_id=None,
    )
    store.set_champion("m1", "promote", ["evaluated on val and test"], None)


def test_a_dry_run_lists_the_changes_and_writes_nothing(curated, store, capsys):
    lake = curated
    before = _snapshot(store, lake)
    code = cli.main(["--lake", lake.root, "recurate", "--dry-run", "--set", "aligned=true"])
    printed = capsys.readouterr().out
    assert code == 0
    assert (
        "settings: aligned False -> True" in printed and "dry run: nothing was changed" in printed
    )
    assert f"groups: {COPIES} images change group" in printed
    assert _same(before, _snapshot(store, lake))


def test_moving_evaluated_images_is_refused_unless_forced_and_every_move_recorded(
    curated, store, instance
):
    lake = curated
    _promote(store)
    version = resources_for(lake, store)["image_spec"].version
    changes = {"aligned": True, "near_max_distance": 4}
    splits_before = store.query("SELECT image_id, split FROM splits").set_index("image_id")
    before = _snapshot(store, lake)
    lines: list[str] = []
    code = recurate_cmd.run(
        lake, store, version, changes, dry_run=False, force=False, why="", out=lines.append
    )
    assert code == recurate_cmd.REFUSED and lines[-1].startswith("refused:")
    assert _same(before, _snapshot(store, lake))

    code = recurate_cmd.run(
        lake, store, version, changes, dry_run=False, force=True, why="aligned tier", out=print
    )
    assert code == 0
    splits_after = store.query("SELECT image_id, split FROM splits").set_index("image_id")
    moved = splits_before.index[
        splits_before["split"] != splits_after.loc[splits_before.index, "split"]
    ]
    (recuration,) = store.recurations().itertuples()
    recorded = store.curation_changes(recuration.recuration_id)
    moves = recorded[recorded["change"] == "split"].set_index("image_id")
    assert len(moved) > 0 and set(moves.index) == set(moved)  # every move, and only moves
    for image_id in moved:
        assert moves.loc[image_id, "before"] == splits_before.loc[image_id, "split"]
        assert moves.loc[image_id, "after"] == splits_after.loc[image_id, "split"]
    assert moves["protected"].any() and recuration.forced
    assert recuration.split_moves == len(moved) and recuration.protected_moves > 0

    # the copies joined their originals, in their split, and say under which settings
    rows = store.query("SELECT * FROM curated_images").set_index("image_id")
    for s in range(COPIES):
        copy = rows.loc[image_id_for("b1", f"b_copy_{s:02d}.png")]
        original = rows.loc[image_id_for("b1", f"a_{s:02d}.png")]
        assert copy["group_id"] == original.name and not copy["include"]
        assert copy["split"] == original["split"]
    settings = store.query("SELECT DISTINCT settings FROM duplicates")["settings"].tolist()
    assert len(settings) == 1 and json.loads(settings[0])["source"] == "ssl-assets recurate"
    saved = json.loads(lake.path(CURATION_FILE).read_text())
    assert saved["aligned"] is True and saved["near_max_distance"] == 4
    # and the next curation run passes its gates on the re-curated lake
    result = materialize(CURATION, instance=instance, resources=resources_for(lake, store))
    assert all(e.passed for e in result.get_asset_check_evaluations())
