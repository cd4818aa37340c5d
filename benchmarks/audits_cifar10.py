"""Benchmark the audits on the 50,000-image CIFAR-10 train split: wall time and what they find.

Why: the audits must stay cheap next to pretraining, or people will skip them. This script calls
the plain functions the assets call (`ssl_assets.audit`) on decoded CIFAR-10 arrays; it does not
go through Dagster or DuckDB (recording 50,000 score rows adds a few seconds). The inputs that
curation would already have stored are built first and timed separately: pixels (decoded from
the tar with Pillow), pinned embeddings (`pinned_embed`) and the quality-issue flags.

- diversity: k-means + centroid merge, exact kNN scores, PCA, both plots and the gates;
- bias: image statistics from the pixels, the label as the audited column (CIFAR has no
  attributes), two pseudo-batches (a seeded random half each) for the drift test, the shortcut
  probe, the subgroup plot and the gates;
- labeling candidates: k-center greedy with a random 30 % labeled, for a budget K.

    .venv/bin/python benchmarks/audits_cifar10.py            # K = 1000
    .venv/bin/python benchmarks/audits_cifar10.py --budget 100 --limit 10000
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality import thresholds  # noqa: E402
from ssl_assets.audit import bias, coreset, diversity, plots  # noqa: E402
from ssl_assets.curation.image_issues import ISSUES, quality_flags, quality_scores  # noqa: E402
from ssl_assets.curation.semantic import pinned_embed  # noqa: E402

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


def load_train(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode the train split's JPGs straight from the tar; labels are the class folders."""
    images, labels = [], []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and member.name.endswith(".jpg") and "train" in parts:
                data = tar.extractfile(member).read()
                images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
                labels.append(parts[-2])
    return np.stack(images), np.array(labels)


def timed(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"  {label:<34} {seconds:7.2f} s")
    return out, seconds


def run_diversity(emb: np.ndarray) -> float:
    start = time.perf_counter()
    report = diversity.measure_diversity(emb)
    xy = report.per_image[["x", "y"]].to_numpy()
    plots.projection_png(xy, report.per_image["cluster"].to_numpy(), "CIFAR-10 train")
    plots.cluster_sizes_png(report.clusters["images"].to_numpy(), "cluster sizes")
    gates = diversity.diversity_gates(
        report,
        thresholds.AUDIT_MIN_CLUSTER_ENTROPY,
        thresholds.AUDIT_MAX_LARGEST_CLUSTER_SHARE,
        thresholds.AUDIT_DIVERSITY_MIN_IMAGES,
    )
    total = time.perf_counter() - start
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in report.seconds.items())
    print(f"diversity_audit: {total:.1f} s  ({stages}, plots and gates the rest)")
    m = report.metrics
    print(
        f"  k={int(m['clusters_requested'])} -> {int(m['clusters'])} clusters after merging, "
        f"entropy {m['cluster_entropy']:.3f}, largest {m['largest_cluster_share']:.3f}, "
        f"effective {m['effective_clusters']:.1f}, redundancy {m['redundancy']:.4f}"
    )
    for g in gates:
        print(f"  gate {g.check_name}: {'pass' if g.passed else 'FAIL'} - {g.description}")
    return total


def run_bias(pixels: np.ndarray, labels: np.ndarray, flags: pd.DataFrame, seed: int) -> float:
    n = len(pixels)
    rng = np.random.default_rng(seed)
    batch = np.where(rng.random(n) < 0.5, "batch-a", "batch-b")
    ids = pd.Series([f"img{k}" for k in range(n)])
    start = time.perf_counter()
    stats = bias.image_statistics(pixels, np.full((n, 2), 32))
    images = pd.concat(
        [pd.DataFrame({"batch": batch, "split": "train", "include": True}), stats, flags], axis=1
    )
    columns, notes = bias.attribute_columns(
        ids,
        pd.DataFrame(columns=["image_id", "key", "value"]),
        pd.DataFrame({"image_id": ids, "label": labels}),
    )
    report = bias.measure_bias(
        images,
        columns,
        newest_batch="batch-b",
        min_subgroup_share=thresholds.AUDIT_MIN_SUBGROUP_SHARE,
        max_drift_tv=thresholds.AUDIT_MAX_DRIFT_TV,
        drift_alpha=thresholds.AUDIT_DRIFT_ALPHA,
        max_shortcut_lift=thresholds.AUDIT_MAX_SHORTCUT_LIFT,
        notes=notes,
        seed=seed,
    )
    plots.subgroup_shares_png(report.shares, thresholds.AUDIT_MIN_SUBGROUP_SHARE, "shares")
    gates = report.gates()
    total = time.perf_counter() - start
    print(f"bias_audit: {total:.1f} s  (image statistics, shares, drift, probe, plot, gates)")
    probe = report.probes.iloc[0]
    drift = report.drift.iloc[0]
    print(
        f"  label: min share {report.metrics['min_subgroup_share']:.3f}, drift tv "
        f"{drift['tv_distance']:.4f} (p {drift['p_value']:.2g}), shortcut probe balanced "
        f"accuracy {probe['balanced_accuracy']:.3f} vs chance {probe['chance']:.2f} "
        f"(lift {probe['lift']:.3f}, mostly {probe['top_feature']})"
    )
    for g in gates:
        print(f"  gate {g.check_name}: {'pass' if g.passed else 'FAIL'} - {g.description}")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=CIFAR)
    parser.add_argument("--budget", type=int, default=1000, help="labeling budget K")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"{args.data} not found (see ../shared/data/README.md)")

    print("# inputs curation would already have stored (not part of the audits' time)")
    (pixels, labels), _ = timed("decode train JPGs", load_train, args.data)
    if args.limit:
        keep = np.sort(np.random.default_rng(args.seed).permutation(len(pixels))[: args.limit])
        pixels, labels = pixels[keep], labels[keep]
    emb, _ = timed("pinned_embed", pinned_embed, pixels)
    scores, _ = timed(
        "quality scores + flags", quality_scores, pixels, np.full((len(pixels), 2), 32)
    )
    flags = quality_flags(scores)[[f"is_{k}" for k in ISSUES]]
    print(f"# audits on {len(pixels)} images, {emb.shape[1]}-d pinned embeddings")
    t_div = run_diversity(emb)
    t_bias = run_bias(pixels, labels, flags.reset_index(drop=True), args.seed)
    labeled = np.random.default_rng(args.seed).random(len(emb)) < 0.3
    start = time.perf_counter()
    picked, why = coreset.select_labeling_candidates(emb, labeled, args.budget)
    t_lab = time.perf_counter() - start
    print(f"labeling_candidates (K={args.budget}, {int(labeled.sum())} labeled): {t_lab:.1f} s")
    print(f"  {why}; last pick at distance {picked['distance'].iloc[-1]:.3f}")
    print(
        f"# total {t_div + t_bias + t_lab:.1f} s (diversity {t_div:.1f}, bias {t_bias:.1f}, "
        f"labeling {t_lab:.1f})"
    )


if __name__ == "__main__":
    main()
