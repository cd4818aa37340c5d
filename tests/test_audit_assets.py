"""Audit assets end to end on a temporary lake, on fixtures where the answer is known: a 2 %
subgroup, a batch with shifted shares, an attribute that is brightness, a repeated picture."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from dagster import AssetCheckSeverity, materialize
from PIL import Image

from resources.lake import READY_MARKER
from ssl_assets.assets.audit_assets import bias_audit, diversity_audit, labeling_candidates
from ssl_assets.assets.curation_assets import (
    curated_images,
    duplicates,
    image_catalog,
    quality_issues,
)
from ssl_assets.assets.ingest_assets import raw_images
from ssl_assets.audit.bias import NO_ATTRIBUTES_REASON
from ssl_assets.data.manifest import image_id_for
from tests.factories import add_partitions, resources_for, smooth_image

AUDITS = [diversity_audit, bias_audit, labeling_candidates]


def _land(lake, batch, images, attributes=None, labels=None) -> None:
    batch_dir = lake.landing_dir / batch
    for rel, img in images.items():
        (batch_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(batch_dir / rel, format="PNG")
    if attributes:
        keys = list(next(iter(attributes.values())))
        lines = [",".join(["path", *keys])]
        lines += [",".join([rel, *(row[k] for k in keys)]) for rel, row in attributes.items()]
        (batch_dir / "metadata.csv").write_text("\n".join(lines) + "\n")
    if labels:
        rows = "\n".join(f"{rel},{label}" for rel, label in labels.items())
        (batch_dir / "labels.csv").write_text(f"path,label\n{rows}\n")
    (batch_dir / READY_MARKER).write_text("")


def _ingest_and_curate(lake, store, instance, batch) -> None:
    resources = resources_for(lake, store)
    add_partitions(instance, batch)
    assert materialize(
        [raw_images, image_catalog], partition_key=batch, instance=instance, resources=resources
    ).success
    assert materialize(
        [duplicates, quality_issues, curated_images], instance=instance, resources=resources
    ).success


def _noise(bright: bool, seed: int) -> Image.Image:
    """Colour noise, bright (values 120-255) or dark (0-135): distinct, not flagged as dark."""
    rng = np.random.default_rng(seed)
    low, high = (120, 256) if bright else (0, 136)
    return Image.fromarray(rng.integers(low, high, (16, 16, 3), dtype=np.uint8))


def _checks(result) -> dict[str, tuple[bool, AssetCheckSeverity]]:
    return {e.check_name: (e.passed, e.severity) for e in result.get_asset_check_evaluations()}


def _latest_gates(store, asset: str) -> dict[str, dict]:
    df = store.query(
        "SELECT check_name, passed, severity, details FROM gate_results WHERE asset = ? "
        "QUALIFY row_number() OVER (PARTITION BY check_name ORDER BY recorded_at DESC) = 1",
        [asset],
    )
    return {
        r.check_name: {"passed": r.passed, "severity": r.severity, **json.loads(r.details)}
        for r in df.itertuples()
    }


def test_bias_floor_shortcut_drift_and_labeling_candidates(lake, store, instance, tmp_path):
    # b1: site north/south ~49 % each and east at 2 %; camera is exactly the brightness.
    images, attributes, labels = {}, {}, {}
    for i in range(100):
        rel = f"img/{i:03d}.png"
        bright = i % 2 == 0
        images[rel] = _noise(bright, seed=i)
        site = "east" if i in (7, 51) else ("north" if i % 4 < 2 else "south")
        attributes[rel] = {"site": site, "camera": "day" if bright else "night", "split": "train"}
        if i < 12:
            labels[rel] = "cat" if i % 4 < 2 else "dog"
    _land(lake, "b1", images, attributes, labels)
    _ingest_and_curate(lake, store, instance, "b1")
    result = materialize(AUDITS, instance=instance, resources=resources_for(lake, store))
    assert result.success

    checks = _checks(result)
    assert checks["subgroup_share_floor"] == (False, AssetCheckSeverity.WARN)
    assert checks["attribute_shortcut"] == (False, AssetCheckSeverity.WARN)
    assert checks["subgroup_drift"][0] is True  # one batch: nothing to compare yet
    assert checks["cluster_entropy_floor"] == (True, AssetCheckSeverity.ERROR)
    assert checks["largest_cluster_ceiling"][0] and checks["labeling_candidates_suite"][0]

    run_id = result.run_id
    shares = store.query(
        "SELECT attribute, subgroup, images, share FROM bias_groups "
        "WHERE run_id = ? AND scope = 'all'",
        [run_id],
    )
    assert set(shares["attribute"]) == {"camera", "label", "site"}  # the split pin is not audited
    east = shares[(shares["attribute"] == "site") & (shares["subgroup"] == "east")].iloc[0]
    assert east["images"] == 2 and east["share"] == 0.02
    gates = _latest_gates(store, "bias_audit")
    assert gates["subgroup_share_floor"]["passed"] is False
    assert "site=east (2.00%)" in gates["subgroup_share_floor"]["below_floor"]
    assert "only batch" in gates["subgroup_drift"]["description"]
    probes = store.query("SELECT * FROM bias_shortcuts WHERE run_id = ?", [run_id])
    probes = probes.set_index("attribute")
    assert probes.loc["camera", "shortcut"] and probes.loc["camera", "lift"] > 0.9
    assert probes.loc["camera", "top_feature"] == "brightness"
    assert not probes.loc["site", "shortcut"]
    assert "only 12 images" in probes.loc["label", "skipped_reason"]
    stats = store.query(
        "SELECT subgroup, value FROM bias_group_stats WHERE run_id = ? AND attribute = 'camera' "
        "AND statistic = 'brightness'",
        [run_id],
    ).set_index("subgroup")["value"]
    assert stats["day"] > stats["night"] + 0.3

    # labeling candidates: K unlabeled included train images, as a CSV a tool can take
    picked = store.query(
        "SELECT * FROM labeling_candidates WHERE run_id = ? ORDER BY rank", [run_id]
    )
    assert picked["rank"].tolist() == list(range(1, 89))  # all 100 - 12 labeled (budget 100)
    labeled_ids = {image_id_for("b1", rel) for rel in labels}
    assert not set(picked["image_id"]) & labeled_ids
    csv = pd.read_csv(picked["csv_path"].iloc[0])
    assert list(csv.columns) == ["image_id", "path", "thumbnail"]
    assert csv["image_id"].tolist() == picked["image_id"].tolist()
    assert all(lake.path(p).is_file() for p in csv["path"]) and all(
        lake.path(t).is_file() for t in csv["thumbnail"]
    )
    assert lake.path("reports", "diversity_audit", "projection.png").is_file()
    runs = store.query("SELECT asset, newest_batch FROM audit_runs WHERE run_id = ?", [run_id])
    assert set(runs["asset"]) == {"diversity_audit", "bias_audit", "labeling_candidates"}
    assert set(runs["newest_batch"]) == {"b1"}
    small = materialize(
        [labeling_candidates],
        instance=instance,
        resources=resources_for(lake, store),
        run_config={"ops": {"labeling_candidates": {"config": {"budget": 5}}}},
    )
    assert small.success
    assert len(pd.read_csv(lake.path("reports", "labeling_candidates", "latest.csv"))) == 5

    # b2 arrives with 90 % north: the drift gate trips on site, not on camera
    images2, attributes2 = {}, {}
    for i in range(60):
        rel = f"img/{i:03d}.png"
        images2[rel] = _noise(i % 2 == 0, seed=1000 + i)
        site = "north" if i < 54 else "south"
        camera = "day" if i % 2 == 0 else "night"
        attributes2[rel] = {"site": site, "camera": camera, "split": "train"}
    _land(lake, "b2", images2, attributes2)
    _ingest_and_curate(lake, store, instance, "b2")
    result = materialize([bias_audit], instance=instance, resources=resources_for(lake, store))
    assert result.success
    assert _checks(result)["subgroup_drift"] == (False, AssetCheckSeverity.WARN)
    drift = store.query("SELECT * FROM bias_drift WHERE run_id = ?", [result.run_id])
    drift = drift.set_index("attribute")
    assert drift.loc["site", "drifted"] and drift.loc["site", "newest_batch"] == "b2"
    assert drift.loc["site", "tv_distance"] > 0.35 and drift.loc["site", "p_value"] < 0.01
    assert not drift.loc["camera", "drifted"]
    assert "no label values in the newest batch" in drift.loc["label", "skipped_reason"]
    gate = _latest_gates(store, "bias_audit")["subgroup_drift"]
    assert gate["passed"] is False and gate["severity"] == "WARN"
    assert gate["newest_batch"] == "b2" and gate["drifted"][0].startswith("site")
    trend = store.query(
        "SELECT r.newest_batch, m.value FROM stage_metrics m JOIN audit_runs r "
        "USING (run_id) WHERE m.asset = 'bias_audit' AND m.metric = 'drift_tv[site]' "
        "AND r.asset = 'bias_audit'"
    )
    assert trend["newest_batch"].tolist() == ["b2"]


def test_repeated_picture_fails_the_diversity_gates_and_no_attributes_pass(lake, store, instance):
    rng = np.random.default_rng(0)
    base = np.asarray(smooth_image(3)).astype(float)
    images, pins = {}, {}
    for i in range(80):
        noisy = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
        images[f"copy_{i:03d}.png"] = Image.fromarray(noisy)
        pins[f"copy_{i:03d}.png"] = {"split": "train"}  # a pin only: not an attribute
    _land(lake, "same", images, pins)
    _ingest_and_curate(lake, store, instance, "same")
    resources = resources_for(lake, store)
    result = materialize(
        [diversity_audit, bias_audit], instance=instance, resources=resources, raise_on_error=False
    )
    # A failed blocking (ERROR) check fails the diversity step: nothing downstream runs on it.
    assert not result.success
    assert result.is_node_failed("diversity_audit") and result.is_node_success("bias_audit")

    checks = _checks(result)
    assert checks["cluster_entropy_floor"] == (False, AssetCheckSeverity.ERROR)
    assert checks["largest_cluster_ceiling"] == (False, AssetCheckSeverity.ERROR)
    metrics = store.query(
        "SELECT metric, value FROM stage_metrics WHERE asset = 'diversity_audit' AND run_id = ?",
        [result.run_id],
    ).set_index("metric")["value"]
    assert metrics["images"] >= 30  # enough copies survived curation to judge
    assert metrics["cluster_entropy"] < 0.1 and metrics["largest_cluster_share"] > 0.9
    gates = _latest_gates(store, "diversity_audit")
    assert gates["cluster_entropy_floor"]["passed"] is False
    assert gates["cluster_entropy_floor"]["severity"] == "ERROR"
    scores = store.query("SELECT cluster, count(*) AS n FROM diversity_scores GROUP BY cluster")
    assert scores["n"].max() / scores["n"].sum() > 0.9

    for name in ("subgroup_share_floor", "subgroup_drift", "attribute_shortcut"):
        assert checks[name][0] is True
        assert _latest_gates(store, "bias_audit")[name]["description"] == NO_ATTRIBUTES_REASON
    assert store.query("SELECT count(*) AS n FROM bias_groups")["n"].iloc[0] == 0

    warn = materialize(
        [diversity_audit],
        instance=instance,
        resources=resources,
        run_config={"ops": {"diversity_audit": {"config": {"blocking": False}}}},
    )
    assert warn.success  # WARN: reported, recorded, not blocking
    assert _checks(warn)["cluster_entropy_floor"] == (False, AssetCheckSeverity.WARN)
    assert _latest_gates(store, "diversity_audit")["cluster_entropy_floor"]["severity"] == "WARN"


def test_audits_on_an_empty_lake_pass_and_say_why(lake, store, instance):
    result = materialize(AUDITS, instance=instance, resources=resources_for(lake, store))
    assert result.success
    descriptions = {e.check_name: e.description for e in result.get_asset_check_evaluations()}
    assert "only 0 included train images" in descriptions["cluster_entropy_floor"]
    assert descriptions["subgroup_drift"] == NO_ATTRIBUTES_REASON
    assert store.query("SELECT count(*) AS n FROM labeling_candidates")["n"].iloc[0] == 0
