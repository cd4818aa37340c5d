"""Fine-tuning strategies (LoRA, partial), stages, and the from-scratch supervised baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.evaluate import (
    FinetuneConfig,
    ScratchConfig,
    apply_lora,
    backbone_stages,
    finetune,
    lora_base_state_dict,
    merge_lora,
    predict_labels,
    train_scratch_baseline,
)
from ssl_assets.ml.evaluate.supervised import Classifier, predict_logits

TINY_CNN = {"widths": (8, 16, 32), "strides": (2, 2, 2)}


def colour_images(n: int, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """32x32 uint8 images whose dominant colour is the class (plus a class-dependent square)."""
    rng = np.random.default_rng(seed)
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])[:classes]
    y = rng.integers(0, classes, n)
    img = palette[y][:, None, None, :] + rng.normal(0.0, 25.0, (n, 32, 32, 3))
    for i, c in enumerate(y):
        img[i, 4 + 6 * c : 12 + 6 * c, 8:16] = 255
    return np.clip(img, 0, 255).astype(np.uint8), y


def _encoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_backbone("small_cnn", **TINY_CNN)


def test_lora_keeps_frozen_encoder_bit_identical_while_the_model_improves() -> None:
    encoder = _encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    x, y = colour_images(200, seed=1)
    xte, yte = colour_images(90, seed=2)
    cfg = FinetuneConfig(
        strategy="lora", epochs=4, batch_size=32, lr=1e-2, lora_rank=2, patience=None, seed=0
    )
    untrained = Classifier(encoder, 3, seed=cfg.seed)  # the same head init finetune starts from
    acc_before = (predict_labels(untrained, xte) == yte).mean()

    result = finetune(encoder, 3, x[:140], y[:140], x[140:], y[140:], cfg)

    assert result.lora_layers == ["features.0", "features.3", "features.6"]
    assert result.trainable_parameters < result.total_parameters / 4
    frozen = lora_base_state_dict(result.model.backbone)
    assert set(frozen) == set(before)
    assert all(torch.equal(frozen[k], before[k]) for k in before)  # incl. BatchNorm buffers
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())  # caller's
    assert result.log.loss_dropped
    acc_after = (predict_labels(result.deploy_model, xte) == yte).mean()
    assert acc_after > 0.8 and acc_after > acc_before + 0.2
    # merging the low-rank update into plain layers gives the same function
    assert torch.allclose(
        predict_logits(result.model, xte), predict_logits(result.deploy_model, xte), atol=1e-4
    )
    assert not any("lora" in k for k in result.deploy_model.state_dict())


def test_lora_wraps_linear_and_conv_and_merges_exactly() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    names = apply_lora(net, rank=2, alpha=4.0)
    assert names == ["0", "3"]
    assert all(not p.requires_grad for n, p in net.named_parameters() if "lora" not in n)
    with torch.no_grad():  # make the update non-zero
        for n, p in net.named_parameters():
            if "lora_b" in n:
                p.normal_()
    x = torch.randn(5, 3, 4, 4)
    assert torch.allclose(net(x), merge_lora(net)(x), atol=1e-5)
    with pytest.raises(ValueError):
        apply_lora(nn.Sequential(nn.ReLU()))


def test_partial_freezes_leading_stages_and_their_batchnorm_statistics() -> None:
    encoder = _encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    x, y = colour_images(96, seed=3)
    cfg = FinetuneConfig(
        strategy="partial", freeze_stages=2, epochs=1, batch_size=32, patience=None
    )
    result = finetune(encoder, 3, x[:64], y[:64], x[64:], y[64:], cfg)
    assert result.frozen_stages == ["block0", "block1"]
    after = result.model.backbone.state_dict()
    frozen_keys = [k for k in before if k.split(".")[1] in {"0", "1", "3", "4"}]  # conv+BN 0, 1
    assert frozen_keys and all(torch.equal(after[k], before[k]) for k in frozen_keys)
    assert not torch.equal(after["features.6.weight"], before["features.6.weight"])


def test_backbone_stages_cover_every_parameter() -> None:
    for name, cfg in [
        ("small_cnn", TINY_CNN),
        ("resnet18", {"small_image_stem": True}),
        ("vit", {"embed_dim": 32, "depth": 2, "num_heads": 2}),
    ]:
        backbone = build_backbone(name, **cfg)
        stages = backbone_stages(backbone)
        covered = {id(p) for s in stages for p in s.parameters()}
        assert covered == {id(p) for p in backbone.parameters()}, name
    assert [s.name for s in stages] == ["stem", "block0", "block1", "norm"]


def test_scratch_baseline_trains_its_loss_drops_within_the_time_budget() -> None:
    x, y = colour_images(160, seed=4)
    # epochs, not time, bound this run: a loaded CI machine must not make the check flaky
    cfg = ScratchConfig(backbone="small_cnn", backbone_kwargs=TINY_CNN, epochs=6, batch_size=32)
    model, log = train_scratch_baseline(x[:128], y[:128], x[128:], y[128:], 3, cfg)
    assert log.loss_dropped and log.loss_end < 0.8 * log.loss_start
    assert log.best_val_accuracy is not None and log.best_val_accuracy > 0.6
    assert (predict_labels(model, x[128:]) == y[128:]).mean() == log.best_val_accuracy

    timed = ScratchConfig(backbone_kwargs=TINY_CNN, time_budget_s=0.3, epochs=1000, batch_size=32)
    log = train_scratch_baseline(x[:128], y[:128], x[128:], y[128:], 3, timed)[1]
    assert log.stop_reason == "time_budget" and 0.3 <= log.train_seconds < 0.3 + 5.0
    capped = ScratchConfig(backbone_kwargs=TINY_CNN, max_steps=2, batch_size=32)
    log = train_scratch_baseline(x[:128], y[:128], x[128:], y[128:], 3, capped)[1]
    assert log.steps == 2 and log.stop_reason == "max_steps"


def test_a_step_bounded_scratch_run_validates_about_ten_times_and_keeps_the_best() -> None:
    from ssl_assets.ml.evaluate.efficiency import SCRATCH_VAL_PASSES, _for_draw

    x, y = colour_images(64, seed=5)
    cfg = ScratchConfig(backbone_kwargs=TINY_CNN, max_steps=40, epochs=10_000, batch_size=32)
    few = _for_draw(cfg, seed=1, n_labels=12)  # one step per epoch: 40 epochs
    assert few.seed == 1 and few.val_every == 40 // SCRATCH_VAL_PASSES
    model, log = train_scratch_baseline(x[:12], y[:12], x[32:], y[32:], 3, few)
    validated = [h for h in log.history if "val_accuracy" in h]
    assert log.steps == 40 and log.stop_reason == "max_steps"
    assert len(validated) == SCRATCH_VAL_PASSES  # not 40: one val pass per step
    assert log.best_val_accuracy == max(h["val_accuracy"] for h in validated)
