"""Pretraining and evaluation assets on a small real dataset in a temporary lake: the champion
is replaced only by a better model, a restore brings an old one back, and the load-and-predict
API agrees with the evaluation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from resources.lake import LakeResource
from resources.metadata import MetadataStore
from ssl_assets.assets.evaluation_assets import champion_model, finetuned_model
from ssl_assets.cli import main as cli
from ssl_assets.data.default_dataset import write_default_dataset
from ssl_assets.definitions import build_definitions
from tests.factories import resources_for

pytestmark = pytest.mark.slow
defs = build_definitions("tiny")
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _finetune_and_judge(resources, instance, **cfg):
    result = materialize(
        [finetuned_model, champion_model],
        instance=instance,
        resources=resources,
        run_config={"ops": {"finetuned_model": {"config": cfg}}, **QUIET},
        raise_on_error=False,
    )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    return result, checks


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A lake with 600 real digits, curated, audited, and one pretrained encoder."""
    root = tmp_path_factory.mktemp("eval") / "lake"
    lake = LakeResource(root=str(root))
    lake.ensure()
    store = MetadataStore(path=str(lake.metadata_path))
    resources = resources_for(lake, store)
    batches = write_default_dataset(lake.landing_dir, n_images=600, label_fraction=0.6)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("batches", batches)
        for batch in batches:
            run = defs.resolve_job_def("ingest_batch").execute_in_process(
                partition_key=batch, instance=instance, resources=resources, run_config=QUIET
            )
            assert run.success
        assert (
            defs.resolve_job_def("curate_and_audit")
            .execute_in_process(instance=instance, resources=resources, run_config=QUIET)
            .success
        )
        encoder_run = materialize(
            [a for a in defs.resolve_all_asset_specs() if False]
            or _assets("ssl_encoder", "image_embeddings", "probes"),
            instance=instance,
            resources=resources,
            run_config={
                "ops": {
                    "ssl_encoder": {"config": {"epochs": 2, "batch_size": 128}},
                    "probes": {
                        "config": {
                            "seeds": 1,
                            "budgets": [
                                {"fraction": 0.2, "min_per_class": 2},
                                {"fraction": 1.0, "min_per_class": 1},
                            ],
                        }
                    },
                },
                **QUIET,
            },
        )
        assert encoder_run.success
        yield lake, store, resources, instance


def _assets(*names):
    return [a for a in defs.assets if getattr(a, "key", None) and a.key.to_user_string() in names]


def test_encoder_is_registered_with_lineage_and_probes_are_recorded(trained):
    _, store, _, _ = trained
    encoders = store.query("SELECT * FROM models WHERE kind = 'encoder'")
    assert len(encoders) == 1 and encoders["status"].iloc[0] == "candidate"
    lineage = json.loads(encoders["lineage"].iloc[0])
    assert lineage["train_images"] > 200 and lineage["data_fingerprint"]
    probes = store.query("SELECT method, count(*) AS n FROM probes GROUP BY method ORDER BY 1")
    assert set(probes["method"]) == {
        "random/knn",
        "random/linear",
        "scratch/supervised",
        "ssl/knn",
        "ssl/linear",
    }
    ssl = store.query("SELECT avg(accuracy) AS a FROM probes WHERE method = 'ssl/linear'")
    assert ssl["a"].iloc[0] > 0.5  # ten digit classes: far above chance (0.1)


def test_champion_is_replaced_only_by_a_better_model_and_can_be_restored(trained, tmp_path):
    lake, store, resources, instance = trained
    # a model that learned nothing (lr 0) becomes the first champion: there is none to beat
    _, checks = _finetune_and_judge(resources, instance, lr=0.0, epochs=1, patience=1)
    assert all(checks.values())
    weak = store.current_champion()["model_id"]

    # a trained one is clearly better: promoted
    result, checks = _finetune_and_judge(resources, instance, lr=3e-3, epochs=12)
    assert result.success and all(checks.values())
    strong = store.current_champion()["model_id"]
    assert strong != weak

    # another that learned nothing is refused, and the champion stays
    result, checks = _finetune_and_judge(resources, instance, lr=0.0, epochs=1, seed=7)
    assert not result.success  # the blocking promotion check failed
    assert checks["challenger_not_worse"] is False
    assert store.current_champion()["model_id"] == strong
    refused = store.query(
        "SELECT challenger_id, promoted, reasons FROM promotions ORDER BY decided_at DESC LIMIT 1"
    ).iloc[0]
    assert not refused["promoted"] and "worse than the champion" in refused["reasons"]
    statuses = dict(store.query("SELECT model_id, status FROM models").itertuples(index=False))
    assert statuses[refused["challenger_id"]] == "rejected"
    assert statuses[weak] == "retired"
    assert (lake.path("models", strong) / "MODEL_CARD.md").is_file()

    # a person restores the previous champion with one command
    assert cli(["--lake", lake.root, "champion", "restore", weak, "--why", "rollback test"]) == 0
    assert store.current_champion()["model_id"] == weak
    last = store.query(
        "SELECT decided_by, reasons FROM promotions ORDER BY decided_at DESC LIMIT 1"
    )
    assert last["decided_by"].iloc[0] == "restore" and "rollback test" in last["reasons"].iloc[0]
    assert cli(["--lake", lake.root, "champion", "restore", strong]) == 0


