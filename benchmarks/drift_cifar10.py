"""Drift, decay and the retrain they trigger, on CIFAR-10, through the real jobs.

In a temporary lake and Dagster instance, like `ssl_assets.pipeline` runs them:

1. **earlier**: `--earlier` CIFAR-10 train images as they are (labeled, splits drawn 70/15/15),
   ingested, curated (`curate_and_audit`, whose `batch_monitoring` has no champion yet to judge
   against) and trained on (`retrain_evaluate`: SimCLR `small_cnn`, `--steps` optimizer steps, a
   fine-tuned head, the first champion).
2. **later-same** (control): `--later` more CIFAR-10 train images as they are: ingested,
   curated and monitored; the retrain policy decides (expected: no retrain).
3. **later-shifted**: `--later` other train images, shifted (`--shift invert`: inverted colours,
   another camera; `classes`: only classes the earlier batch did not have, earlier then holding
   the other five), labeled: monitored (drift, and the champion scored on its labels), the
   retrain policy decides, and when it says retrain, `retrain_evaluate` runs again (warm start
   from the champion, `--replay-share`).

Printed per later batch: the drift statistic in the pinned and the champion encoder's space
(energy coefficient, permutation p-value, OOD share), the retrain decision in plain words, and
the champion's accuracy on the shifted batch's labels before the retrain (all of them: no model
had seen them) and, after it, old and new model on the shifted batch's images outside the train
split (those the retrain did not train on), with 95 % Wilson intervals.

The retrain count threshold is raised to `--min-new-images` (default 1,000) so that the later
batches, each below it, can only trigger a retrain through drift or decay.

    .venv/bin/python benchmarks/drift_cifar10.py                      # 2,000 + 2 x 300, ~10 min
    .venv/bin/python benchmarks/drift_cifar10.py --shift classes
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cifar import CIFAR_TARBALL, READY, CifarFile, read_cifar  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def land(landing: Path, batch: str, files: list[CifarFile], invert: bool) -> None:
    """One batch: every image labeled (labels.csv), no split pin; `_READY` last."""
    batch_dir = landing / batch
    rows = []
    for f in files:
        rel = f"{f.label}/{Path(f.name).stem}.png"
        (batch_dir / f.label).mkdir(parents=True, exist_ok=True)
        pixels = np.asarray(Image.open(io.BytesIO(f.data)).convert("RGB"))
        Image.fromarray(255 - pixels if invert else pixels).save(batch_dir / rel)
        rows.append((rel, f.label))
    with (batch_dir / "labels.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label"), *rows])
    (batch_dir / READY).write_text("")


def pick(files: list[CifarFile], args: argparse.Namespace) -> dict[str, tuple[list, bool]]:
    """earlier / later-same / later-shifted files and whether each is inverted."""
    rng = np.random.default_rng(0)
    files = [files[i] for i in rng.permutation(len(files))]
    if args.shift == "classes":
        classes = sorted({f.label for f in files})
        old = [f for f in files if f.label in classes[:5]]
        new = [f for f in files if f.label in classes[5:]]
        return {
            "earlier": (old[: args.earlier], False),
            "later-same": (old[args.earlier : args.earlier + args.later], False),
            "later-shifted": (new[: args.later], False),
        }
    cut = args.earlier + args.later
    return {
        "earlier": (files[: args.earlier], False),
        "later-same": (files[args.earlier : cut], False),
        "later-shifted": (files[cut : cut + args.later], True),
    }


def run_job(defs, instance, job: str, **kwargs) -> float:
    started = time.perf_counter()
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False, **kwargs
    )
    seconds = time.perf_counter() - started
    key = kwargs.get("partition_key")
    print(
        f"  {job}{f'[{key}]' if key else ''}: "
        f"{'success' if result.success else 'FAILED'} in {seconds:.0f} s"
    )
    return seconds


def show_drift(store, batch: str) -> None:
    rows = store.query(
        "SELECT space, batch_images, reference_images, effect, p_value, ood_share, drifted, "
        "reason FROM batch_drift WHERE batch = ? ORDER BY space DESC",
        [batch],
    )
    for r in rows.itertuples():
        if r.reference_images == 0:
            print(f"  drift [{r.space:>8}] {r.batch_images} images: {r.reason}")
            continue
        print(
            f"  drift [{r.space:>8}] {r.batch_images} images vs {r.reference_images} training "
            f"images: energy coefficient {r.effect:.3f}, p = {r.p_value:.3g}, OOD share "
            f"{r.ood_share:.1%} -> {'DRIFT' if r.drifted else 'no drift'}"
        )
    scores = store.query(
        "SELECT role, model_id, images, accuracy, low, high, reference_accuracy, decayed "
        "FROM batch_scores WHERE batch = ? ORDER BY role DESC",
        [batch],
    )
    for r in scores.itertuples():
        print(
            f"  {r.role} {r.model_id} on the batch's {r.images} labels: accuracy "
            f"{r.accuracy:.3f} [{r.low:.3f}, {r.high:.3f}] (reference {r.reference_accuracy:.3f})"
            f" -> {'DECAYED' if r.decayed else 'holds'}"
        )


def accuracy_outside_train(store, lake, model_row, batch: str, version: str) -> str:
    """A model's accuracy on the batch's labeled images outside the train split."""
    from ssl_assets.ml.evaluate.model_io import load_finetuned
    from ssl_assets.ml.evaluate.shadow import correct_predictions, wilson_interval

    rows = store.query(
        "SELECT c.array_path, c.array_row, l.label FROM curated_images k "
        "JOIN image_catalog c USING (image_id) JOIN current_labels l USING (image_id) "
        "WHERE k.include AND k.split <> 'train' AND c.batch = ? AND c.version = ? "
        "ORDER BY c.array_path, c.array_row",
        [batch, version],
    )
    model, meta = load_finetuned(lake.verified_model_path(model_row))
    ok, _ = correct_predictions(
        model, meta["class_names"], lake.read_rows(rows), rows["label"].tolist()
    )
    low, high = wilson_interval(int(ok.sum()), len(ok))
    return f"{ok.mean():.3f} [{low:.3f}, {high:.3f}] on {len(ok)} images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--earlier", type=int, default=2000)
    parser.add_argument("--later", type=int, default=300)
    parser.add_argument("--shift", choices=("invert", "classes"), default="invert")
    parser.add_argument(
        "--steps", type=int, default=60, help="SimCLR optimizer steps per retrain (~10 epochs)"
    )
    parser.add_argument("--finetune-epochs", type=int, default=15)
    parser.add_argument("--replay-share", type=float, default=None)
    parser.add_argument("--min-new-images", type=int, default=1000)
    parser.add_argument("--tarball", type=Path, default=CIFAR_TARBALL)
    parser.add_argument("--keep", action="store_true", help="keep the temporary lake")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="drift-cifar-"))
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    os.environ.update(DAGSTER_HOME=str(home), SSL_LAKE=str(work / "lake"), SSL_PROFILE="demo")

    from dagster import DagsterInstance

    from ssl_assets.definitions import build_definitions
    from ssl_assets.profiles import Profile, get_profile
    from ssl_assets.retrain_policy import decide_and_record

    profile = Profile(
        **{
            **get_profile("demo").model_dump(),
            "pretrain_steps": args.steps,
            "finetune_epochs": args.finetune_epochs,
            "eval_seeds": 1,
            "scratch_steps": 20,
            "retrain_min_new_images": args.min_new_images,
        }
    )
    defs = build_definitions(profile, str(work / "lake"))
    lake, store = defs.resources["lake"], defs.resources["metadata"]
    version = defs.resources["image_spec"].version
    lake.ensure()
    started = time.perf_counter()
    files = read_cifar(
        args.tarball, args.earlier + 2 * args.later if args.shift == "invert" else None
    )
    batches = pick(files["train"], args)
    print(f"CIFAR-10 read in {time.perf_counter() - started:.0f} s; lake {work / 'lake'}")
    retrain_config = {
        "ops": {"ssl_encoder": {"config": {"replay_share": args.replay_share}}},
        **QUIET,
    }
    with DagsterInstance.get() as instance:
        for batch, (chosen, invert) in batches.items():
            print(f"\n== {batch}: {len(chosen)} images{' (inverted colours)' if invert else ''}")
            land(lake.landing_dir, batch, chosen, invert)
            instance.add_dynamic_partitions("batches", [batch])
            run_job(defs, instance, "ingest_batch", partition_key=batch)
            run_job(defs, instance, "curate_and_audit")
            show_drift(store, batch)
            decision, _ = decide_and_record(store, profile.retrain_min_new_images, "benchmark")
            print(f"  retrain policy: {decision.reason}")
            if not decision.retrain:
                continue
            before = store.current_champion()
            seconds = time.perf_counter()
            result = defs.resolve_job_def("retrain_evaluate").execute_in_process(
                instance=instance, run_config=retrain_config, raise_on_error=False
            )
            print(
                f"  retrain_evaluate: {'success' if result.success else 'FAILED (refused?)'} "
                f"in {time.perf_counter() - seconds:.0f} s"
            )
            after, newest = store.current_champion(), store.latest_finetuned()
            if before is None or batch == "earlier":
                continue
            promoted = after["model_id"] != before["model_id"]
            print(
                f"  champion after the retrain: {after['model_id']} "
                f"({'promoted' if promoted else 'challenger ' + newest['model_id'] + ' refused'})"
            )
            print(f"  on {batch}'s images outside the train split (never trained on):")
            print(
                f"    old champion {before['model_id']}: "
                f"{accuracy_outside_train(store, lake, before, batch, version)}"
            )
            print(
                f"    retrained    {newest['model_id']}: "
                f"{accuracy_outside_train(store, lake, newest, batch, version)}"
            )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
