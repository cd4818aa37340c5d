"""The operations files under deploy/ are real configuration: each is validated against the
schema of the system that would read it (no cluster or Postgres is at hand)."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
import yaml
from dagster._config import validate_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config

ROOT = Path(__file__).resolve().parents[1]


def _validate_instance(folder: Path) -> dict:
    config, _ = dagster_instance_config(str(folder), "dagster.yaml")
    for section in ("run_launcher", "run_coordinator"):
        spec = config.get(section)
        if spec:
            klass = getattr(importlib.import_module(spec["module"]), spec["class"])
            result = validate_config(klass.config_type(), spec.get("config") or {})
            assert result.success, [e.message for e in result.errors]
    return config


def test_local_instance_config_is_valid():
    config = _validate_instance(ROOT / "dagster_home")
    assert config["telemetry"] == {"enabled": False}


def test_production_instance_config_is_valid():
    config = _validate_instance(ROOT / "deploy")
    assert "postgres" in config["storage"]
    assert config["run_launcher"]["class"] == "K8sRunLauncher"


@pytest.mark.parametrize("folder", ["dagster_home", "deploy"])
def test_runs_whose_worker_died_are_marked_failed_by_run_monitoring(folder):
    """Run monitoring only judges a worker's health with a launcher that can check it; without
    one, a killed run stays STARTED (Dagster's DefaultRunLauncher cannot check)."""
    from dagster._core.launcher.base import RunLauncher

    config = _validate_instance(ROOT / folder)
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] and monitoring["max_resume_run_attempts"] == 0
    spec = config["run_launcher"]
    klass = getattr(importlib.import_module(spec["module"]), spec["class"])
    assert (
        klass.supports_check_run_worker_health is not RunLauncher.supports_check_run_worker_health
    )


def test_a_typo_in_the_instance_config_is_caught(tmp_path):
    text = (ROOT / "deploy" / "dagster.yaml").read_text().replace("hostname:", "hostnme:")
    (tmp_path / "dagster.yaml").write_text(text)
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(tmp_path), "dagster.yaml")


def test_a_bad_run_launcher_field_is_caught(tmp_path):
    shutil.copy(ROOT / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    text = (tmp_path / "dagster.yaml").read_text().replace("job_namespace:", "job_namespce:")
    (tmp_path / "dagster.yaml").write_text(text)
    with pytest.raises(AssertionError):
        _validate_instance(tmp_path)


def test_pipes_k8s_pod_spec_builds_a_valid_kubernetes_pod():
    """Build the pod exactly as PipesK8sClient.run would, with the command the asset passes."""
    from dagster_k8s.pipes import build_pod_body

    spec = yaml.safe_load((ROOT / "deploy" / "k8s" / "pretrain-pipes.yaml").read_text())
    command = [
        "torchrun",
        "--nproc_per_node=4",
        "--max-restarts=0",
        "-m",
        "ssl_assets.ml.entrypoint",
        "--job",
        "/lake/jobs/x.json",
    ]
    pod = build_pod_body(
        pod_name="ssl-pretrain-x",
        image=None,
        command=command,
        env_vars={"DAGSTER_PIPES_CONTEXT": "e30=", "DAGSTER_PIPES_MESSAGES": "e30="},
        base_pod_meta=spec["base_pod_meta"],
        base_pod_spec=spec["base_pod_spec"],
    )
    container = pod.spec.containers[0]
    assert container.command == command
    assert container.resources.limits["nvidia.com/gpu"] == "4"
    assert {e.name for e in container.env} >= {"SSL_LAKE", "DAGSTER_PIPES_CONTEXT"}
    assert pod.metadata.labels["app.kubernetes.io/component"] == "pretrain"
    with pytest.raises(Exception, match="restartPolicyy"):
        build_pod_body(
            pod_name="x",
            image=None,
            command=command,
            env_vars={},
            base_pod_meta=None,
            base_pod_spec={**spec["base_pod_spec"], "restartPolicyy": "Never"},
        )


def test_object_storage_lake_volumes_are_valid_kubernetes_objects():
    from dagster_k8s.models import k8s_model_from_dict
    from kubernetes.client import V1PersistentVolume, V1PersistentVolumeClaim

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "lake-s3.yaml").read_text()))
    models = {
        "PersistentVolume": V1PersistentVolume,
        "PersistentVolumeClaim": V1PersistentVolumeClaim,
    }
    from dagster_k8s.models import k8s_snake_case_dict

    built = [
        k8s_model_from_dict(models[d["kind"]], k8s_snake_case_dict(models[d["kind"]], d))
        for d in docs
    ]
    pv, pvc = built
    assert pv.spec.csi.driver == "s3.csi.aws.com"
    launcher = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())["run_launcher"]
    claims = {v["persistentVolumeClaim"]["claimName"] for v in launcher["config"]["volumes"]}
    assert pvc.metadata.name in claims  # the run pods mount this claim as the lake
    assert "SSL_METADATA=/metadata/metadata.duckdb" in launcher["config"]["env_vars"]


def test_metadata_file_can_live_outside_an_object_store_lake(tmp_path, monkeypatch):
    from resources.lake import LakeResource

    monkeypatch.setenv("SSL_LAKE", str(tmp_path / "bucket"))
    monkeypatch.setenv("SSL_METADATA", str(tmp_path / "block" / "metadata.duckdb"))
    lake = LakeResource.from_env()
    assert lake.metadata_path == tmp_path / "block" / "metadata.duckdb"
    assert lake.landing_dir == tmp_path / "bucket" / "landing"
