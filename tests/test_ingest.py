"""raw_images on a temporary lake: quarantine reasons, untouched raw files, the admission gate."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from dagster import materialize
from PIL import Image

from resources.lake import READY_MARKER, UnsafePathError
from ssl_assets.assets.ingest_assets import raw_images
from ssl_assets.data.manifest import image_id_for
from tests.factories import (
    add_partitions,
    make_batch,
    random_image,
    resources_for,
    tree_snapshot,
    write_image,
)


def _jpeg_bytes(seed: int = 1) -> bytes:
    buf = io.BytesIO()
    random_image((64, 64), seed=seed).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png_bytes(seed: int = 2) -> bytes:
    buf = io.BytesIO()
    random_image((32, 32), seed=seed).save(buf, format="PNG")
    return buf.getvalue()


def build_bad_corpus(batch_dir: Path, outside: Path) -> dict[str, str | None]:
    """Good files beside every kind of bad file; returns rel_path -> expected reason (None = ok)."""
    expected: dict[str, str | None] = {}

    def put(rel: str, data: bytes, reason: str | None) -> None:
        path = batch_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[rel] = reason

    # good images, any nesting, several formats and modes
    write_image(batch_dir / "good" / "rgb.png", seed=1)
    write_image(batch_dir / "good" / "photo.jpg", fmt="JPEG", size=(40, 30), seed=2)
    write_image(batch_dir / "deep" / "er" / "still" / "gray.bmp", mode="L", seed=3)
    random_image(seed=4).convert("P").save(batch_dir / "good" / "palette.gif")
    expected.update(
        {
            "good/rgb.png": None,
            "good/photo.jpg": None,
            "deep/er/still/gray.bmp": None,
            "good/palette.gif": None,
        }
    )
    # bad ones
    put("bad/empty.png", b"", "empty_file")
    jpeg = _jpeg_bytes()
    put("bad/truncated.jpg", jpeg[: len(jpeg) // 2], "truncated")
    png = _png_bytes()
    put("bad/truncated.png", png[: len(png) // 2], "truncated")
    corrupt = bytearray(png)
    idat = corrupt.index(b"IDAT")
    for k in range(idat + 8, idat + 40):
        corrupt[k] ^= 0xFF
    put("bad/corrupt.png", bytes(corrupt), "corrupt")
    put("bad/notes.jpg", b"these are my notes, not a picture\n" * 20, "not_an_image")
    put("bad/readme.txt", b"hello", "unsupported_extension")
    bomb = io.BytesIO()
    Image.new("L", (3000, 3000)).save(bomb, format="PNG")  # 9 Mpx > tiny profile's 4 Mpx
    put("bad/bomb.png", bomb.getvalue(), "too_many_pixels")
    floats = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).random((8, 8), dtype=np.float32)).save(
        floats, format="TIFF"
    )
    put("bad/float.tif", floats.getvalue(), "unsupported_mode")
    # pixels decode, but its EXIF block (read to orient the image) is garbage
    bad_exif = io.BytesIO()
    random_image((16, 16), seed=5).save(bad_exif, format="PNG", exif=b"Exif\x00\x00garbage")
    put("bad/bad_exif.png", bad_exif.getvalue(), "corrupt")
    # links: never followed
    write_image(outside / "secret.png", seed=9)
    os.symlink(outside / "secret.png", batch_dir / "bad" / "escape.png")
    expected["bad/escape.png"] = "outside_batch"
    os.symlink(batch_dir / "good" / "rgb.png", batch_dir / "bad" / "alias.png")
    expected["bad/alias.png"] = "symlink"
    os.symlink(outside, batch_dir / "linked_dir")
    expected["linked_dir"] = "outside_batch"
    (batch_dir / READY_MARKER).write_text("")
    return expected


def test_bad_input_is_quarantined_with_reasons_and_raw_files_untouched(
    lake, store, instance, tmp_path
):
    batch = "mixed-001"
    batch_dir = lake.landing_dir / batch
    expected = build_bad_corpus(batch_dir, tmp_path / "outside")
    before = tree_snapshot(lake.landing_dir)
    add_partitions(instance, batch)

    result = materialize(
        [raw_images],
        partition_key=batch,
        instance=instance,
        resources=resources_for(lake, store),
        # this corpus is mostly bad on purpose: let it through the rate gate
        run_config={"ops": {"raw_images": {"config": {"max_quarantine_fraction": 1.0}}}},
    )

    assert result.success
    manifest = store.query("SELECT * FROM raw_images WHERE batch = ?", [batch])
    got = {
        r.rel_path: (r.reason if r.status == "quarantined" else None) for r in manifest.itertuples()
    }
    assert got == expected
    assert manifest["image_id"].is_unique
    ok = manifest[manifest["status"] == "ok"].set_index("rel_path")
    assert ok.loc["good/photo.jpg", "format"] == "JPEG"
    assert (ok.loc["good/photo.jpg", "width"], ok.loc["good/photo.jpg", "height"]) == (40, 30)
    assert ok.loc["deep/er/still/gray.bmp", "mode"] == "L"
    assert ok.loc["good/rgb.png", "image_id"] == image_id_for(batch, "good/rgb.png")
    bad_exif = manifest.set_index("rel_path").loc["bad/bad_exif.png"]
    assert bad_exif["detail"].startswith("cannot convert to RGB")
    # raw files: same bytes, same mtimes, nothing added or removed
    assert tree_snapshot(lake.landing_dir) == before
    # every gate passed, so the batch is admitted
    assert store.admitted_batches() == [batch]
    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {"raw_manifest_suite": True, "raw_has_usable_images": True}


def test_fifo_socket_and_oversized_files_are_quarantined_within_a_second_without_reading(
    lake, store, instance
):
    """A FIFO named like an image used to block ingestion forever (open() waits for a writer),
    and a huge file was read whole into memory: both are judged from their metadata alone."""
    import socket
    import threading
    import time

    from ssl_assets.data.manifest import scan_batch
    from ssl_assets.profiles import get_profile

    batch = "hostile"
    batch_dir = make_batch(lake, batch, n=6)
    fifo = batch_dir / "x.png"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(batch_dir / "s.jpg"))
    cap = get_profile().max_file_bytes
    with (batch_dir / "huge.png").open("wb") as fh:  # sparse: no disk, no memory
        fh.truncate(cap + 1)
    with (batch_dir / "huge.txt").open("wb") as fh:
        fh.truncate(cap + 1)
    before = tree_snapshot(lake.landing_dir)

    scanned: list = []
    worker = threading.Thread(
        target=lambda: scanned.append(scan_batch(batch_dir, batch, 10**6)), daemon=True
    )
    started = time.monotonic()
    worker.start()
    try:
        worker.join(timeout=10)
        elapsed = time.monotonic() - started
        assert not worker.is_alive(), "ingestion hangs on a FIFO"
    finally:
        try:  # release a reader stuck in open() (only if the check above failed)
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        sock.close()
    assert elapsed < 1.0
    reasons = dict(zip(scanned[0]["rel_path"], scanned[0]["reason"], strict=True))
    assert reasons["x.png"] == "not_a_regular_file"
    assert reasons["s.jpg"] == "not_a_regular_file"
    assert reasons["huge.png"] == "file_too_large"
    assert reasons["huge.txt"] == "unsupported_extension"  # never read either

    add_partitions(instance, batch)
    result = materialize(
        [raw_images],
        partition_key=batch,
        instance=instance,
        resources=resources_for(lake, store),
        run_config={"ops": {"raw_images": {"config": {"max_quarantine_fraction": 0.5}}}},
    )
    assert result.success  # known reasons: the GX suite passes, the batch is admitted
    stored = store.query(
        "SELECT rel_path, status, reason, detail, bytes FROM images WHERE batch = ?", [batch]
    ).set_index("rel_path")
    assert stored.loc["x.png", "reason"] == "not_a_regular_file"
    assert "FIFO" in stored.loc["x.png", "detail"]
    assert "socket" in stored.loc["s.jpg", "detail"]
    assert stored.loc["huge.png", "reason"] == "file_too_large"
    assert stored.loc["huge.png", "bytes"] == cap + 1
    assert (stored["status"] == "ok").sum() == 6
    assert store.admitted_batches() == [batch]
    assert tree_snapshot(lake.landing_dir) == before


def test_the_file_size_cap_is_run_config(lake, store, instance):
    batch = "capped"
    batch_dir = make_batch(lake, batch, n=3)
    big = write_image(batch_dir / "big.png", size=(256, 256), seed=9)
    add_partitions(instance, batch)
    result = materialize(
        [raw_images],
        partition_key=batch,
        instance=instance,
        resources=resources_for(lake, store),
        run_config={
            "ops": {
                "raw_images": {
                    "config": {
                        "max_file_bytes": big.stat().st_size - 1,
                        "max_quarantine_fraction": 0.5,
                    }
                }
            }
        },
    )
    assert result.success
    stored = store.query(
        "SELECT rel_path, coalesce(reason, status) AS r FROM images WHERE batch = ?", [batch]
    )
    assert dict(stored.itertuples(index=False)) == {
        "big.png": "file_too_large",
        **{f"images/img_{i:03d}.png": "ok" for i in range(3)},
    }


def test_quarantine_rate_above_threshold_fails_gate_and_batch_is_not_admitted(
    lake, store, instance, tmp_path
):
    batch = "mostly-bad"
    batch_dir = make_batch(lake, batch, n=2)
    for i in range(3):
        (batch_dir / f"broken_{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    add_partitions(instance, batch)

    result = materialize(
        [raw_images],
        partition_key=batch,
        instance=instance,
        resources=resources_for(lake, store),
        run_config={"ops": {"raw_images": {"config": {"max_quarantine_fraction": 0.25}}}},
        raise_on_error=False,
    )

    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    suite = evaluations["raw_manifest_suite"]
    assert not suite.passed
    assert suite.severity.value == "ERROR"
    assert "expect_column_values_to_be_in_set on status" in suite.description
    gate = store.query(
        "SELECT * FROM gate_results WHERE check_name = 'raw_manifest_suite' AND partition = ?",
        [batch],
    )
    assert len(gate) == 1 and not gate["passed"].iloc[0]
    details = json.loads(gate["details"].iloc[0])
    rate_failure = [f for f in details["failed"] if f["meta"].get("gate") == "quarantine_rate"]
    assert rate_failure and rate_failure[0]["unexpected_count"] == 3
    assert details["quarantined_by_reason"] == {"corrupt": 3} or details[
        "quarantined_by_reason"
    ] == {"truncated": 3}
    # the data rule: not admitted, with the reason recorded
    assert store.admitted_batches() == []
    status = store.query("SELECT * FROM batch_status WHERE batch = ?", [batch])
    assert not status["admitted"].iloc[0]
    assert "raw_manifest_suite" in status["reason"].iloc[0]


def test_labels_and_attributes_land_in_their_tables(lake, store, instance):
    first = make_batch(lake, "b1", n=3)
    (first / "labels.csv").write_text("path,label\nimages/img_000.png,cat\nimages/nope.png,dog\n")
    (first / "metadata.csv").write_text(
        "path,camera,split\nimages/img_000.png,phone,train\n"
        "images/img_001.png,dslr,\nimages/img_002.png,phone,holdout\n../../etc/passwd,x,\n"
    )
    add_partitions(instance, "b1", "b2")
    resources = resources_for(lake, store)
    assert materialize(
        [raw_images], partition_key="b1", instance=instance, resources=resources
    ).success

    second = make_batch(lake, "b2", n=1)
    old_id = image_id_for("b1", "images/img_001.png")
    relabel_id = image_id_for("b1", "images/img_000.png")
    (second / "labels.csv").write_text(
        f"image_id,label\n{old_id},bird\n{relabel_id},lion\nffffffffffffffffffff,x\n"
    )
    assert materialize(
        [raw_images], partition_key="b2", instance=instance, resources=resources
    ).success

    labels = store.query("SELECT image_id, label FROM current_labels ORDER BY label")
    assert dict(zip(labels["image_id"], labels["label"], strict=True)) == {
        old_id: "bird",
        relabel_id: "lion",  # the latest label wins; the first one stays in `labels`
    }
    assert len(store.query("SELECT * FROM labels")) == 3
    attrs = store.query("SELECT image_id, key, value FROM attributes ORDER BY image_id, key")
    assert set(map(tuple, attrs.values)) == {
        (relabel_id, "camera", "phone"),
        (relabel_id, "split", "train"),
        (old_id, "camera", "dslr"),
    }
    rejects = store.query("SELECT batch, source, reason FROM ingest_rejects ORDER BY batch, reason")
    assert set(map(tuple, rejects.values)) == {
        ("b1", "labels.csv", "unknown_path"),
        ("b1", "metadata.csv", "bad_split"),
        ("b1", "metadata.csv", "unsafe_path"),
        ("b2", "labels.csv", "unknown_image_id"),
    }


def test_a_too_wide_or_ambiguous_sidecar_is_rejected_with_a_reason(lake, store, instance):
    """A metadata.csv with 10,000 columns made bias_audit take minutes; a duplicated header
    silently kept its last column. Both are refused as a whole, with a reason."""
    resources = resources_for(lake, store)
    wide = make_batch(lake, "wide", n=2)
    names = [f"a{k}" for k in range(10_000)]
    (wide / "metadata.csv").write_text(
        "path," + ",".join(names) + "\n" + "images/img_000.png," + ",".join("x" * 10_000) + "\n"
    )
    (wide / "labels.csv").write_text("path,label,label\nimages/img_000.png,cat,dog\n")
    add_partitions(instance, "wide")
    assert materialize([raw_images], partition_key="wide", instance=instance, resources=resources)
    rejects = store.query(
        "SELECT source, line, reason, detail FROM ingest_rejects WHERE batch = 'wide' "
        "ORDER BY source"
    )
    assert rejects[["source", "line", "reason"]].values.tolist() == [
        ["labels.csv", 1, "duplicate_header"],
        ["metadata.csv", 1, "too_many_columns"],
    ]
    assert "label" in rejects["detail"].iloc[0] and "10001 columns" in rejects["detail"].iloc[1]
    assert store.query("SELECT * FROM attributes WHERE batch = 'wide'").empty
    assert store.query("SELECT * FROM labels WHERE batch = 'wide'").empty


def test_sidecars_are_untrusted_input(lake, tmp_path):
    """Links, FIFOs, ragged rows, huge cells and floods of bad rows each become a reject."""
    import threading

    from ssl_assets.data import sidecars
    from ssl_assets.data.sidecars import read_attributes, read_labels

    batch_dir = make_batch(lake, "odd", n=2)
    ids = [image_id_for("odd", f"images/img_{i:03d}.png") for i in range(2)]
    secret = tmp_path / "secret.csv"
    secret.write_text("label,path\ntop-secret,images/img_000.png\n")
    (batch_dir / "labels.csv").symlink_to(secret)
    os.mkfifo(batch_dir / "metadata.csv")
    got: list = []
    worker = threading.Thread(
        target=lambda: got.extend(
            [
                read_labels(batch_dir, "odd", ids, lambda _: set()),
                read_attributes(batch_dir, "odd", ids),
            ]
        ),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # release the reader stuck on the FIFO before failing
        os.close(os.open(batch_dir / "metadata.csv", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO named metadata.csv hangs")
    (labels, label_rejects), (attrs, attr_rejects) = got
    assert labels.empty and attrs.empty
    assert label_rejects["reason"].tolist() == ["not_a_regular_file"]
    assert "top-secret" not in label_rejects["detail"].iloc[0]  # the link was not followed
    assert attr_rejects["reason"].tolist() == ["not_a_regular_file"]
    assert "FIFO" in attr_rejects["detail"].iloc[0]

    (batch_dir / "labels.csv").unlink()
    (batch_dir / "metadata.csv").unlink()
    long_cell = "y" * (sidecars.MAX_CELL_CHARS + 1)
    (batch_dir / "metadata.csv").write_text(
        "path,camera\n"
        "images/img_000.png,phone,extra\n"  # a third cell under two columns
        f"images/img_001.png,{long_cell}\n"
        + "nowhere.png,x\n"
        * (sidecars.MAX_REJECTS_PER_FILE + 5)
    )
    attrs, rejects = read_attributes(batch_dir, "odd", ids)
    assert attrs.empty
    reasons = rejects["reason"].value_counts().to_dict()
    assert reasons == {
        "extra_cells": 1,
        "cell_too_long": 1,
        "unknown_path": sidecars.MAX_REJECTS_PER_FILE - 2,
        "too_many_rejects": 1,
    }
    assert rejects["detail"].str.len().max() <= sidecars.MAX_DETAIL_CHARS
    summary = rejects[rejects["reason"] == "too_many_rejects"]["detail"].iloc[0]
    assert summary.startswith("7 more rows rejected")


def test_reingesting_a_batch_replaces_its_rows(lake, store, instance):
    make_batch(lake, "again", n=3)
    add_partitions(instance, "again")
    resources = resources_for(lake, store)
    for _ in range(2):
        assert materialize(
            [raw_images], partition_key="again", instance=instance, resources=resources
        ).success
    assert len(store.query("SELECT * FROM images")) == 3
    assert len(store.query("SELECT * FROM batches")) == 2  # the admission log keeps both


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "x" * 200])
def test_batch_names_cannot_escape_the_landing_zone(lake, name):
    with pytest.raises(UnsafePathError):
        lake.batch_dir(name)


def test_lake_paths_stay_inside_the_root(lake):
    assert lake.path("models", "m1") == lake.root_path / "models" / "m1"
    with pytest.raises(UnsafePathError):
        lake.path("..", "elsewhere")


@pytest.mark.parametrize(
    "raw",
    [
        "a.png",
        "dir/a.png",
        "./a.png",
        "dir//a.png",
        "dir/./a.png",
        "dir/",
        "a\\b.png",
        ".a.png",
        "/etc/passwd",
        "../a.png",
        "dir/../../a.png",
        "",
        "...",
    ],
)
def test_sidecar_paths_normalise_like_posix_paths(raw):
    """The fast path for already-normal paths gives what PurePosixPath gives."""
    from pathlib import PurePosixPath

    from ssl_assets.data.sidecars import _normalise_rel_path

    p = PurePosixPath(raw.replace("\\", "/"))
    slow = None if p.is_absolute() or ".." in p.parts or not p.parts else p.as_posix()
    assert _normalise_rel_path(raw) == (slow.removeprefix("./") if slow else None)
