"""The photo setting end to end on CPU: 48 generated photos of 320-1024 px in 4:3, 3:4 and 16:9
go from landing to a champion with a small encoder in a few steps, started from a local
weights file; the catalog holds them at 256 px, the model card names the start, the champion
is exported to ONNX and predicts the same labels from it; a distilled student records its
teacher; a missing torchvision hub file is refused with the path to put it at."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from dagster import DagsterInstance, materialize

from resources.lake import LakeResource
from resources.metadata import MetadataStore
from ssl_assets.atomic import file_sha256
from ssl_assets.cli import main as cli
from ssl_assets.definitions import build_definitions
from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.encoder_io import save_encoder
from ssl_assets.ml.evaluate.model_card import MODEL_CARD
from tests.factories import resources_for
from tests.photo_factory import write_photo_batch

pytestmark = pytest.mark.slow
defs = build_definitions("photo")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SMALL = {"widths": [8, 16, 32, 64], "strides": [2, 2, 2, 2], "input_size": 224}
# 48 photos leave 4 labelled val images for the collapse monitor: their features cannot span
# more than 3 dimensions, so the effective-rank floor (4) is lowered to what 4 points allow
TRAIN = {
    "backbone": "small_cnn",
    "backbone_kwargs": SMALL,
    "batch_size": 16,
    "min_effective_rank": 2.0,
}


def _assets(*names):
    return [a for a in defs.assets if getattr(a, "key", None) and a.key.to_user_string() in names]


@pytest.fixture(scope="module")
def photo_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("photo")
    lake = LakeResource(root=str(root / "lake"))
    lake.ensure()
    store = MetadataStore(path=str(lake.metadata_path))
    resources = resources_for(lake, store, profile="photo")
    batch_dir = write_photo_batch(lake.landing_dir, "photos-001", 48)
    torch.manual_seed(0)
    start = root / "start" / "encoder.safetensors"
    save_encoder(build_backbone("small_cnn", **SMALL), {"backbone": "small_cnn"}, start.parent)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("batches", ["photos-001"])
        for job, kwargs in (
            ("ingest_batch", {"partition_key": "photos-001"}),
            ("curate_and_audit", {}),
        ):
            run = defs.resolve_job_def(job).execute_in_process(
                instance=instance, resources=resources, run_config=QUIET, **kwargs
            )
            assert run.success, job
        result = materialize(
            _assets(
                "ssl_encoder", "image_embeddings", "probes", "finetuned_model", "champion_model"
            ),
            instance=instance,
            resources=resources,
            run_config={
                "ops": {
                    "ssl_encoder": {"config": {**TRAIN, "epochs": 2, "init_from": str(start)}},
                    "probes": {
                        "config": {
                            "seeds": 1,
                            "budgets": [{"fraction": 1.0, "min_per_class": 1}],
                            "scratch_steps": 2,
                        }
                    },
                    "finetuned_model": {"config": {"epochs": 2}},
                },
                **QUIET,
            },
        )
        assert result.success
        yield lake, store, resources, instance, batch_dir, start


def test_the_catalog_holds_the_photos_at_256_px_without_borders(photo_lake):
    lake, store, *_ = photo_lake
    paths = store.query("SELECT DISTINCT array_path FROM image_catalog")["array_path"].tolist()
    assert paths == ["catalog/r256-center_crop/photos-001.npy"]
    array = np.load(lake.path(paths[0]), mmap_mode="r")
    assert array.shape == (48, 256, 256, 3)
    sizes = store.query("SELECT width, height FROM images WHERE status = 'ok'")
    assert len(sizes) == 48 and sizes["width"].between(320, 1024).all()
    nearest = {
        min((4 / 3, 3 / 4, 16 / 9), key=lambda a, r=w / h: abs(a - r))
        for w, h in sizes.itertuples(index=False)
    }
    assert nearest == {4 / 3, 3 / 4, 16 / 9}
    for img in array[:6]:
        assert not any((line == line[0]).all() for line in (img[0], img[-1], img[:, 0], img[:, -1]))


def test_the_champion_names_its_start_and_is_served_from_onnx(photo_lake, capsys):
    lake, store, _, _, batch_dir, start = photo_lake
    encoder = store.query("SELECT * FROM models WHERE kind = 'encoder'").iloc[0]
    lineage = json.loads(encoder["lineage"])
    assert lineage["init_from"]["sha256"] == file_sha256(start)
    assert lineage["init_from"]["source"] == str(start)
    champion = store.current_champion()
    assert champion is not None
    champion_dir = lake.model_path(champion["path"])
    card = (champion_dir / MODEL_CARD).read_text()
    assert str(start) in card and file_sha256(start) in card
    assert (champion_dir / "onnx.json").is_file()  # exported when promoted

    images = [str(p) for p in sorted(batch_dir.glob("photos/*.jpg"))[:8]]
    root = str(lake.root_path)
    assert cli(["--lake", root, "predict", *images]) == 0
    from_weights = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    assert cli(["--lake", root, "predict", "--onnx", *images]) == 0
    from_onnx = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    assert from_onnx == from_weights and len(from_onnx) == 8
    assert cli(["--lake", root, "export", encoder["model_id"], "--format", "onnx"]) == 0
    assert (lake.model_dir(encoder["model_id"]) / "encoder.onnx").is_file()


def test_a_distilled_student_records_its_teacher(photo_lake):
    _, store, resources, instance, *_ = photo_lake
    teacher = store.query("SELECT model_id FROM models WHERE kind = 'encoder'")["model_id"][0]
    student = {"widths": [8, 16, 32], "strides": [2, 2, 2], "input_size": 224}
    config = {
        **TRAIN,
        "method": "distill",
        "objective": {"teacher": teacher},
        "backbone_kwargs": student,
        "epochs": 1,
        "warm_start_from_champion": False,
    }
    result = materialize(
        _assets("ssl_encoder"),
        instance=instance,
        resources=resources,
        run_config={"ops": {"ssl_encoder": {"config": config}}, **QUIET},
    )
    assert result.success
    row = store.query("SELECT lineage FROM models ORDER BY created_at DESC LIMIT 1").iloc[0]
    lineage = json.loads(row["lineage"])
    assert lineage["teacher"]["source"] == teacher and lineage["teacher"]["kind"] == "model"


def test_a_missing_torchvision_hub_file_refuses_the_run_naming_the_path(photo_lake, tmp_path):
    _, _, resources, instance, *_ = photo_lake
    before = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        result = materialize(
            _assets("ssl_encoder"),
            instance=instance,
            resources=resources,
            run_config={
                "ops": {
                    "ssl_encoder": {
                        "config": {
                            "backbone": "resnet18",
                            "init_from": "ResNet18_Weights.IMAGENET1K_V1",
                        }
                    }
                },
                **QUIET,
            },
            raise_on_error=False,
        )
    finally:
        torch.hub.set_dir(before)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
