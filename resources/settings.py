"""Settings that span stages, each set once and read by every stage that needs it.

Why resources: a setting such as the catalog resolution decides what ingestion stages, what
curation deduplicates, what training reads and how a served model decodes its inputs. Declared
per asset it had to be changed in ten launchpad forms and could disagree between them. As a
Dagster resource it is configured in one place (per profile in `ssl_assets/definitions.py`, or
per run in the launchpad's `resources:` section), shown on the UI's resources page, and every
stage reads the same value.
"""

from __future__ import annotations

from typing import Any, Literal

from dagster import ConfigurableResource
from pydantic import Field

from ssl_assets.data.canonical import CanonicalSpec


class ImageSpecResource(ConfigurableResource):
    """How every image is canonicalised; its `version` (r<resolution>-<aspect>) names the
    catalog arrays that ingestion stages, curation deduplicates and training reads."""

    resolution: int = Field(default=32, description="square side of the catalog, in pixels")
    aspect: Literal["pad", "center_crop", "stretch"] = Field(
        default="pad", description="pad | center_crop | stretch: how a non-square image is fit"
    )

    @property
    def spec(self) -> CanonicalSpec:
        return CanonicalSpec(resolution=self.resolution, aspect=self.aspect)

    @property
    def version(self) -> str:
        return self.spec.version


class ComputeResource(ConfigurableResource):
    """Where and how every stage that runs a network computes: pretraining, embeddings, probes'
    scratch baseline, fine-tuning and the champion's re-scoring."""

    device: str = Field(
        default="auto", description="auto (CUDA when present, else CPU) | cpu | cuda | cuda:N"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16"
    )
    threads: int = Field(default=0, description="CPU threads per process; 0 = torch's default")
    channels_last: bool | None = Field(
        default=None,
        description="NHWC memory layout for convolutions; None: on for CUDA (tensor cores "
        "read NHWC), off on CPU",
    )

    def torch_device(self) -> str:
        """The device name torch should use ("auto" resolved on this machine)."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def use_channels_last(self) -> bool:
        """Whether convolutions should run channels-last on the resolved device."""
        if self.channels_last is not None:
            return self.channels_last
        return self.torch_device().startswith("cuda")


class TrackingResource(ConfigurableResource):
    """Where training runs are logged for comparison (MLflow; `ssl_assets.tracking`): every
    `ssl_encoder` and `finetuned_model` run, with the Dagster run id as a tag."""

    uri: str | None = Field(
        default=None,
        description="MLflow tracking URI. None: $MLFLOW_TRACKING_URI at run time, else a local "
        "store in the lake (sqlite, lake/mlflow.db).",
    )
    experiment: str = Field(default="ssl-assets", description="MLflow experiment name")
    enabled: bool = Field(default=True, description="False: log nothing to MLflow")

    def log(self, lake_root: str, name: str, **run: Any) -> tuple[Any, str | None]:
        """Log one run (see `ssl_assets.tracking.log_run`); returns (TrackedRun or None, why
        not). Tracking is a record beside the pipeline: a store that cannot be reached is
        reported, never a reason to fail the training that already happened."""
        if not self.enabled:
            return None, "tracking is disabled (the tracking resource's enabled: false)"
        from ssl_assets.tracking import log_run

        try:
            return log_run(lake_root, name, uri=self.uri, experiment=self.experiment, **run), None
        except Exception as exc:  # any store failure is reported, not raised
            return None, f"not logged to MLflow: {type(exc).__name__}: {exc}"
