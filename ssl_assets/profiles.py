"""Size profiles: one switch, `SSL_PROFILE=tiny|demo|full|photo`, sizes everything at once.

Tests run `tiny` (seconds), the README's run command `demo` (minutes on a laptop CPU), long runs
on small images `full`, and real photos `photo`. A profile is resolved once, when the Definitions are built
(`ssl_assets.definitions.build_definitions`, from `--profile` or `$SSL_PROFILE`): it becomes the
`profile` resource, sizes the `image_spec` resource and the sensors' intervals, so the command
line flag and the environment variable give identical run configs. An asset's config field
left at `None` takes the profile's value; set it in the launchpad to override one run.
"""

from __future__ import annotations

import os

from dagster import ConfigurableResource

PROFILE_ENV = "SSL_PROFILE"
DEFAULT_PROFILE = "demo"


class Profile(ConfigurableResource):
    """Defaults that scale with how much data and compute a run is meant to use (the
    `profile` resource: shown, and editable per run, in the launchpad)."""

    name: str
    # Embedded default dataset (scikit-learn digits): how many of the 1,797 images to land.
    default_images: int
    # Fraction of each default batch that gets a label in labels.csv (a minority).
    default_label_fraction: float
    # Ingestion: images with more pixels than this are quarantined (decompression bombs).
    max_pixels: int
    # Ingestion: files larger than this are quarantined from their size alone, never read (each
    # decoding thread holds one whole file in memory). At least 4 bytes x max_pixels, so an
    # uncompressed 8-bit RGBA image at the pixel limit still fits; real photos (JPEG, PNG,
    # WebP: a few to a few tens of MB) are far below it.
    max_file_bytes: int
    # Curation: canonical square resolution of the decoded catalog arrays.
    catalog_resolution: int
    # How a non-square image becomes the catalog's square: pad | center_crop | stretch.
    catalog_aspect: str
    # Pretraining defaults (the launchpad overrides any of them per run). The budget is in
    # optimizer steps, not seconds or epochs, so a run computes the same thing on a busy machine
    # and on a quiet one; its seconds are reported beside.
    pretrain_method: str
    # A build_backbone name, or "auto": resnet50 where the compute resource has CUDA, resnet18
    # on a CPU (`ssl_assets.ml.backbones.resolve_backbone_name`).
    pretrain_backbone: str
    pretrain_steps: int
    pretrain_batch_size: int
    # Evaluation: label-draw seeds per budget, the scratch baseline's optimizer steps (the same
    # for every label budget and seed), fine-tune epochs.
    eval_seeds: int
    scratch_steps: int
    finetune_epochs: int
    # Retrain policy: new included train images since the last encoder that justify a retrain.
    retrain_min_new_images: int
    # Automation: how often the landing sensor looks for new batches.
    sensor_interval_s: int


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        default_images=240,
        default_label_fraction=0.4,
        max_pixels=4_000_000,
        max_file_bytes=32 << 20,  # 32 MiB
        catalog_resolution=32,
        catalog_aspect="pad",
        pretrain_method="simclr",
        pretrain_backbone="small_cnn",
        pretrain_steps=6,
        pretrain_batch_size=64,
        eval_seeds=2,
        scratch_steps=20,
        finetune_epochs=3,
        retrain_min_new_images=20,
        sensor_interval_s=5,
    ),
    "demo": Profile(
        name="demo",
        default_images=1797,
        default_label_fraction=0.3,
        max_pixels=50_000_000,
        max_file_bytes=256 << 20,  # 256 MiB
        catalog_resolution=32,
        catalog_aspect="pad",
        pretrain_method="simclr",
        pretrain_backbone="small_cnn",
        pretrain_steps=80,
        pretrain_batch_size=256,
        eval_seeds=3,
        scratch_steps=30,
        finetune_epochs=40,
        retrain_min_new_images=200,
        sensor_interval_s=30,
    ),
    "full": Profile(
        name="full",
        default_images=1797,
        default_label_fraction=0.3,
        max_pixels=89_478_485,  # Pillow's own decompression-bomb limit
        max_file_bytes=512 << 20,  # 512 MiB
        catalog_resolution=64,
        catalog_aspect="pad",
        pretrain_method="simclr",
        pretrain_backbone="small_cnn",
        pretrain_steps=20_000,  # ~200 epochs of 50,000 images at batch 512
        pretrain_batch_size=512,
        eval_seeds=3,
        scratch_steps=5_000,
        finetune_epochs=100,
        retrain_min_new_images=5000,
        sensor_interval_s=60,
    ),
    # Real photos (hundreds to thousands of pixels, mixed aspect ratios) at real resolution.
    # Why 256 px, centre-cropped: training takes random-resized crops at 224 px, the input size
    # of ImageNet-pretrained ResNets (the starts `init_from` offers); 256 is the side the
    # standard ImageNet recipe resizes to before its 224 crop, so a crop of up to ~77 % of the
    # area is still at native resolution, while a stored image costs 192 KiB (1.7x a 224 px
    # one; 512 px would cost 768 KiB and every read 4x). The short side is resized to 256 and
    # the centre cropped, so training crops never see a constant border (`pad` would teach the
    # encoder the padding); a 16:9 photo keeps its central 56 % of the width.
    "photo": Profile(
        name="photo",
        default_images=1797,
        default_label_fraction=0.3,
        max_pixels=89_478_485,
        max_file_bytes=512 << 20,  # 512 MiB
        catalog_resolution=256,
        catalog_aspect="center_crop",
        pretrain_method="simclr",
        pretrain_backbone="auto",
        pretrain_steps=20_000,  # ~100 epochs of 50,000 images at batch 256
        pretrain_batch_size=256,
        eval_seeds=3,
        scratch_steps=5_000,
        finetune_epochs=30,
        retrain_min_new_images=5000,
        sensor_interval_s=60,
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """Return the named profile, or the one `SSL_PROFILE` selects (default `demo`)."""
    key = (name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE).strip().lower()
    try:
        return PROFILES[key]
    except KeyError:
        raise ValueError(
            f"{PROFILE_ENV}={key!r} is not a profile; choose one of {sorted(PROFILES)}"
        ) from None
