"""The training loop: it learns, its checkpoints are atomic, its schedule and parameter groups are
what the docstrings promise, warm starts load weights, and every method runs end to end.

All runs are tiny (16x16 synthetic shapes, a two- or three-block `small_cnn`, one thread) so the
module stays within seconds on a shared two-core machine.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ssl_assets.ml import checkpoint as checkpoint_mod
from ssl_assets.ml.augment import build_augmentation
from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.checkpoint import (
    flatten_optimizer_state,
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
    unflatten_optimizer_state,
)
from ssl_assets.ml.config import TrainConfig, config_hash
from ssl_assets.ml.data import EpochSampler, ImageSet, fixed_subset, load_images, synthetic_shapes
from ssl_assets.ml.encoder_io import load_encoder
from ssl_assets.ml.evaluate.features import embed_images
from ssl_assets.ml.model import SSLModel, enable_gradient_checkpointing
from ssl_assets.ml.monitor import collapse_metrics, knn_two_fold
from ssl_assets.ml.objectives import build_objective
from ssl_assets.ml.optim import build_optimizer, lr_at, split_decay_parameters
from ssl_assets.ml.train import train

TINY_CNN = {"widths": [8, 16], "strides": [2, 2], "input_size": 16}
TINY_VIT = {"image_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.fixture(autouse=True)
def _restore_threads() -> Any:
    """`train` sets torch's thread count from the config; put it back for other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def arrays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("arrays")
    x, _ = synthetic_shapes(512, 16, seed=0)
    xv, yv = synthetic_shapes(128, 16, seed=1)
    np.save(root / "train.npy", x)
    np.save(root / "val.npy", xv)
    return {
        "train": [(root / "train.npy", None)],
        "val": [(root / "val.npy", None, yv)],
        "images": x,
    }


def _cfg(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "method": "simclr",
        "objective": {"hidden_dim": 32, "out_dim": 16},
        "backbone_kwargs": TINY_CNN,
        "epochs": 2,
        "batch_size": 32,
        "lr": 3e-3,
        "checkpoint_every": 4,
        "num_threads": 1,
    }
    base.update(overrides)
    return TrainConfig(**base)