def test_every_markdown_table_the_pipeline_wrote_keeps_its_columns(trained):
    """Every markdown value of every materialization so far (ingest to champion) and every
    model card: each table row has its header's cells; table metadata rows match their
    schema; the champion's decision is a table with the interval and tolerance."""
    from dagster import MarkdownMetadataValue, TableMetadataValue

    from tests.test_presentation import assert_tables_well_formed

    lake, _, resources, instance = trained
    if not instance.fetch_materializations(AssetKey("champion_model"), limit=1).records:
        _finetune_and_judge(resources, instance, epochs=2)
    tables = inline = 0
    for key in instance.get_asset_keys():
        for record in instance.fetch_materializations(key, limit=100).records:
            for label, value in record.asset_materialization.metadata.items():
                if isinstance(value, MarkdownMetadataValue):
                    tables += assert_tables_well_formed(value.md_str or "")
                elif isinstance(value, TableMetadataValue):
                    columns = {c.name for c in value.schema.columns}  # stored keys are sorted
                    assert all(set(r.data) == columns for r in value.records), label
                    inline += 1
    cards = list(lake.path("models").glob("*/MODEL_CARD.md"))
    assert cards
    for card in cards:
        tables += assert_tables_well_formed(card.read_text())
    assert tables >= 5 and inline >= 10
    champion = instance.fetch_materializations(AssetKey("champion_model"), limit=1).records[0]
    decision = champion.asset_materialization.metadata["decision"]
    rules = [r.data["rule"] for r in decision.records]
    assert rules[0].startswith("challenger not worse") and "tolerance" in str(decision.records)


def test_training_runs_are_tracked_in_mlflow_with_epochs_and_the_dagster_run(trained):
    """After a tiny run, MLflow (a SQLite store in the lake) holds the SSL and the
    fine-tuning runs with their per-epoch metrics, tagged with the Dagster run that made them,
    and the materializations link to them."""
    import mlflow

    lake, store, resources, instance = trained
    result, _ = _finetune_and_judge(resources, instance, epochs=3, patience=3, seed=3)
    store_uri = f"sqlite:///{lake.root_path / 'mlflow.db'}"  # the default: under the lake
    client = mlflow.MlflowClient(store_uri)
    mlflow.set_tracking_uri(store_uri)
    runs = mlflow.search_runs(experiment_names=["ssl-assets"], output_format="list")
    by_asset = {}
    for run in runs:
        by_asset.setdefault(run.data.tags["asset"], []).append(run)
    encoder = store.query("SELECT model_id, lineage FROM models WHERE kind = 'encoder'")
    ssl = next(
        r for r in by_asset["ssl_encoder"] if r.data.tags["model_id"] in set(encoder["model_id"])
    )
    row = encoder[encoder["model_id"] == ssl.data.tags["model_id"]].iloc[0]
    assert ssl.data.tags["dagster_run_id"] == json.loads(row["lineage"])["run_id"]
    assert len(client.get_metric_history(ssl.info.run_id, "loss")) == 2  # two epochs
    assert ssl.data.params["method"] == "simclr"
    artifacts = {a.path for a in client.list_artifacts(ssl.info.run_id)}
    assert {"training_curves.png", "MODEL_CARD.md"} <= artifacts

    ft_event = result.asset_materializations_for_node("finetuned_model")[0]
    ft = client.get_run(ft_event.metadata["mlflow_run_id"].value)
    assert ft.data.tags["dagster_run_id"] == result.run_id
    assert ft.data.tags["model_id"] == ft_event.metadata["model_id"].value
    epochs = client.get_metric_history(ft.info.run_id, "val_accuracy")
    assert len(epochs) == ft_event.metadata["epochs"].value >= 1
    assert "MODEL_CARD.md" in {a.path for a in client.list_artifacts(ft.info.run_id)}
    assert "mlflow ui" in str(ft_event.metadata["mlflow_run"].value)


