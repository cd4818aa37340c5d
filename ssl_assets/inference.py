"""Use a trained model: load it, embed images, predict labels.

    from ssl_assets.inference import load_model

    model = load_model("lake/models/champion")          # a fine-tuned model directory
    model.predict(["cat.png", "dog.jpg"])               # -> ["cat", "dog"]
    model.predict_proba(["cat.png"])                    # -> 1 x classes array, columns = model.class_names
    model.embed(["cat.png"])                            # -> 1 x D encoder features

`load_model` reads either a fine-tuned model directory (`model.safetensors` + `model.json`,
written by `ssl_assets.ml.evaluate.save_finetuned`) or a pre-trained encoder directory
(`encoder.safetensors` + `encoder.json`, written by the training loop; embeddings only).
`load_model(dir, runtime="onnx")` runs the directory's ONNX export instead (`onnx.json`,
written by `ssl_assets.ml.export.export_onnx`) with onnxruntime, behind the same API and the
same decoding and preprocessing.

Why this path: predictions are only as good as the evaluation that vouched for them if the
images are prepared exactly as during evaluation. So every input goes through the recorded
steps, the same code the evaluation ran: decode with Pillow (`decode_rgb`: EXIF orientation,
RGB), canonicalise with the recorded `CanonicalSpec` (resolution, aspect handling), then the
recorded normalisation (`ssl_assets.ml.evaluate.features.preprocess`). Weights are read with
safetensors (plain tensors, nothing unpickled) and checked against their recorded SHA-256.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ssl_assets.data.canonical import CanonicalSpec, canonicalise, check_resolution, decode_rgb
from ssl_assets.ml.encoder_io import ENCODER_META, load_encoder
from ssl_assets.ml.evaluate.features import embed_images
from ssl_assets.ml.evaluate.model_io import MODEL_META, canonical_from_dict, load_finetuned
from ssl_assets.ml.evaluate.supervised import Classifier, predict_proba

#: one input image: a file path, encoded file bytes, or decoded RGB pixels (H x W x 3 uint8)
ImageInput = str | Path | bytes | np.ndarray


def canonical_images(inputs: Iterable[ImageInput] | np.ndarray, spec: CanonicalSpec) -> np.ndarray:
    """Decode and canonicalise inputs into one N x R x R x 3 uint8 array.

    A 4-D uint8 array is taken as N decoded images; arrays already at the canonical size pass
    through unchanged (canonicalising a canonical image is the identity), so catalog arrays
    and image files give the same pixels.
    """
    if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
        items: Iterable[ImageInput] = list(inputs)
    elif isinstance(inputs, (str, Path, bytes)) or (
        isinstance(inputs, np.ndarray) and inputs.ndim < 4
    ):
        items = [inputs]  # a single image
    else:
        items = inputs
    out = []
    for item in items:
        if isinstance(item, (str, Path)):
            rgb = decode_rgb(Path(item).read_bytes())
        elif isinstance(item, bytes):
            rgb = decode_rgb(item)
        else:
            rgb = np.asarray(item)
            if rgb.dtype != np.uint8:
                raise TypeError(f"decoded images must be uint8, got {rgb.dtype}")
            if rgb.ndim == 2:
                rgb = np.repeat(rgb[..., None], 3, axis=2)
            if rgb.ndim != 3 or rgb.shape[2] != 3:
                raise ValueError(f"expected H x W x 3 pixels, got shape {rgb.shape}")
        out.append(canonicalise(rgb, spec))
    if not out:
        return np.empty((0, spec.resolution, spec.resolution, 3), dtype=np.uint8)
    return np.stack(out)


class Model:
    """A loaded model: `embed` always, `predict` / `predict_proba` for classifiers.

    Attributes: `meta` (the directory's JSON), `canonical` (how inputs are decoded),
    `preprocessing` (how they are normalised), `class_names` (head order; None for an encoder).
    """

    def __init__(
        self,
        module: nn.Module,
        meta: dict[str, Any],
        canonical: CanonicalSpec,
        class_names: Sequence[str] | None = None,
        batch_size: int = 256,
    ) -> None:
        self.module = module
        self.meta = meta
        self.canonical = canonical
        self.class_names = list(class_names) if class_names is not None else None
        self.batch_size = batch_size
        self.preprocessing: dict[str, Any] = dict(
            module.preprocessing  # type: ignore[arg-type]
        )
        # every input is resized to this before the encoder: bounded like the canonical spec
        check_resolution(self.preprocessing.get("input_size"), "preprocessing input_size")

    @property
    def is_classifier(self) -> bool:
        return isinstance(self.module, Classifier)

    @property
    def encoder(self) -> nn.Module:
        return self.module.backbone if isinstance(self.module, Classifier) else self.module

    def images(self, inputs: Iterable[ImageInput] | np.ndarray) -> np.ndarray:
        """The canonical uint8 pixels the model will see for `inputs`."""
        return canonical_images(inputs, self.canonical)

    def embed(self, inputs: Iterable[ImageInput] | np.ndarray) -> np.ndarray:
        """Encoder features (N x D float32) of the inputs (for a classifier: its fine-tuned
        encoder, before the head)."""
        return embed_images(self.encoder, self.images(inputs), self.preprocessing, self.batch_size)

    def predict_proba(self, inputs: Iterable[ImageInput] | np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes), columns in `class_names` order."""
        if not isinstance(self.module, Classifier):
            raise TypeError("this is an encoder without a classification head: use embed()")
        return predict_proba(self.module, self.images(inputs), self.batch_size)

    def predict(self, inputs: Iterable[ImageInput] | np.ndarray) -> list[str]:
        """Predicted class names, one per input."""
        proba = self.predict_proba(inputs)
        assert self.class_names is not None
        return [self.class_names[i] for i in proba.argmax(axis=1)]


class OnnxModel:
    """A model directory's ONNX export run by onnxruntime, with `Model`'s API (`embed`,
    `predict`, `predict_proba`, `images`) and the same decoding and preprocessing."""

    def __init__(
        self, session: Any, meta: dict[str, Any], canonical: CanonicalSpec, batch_size: int = 256
    ) -> None:
        self.session = session
        self.meta = meta
        self.canonical = canonical
        self.class_names = list(meta["class_names"]) if meta.get("class_names") else None
        self.batch_size = batch_size
        self.preprocessing: dict[str, Any] = dict(meta["preprocessing"])
        check_resolution(self.preprocessing.get("input_size"), "preprocessing input_size")

    @property
    def is_classifier(self) -> bool:
        return "logits" in self.meta["outputs"]

    def images(self, inputs: Iterable[ImageInput] | np.ndarray) -> np.ndarray:
        return canonical_images(inputs, self.canonical)

    def _run(self, inputs: Iterable[ImageInput] | np.ndarray, output: str) -> np.ndarray:
        from ssl_assets.ml.evaluate.features import preprocess

        images = self.images(inputs)
        outs = []
        for start in range(0, len(images), self.batch_size):
            x = preprocess(images[start : start + self.batch_size], self.preprocessing)
            outs.append(self.session.run([output], {"images": x.numpy()})[0])
        if not outs:
            raise ValueError("no images")
        return np.concatenate(outs).astype(np.float32)

    def embed(self, inputs: Iterable[ImageInput] | np.ndarray) -> np.ndarray:
        return self._run(inputs, "features")

    def predict_proba(self, inputs: Iterable[ImageInput] | np.ndarray) -> np.ndarray:
        if not self.is_classifier:
            raise TypeError("this is an encoder without a classification head: use embed()")
        logits = self._run(inputs, "logits")
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict(self, inputs: Iterable[ImageInput] | np.ndarray) -> list[str]:
        proba = self.predict_proba(inputs)
        assert self.class_names is not None
        return [self.class_names[i] for i in proba.argmax(axis=1)]


def load_onnx_model(model_dir: str | Path, canonical: CanonicalSpec | None = None) -> OnnxModel:
    """The ONNX export of a model directory (`onnx.json` + its `.onnx`, SHA-256 checked)."""
    from ssl_assets.atomic import file_sha256
    from ssl_assets.ml.export import ONNX_FORMAT, ONNX_META, onnx_session

    root = Path(model_dir)
    if not (root / ONNX_META).is_file():
        raise FileNotFoundError(
            f"{root} has no ONNX export ({ONNX_META}): run `ssl-assets export MODEL_ID "
            "--format onnx` first"
        )
    meta = json.loads((root / ONNX_META).read_text())
    if meta.get("format") != ONNX_FORMAT:
        raise ValueError(f"{root / ONNX_META}: unknown format {meta.get('format')!r}")
    path = root / Path(str(meta["file"])).name
    if file_sha256(path) != meta.get("sha256"):
        raise ValueError(f"{path}: SHA-256 differs from the one recorded in {ONNX_META}")
    spec = canonical
    if spec is None:
        recorded = meta.get("canonical")
        size = meta["preprocessing"]["input_size"]
        spec = canonical_from_dict(recorded or {"resolution": size})
    return OnnxModel(onnx_session(path), meta, spec)


def load_model(
    model_dir: str | Path,
    canonical: CanonicalSpec | None = None,
    verify: bool = True,
    runtime: str = "torch",
) -> Model | OnnxModel:
    """Load a fine-tuned model directory (`model.json`) or an encoder directory
    (`encoder.json`). `canonical` overrides the recorded spec; an encoder directory that
    records none falls back to `CanonicalSpec(resolution=input_size)` with a warning.
    `runtime="onnx"` runs the directory's ONNX export with onnxruntime instead."""
    if runtime == "onnx":
        return load_onnx_model(model_dir, canonical)
    if runtime != "torch":
        raise ValueError(f"runtime must be torch or onnx, got {runtime!r}")
    root = Path(model_dir)
    if (root / MODEL_META).is_file():
        model, meta = load_finetuned(root, verify=verify)
        spec = canonical or canonical_from_dict(meta["canonical"])
        return Model(model, meta, spec, meta["class_names"])
    if (root / ENCODER_META).is_file():
        backbone, meta = load_encoder(root, verify=verify)
        spec = canonical
        if spec is None and meta.get("canonical"):
            spec = canonical_from_dict(meta["canonical"])
        if spec is None:
            size = check_resolution(meta["preprocessing"]["input_size"], "input_size")
            warnings.warn(
                f"{root / ENCODER_META} records no canonical spec; assuming "
                f"CanonicalSpec(resolution={size}, aspect='pad')",
                stacklevel=2,
            )
            spec = CanonicalSpec(resolution=size)
        return Model(backbone, meta, spec)
    raise FileNotFoundError(f"{root} holds neither {MODEL_META} nor {ENCODER_META}")


def describe(model: Model | OnnxModel) -> str:
    """One-line summary for logs and the CLI."""
    kind = (
        f"classifier over {len(model.class_names or [])} classes"
        if model.is_classifier
        else "encoder"
    )
    return (
        f"{model.meta.get('backbone')} {kind}, inputs {json.dumps(model.canonical.version)}, "
        f"{model.preprocessing['input_size']}px"
    )


__all__ = [
    "ImageInput",
    "Model",
    "OnnxModel",
    "canonical_images",
    "describe",
    "load_model",
    "load_onnx_model",
]