def _model_like(cfg: TrainConfig) -> SSLModel:
    """The model `train` starts from (same seed, same construction order)."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.backbone, **cfg.backbone_kwargs)
    return SSLModel(backbone, build_objective(cfg.method, backbone=backbone, **cfg.objective))


def test_simclr_run_lowers_the_loss_and_writes_the_encoder(
    arrays: dict[str, Any], tmp_path: Path
) -> None:
    cfg = _cfg(
        objective={"hidden_dim": 64, "out_dim": 32, "temperature": 0.2},
        backbone_kwargs={"widths": [16, 32, 64], "strides": [1, 2, 2], "input_size": 16},
        epochs=8,
        batch_size=64,
        lr=1e-2,
        weight_decay=1e-4,
        warmup_steps=5,
        checkpoint_every=0,
    )
    seen: list[dict[str, Any]] = []
    result = train(
        cfg, arrays["train"], tmp_path / "ckpt", val_data=arrays["val"], on_epoch=seen.append
    )
    assert result.completed and result.step == 8 * (512 // 64) == result.total_steps

    # the loss on fixed views of fixed images drops clearly from the initial model
    initial = _model_like(cfg)
    trained = copy.deepcopy(initial)
    _, tensors, _ = load_latest_checkpoint(tmp_path / "ckpt")
    trained.load_state_dict(
        {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    )
    encoder_state = copy.deepcopy(trained.backbone.state_dict())  # before BN sees more data
    prep = initial.backbone.preprocessing
    aug = build_augmentation("simclr", 16, mean=prep["mean"], std=prep["std"])
    images = torch.from_numpy(arrays["images"][:256]).permute(0, 3, 1, 2).contiguous()
    views = aug(images, torch.Generator().manual_seed(123))
    with torch.no_grad():
        before, after = initial(views).loss.item(), trained(views).loss.item()
    assert after < before - 0.2, (before, after)
    losses = [m["loss"] for m in result.history]
    assert np.mean(losses[-2:]) < losses[0]

    # per-epoch monitoring through the callback, on the val subset
    assert [m["epoch"] for m in seen] == list(range(8))
    for m in seen:
        assert {"loss", "images_per_s", "embedding_std", "effective_rank", "knn_accuracy"} <= set(m)
        assert 0.0 <= m["knn_accuracy"] <= 1.0 and m["images_per_s"] > 0
        assert 0.0 < m["embedding_std"] <= 1.0 and 1.0 <= m["effective_rank"] <= 64

    # the encoder and its metadata: loadable, equal to the trained backbone
    weights = load_file(str(result.encoder_path))
    assert weights.keys() == encoder_state.keys()
    assert all(torch.equal(weights[k], v) for k, v in encoder_state.items())
    meta = json.loads(Path(str(result.metadata_path)).read_text())
    assert meta["backbone"] == "small_cnn" and meta["out_dim"] == 64 and meta["method"] == "simclr"
    assert meta["preprocessing"]["input_size"] == 16 and meta["steps"] == result.step
    assert meta["config_hash"] == result.config_hash and len(meta["history"]) == 8
    assert TrainConfig.from_dict(meta["config"]) == cfg


def test_epoch_monitor_figures_equal_evaluation_of_the_written_encoder(
    arrays: dict[str, Any], tmp_path: Path
) -> None:
    """The monitor embeds with evaluation's own path (`embed_images`): recomputing its figures
    from the written encoder on the documented fixed val subset gives the very same numbers."""
    cfg = _cfg(epochs=1, knn_samples=96)
    result = train(cfg, arrays["train"], tmp_path / "ckpt", val_data=arrays["val"])
    encoder, _ = load_encoder(Path(str(result.encoder_path)).parent)
    path, _, labels = arrays["val"][0]
    pick = fixed_subset(len(labels), cfg.knn_samples, cfg.seed, "knn")
    pick = pick[torch.randperm(len(pick), generator=torch.Generator().manual_seed(0))]
    feats = torch.from_numpy(embed_images(encoder, np.load(path)[pick.numpy()]))
    knn = knn_two_fold(feats, torch.from_numpy(labels)[pick], cfg.knn_k, cfg.knn_temperature)
    expected = {**collapse_metrics(feats), "knn_accuracy": knn}
    assert {k: result.metrics[k] for k in expected} == expected


def test_resume_ignores_a_partial_checkpoint(arrays: dict[str, Any], tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    cfg = _cfg(checkpoint_every=4)
    first = train(cfg, arrays["train"], ckpt, stop_after_steps=8)
    assert not first.completed and first.step == 8 and first.encoder_path is None
    assert [s for s, _ in list_checkpoints(ckpt)] == [4, 8]  # keeps the last 2

    # a crash while writing step 12: the temporary directory has a half-written state
    partial = ckpt / ".tmp-step_000000012-deadbeef"
    partial.mkdir()
    (partial / "state.safetensors").write_bytes(b"\x00" * 10)
    # and a directory that looks final but lacks its JSON (never produced by the rename
    # protocol, but resume must not trust it either)
    (ckpt / "step_000000016").mkdir()
    (ckpt / "step_000000016" / "state.safetensors").write_bytes(b"garbage")
    assert [s for s, _ in list_checkpoints(ckpt)] == [4, 8]

    resumed = train(cfg, arrays["train"], ckpt)
    assert resumed.resumed_from_step == 8 and resumed.completed
    assert resumed.step == resumed.total_steps == 2 * (512 // 32)
    assert not partial.exists()  # stale temporary directories are cleaned up
    assert len(resumed.history) == 2 and resumed.history[0]["epoch"] == 0


def test_a_failed_checkpoint_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tensors = {"model/w": torch.ones(3)}
    save_checkpoint(tmp_path, 1, tensors, {"format": 1})

    def crash(path: Path, data: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_mod, "_write_json", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, tensors, {"format": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000001"]
    step, loaded, meta = load_latest_checkpoint(tmp_path)  # type: ignore[misc]
    assert step == 1 and meta["step"] == 1 and torch.equal(loaded["model/w"], tensors["model/w"])


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"x": torch.zeros(2)}, {"format": 1}, keep=3)
    save_checkpoint(tmp_path, 2, {"x": torch.ones(2)}, {"format": 1}, keep=3)
    (tmp_path / "step_000000002" / "state.safetensors").write_bytes(b"truncated")
    step, tensors, _ = load_latest_checkpoint(tmp_path)  # type: ignore[misc]
    assert step == 1 and torch.equal(tensors["x"], torch.zeros(2))


def test_optimizer_state_round_trips_through_safetensors_and_json() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = build_optimizer(_cfg(), model)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    restored = unflatten_optimizer_state(tensors, json.loads(json.dumps(meta)))
    fresh = build_optimizer(_cfg(), model)
    fresh.load_state_dict(restored)
    for a, b in zip(opt.state.values(), fresh.state.values(), strict=True):
        for key in a:
            assert torch.equal(a[key], b[key])


def test_weight_decay_skips_biases_and_norm_parameters() -> None:
    cfg = _cfg(objective={"hidden_dim": 32, "out_dim": 16, "head_batch_norm": True})
    model = _model_like(cfg)
    decay, no_decay = split_decay_parameters(model)
    assert decay and no_decay and not set(decay) & set(no_decay)
    modules = dict(model.named_modules())
    for name in decay:
        owner = modules[name.rsplit(".", 1)[0]]
        assert isinstance(owner, torch.nn.Conv2d | torch.nn.Linear) and name.endswith("weight")
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            assert f"{name}.weight" in no_decay and f"{name}.bias" in no_decay
    # frozen teacher parameters are in neither group
    moco = _model_like(_cfg(method="moco", objective={"hidden_dim": 16, "out_dim": 8}))
    d, nd = split_decay_parameters(moco)
    assert not any("key_" in n for n in d + nd)
    # ViT: LayerNorms, biases and the class token are not decayed; matrices are
    vit = _model_like(_cfg(method="mae", backbone="vit", backbone_kwargs=TINY_VIT, objective={}))
    d, nd = split_decay_parameters(vit)
    assert "backbone.cls_token" in nd and "objective.decoder.mask_token" in nd
    assert "backbone.blocks.0.norm1.weight" in nd and "backbone.blocks.0.attn.qkv.bias" in nd
    assert "backbone.blocks.0.attn.qkv.weight" in d and "backbone.patch_embed.weight" in d

    opt = build_optimizer(_cfg(weight_decay=0.1), model)
    by_group = {g["group"]: g for g in opt.param_groups}
    assert by_group["decay"]["weight_decay"] == 0.1 and by_group["no_decay"]["weight_decay"] == 0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(decay) + len(no_decay)


def test_lr_schedule_is_linear_warmup_then_cosine() -> None:
    total, warmup, base, final = 100, 10, 0.5, 0.01
    lrs = [lr_at(s, total, base, warmup, final) for s in range(total)]
    assert lrs[:warmup] == pytest.approx([base * (s + 1) / warmup for s in range(warmup)])
    assert lrs[warmup - 1] == pytest.approx(base) and lrs[warmup] == pytest.approx(base)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1 :], strict=False))
    mid = warmup + (total - warmup) // 2
    assert lrs[mid] == pytest.approx(final + (base - final) / 2)
    assert final < lrs[-1] < final + 1e-3 and lr_at(total, total, base, warmup, final) == final
    assert lr_at(0, 10, 1.0) == 1.0 and lr_at(5, 10, 1.0) == pytest.approx(0.5)


def test_warm_start_loads_the_encoder_weights(arrays: dict[str, Any], tmp_path: Path) -> None:
    source = train(_cfg(max_steps=3), arrays["train"], tmp_path / "a")
    assert source.encoder_path is not None
    weights = load_file(str(source.encoder_path))

    # zero steps: the written encoder is the warm start itself; teachers copy it too
    cfg = _cfg(method="moco", objective={"hidden_dim": 16, "out_dim": 8}, max_steps=0)
    warm = train(cfg, arrays["train"], tmp_path / "b", warm_start=source.encoder_path)
    loaded = load_file(str(warm.encoder_path))
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    fresh = _model_like(cfg)
    assert not all(torch.equal(fresh.backbone.state_dict()[k], weights[k]) for k in weights)

    # the warm start is part of the run's identity; a wrong backbone fails early
    fp = "data"
    assert config_hash(cfg, fp) != config_hash(cfg, fp, warm_start=source.encoder_path)
    vit = _cfg(method="mae", backbone="vit", backbone_kwargs=TINY_VIT, objective={}, max_steps=0)
    with pytest.raises(ValueError, match="small_cnn"):
        train(vit, arrays["train"], tmp_path / "c", warm_start=source.encoder_path)


def test_warm_started_teacher_starts_from_the_warm_weights(
    arrays: dict[str, Any], tmp_path: Path
) -> None:
    source = train(_cfg(max_steps=2), arrays["train"], tmp_path / "a")
    weights = load_file(str(source.encoder_path))
    cfg = _cfg(method="byol", objective={"hidden_dim": 16, "out_dim": 8}, max_steps=1)
    result = train(cfg, arrays["train"], tmp_path / "b", warm_start=source.encoder_path)
    _, tensors, _ = load_latest_checkpoint(tmp_path / "b")
    assert result.step == 1
    # after one step with momentum ~0.996 the target's weights are within 1% of the warm ones
    # (BatchNorm running statistics are buffers, updated by the target's own forward)
    for k, w in weights.items():
        if "running_" not in k and "num_batches" not in k and w.numel() > 1:
            t = tensors[f"model/objective.target_backbone.{k}"]
            assert torch.allclose(t, w, rtol=0.0, atol=0.01 * float(w.abs().max()) + 1e-6)


def test_config_round_trips_and_hash_ignores_operational_fields() -> None:
    cfg = _cfg(objective={"components": [{"name": "simclr", "hidden_dim": (4, 5)}]})
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert config_hash(cfg, "x") == config_hash(_cfg(**{**cfg.to_dict(), "num_threads": 2}), "x")
    assert config_hash(cfg, "x") == config_hash(
        _cfg(**{**cfg.to_dict(), "checkpoint_every": 7}), "x"
    )
    assert config_hash(cfg, "x") != config_hash(_cfg(**{**cfg.to_dict(), "lr": 1.0}), "x")
    assert config_hash(cfg, "x") != config_hash(cfg, "y")
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"learning_rate": 1})


def test_sampler_is_seeded_resumable_and_sharded() -> None:
    full = EpochSampler(103, 10, seed=3)
    batches = list(full.batches(epoch=2))
    assert len(batches) == 10 and all(len(b) == 10 for b in batches)
    assert len(torch.cat(batches).unique()) == 100  # drop_last, no repeats
    assert [b.tolist() for b in full.batches(2, start=4)] == [b.tolist() for b in batches[4:]]
    assert not torch.equal(full.permutation(2), full.permutation(3))
    assert torch.equal(full.permutation(2), EpochSampler(103, 10, seed=3).permutation(2))
    # two ranks: equal-sized strided shares whose batches concatenate to the global batches
    r0, r1 = (EpochSampler(103, 5, seed=3, rank=r, world_size=2) for r in range(2))
    assert r0.batches_per_epoch == r1.batches_per_epoch == 10
    for b0, b1, g in zip(r0.batches(2), r1.batches(2), full.batches(2), strict=True):
        assert sorted(torch.cat([b0, b1]).tolist()) == sorted(g.tolist())
    with pytest.raises(ValueError, match="not enough"):
        EpochSampler(7, 4, world_size=2)


def test_load_images_selects_rows_in_order_with_labels(tmp_path: Path) -> None:
    a = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    b = (255 - np.arange(3 * 2 * 2 * 3)).astype(np.uint8).reshape(3, 2, 2, 3)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    data = load_images([(tmp_path / "a.npy", [3, 0, 2], [1, 2, 3]), (tmp_path / "b.npy", [1], [4])])
    assert isinstance(data, ImageSet) and data.images.is_contiguous()
    assert data.images.shape == (4, 3, 2, 2)
    expected = np.concatenate([a[[3, 0, 2]], b[[1]]]).transpose(0, 3, 1, 2)
    assert np.array_equal(data.images.numpy(), expected)
    assert data.labels is not None and data.labels.tolist() == [1, 2, 3, 4]
    assert load_images([(tmp_path / "a.npy", None)]).images.shape[0] == 4
    with pytest.raises(ValueError, match="every part"):
        load_images([(tmp_path / "a.npy", [0], [1]), (tmp_path / "b.npy", [0])])


METHODS = {
    "moco": {"method": "moco", "objective": {"hidden_dim": 16, "out_dim": 8, "queue_size": 32}},
    "byol": {"method": "byol", "objective": {"hidden_dim": 16, "out_dim": 8}},
    "vicreg": {"method": "vicreg", "objective": {"hidden_dim": 16, "out_dim": 16}},
    "dino": {
        "method": "dino",
        "objective": {"hidden_dim": 16, "out_dim": 32, "bottleneck_dim": 8},
        "augment": {},
    },
    "mae": {
        "method": "mae",
        "backbone": "vit",
        "backbone_kwargs": TINY_VIT,
        "objective": {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2},
    },
    "hybrid": {
        "method": "hybrid",
        "objective": {
            "components": [
                {"name": "simclr", "hidden_dim": 16, "out_dim": 8},
                {"name": "vicreg", "weight": 0.1, "hidden_dim": 16, "out_dim": 16},
            ]
        },
    },
    "simclr_all_options": {
        "grad_checkpointing": True,
        "channels_last": True,
        "precision": "bf16",
        "accumulate": 2,
        "optimizer": "sgd",
        "lr": 0.05,
        "grad_clip": 1.0,
    },
}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_trains_end_to_end(name: str, arrays: dict[str, Any], tmp_path: Path) -> None:
    cfg = _cfg(max_steps=3, checkpoint_every=2, **METHODS[name])
    result = train(cfg, arrays["train"], tmp_path, val_data=arrays["val"])
    assert result.completed and result.step == 3
    assert all(math.isfinite(m["loss"]) for m in result.history)
    assert result.history[-1]["partial_epoch"] and "knn_accuracy" in result.history[-1]
    assert load_file(str(result.encoder_path))


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    cfg = _cfg(backbone_kwargs={"widths": [8, 16, 16], "strides": [1, 2, 2], "input_size": 16})
    plain, ckpt = _model_like(cfg), _model_like(cfg)
    assert enable_gradient_checkpointing(ckpt.backbone) == 3
    views = [torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in (0, 1)]
    for model in (plain, ckpt):
        model(views).loss.backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    assert plain.state_dict().keys() == ckpt.state_dict().keys()


def test_prefetching_views_does_not_change_the_run(arrays: dict[str, Any], tmp_path: Path) -> None:
    runs = {
        prefetch: train(
            _cfg(
                method="mae",
                backbone="vit",
                backbone_kwargs=TINY_VIT,
                objective={},
                max_steps=4,
                accumulate=2,
                prefetch=prefetch,
            ),
            arrays["train"],
            tmp_path / str(prefetch),
        )
        for prefetch in (False, True)
    }
    assert runs[True].model_sha256 == runs[False].model_sha256
    assert runs[True].history[-1]["loss"] == runs[False].history[-1]["loss"]
