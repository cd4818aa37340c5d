"""ONNX export: onnxruntime computes what PyTorch computes, for an encoder and a fine-tuned
model, and predicting from the ONNX file gives the labels predicting from safetensors gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_assets.data.canonical import CanonicalSpec
from ssl_assets.inference import OnnxModel, canonical_images, load_model
from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.encoder_io import save_encoder
from ssl_assets.ml.evaluate.features import preprocess
from ssl_assets.ml.evaluate.model_io import save_finetuned
from ssl_assets.ml.evaluate.supervised import Classifier
from ssl_assets.ml.export import ONNX_META, export_onnx, onnx_session
from ssl_assets.predict_cli import main as predict_main

KWARGS = {"widths": [8, 16, 32], "strides": [2, 2, 2], "input_size": 48}
SPEC = CanonicalSpec(resolution=64, aspect="center_crop")


def _trained_looking(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and BatchNorm statistics, so eval-mode BatchNorm does real work."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return module.eval()


def _batch(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_an_encoders_onnx_outputs_equal_pytorchs(tmp_path):
    backbone = _trained_looking(build_backbone("small_cnn", **KWARGS), 1)
    save_encoder(backbone, {"backbone": "small_cnn", "backbone_kwargs": KWARGS}, tmp_path)
    meta = json.loads(export_onnx(tmp_path).read_text())
    assert meta["outputs"] == ["features"] and meta["preprocessing"]["input_size"] == 48
    x = preprocess(_batch(), meta["preprocessing"])
    with torch.no_grad():
        expected = backbone(x).numpy()
    got = onnx_session(tmp_path / meta["file"]).run(["features"], {"images": x.numpy()})[0]
    assert got.shape == expected.shape == (6, 32)
    assert np.abs(got - expected).max() <= 1e-4


def _image_files(tmp_path) -> list[str]:
    files, rng = [], np.random.default_rng(1)
    for i in range(12):  # a colour each, so that images differ in more than noise
        pixels = rng.integers(0, 256, (1, 1, 3)) + rng.normal(0, 8, (90, 120, 3))
        files.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(files[-1])
    return files


@pytest.fixture
def finetuned(tmp_path):
    backbone = _trained_looking(build_backbone("small_cnn", **KWARGS), 2)
    model = Classifier(backbone, 3, seed=3).eval()
    files = _image_files(tmp_path)
    with torch.no_grad():  # a head fitted to these images' features: their labels differ
        feats = backbone(preprocess(canonical_images(files, SPEC), backbone.preprocessing))
        mean = feats.mean(dim=0)
        targets = torch.eye(3)[torch.arange(len(files)) % 3]
        model.head.weight.copy_((torch.linalg.pinv(feats - mean) @ targets).T)
        model.head.bias.copy_(-model.head.weight @ mean)
    save_finetuned(
        model,
        tmp_path / "ft",
        backbone="small_cnn",
        backbone_kwargs=KWARGS,
        class_names=["ant", "bee", "cat"],
        canonical=SPEC,
    )
    return model, tmp_path / "ft", files


def test_a_fine_tuned_models_onnx_logits_and_labels_equal_pytorchs(finetuned, tmp_path, capsys):
    model, model_dir, files = finetuned
    meta = json.loads(export_onnx(model_dir).read_text())
    assert meta["outputs"] == ["logits", "features"] and meta["class_names"] == [
        "ant",
        "bee",
        "cat",
    ]
    x = preprocess(_batch(), meta["preprocessing"])
    with torch.no_grad():
        logits = model(x).numpy()
    got = onnx_session(model_dir / meta["file"]).run(["logits"], {"images": x.numpy()})[0]
    assert np.abs(got - logits).max() <= 1e-4

    torch_model, onnx_model = load_model(model_dir), load_model(model_dir, runtime="onnx")
    assert isinstance(onnx_model, OnnxModel)
    labels = torch_model.predict(files)
    assert onnx_model.predict(files) == labels and len(set(labels)) > 1
    np.testing.assert_allclose(onnx_model.embed(files), torch_model.embed(files), atol=1e-4)

    assert predict_main([str(model_dir), *files]) == 0
    from_torch = capsys.readouterr().out
    assert predict_main([str(model_dir), *files, "--onnx"]) == 0
    from_onnx = capsys.readouterr().out
    assert [line.split("\t")[1] for line in from_onnx.splitlines()] == labels
    assert [line.split("\t")[1] for line in from_torch.splitlines()] == labels


def test_predict_from_onnx_without_an_export_says_how_to_make_one(finetuned, capsys):
    _, model_dir, _ = finetuned
    assert not (model_dir / ONNX_META).exists()
    assert predict_main([str(model_dir), "x.png", "--onnx"]) == 2
    assert "ssl-assets export" in capsys.readouterr().err
