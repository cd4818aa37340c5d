"""Distillation: a student of another size learns a frozen teacher's features, and the teacher
never changes."""

from __future__ import annotations

import numpy as np
import torch

from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.checkpoint import load_latest_checkpoint
from ssl_assets.ml.config import TrainConfig
from ssl_assets.ml.data import synthetic_shapes
from ssl_assets.ml.encoder_io import load_encoder, save_encoder
from ssl_assets.ml.train import train

TEACHER = {"widths": [16, 32, 64], "strides": [2, 2, 2]}
STUDENT = {"widths": [8, 16], "strides": [2, 2]}


def test_the_students_cosine_similarity_to_the_teacher_rises(tmp_path):
    images, _ = synthetic_shapes(256, size=32, seed=1)
    np.save(tmp_path / "train.npy", images)
    torch.manual_seed(5)
    teacher = build_backbone("small_cnn", **TEACHER)
    save_encoder(teacher, {"backbone": "small_cnn", "backbone_kwargs": TEACHER}, tmp_path / "t")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = TrainConfig(
        method="distill",
        objective={"teacher": str(tmp_path / "t")},
        backbone="small_cnn",
        backbone_kwargs=STUDENT,
        epochs=5,
        batch_size=64,
        lr=1e-2,
        warmup_epochs=0,
        num_threads=1,
        checkpoint_every=0,
    )
    result = train(cfg, [[str(tmp_path / "train.npy"), None]], tmp_path / "ckpt")
    cosines = [h["cosine"] for h in result.history]
    assert cosines[-1] > cosines[0] + 0.05, cosines
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    # the student is what gets saved; it records its teacher; the teacher's file is unchanged
    student, meta = load_encoder(result.metadata_path.parent)
    assert meta["method"] == "distill" and meta["objective"]["teacher"] == str(tmp_path / "t")
    assert sum(p.numel() for p in student.parameters()) < sum(
        p.numel() for p in teacher.parameters()
    )
    # the teacher inside the trained model (weights and BatchNorm statistics) never moved
    _, tensors, _ = load_latest_checkpoint(tmp_path / "ckpt")
    prefix = "model/objective.teacher."
    trained = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    assert trained.keys() == before.keys()
    assert all(torch.equal(trained[k], before[k]) for k in before)
