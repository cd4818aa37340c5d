"""Distillation on CIFAR-10: a student a quarter of the teacher's size keeps its 1 %-label accuracy.

Why: distilling a large encoder into a small one is how a model that serves on a CPU gets the
large one's features (`method: distill`, `ssl_assets.ml.objectives.distill`). This measures it
with the label-efficiency benchmark's protocol and data (`label_efficiency_cifar10.py`, whose
settings this script shares): the same 10,000-image labelled train subset, 5,000-image val
split, 10,000 test images, 45,000 unlabelled images, and 1 %-label linear probes over 3 draws.

- Teacher: the label-efficiency benchmark's SimCLR encoder (`small_cnn` widths 32-64-128-256,
  strides 2-2-2-1, 388,896 parameters), trained by its own `pretrain` for `--minutes` of
  training-step time, saved to `--teacher-dir` (default `benchmarks/out/cifar-teacher`,
  git-ignored) and reused from there when it is present (`--retrain-teacher` trains anew).
- Student: `small_cnn` widths 16-32-64-120, strides 2-2-2-1 (93,056 parameters, 0.24 of the
  teacher's; 120-d features), trained by `ssl_assets.ml.train.train` with method `distill`
  (teacher frozen, same view for both, a linear map to the teacher's 256-d features, one
  view per image) for `--steps` (default 1,500) optimiser steps of batch 256 on the 45,000
  unlabelled images, AdamW lr 3e-3, cosine decay after a 5 % warm-up, fp32, one torch thread
  (`--threads`) like the teacher.
- Probes: `label_efficiency` linear probes (standardised logistic regression, C on val) on the
  frozen features of teacher and student, same label draws; goal: the student keeps at least
  95 % of the teacher's mean 1 %-label test accuracy.

    .venv/bin/python benchmarks/distill_cifar10.py                    # 15 min teacher + ~10 min
    .venv/bin/python benchmarks/distill_cifar10.py --steps 3000       # reuses the saved teacher
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from label_efficiency_cifar10 import build_parser, prepare_data, pretrain, say  # noqa: E402

from ssl_assets.ml.config import TrainConfig  # noqa: E402
from ssl_assets.ml.encoder_io import load_encoder, save_encoder  # noqa: E402
from ssl_assets.ml.evaluate import LabelBudget, embed_images, label_efficiency, summarise  # noqa: E402
from ssl_assets.ml.train import train  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def teacher_encoder(args: argparse.Namespace, data: dict[str, Any], workdir: Path):
    """The saved teacher, or the label-efficiency SimCLR encoder trained now and saved."""
    if (args.teacher_dir / "encoder.json").is_file() and not args.retrain_teacher:
        backbone, meta = load_encoder(args.teacher_dir)
        say(f"teacher reused from {args.teacher_dir}")
        return backbone, meta.get("benchmark", {})
    ssl = pretrain(args, data, workdir)
    info = {k: v for k, v in ssl["info"].items() if k != "config"}
    meta = {
        "backbone": "small_cnn",
        "backbone_kwargs": {"widths": args.widths, "strides": args.strides},
        "method": "simclr",
        "benchmark": info,
    }
    save_encoder(ssl["backbone"], meta, args.teacher_dir)
    say(f"teacher saved to {args.teacher_dir}")
    return ssl["backbone"], info


def distill(args: argparse.Namespace, data: dict[str, Any], workdir: Path):
    cfg = TrainConfig(
        method="distill",
        objective={"teacher": str(args.teacher_dir)},
        backbone="small_cnn",
        backbone_kwargs={"widths": args.student_widths, "strides": args.student_strides},
        max_steps=args.steps,
        batch_size=args.batch_size,
        lr=args.distill_lr,
        weight_decay=0.05,
        warmup_steps=max(1, args.steps // 20),
        seed=args.seed,
        device="cpu",
        checkpoint_every=0,
        keep_checkpoints=1,
        knn_samples=1000,
    )
    val_parts = [[str(data["val_path"]), None, data["val_y"]]]

    def on_epoch(m: dict[str, Any]) -> None:
        say(
            f"  epoch {m['epoch']:>3} step {m['step']:>5} loss {m['loss']:.4f} cosine "
            f"{m['cosine']:.4f} knn {m.get('knn_accuracy', float('nan')):.3f} "
            f"{m['images_per_s']:.0f} img/s"
        )

    t0 = time.perf_counter()
    result = train(
        cfg,
        data["ssl_parts"],
        workdir / "distill-ckpt",
        val_data=val_parts,
        on_epoch=on_epoch,
        output_dir=workdir / "student",
    )
    student, _ = load_encoder(workdir / "student")
    hist = result.history
    return student, {
        "steps": result.step,
        "epochs": result.step * args.batch_size / data["ssl_size"],
        "train_seconds": sum(h["train_seconds"] for h in hist),
        "wall_seconds": time.perf_counter() - t0,
        "cosine_first_epoch": hist[0]["cosine"],
        "cosine_last_epoch": hist[-1]["cosine"],
        "knn_last_epoch": hist[-1].get("knn_accuracy"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("--teacher-dir", type=Path, default=OUT / "cifar-teacher")
    parser.add_argument("--retrain-teacher", action="store_true")
    parser.add_argument("--steps", type=int, default=1500, help="distillation steps")
    parser.add_argument("--distill-lr", type=float, default=3e-3)
    parser.add_argument("--student-widths", type=int, nargs="+", default=[16, 32, 64, 120])
    parser.add_argument("--student-strides", type=int, nargs="+", default=[2, 2, 2, 1])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (0: torch's default); on a shared 2-core machine two "
        "OpenMP threads per step mostly wait for each other",
    )
    parser.set_defaults(fractions=[0.01])
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    started, load_start = time.perf_counter(), [round(x, 2) for x in os.getloadavg()]
    say(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {load_start}")
    with tempfile.TemporaryDirectory(prefix="distill-") as tmp:
        workdir = Path(tmp)
        data = prepare_data(args, workdir)
        teacher, teacher_info = teacher_encoder(args, data, workdir)
        student, student_info = distill(args, data, workdir)
    ratio = _params(student) / _params(teacher)
    splits = ("train", "val", "test")
    features = {
        "teacher": tuple(embed_images(teacher, data[s]) for s in splits),
        "student": tuple(embed_images(student, data[s]) for s in splits),
    }
    budgets = [LabelBudget(f, 1) for f in args.fractions]
    table = label_efficiency(
        features,
        (data["train_y"], data["val_y"], data["test_y"]),
        budgets,
        seeds=list(range(args.seeds)),
        probes=("linear",),
        num_classes=len(data["classes"]),
    )
    summary = summarise(table)
    load_end = [round(x, 2) for x in os.getloadavg()]
    report: dict[str, Any] = {
        "teacher": {"params": _params(teacher), **teacher_info},
        "student": {
            "widths": args.student_widths,
            "strides": args.student_strides,
            "params": _params(student),
            "params_over_teacher": round(ratio, 3),
            **student_info,
        },
        "load_average": [load_start, load_end],
        "total_seconds": round(time.perf_counter() - started),
    }
    print()
    for budget in budgets:
        part = summary[summary["budget"] == budget.name].set_index("method")
        t, s = (float(part.loc[f"{m}/linear", "accuracy_mean"]) for m in ("teacher", "student"))
        t_std, s_std = (
            float(part.loc[f"{m}/linear", "accuracy_std"]) for m in ("teacher", "student")
        )
        n = int(part["n_labels"].iloc[0])
        print(
            f"{budget.fraction * 100:g} % labels ({n}): teacher {100 * t:.1f} ± {100 * t_std:.1f}, "
            f"student {100 * s:.1f} ± {100 * s_std:.1f} -> student keeps {100 * s / t:.1f} % "
            f"(goal >= 95 %) with {100 * ratio:.1f} % of the parameters (goal <= 25 %)"
        )
        report[f"kept_{budget.name}"] = round(s / t, 4)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
