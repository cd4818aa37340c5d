"""Label efficiency on CIFAR-10: SimCLR linear probe vs from-scratch at 1 % and 10 % labels.

Why: the point of self-supervised pre-training is needing fewer labels. This script measures
that on this machine (2 shared CPU cores) at a fixed, stated compute budget, with the project's
own code only (`ssl_assets.ml.train.train`, `encoder_io.load_encoder`, and
`ssl_assets.ml.evaluate`: `embed_images`, `LabelBudget` / `sample_label_budget`,
`label_efficiency` with `fit_linear_probe`, `ScratchConfig` / `train_scratch_baseline`).

Protocol (defaults):

- Data: `../shared/data/cifar10-jpg.tar.gz` (`train|test/<class>/NNNN.jpg`, 32x32), decoded once
  with Pillow into uint8 N x 32 x 32 x 3 `.npy` arrays in a temporary directory (deleted at the
  end, never in the repository). A seeded permutation of the 50,000 train images gives the
  10,000-image *train subset* (the only images the probes / scratch see labels of) and a
  disjoint 5,000-image *val split* (model choice only); the 10,000 CIFAR test images are
  scored once per (label budget, draw, method). SimCLR trains without labels on the train
  subset plus the other 35,000 train images that are not in val (`--ssl-images all`, 45,000
  images; `--ssl-images subset`: the 10,000-image train subset only, the former default).
- Encoder: `small_cnn` with widths 32-64-128-256 and strides 2-2-2-1 (stride-2 stem, last stage
  unstrided so it pools a 4x4 instead of a 2x2 map: ~0.39 M parameters, 256-d features, about
  the throughput of strides 2-2-2-2 on two cores, where per-image overheads dominate, and about
  3x that of the default stride-1 stem, so pre-training gets several times more steps).
- SSL: SimCLR (projection head 256-256-128, NT-Xent temperature 0.2 (`--temperature`), the
  SimCLR CIFAR augmentation without blur), batch 256, AdamW lr 3e-3 (`--lr`), weight decay 0.05,
  one warm-up epoch, cosine decay, fp32 (`--precision bf16`: CPU autocast, same accuracy in
  short runs, ~10 % faster at best on this machine), for a fixed time budget (`--minutes`,
  default 15) of training-step seconds. The recipe (temperature, lr, strides, 45,000 images)
  was chosen in equal-step short runs, each a small gain on its own
  (`benchmarks/out/ssl_recipe_log.md`, not in the repository). A short calibration run of the
  same `train` (its images/s) sets `max_steps`; the run then trains one epoch per `train` call
  (`stop_after_steps`, resuming from its checkpoint) and stops early, with the last
  checkpoint's backbone, if the shared machine got slower than calibrated and the next epoch
  would end more than half an epoch past the budget; if it got faster (calibration taken
  while other jobs ran), the planned steps end before the budget. The actual training time,
  wall time and epochs reached are printed. Like the trainer, training time excludes the
  per-epoch monitoring (val kNN on 1,000 images).
- Labels: per class `max(ceil(fraction * n_c), 1)` images of the train subset
  (`LabelBudget(fraction, 1)`), fractions 1 % and 10 %, 3 draws (seeds 0, 1, 2), nested.
- Linear probe (`label_efficiency`, probe "linear"): standardised logistic regression on frozen
  features of the labelled images, C chosen on the val split, scored on test. The same probe on
  the randomly initialised encoder (same architecture and init seed) is a reference.
- Scratch baseline: the same backbone (fresh, seeded by the draw) + linear head, cross-entropy
  on the same labelled images (`train_scratch_baseline`: AdamW 1e-3 constant, crop 0.6-1 + flip,
  batch 128, best val epoch kept, fp32), for `--scratch-minutes` of training-step seconds per
  draw (default: the SSL run's measured training time, i.e. 6 x the SSL budget over the 6
  draws; the SSL encoder serves all 6 draws, so its per-draw share is `--minutes` / 6 = 2.5 min,
  and any `--scratch-minutes` of at least that is an equal-or-more-generous comparison).
  The labelled images are repeated so that one "epoch" (the interval between val passes) is at
  least `--scratch-epoch-images` images: with 100 labels an epoch would otherwise be a single
  step followed by a 5,000-image val pass, and val passes (not counted as training time) would
  dominate the wall time.

    .venv/bin/python benchmarks/label_efficiency_cifar10.py                      # 15 + 6 x 15 min
    .venv/bin/python benchmarks/label_efficiency_cifar10.py --scratch-minutes 2.5   # ~40 min
    .venv/bin/python benchmarks/label_efficiency_cifar10.py --minutes 0.3 --scratch-minutes 0.1 \\
        --train-size 2000 --val-size 1000 --test-size 1000                       # smoke run
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cifar import CIFAR_TARBALL, CifarFile, read_cifar  # noqa: E402

from ssl_assets.ml.backbones import build_backbone  # noqa: E402
from ssl_assets.ml.checkpoint import load_latest_checkpoint  # noqa: E402
from ssl_assets.ml.config import TrainConfig  # noqa: E402
from ssl_assets.ml.encoder_io import load_encoder  # noqa: E402
from ssl_assets.ml.evaluate import (  # noqa: E402
    LabelBudget,
    ScratchConfig,
    embed_images,
    label_efficiency,
    predict_labels,
    sample_label_budget,
    summarise,
    train_scratch_baseline,
)
from ssl_assets.ml.evaluate.efficiency import TABLE_COLUMNS  # noqa: E402
from ssl_assets.ml.evaluate.probes import accuracy  # noqa: E402
from ssl_assets.ml.train import train  # noqa: E402

CIFAR = CIFAR_TARBALL
HEAD = {"hidden_dim": 256, "out_dim": 128, "temperature": 0.5}
SCRATCH = "scratch/supervised"


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- data


def decode(files: list[CifarFile], rows: np.ndarray) -> np.ndarray:
    """The JPGs at `rows` as one uint8 N x 32 x 32 x 3 array (Pillow, RGB)."""
    out = np.empty((rows.size, 32, 32, 3), dtype=np.uint8)
    for i, r in enumerate(rows):
        with Image.open(io.BytesIO(files[int(r)].data)) as im:
            out[i] = np.asarray(im.convert("RGB").resize((32, 32)))
    return out


def prepare_data(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    files = read_cifar(args.tarball)  # per split, sorted by class then name
    classes = sorted({f.label for f in files["train"]})
    code = {c: i for i, c in enumerate(classes)}
    y_all = np.asarray([code[f.label] for f in files["train"]], dtype=np.int64)
    perm = np.random.default_rng(args.seed).permutation(len(files["train"]))
    if args.train_size + args.val_size > perm.size:
        raise ValueError("train subset + val split exceed the 50,000 CIFAR train images")
    train_rows = np.sort(perm[: args.train_size])
    val_rows = np.sort(perm[args.train_size : args.train_size + args.val_size])
    # SSL images: the train subset, plus (`--ssl-images all`) every other train image not in val
    extra_rows = (
        np.sort(perm[args.train_size + args.val_size :])
        if args.ssl_images == "all"
        else np.empty(0, dtype=np.int64)
    )
    test_all = np.arange(len(files["test"]))
    test_rows = (
        test_all
        if args.test_size is None
        else np.sort(np.random.default_rng(args.seed).permutation(test_all)[: args.test_size])
    )
    y_test = np.asarray([code[files["test"][int(r)].label] for r in test_rows], dtype=np.int64)
    data = {
        "classes": classes,
        "train": decode(files["train"], train_rows),
        "val": decode(files["train"], val_rows),
        "test": decode(files["test"], test_rows),
        "train_y": y_all[train_rows],
        "val_y": y_all[val_rows],
        "test_y": y_test,
    }
    for split in ("train", "val"):
        path = workdir / f"{split}.npy"
        np.save(path, data[split])
        data[f"{split}_path"] = path
    data["ssl_parts"] = [[str(data["train_path"]), None]]
    if extra_rows.size:
        path = workdir / "ssl_extra.npy"
        np.save(path, decode(files["train"], extra_rows))
        data["ssl_parts"].append([str(path), None])
    data["ssl_size"] = args.train_size + extra_rows.size
    return data


# --------------------------------------------------------------------------- SSL


def ssl_config(args: argparse.Namespace, max_steps: int, warmup_steps: int) -> TrainConfig:
    return TrainConfig(
        method="simclr",
        objective={**HEAD, "temperature": args.temperature},
        backbone="small_cnn",
        backbone_kwargs={"widths": args.widths, "strides": args.strides},
        max_steps=max_steps,
        batch_size=args.batch_size,
        optimizer="adamw",
        lr=args.lr,
        weight_decay=0.05,
        precision=args.precision,
        warmup_steps=warmup_steps,
        seed=args.seed,
        device="cpu",
        checkpoint_every=0,  # only the final checkpoint
        keep_checkpoints=1,
        knn_samples=1000,
    )


def _train_seconds(history: list[dict[str, Any]]) -> float:
    return float(sum(float(h.get("train_seconds", 0.0)) for h in history))


def pretrain(args: argparse.Namespace, data: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """SimCLR for `--minutes` of training-step time.

    A calibration run of the same `train` (`--calibration-steps`, its own directory) gives
    images/s, which sets `max_steps` (the cosine schedule's length). The real run then goes one
    epoch per `train` call (`stop_after_steps` at each epoch end, resuming from the checkpoint
    the previous call wrote, same config): after each epoch, if the next one would end more
    than half an epoch past the budget (the machine is slower than calibrated), training stops
    there and the backbone is taken from that checkpoint (schedule not finished; reported).
    """
    train_parts = data["ssl_parts"]
    val_parts = [[str(data["val_path"]), None, data["val_y"]]]
    steps_per_epoch = data["ssl_size"] // args.batch_size
    budget_s = args.minutes * 60.0

    calib = ssl_config(args, args.calibration_steps, 0)
    t0 = time.perf_counter()
    res = train(calib, train_parts, workdir / "calibration", output_dir=workdir / "calib-out")
    calib_ips = res.step * args.batch_size / _train_seconds(res.history)
    say(
        f"calibration: {res.step} steps, {calib_ips:.0f} images/s "
        f"({time.perf_counter() - t0:.0f} s wall)"
    )
    max_steps = max(1, math.floor(budget_s * calib_ips / args.batch_size))
    cfg = ssl_config(args, max_steps, min(steps_per_epoch, max_steps // 10))
    say(
        f"SimCLR: {max_steps} steps planned (~{max_steps / steps_per_epoch:.1f} epochs of "
        f"{steps_per_epoch} steps) for a {budget_s:.0f} s budget"
    )

    def on_epoch(m: dict[str, Any]) -> None:
        say(
            f"  epoch {m['epoch']:>3} step {m['step']:>5} loss {m.get('loss', math.nan):.3f} "
            f"contrastive_acc {m.get('contrastive_acc', math.nan):.3f} "
            f"knn {m.get('knn_accuracy', math.nan):.3f} {m['images_per_s']:.0f} img/s "
            f"lr {m['lr']:.2e}"
        )

    ckpt_dir, out_dir = workdir / "ssl-ckpt", workdir / "ssl-encoder"
    t0 = time.perf_counter()
    step, capped = 0, False
    while True:
        next_stop = min(max_steps, (step // steps_per_epoch + 1) * steps_per_epoch)
        result = train(
            cfg,
            train_parts,
            ckpt_dir,
            val_data=val_parts,
            on_epoch=on_epoch,
            stop_after_steps=next_stop,
            output_dir=out_dir,
        )
        step = result.step
        if result.completed:
            break
        spent = _train_seconds(result.history)
        chunk = min(max_steps, (step // steps_per_epoch + 1) * steps_per_epoch) - step
        per_step = float(result.history[-1]["train_seconds"]) / steps_per_epoch
        if spent + 0.5 * chunk * per_step > budget_s:  # the next chunk would overrun
            capped = True
            break
    wall = time.perf_counter() - t0
    if result.completed:
        backbone, meta = load_encoder(out_dir)
        hist = meta["history"]
    else:  # stopped by the time cap: the backbone of the last checkpoint
        loaded = load_latest_checkpoint(ckpt_dir)
        assert loaded is not None and loaded[0] == step
        _, tensors, ckpt_meta = loaded
        backbone = build_backbone(cfg.backbone, **cfg.backbone_kwargs)
        prefix = "model/backbone."
        backbone.load_state_dict(
            {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        )
        backbone.eval()
        hist = ckpt_meta["state"]["history"]
    train_s = _train_seconds(hist)
    info = {
        "config": cfg.to_dict(),
        "ssl_images": data["ssl_size"],
        "params": sum(p.numel() for p in backbone.parameters()),
        "calibration_images_per_s": calib_ips,
        "budget_s": budget_s,
        "planned_steps": max_steps,
        "steps": step,
        "stopped_by_time_cap": capped,
        "epochs": step / steps_per_epoch,
        "train_seconds": train_s,
        "wall_seconds": wall,
        "images_per_s": step * args.batch_size / train_s,
        "loss_first_epoch": hist[0].get("loss"),
        "loss_last_epoch": hist[-1].get("loss"),
        "knn_first_epoch": hist[0].get("knn_accuracy"),
        "knn_last_epoch": hist[-1].get("knn_accuracy"),
    }
    say(
        f"SimCLR done: {step} of {max_steps} planned steps"
        f"{' (time cap)' if capped else ''} = {info['epochs']:.1f} epochs, {train_s:.0f} s "
        f"training ({wall:.0f} s wall), {info['images_per_s']:.0f} images/s"
    )
    return {"backbone": backbone, "info": info}


# --------------------------------------------------------------------------- scratch


def scratch_rows(
    args: argparse.Namespace,
    data: dict[str, Any],
    budgets: list[LabelBudget],
    seeds: list[int],
    budget_s: float,
    preprocessing: dict[str, Any],
) -> list[dict[str, Any]]:
    """The from-scratch baseline on each budget's labelled subset (the probes' subsets)."""
    rows = []
    kwargs = {"widths": args.widths, "strides": args.strides}
    for budget in budgets:
        for seed in seeds:
            idx = sample_label_budget(data["train_y"], budget, seed)
            reps = max(1, math.ceil(args.scratch_epoch_images / idx.size))
            tiled = np.tile(idx, reps)
            cfg = ScratchConfig(
                backbone="small_cnn",
                backbone_kwargs=kwargs,
                time_budget_s=budget_s,
                epochs=1_000_000,
                seed=seed,
            )
            t0 = time.perf_counter()
            model, log = train_scratch_baseline(
                data["train"][tiled],
                data["train_y"][tiled],
                data["val"],
                data["val_y"],
                len(data["classes"]),
                cfg,
                preprocessing,
            )
            acc = accuracy(predict_labels(model, data["test"]), data["test_y"])
            wall = time.perf_counter() - t0
            row: dict[str, Any] = {c: math.nan for c in TABLE_COLUMNS}
            summary = log.summary()
            row.update(
                budget=budget.name,
                fraction=budget.fraction,
                min_per_class=budget.min_per_class,
                n_labels=idx.size,
                method=SCRATCH,
                encoder="scratch",
                probe="supervised",
                seed=seed,
                accuracy=acc,
                val_accuracy=log.best_val_accuracy,
                params=json.dumps(
                    {
                        "epochs": summary["epochs"],
                        "best_epoch": summary["best_epoch"],
                        "passes_per_epoch": reps,
                        "stop_reason": log.stop_reason,
                        "wall_seconds": round(wall, 1),
                    }
                ),
                steps=log.steps,
                train_seconds=log.train_seconds,
                loss_start=log.loss_start,
                loss_end=log.loss_end,
            )
            rows.append(row)
            say(
                f"  scratch {budget.name} seed {seed}: test {acc:.4f} val "
                f"{log.best_val_accuracy:.4f} | {log.steps} steps, {log.train_seconds:.0f} s "
                f"training ({wall:.0f} s wall), {summary['epochs']} epochs of {reps} passes over "
                f"{idx.size} images, best epoch {log.best_epoch}, loss "
                f"{log.loss_start:.3f} -> {log.loss_end:.3f}"
            )
    return rows


# --------------------------------------------------------------------------- report


LABELS = {"ssl/linear": "SSL (SimCLR) linear probe", SCRATCH: "scratch (supervised)"}
LABELS["random/linear"] = "random-init linear probe"


def report(table: pd.DataFrame, budgets: list[LabelBudget]) -> dict[str, float]:
    summary = summarise(table)
    print()
    print(f"{'labels':<16} {'method':<28} {'test accuracy (%), mean ± std':>30} {'draws':>6}")
    print("-" * 84)
    diffs: dict[str, float] = {}
    for budget in budgets:
        part = summary[summary["budget"] == budget.name]
        n = int(part["n_labels"].iloc[0])
        for method in ("ssl/linear", SCRATCH, "random/linear"):
            r = part[part["method"] == method]
            if r.empty:
                continue
            mean, std = (
                100 * float(r["accuracy_mean"].iloc[0]),
                100 * float(r["accuracy_std"].iloc[0]),
            )
            label = f"{budget.fraction * 100:g} % ({n})"
            print(
                f"{label:<16} {LABELS[method]:<28} {f'{mean:.1f} ± {std:.1f}':>30} {int(r['seeds'].iloc[0]):>6}"
            )
        means = part.set_index("method")["accuracy_mean"]
        if "ssl/linear" in means and SCRATCH in means:
            diffs[budget.name] = 100 * float(means["ssl/linear"] - means[SCRATCH])
        print()
    for budget in budgets:
        if budget.name in diffs:
            print(
                f"SSL − scratch at {budget.fraction * 100:g} % labels: "
                f"{diffs[budget.name]:+.1f} points"
            )
    return diffs


def build_parser() -> argparse.ArgumentParser:
    """The protocol's settings (shared with benchmarks/distill_cifar10.py, whose teacher is
    this benchmark's SimCLR encoder)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="SimCLR training time")
    parser.add_argument(
        "--scratch-minutes",
        type=float,
        default=None,
        help="scratch training time per label draw (default: the SSL run's training time)",
    )
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--val-size", type=int, default=5_000)
    parser.add_argument("--test-size", type=int, default=None, help="default: all 10,000")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--seeds", type=int, default=3, help="label draws per fraction")
    parser.add_argument("--seed", type=int, default=0, help="data split and SSL seed")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--strides", type=int, nargs="+", default=[2, 2, 2, 1])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature")
    parser.add_argument(
        "--ssl-images",
        choices=("subset", "all"),
        default="all",
        help="SimCLR images: the train subset only, or all 50,000 train images minus val",
    )
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32", help="SimCLR autocast"
    )
    parser.add_argument("--calibration-steps", type=int, default=40)
    parser.add_argument("--scratch-epoch-images", type=int, default=5120)
    parser.add_argument("--tarball", type=Path, default=CIFAR)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    started = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    say(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {load_start}")
    budgets = [LabelBudget(f, 1) for f in args.fractions]
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory(prefix="label-efficiency-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        data = prepare_data(args, workdir)
        say(
            f"decoded train {len(data['train'])}, val {len(data['val'])}, test "
            f"{len(data['test'])} images in {time.perf_counter() - t0:.0f} s"
        )
        ssl = pretrain(args, data, workdir)

    t0 = time.perf_counter()
    backbone = ssl["backbone"]
    torch.manual_seed(args.seed)  # the SSL run's initialisation
    random_init = build_backbone("small_cnn", widths=args.widths, strides=args.strides)
    splits = ("train", "val", "test")
    features = {
        "ssl": tuple(embed_images(backbone, data[s]) for s in splits),
        "random": tuple(embed_images(random_init, data[s]) for s in splits),
    }
    say(f"embedded 2 encoders x 3 splits in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    probes = label_efficiency(
        features,
        (data["train_y"], data["val_y"], data["test_y"]),
        budgets,
        seeds=seeds,
        probes=("linear",),
        num_classes=len(data["classes"]),
        on_row=lambda r: say(
            f"  {r['method']} {r['budget']} seed {r['seed']}: test {r['accuracy']:.4f} "
            f"val {r['val_accuracy']:.4f} {r['params']}"
        ),
    )
    say(f"linear probes in {time.perf_counter() - t0:.0f} s")

    scratch_s = (
        args.scratch_minutes * 60.0
        if args.scratch_minutes is not None
        else ssl["info"]["train_seconds"]
    )
    say(f"scratch baseline: {scratch_s:.0f} s training per draw")
    t0 = time.perf_counter()
    scratch = scratch_rows(args, data, budgets, seeds, scratch_s, backbone.preprocessing)
    say(f"scratch baselines in {time.perf_counter() - t0:.0f} s")

    table = pd.concat([probes, pd.DataFrame(scratch, columns=TABLE_COLUMNS)], ignore_index=True)
    info = ssl["info"]
    load_end = [round(x, 2) for x in os.getloadavg()]
    print()
    print(
        f"Encoder small_cnn widths {args.widths} strides {args.strides} ({info['params']:,} "
        f"params, {backbone.out_dim}-d features); SimCLR batch {args.batch_size}, AdamW lr "
        f"{args.lr:g}, temperature {args.temperature:g}, {args.precision}, on "
        f"{data['ssl_size']:,} unlabelled CIFAR-10 train images (labels drawn from the "
        f"{args.train_size:,}-image train subset)"
    )
    print(
        f"SSL budget {info['budget_s'] / 60:g} min: {info['steps']} steps = "
        f"{info['epochs']:.1f} epochs, {info['train_seconds']:.0f} s training, "
        f"{info['wall_seconds']:.0f} s wall, {info['images_per_s']:.0f} images/s "
        f"(calibrated {info['calibration_images_per_s']:.0f}); loss "
        f"{info['loss_first_epoch']:.3f} -> {info['loss_last_epoch']:.3f}, val kNN "
        f"{info['knn_first_epoch']:.3f} -> {info['knn_last_epoch']:.3f}"
    )
    print(
        f"Scratch: {scratch_s:.0f} s training per draw ({len(scratch)} draws); val "
        f"{args.val_size:,}, test {len(data['test']):,}; load average {load_start} -> "
        f"{load_end}; total {time.perf_counter() - started:.0f} s"
    )
    diffs = report(table, budgets)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "ssl": info,
                    "scratch_seconds_per_draw": scratch_s,
                    "ssl_minus_scratch_points": diffs,
                    "load_average": [load_start, load_end],
                    "rows": table.to_dict(orient="records"),
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
