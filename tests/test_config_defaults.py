"""One default per setting: an asset's Config and the plain config it fills never disagree.

A field an asset's launchpad form shares with the plain-Python config behind it (same name)
must have the same default there; a field left at None takes the profile's value, and the
profile must hold one.
"""

from __future__ import annotations

import dataclasses

import pytest

from quality import thresholds
from resources.curation_settings import CurationSettings
from ssl_assets.assets.curation_assets import CuratedImagesConfig
from ssl_assets.assets.evaluation_assets import ChampionConfig, FinetuneAssetConfig
from ssl_assets.assets.monitoring_assets import MonitoringConfig
from ssl_assets.assets.pretraining_assets import PretrainConfig
from ssl_assets.audit.drift import DriftConfig
from ssl_assets.curation.dedup import DedupConfig
from ssl_assets.curation.splits import SplitConfig
from ssl_assets.ml.config import TrainConfig
from ssl_assets.ml.evaluate.finetuning import FinetuneConfig
from ssl_assets.ml.evaluate.promotion import PromotionPolicy
from ssl_assets.ml.evaluate.shadow import DecayPolicy
from ssl_assets.profiles import get_profile

#: asset Config field left at None -> the profile field that supplies it
PROFILE_SIZED = {
    (PretrainConfig, "method"): "pretrain_method",
    (PretrainConfig, "max_steps"): "pretrain_steps",
    # None: the step budget decides (whole epochs only when a run asks for them)
    (PretrainConfig, "epochs"): "pretrain_steps",
    (PretrainConfig, "batch_size"): "pretrain_batch_size",
    (PretrainConfig, "backbone"): "pretrain_backbone",
    (FinetuneAssetConfig, "epochs"): "finetune_epochs",
}


def _plain_defaults(plain: type) -> dict:
    out = {}
    for f in dataclasses.fields(plain):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


@pytest.mark.parametrize(
    ("asset_config", "plain"),
    [
        (PretrainConfig, TrainConfig),
        (FinetuneAssetConfig, FinetuneConfig),
        (CurationSettings, DedupConfig),
        (CuratedImagesConfig, SplitConfig),
        (ChampionConfig, PromotionPolicy),
        (MonitoringConfig, DriftConfig),
        (MonitoringConfig, DecayPolicy),
    ],
)
def test_every_shared_field_has_one_default(asset_config, plain):
    defaults = _plain_defaults(plain)
    shared = [n for n in asset_config.model_fields if n in defaults]
    assert shared, f"{asset_config.__name__} shares no field with {plain.__name__}"
    for name in shared:
        default = asset_config.model_fields[name].default
        if (asset_config, name) in PROFILE_SIZED:
            assert default is None
            for profile in ("tiny", "demo", "full", "photo"):
                assert getattr(get_profile(profile), PROFILE_SIZED[asset_config, name])
            continue
        assert default == defaults[name], (
            f"{asset_config.__name__}.{name} defaults to {default!r}, "
            f"{plain.__name__}.{name} to {defaults[name]!r}"
        )


def test_champion_limits_live_in_the_thresholds_module():
    policy = PromotionPolicy()
    assert policy.tolerance == thresholds.CHAMPION_TOLERANCE == ChampionConfig().tolerance
    assert policy.n_resamples == ChampionConfig().bootstrap_resamples
