"""`python -m ssl_assets.predict_cli MODEL_DIR IMAGE [IMAGE ...] [--embed] [--json]`

Why a separate entry point: serving a model should not need Dagster, the lake or the metadata
store, only the model directory and the images; this module imports nothing but the inference
API (`ssl_assets.inference`), so it starts quickly and runs wherever the weights are copied.

Prints one line per image: `path<TAB>label<TAB>probability` (classifier), or with `--embed`
`path<TAB>embedding shape`; `--json` prints one JSON object per line instead (with the
embedding itself when `--embed`). `--onnx` runs the directory's ONNX export (onnxruntime)
instead of the safetensors weights. Exit status 0, or 2 for bad arguments / an unreadable or
malformed model directory (a one-line `error: ...`, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys


def _one_line(exc: Exception, model_dir: str) -> str:
    """Why `model_dir` could not be loaded, on one line: invalid JSON, missing keys, bad or
    mismatched weights all mean the same to the user, this directory is not a usable model."""
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError):
        text = f"{text} is missing from its JSON"
    elif not isinstance(exc, OSError | ValueError) or isinstance(exc, json.JSONDecodeError):
        text = f"{type(exc).__name__}: {text}"
    return f"cannot load a model from {model_dir}: {text}"[:500]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssl_assets.predict_cli", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "model_dir",
        help="fine-tuned model directory (model.json) or encoder directory (encoder.json)",
    )
    parser.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    parser.add_argument(
        "--embed", action="store_true", help="print embedding shapes instead of predictions"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="run the directory's ONNX export with onnxruntime (ssl-assets export)",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)

    from ssl_assets.inference import load_model  # after argument parsing: --help stays instant

    try:
        model = load_model(args.model_dir, runtime="onnx" if args.onnx else "torch")
    except Exception as exc:  # any malformed directory: one line and status 2, no traceback
        print(f"error: {_one_line(exc, args.model_dir)}", file=sys.stderr)
        return 2
    model.batch_size = args.batch_size
    if args.embed:
        emb = model.embed(args.images)
        for path, vec in zip(args.images, emb, strict=True):
            if args.json:
                print(
                    json.dumps({"image": path, "shape": list(vec.shape), "embedding": vec.tolist()})
                )
            else:
                print(f"{path}\t{tuple(vec.shape)}")
        return 0
    if not model.is_classifier:
        print("error: this is an encoder without a head; use --embed", file=sys.stderr)
        return 2
    proba = model.predict_proba(args.images)
    names = model.class_names or []
    for path, p in zip(args.images, proba, strict=True):
        i = int(p.argmax())
        if args.json:
            print(
                json.dumps(
                    {
                        "image": path,
                        "label": names[i],
                        "probability": float(p[i]),
                        "probabilities": dict(zip(names, map(float, p), strict=True)),
                    }
                )
            )
        else:
            print(f"{path}\t{names[i]}\t{p[i]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
