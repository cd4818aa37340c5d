"""Saving, loading and serving: encoder and fine-tuned model directories, the inference API,
the prediction CLI and the model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_assets.atomic import file_sha256
from ssl_assets.data.canonical import CanonicalSpec, canonicalise, decode_rgb
from ssl_assets.inference import load_model
from ssl_assets.ml import encoder_io
from ssl_assets.ml.backbones import build_backbone
from ssl_assets.ml.evaluate import (
    FinetuneConfig,
    embed_images,
    evaluate_classifier,
    finetune,
    load_finetuned,
    predict_labels,
    predict_proba,
    save_finetuned,
    write_model_card,
)
from ssl_assets.predict_cli import main as predict_main

TINY_CNN = {"widths": [8, 16, 32], "strides": [2, 2, 2]}
CLASSES = ["red", "green", "blue"]
SPEC = CanonicalSpec(resolution=32, aspect="pad")


def colour_images(n: int, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """32x32 uint8 images whose dominant colour is the class (plus a class-dependent square)."""
    rng = np.random.default_rng(seed)
    palette = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])[:classes]
    y = rng.integers(0, classes, n)
    img = palette[y][:, None, None, :] + rng.normal(0.0, 25.0, (n, 32, 32, 3))
    for i, c in enumerate(y):
        img[i, 4 + 6 * c : 12 + 6 * c, 8:16] = 255
    return np.clip(img, 0, 255).astype(np.uint8), y


def _write_files(tmp_path: Path, images: np.ndarray) -> list[Path]:
    """PNG files: square ones, plus a wider and a JPEG copy to exercise canonicalisation."""
    paths = []
    for i, img in enumerate(images):
        path = tmp_path / "imgs" / f"img_{i}.png"
        path.parent.mkdir(exist_ok=True)
        pil = Image.fromarray(img)
        if i == 0:
            pil = pil.resize((48, 32))
        if i == 1:
            path = path.with_suffix(".jpg")
        pil.save(path)
        paths.append(path)
    return paths


def _catalog(paths: list[Path]) -> np.ndarray:
    """What the catalog stores for these files: decoded once, canonicalised."""
    return np.stack([canonicalise(decode_rgb(p.read_bytes()), SPEC) for p in paths])


def _save(model: torch.nn.Module, out: Path) -> Path:
    return save_finetuned(
        model,  # type: ignore[arg-type]
        out,
        backbone="small_cnn",
        backbone_kwargs=TINY_CNN,
        class_names=CLASSES,
        canonical=SPEC,
    )


@pytest.fixture(scope="module")
def finetuned() -> tuple:
    torch.manual_seed(0)
    encoder = build_backbone("small_cnn", **TINY_CNN)
    x, y = colour_images(160, seed=1)
    cfg = FinetuneConfig(strategy="lora", epochs=2, batch_size=32, lr=1e-2, patience=None)
    return finetune(encoder, 3, x[:120], y[:120], x[120:], y[120:], cfg), encoder


def test_saved_model_predicts_what_the_evaluation_predicted(
    finetuned: tuple, tmp_path: Path
) -> None:
    result, _ = finetuned
    images, labels = colour_images(12, seed=9)
    paths = _write_files(tmp_path, images)
    catalog = _catalog(paths)
    evaluated = predict_labels(result.deploy_model, catalog)
    report = evaluate_classifier(result.deploy_model, catalog, labels, CLASSES, corruptions={})
    assert report["accuracy"] == (evaluated == labels).mean()

    model_dir = tmp_path / "model"
    save_finetuned(
        result.model,  # still LoRA-wrapped: saving merges it
        model_dir,
        backbone="small_cnn",
        backbone_kwargs=TINY_CNN,
        class_names=CLASSES,
        canonical=SPEC,
        metrics=report,
        info={"finetune": result.config},
    )
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["canonical"] == {"resolution": 32, "aspect": "pad"}
    assert meta["class_names"] == CLASSES and meta["info"]["finetune"]["strategy"] == "lora"

    model = load_model(model_dir)
    assert model.predict(paths) == [CLASSES[i] for i in evaluated]
    np.testing.assert_allclose(
        model.predict_proba([str(p) for p in paths]),
        predict_proba(result.deploy_model, catalog),
        atol=1e-5,
    )
    assert model.predict([paths[0].read_bytes()]) == [CLASSES[evaluated[0]]]  # bytes input
    assert model.predict(catalog) == model.predict(paths)  # canonical arrays pass unchanged
    emb = model.embed(paths)
    assert emb.shape == (12, 32)
    np.testing.assert_allclose(emb, embed_images(result.deploy_model.backbone, catalog), atol=1e-5)

    reloaded, _ = load_finetuned(model_dir)
    assert torch.equal(reloaded.head.weight, result.deploy_model.head.weight)


def test_predict_cli_prints_labels_and_embedding_shapes(
    finetuned: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result, _ = finetuned
    images, _ = colour_images(3, seed=5)
    paths = [str(p) for p in _write_files(tmp_path, images)]
    model_dir = tmp_path / "model"
    _save(result.deploy_model, model_dir)
    assert predict_main([str(model_dir), *paths]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    expected = load_model(model_dir).predict(paths)
    assert [line.split("\t")[:2] for line in lines] == [
        [p, e] for p, e in zip(paths, expected, strict=True)
    ]
    assert predict_main([str(model_dir), *paths, "--embed"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [f"{p}\t(32,)" for p in paths]
    assert predict_main([str(tmp_path / "nowhere"), *paths]) == 2


def _malform(model_dir: Path, how: str) -> None:
    meta_path = model_dir / "model.json"
    meta = json.loads(meta_path.read_text())
    weights = model_dir / "model.safetensors"
    if how == "no json":
        meta_path.unlink()
    elif how == "invalid json":
        meta_path.write_text("{ not json")
    elif how == "json is a list":
        meta_path.write_text("[1, 2]")
    elif how == "missing keys":
        meta_path.write_text(json.dumps({"format": meta["format"]}))
    elif how == "missing weights":
        weights.unlink()
    elif how in ("garbage weights", "mismatched weights"):
        if how == "garbage weights":
            weights.write_bytes(b"\x00" * 64)
        else:
            from safetensors.torch import load_file, save_file

            tensors = load_file(str(weights))
            tensors["head.weight"] = torch.zeros(7, 3)
            save_file(tensors, str(weights))
        meta["weights_sha256"] = file_sha256(weights)  # consistent, so only shape fails
        meta_path.write_text(json.dumps(meta))
    elif how == "huge resolution":
        meta_path.write_text(json.dumps({**meta, "canonical": {"resolution": 30000}}))
    elif how == "huge input size":
        prep = {**meta["preprocessing"], "input_size": 30000}
        meta_path.write_text(json.dumps({**meta, "preprocessing": prep}))
    elif how == "unknown backbone":
        meta_path.write_text(json.dumps({**meta, "backbone": "nope"}))
    elif how == "bad backbone kwargs":
        meta_path.write_text(json.dumps({**meta, "backbone_kwargs": {"widths": "abc"}}))


MALFORMED = [
    "no json",
    "invalid json",
    "json is a list",
    "missing keys",
    "missing weights",
    "garbage weights",
    "mismatched weights",
    "huge resolution",
    "huge input size",
    "unknown backbone",
    "bad backbone kwargs",
]


@pytest.mark.parametrize("how", MALFORMED)
def test_predict_on_a_malformed_model_directory_exits_2_with_one_line(
    finetuned: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    import time

    from ssl_assets.cli import main as cli

    result, _ = finetuned
    images, _ = colour_images(1, seed=5)
    paths = [str(p) for p in _write_files(tmp_path, images)]
    model_dir = tmp_path / "model"
    _save(result.deploy_model, model_dir)
    _malform(model_dir, how)
    started = time.monotonic()
    assert predict_main([str(model_dir), *paths]) == 2
    assert time.monotonic() - started < 5
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in captured.err and not captured.out
    assert cli(["predict", "--model", str(model_dir), *paths]) == 2
    assert capsys.readouterr().err.strip() == err


def test_the_canonical_resolution_is_bounded() -> None:
    from ssl_assets.data.canonical import MAX_RESOLUTION
    from ssl_assets.ml.evaluate.model_io import canonical_from_dict

    assert canonical_from_dict({"resolution": MAX_RESOLUTION}).resolution == MAX_RESOLUTION
    for bad in (MAX_RESOLUTION + 1, 0, -3, 2.5, "32", True, None):
        with pytest.raises(ValueError, match="resolution"):
            canonical_from_dict({"resolution": bad})
    with pytest.raises(ValueError, match="outside"):
        CanonicalSpec.from_version("r30000-pad")


def test_encoder_directory_round_trip_and_tamper_check(tmp_path: Path) -> None:
    torch.manual_seed(3)
    encoder = build_backbone("small_cnn", **TINY_CNN)
    encoder_io.save_encoder(
        encoder, {"backbone": "small_cnn", "backbone_kwargs": TINY_CNN}, tmp_path
    )
    loaded, meta = encoder_io.load_encoder(tmp_path)
    assert meta["out_dim"] == 32 and meta["preprocessing"] == encoder.preprocessing
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in encoder.state_dict().items())

    images, _ = colour_images(4, seed=2)
    with pytest.warns(UserWarning, match="canonical spec"):
        model = load_model(tmp_path)
    np.testing.assert_allclose(model.embed(images), embed_images(encoder, images), atol=1e-6)
    with pytest.raises(TypeError):
        model.predict(images)

    weights = tmp_path / encoder_io.ENCODER_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="SHA-256"):
        encoder_io.load_encoder(tmp_path)
    # deleting the recorded hash must not switch the check off
    meta_path = tmp_path / encoder_io.ENCODER_META
    meta_path.write_text(json.dumps({**meta, "weights_sha256": None}))
    with pytest.raises(ValueError, match="records no weights_sha256"):
        encoder_io.load_encoder(tmp_path)
    encoder_io.load_encoder(tmp_path, verify=False)  # an explicit choice to trust them


def test_model_card_of_an_encoder_directory_reads_encoder_json(tmp_path: Path) -> None:
    encoder = build_backbone("small_cnn", **TINY_CNN)
    encoder_io.save_encoder(
        encoder, {"backbone": "small_cnn", "backbone_kwargs": TINY_CNN}, tmp_path
    )
    recorded = json.loads((tmp_path / encoder_io.ENCODER_META).read_text())
    text = write_model_card(tmp_path, {"title": "encoder"}).read_text()
    assert "small_cnn" in text and recorded["weights_sha256"] in text


def test_load_encoder_reads_what_the_training_loop_writes(tmp_path: Path) -> None:
    from ssl_assets.ml import train as train_mod
    from ssl_assets.ml.config import TrainConfig
    from ssl_assets.ml.data import ImageSet

    images, labels = colour_images(32, seed=0)
    data = ImageSet(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
    )
    cfg = TrainConfig(
        method="simclr",
        backbone="small_cnn",
        backbone_kwargs={"widths": [8, 16], "strides": [2, 2]},
        max_steps=1,
        batch_size=16,
        monitor_samples=16,
    )
    result = train_mod.train(cfg, data, tmp_path / "ckpt", output_dir=tmp_path / "enc")
    assert result.encoder_path == tmp_path / "enc" / encoder_io.ENCODER_WEIGHTS
    assert result.metadata_path == tmp_path / "enc" / encoder_io.ENCODER_META
    backbone, meta = encoder_io.load_encoder(tmp_path / "enc")
    assert meta["backbone_kwargs"] == {"widths": [8, 16], "strides": [2, 2]}
    assert embed_images(backbone, images).shape == (32, 16)
    assert result.completed


def test_model_card_renders_lineage_metrics_and_limits(finetuned: tuple, tmp_path: Path) -> None:
    result, _ = finetuned
    _save(result.deploy_model, tmp_path)
    card = write_model_card(
        tmp_path,
        {
            "title": "colour classifier",
            "data": {
                "catalog_version": "r32-pad",
                "fingerprint": "abc123",
                "splits": {"train": 120},
            },
            "audits": [{"check": "no cross-split duplicates", "passed": True}],
            "metrics": {"accuracy": 0.9, "ece": 0.05},
            "label_efficiency": [
                {"budget": "1%", "method": "ssl/linear", "accuracy": "0.8 ± 0.01"}
            ],
            "limitations": ["synthetic data only"],
            "extra_notes": "anything else",
        },
    )
    text = card.read_text()
    assert text.startswith("# colour classifier")
    for heading in (
        "## Model",
        "## Data lineage",
        "## Data audits",
        "## Label efficiency",
        "## Limitations",
    ):
        assert heading in text
    assert "| budget | method | accuracy |" in text
    assert "synthetic data only" in text and "class_names" in text and "## Extra notes" in text
    assert text.index("## Data lineage") < text.index("## Limitations")
