"""Export a model directory to ONNX, beside its safetensors, with its preprocessing recorded.

Why: models are served outside Python (onnxruntime, TensorRT, a browser); ONNX is the format
those runtimes share. What an ONNX file cannot say is how an image becomes its input tensor,
and predictions are only as good as the evaluation that vouched for them if images are
prepared exactly as evaluated. So the export writes `onnx.json` beside the `.onnx` file: the
canonical decoding (resolution, aspect handling), the `preprocessing` (input size, value range,
mean/std), the input and output names and shapes, the class names, the SHA-256 of the ONNX
file and of the safetensors it came from, and the largest difference between onnxruntime's
and PyTorch's outputs on a check batch (the export is refused above `MAX_ABS_DIFF`).

- an encoder directory (`encoder.json`) -> `encoder.onnx`: `images` -> `features`;
- a fine-tuned directory (`model.json`) -> `model.onnx`: `images` -> `logits`, `features`.

`images` is N x C x S x S float32, the canonical pixels scaled to [0, 1], resized to S and
normalised as `preprocessing` says (`ssl_assets.ml.evaluate.features.preprocess`); the batch
dimension is dynamic. The exporter is PyTorch's TorchScript-based one (`dynamo=False`), which
needs nothing beyond `onnx`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssl_assets.atomic import file_sha256, write_atomic
from ssl_assets.ml.encoder_io import ENCODER_META, load_encoder
from ssl_assets.ml.evaluate.model_io import MODEL_META, load_finetuned

ONNX_META = "onnx.json"
ONNX_FORMAT = "ssl-assets-onnx/1"
OPSET = 17
#: onnxruntime and PyTorch may differ by float rounding, never by more than this
MAX_ABS_DIFF = 1e-3


class _LogitsAndFeatures(nn.Module):
    """A classifier's logits and the encoder features under them, from one forward."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone = classifier.backbone
        self.head = classifier.head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone(x)
        return self.head(features), features


def _load(root: Path) -> tuple[nn.Module, dict[str, Any], str, list[str]]:
    """(module to export, its directory's meta, ONNX file name, output names)."""
    if (root / MODEL_META).is_file():
        model, meta = load_finetuned(root)
        return _LogitsAndFeatures(model).eval(), meta, "model.onnx", ["logits", "features"]
    if (root / ENCODER_META).is_file():
        backbone, meta = load_encoder(root)
        return backbone.eval(), meta, "encoder.onnx", ["features"]
    raise FileNotFoundError(f"{root} holds neither {MODEL_META} nor {ENCODER_META}")


def export_onnx(model_dir: str | Path, opset: int = OPSET) -> Path:
    """Write the directory's model as ONNX and `onnx.json` beside it; returns the JSON's path.

    The export is checked: onnxruntime's outputs on a random batch must match PyTorch's within
    `MAX_ABS_DIFF`, else ValueError (and nothing is left behind)."""
    root = Path(model_dir)
    module, meta, filename, outputs = _load(root)
    prep = dict(meta["preprocessing"])
    size, channels = int(prep["input_size"]), int(prep.get("channels", 3))
    example = torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    axes = {"images": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():  # the legacy exporter's deprecation and tracer notes
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=["images"],
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
            )

    path = root / filename
    write_atomic(path, write)
    check = torch.rand(3, channels, size, size, generator=torch.Generator().manual_seed(1))
    diff = _max_abs_diff(module, path, outputs, check)
    if not diff <= MAX_ABS_DIFF:
        path.unlink(missing_ok=True)
        raise ValueError(f"ONNX export of {root} differs from PyTorch by {diff:.3g}")
    record = {
        "format": ONNX_FORMAT,
        "file": filename,
        "sha256": file_sha256(path),
        "opset": opset,
        "input": {"name": "images", "shape": ["batch", channels, size, size], "dtype": "float32"},
        "outputs": outputs,
        "backbone": meta.get("backbone"),
        "canonical": meta.get("canonical"),
        "preprocessing": prep,
        "class_names": meta.get("class_names"),
        "source_weights_sha256": meta.get("weights_sha256"),
        "max_abs_diff_vs_pytorch": diff,
    }
    meta_path = root / ONNX_META
    write_atomic(meta_path, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))
    return meta_path


def onnx_session(path: str | Path) -> Any:
    """An onnxruntime session for `path` on the CPU (CUDA first when onnxruntime has it)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings from the graph optimiser are not ours to act on
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


@torch.no_grad()
def _max_abs_diff(module: nn.Module, path: Path, outputs: list[str], x: Tensor) -> float:
    expected = module(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = onnx_session(path).run(outputs, {"images": x.numpy()})
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected, strict=True))