def test_load_and_predict_api_matches_the_evaluation(trained):
    from ssl_assets.inference import load_model
    from ssl_assets.ml.evaluate.model_io import load_finetuned
    from ssl_assets.ml.evaluate.supervised import predict_labels

    lake, store, resources, instance = trained
    if store.current_champion() is None:  # run alone: make a champion the way the pipeline does
        result, _ = _finetune_and_judge(resources, instance, lr=3e-3, epochs=4)
        assert result.success
    champion = store.current_champion()
    test = store.query(
        "SELECT i.batch, i.rel_path, c.array_path, c.array_row FROM curated_images k "
        "JOIN images i USING (image_id) JOIN image_catalog c USING (image_id) "
        "WHERE k.include AND k.split = 'test' ORDER BY i.rel_path LIMIT 40"
    )
    files = [
        str(lake.batch_dir(b) / p) for b, p in zip(test["batch"], test["rel_path"], strict=True)
    ]
    arrays = np.stack(
        [
            np.load(lake.path(p), mmap_mode="r")[r]
            for p, r in zip(test["array_path"], test["array_row"], strict=True)
        ]
    )
    champion_dir = lake.model_path(champion["path"])
    classifier, meta = load_finetuned(champion_dir)
    evaluated = [meta["class_names"][i] for i in predict_labels(classifier, arrays)]
    api = load_model(champion_dir).predict(files)
    assert api == evaluated


def test_two_process_torchrun_training_reports_to_dagster_once(trained):
    """ssl_encoder under torchrun (2 gloo ranks) through Pipes: one materialization, one epoch
    report per epoch (rank 0 only), and both ranks end with identical weights."""
    _, store, resources, instance = trained
    result = materialize(
        _assets("ssl_encoder"),
        instance=instance,
        resources=resources,
        run_config={
            "ops": {
                "ssl_encoder": {
                    "config": {
                        "epochs": 2,
                        "batch_size": 64,
                        "processes": 2,
                        "backbone_kwargs": {"norm": "group"},
                        "warm_start_from_champion": False,
                    }
                }
            },
            **QUIET,
        },
        raise_on_error=False,
    )
    # (two short epochs of a GroupNorm encoder may or may not pass the collapse floor; this
    # test is about how the run reports, the collapse check has tests of its own)
    events = result.asset_materializations_for_node("ssl_encoder")
    assert len(events) == 1
    metadata = events[0].metadata
    assert metadata["processes"].value == 2
    assert metadata["epoch_reports"].value == 2  # two epochs, reported by rank 0 only
    assert metadata["world_size"].value == 2


def test_curation_can_pin_a_named_encoder_for_the_semantic_tier(trained):
    """Curation's semantic tier may use an encoder named in the lake's curation settings instead
    of the fixed cheap embedding; the name is recorded with every group, and nothing about
    training changes it."""
    from PIL import Image

    from resources.curation_settings import CurationSettings
    from ssl_assets.assets.curation_assets import duplicates

    lake, store, resources, instance = trained
    encoder_id = store.query(
        "SELECT model_id FROM models WHERE kind = 'encoder' ORDER BY created_at LIMIT 1"
    )["model_id"].iloc[0]
    source = store.query("SELECT i.batch, i.rel_path FROM images i ORDER BY i.rel_path LIMIT 3")
    batch_dir = lake.landing_dir / "late"
    batch_dir.mkdir()
    for k, (b, p) in enumerate(zip(source["batch"], source["rel_path"], strict=True)):
        Image.open(lake.batch_dir(b) / p).save(batch_dir / f"copy_{k}.bmp")  # same pixels
    (batch_dir / "_READY").write_text("")
    instance.add_dynamic_partitions("batches", ["late"])
    assert (
        defs.resolve_job_def("ingest_batch")
        .execute_in_process(
            partition_key="late", instance=instance, resources=resources, run_config=QUIET
        )
        .success
    )
    result = materialize(
        [duplicates],
        instance=instance,
        resources={**resources, "curation": CurationSettings(embedder=encoder_id)},
        run_config=QUIET,
    )
    assert result.success
    rows = store.query(
        "SELECT d.embedder, d.role, d.tier FROM duplicates d JOIN images i USING (image_id) "
        "WHERE i.batch = 'late'"
    )
    assert len(rows) == 3 and rows["embedder"].str.startswith(f"encoder:{encoder_id}:").all()
    assert (rows["role"] == "member").all() and (rows["tier"] == "exact").all()


def _with_champion(trained):
    lake, store, resources, instance = trained
    if store.current_champion() is None:  # run alone: make one the way the pipeline does
        result, _ = _finetune_and_judge(resources, instance, lr=3e-3, epochs=4)
        assert result.success
    return store.current_champion()


def _copy_lake(lake, destination):
    shutil.copytree(lake.root, destination)
    copy = LakeResource(root=str(destination))
    return copy, MetadataStore(path=str(copy.metadata_path))


def _a_landed_image(lake, store) -> str:
    row = store.query("SELECT batch, rel_path FROM images WHERE status = 'ok' LIMIT 1").iloc[0]
    return str(lake.batch_dir(row["batch"]) / row["rel_path"])


def test_a_copied_lake_serves_its_own_champion_and_a_moved_one_predicts_and_retrains(
    trained, tmp_path, capsys
):
    lake, store, _, instance = trained
    _with_champion(trained)
    # the registry records lake-relative paths
    assert not store.query("SELECT path FROM models WHERE path LIKE '/%'")["path"].tolist()

    # a lake written by older code: the registry holds absolute paths into it
    original, ostore = _copy_lake(lake, tmp_path / "original")
    with ostore.transaction() as con:
        con.execute("UPDATE models SET path = ? || '/' || path", [str(original.root_path)])
    image = _a_landed_image(original, ostore)
    assert cli(["--lake", original.root, "predict", image]) == 0
    label = capsys.readouterr().out.split("\t")[1]

    copy, cstore = _copy_lake(original, tmp_path / "copy")
    # damage the original's champion: a copy that still read the original's files would fail
    champion = ostore.current_champion()["model_id"]
    original.path("models", champion, "model.safetensors").write_bytes(b"not the weights")
    assert cli(["--lake", copy.root, "predict", image]) == 0
    assert capsys.readouterr().out.split("\t")[1] == label
    assert cli(["--lake", original.root, "predict", image]) == 2
    assert "SHA-256" in capsys.readouterr().err

    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(copy.root, moved)
    mlake = LakeResource(root=str(moved))
    mstore = MetadataStore(path=str(mlake.metadata_path))
    assert cli(["--lake", str(moved), "predict", _a_landed_image(mlake, mstore)]) == 0
    encoder = mstore.query(
        "SELECT model_id FROM models WHERE kind = 'encoder' AND status = 'champion'"
    )["model_id"].iloc[0]
    result = materialize(
        _assets("ssl_encoder"),
        instance=instance,
        resources=resources_for(mlake, mstore),
        run_config={"ops": {"ssl_encoder": {"config": {"epochs": 1, "batch_size": 128}}}, **QUIET},
        raise_on_error=False,
    )
    assert result.asset_materializations_for_node("ssl_encoder"), "retraining failed"
    newest = mstore.query(
        "SELECT path, lineage FROM models WHERE kind = 'encoder' ORDER BY created_at DESC LIMIT 1"
    ).iloc[0]
    assert json.loads(newest["lineage"])["warm_start"] == encoder
    assert newest["path"].startswith("models/") and (moved / newest["path"]).is_file()


def test_swapped_weights_are_refused_where_the_registry_loads_them(trained, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from ssl_assets.atomic import file_sha256

    lake, _, _, instance = trained
    _with_champion(trained)
    copy, store = _copy_lake(lake, tmp_path / "lake")
    champion = store.current_champion()
    folder = copy.path("models", champion["model_id"])
    # a consistent pair (weights + model.json), as a careful attacker would leave it
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["head.bias"] = tensors["head.bias"] + 1.0
    save_file(tensors, str(folder / "model.safetensors"))
    meta = json.loads((folder / "model.json").read_text())
    meta["weights_sha256"] = swapped = file_sha256(folder / "model.safetensors")
    (folder / "model.json").write_text(json.dumps(meta))

    assert cli(["--lake", copy.root, "predict", _a_landed_image(copy, store)]) == 2
    err = capsys.readouterr().err
    assert swapped in err and champion["content_hash"] in err
    assert len(err.strip().splitlines()) == 1

    # warm start from a champion encoder whose weights were swapped: refused before training
    encoder = store.query(
        "SELECT model_id FROM models WHERE kind = 'encoder' AND status = 'champion'"
    )["model_id"].iloc[0]
    weights = copy.path("models", encoder, "encoder.safetensors")
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    result = materialize(
        _assets("ssl_encoder"),
        instance=instance,
        resources=resources_for(copy, store),
        run_config={"ops": {"ssl_encoder": {"config": {"epochs": 1}}}, **QUIET},
        raise_on_error=False,
    )
    assert not result.success
    error, failure = result.get_step_failure_events()[0].step_failure_data.error, ""
    while error is not None:
        failure, error = failure + error.message, error.cause
    assert "ModelIntegrityError" in failure and encoder in failure and "SHA-256" in failure
