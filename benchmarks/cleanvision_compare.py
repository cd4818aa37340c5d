"""CIFAR-10 through our curation and through cleanvision, side by side: time and agreement.

Runs, one after the other in fresh processes (so each peak RSS is its own):

1. ours: `curate_cifar10.py` (land both batches, `ingest_batch` x2, `curate`; see that script);
2. cleanvision: `Imagelab(filepaths=<the same 60,000 landed files>).find_issues(n_jobs=1)`, all
   default issue types with default thresholds (`n_jobs=1` is its fastest setting on 2 cores);

then prints the wall-time ratio (cleanvision / ours) and how the results agree:

- exact duplicates: cleanvision's `exact_duplicates` sets (md5 of decoded pixels) vs our exact
  tier (sha256 of decoded pixels), as connected components of the exact edges;
- near duplicates: cleanvision's `near_duplicates` sets (identical 64-bit imagehash pHash, minus
  sets that are exactly an exact set) vs our near (pHash within Hamming 4) and semantic (pinned
  embedding, cosine >= threshold) tiers;
- dark / light / blurry / low_information / grayscale / odd_size / odd_aspect_ratio counts.

cleanvision is a benchmark-only dependency: `.venv/bin/pip install -e '.[bench]'`.

    .venv/bin/python benchmarks/cleanvision_compare.py               # 60,000 images, both tools
    .venv/bin/python benchmarks/cleanvision_compare.py --limit 1000  # quick
    .venv/bin/python benchmarks/cleanvision_compare.py --workdir W --reuse  # compare again only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cifar import SPLITS, batch_name, image_paths  # noqa: E402

from ssl_assets.curation.image_issues import ISSUES  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_PNG = HERE / "out" / "cifar_cleanvision_disagreements.png"


# -- 1 and 2: the two runs, each in its own process ------------------------------------------------


def run_ours(workdir: Path, limit: int | None) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "curate_cifar10.py"), "--workdir", str(workdir)]
    cmd += ["--json", str(workdir / "ours.json")] + (["--limit", str(limit)] if limit else [])
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    figures = json.loads((workdir / "ours.json").read_text())
    figures["process_s"] = time.perf_counter() - started
    (workdir / "ours.json").write_text(json.dumps(figures, indent=2))
    return figures


def run_cleanvision(workdir: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--cleanvision-child", str(workdir)]
    started = time.perf_counter()
    # find_issues(verbose=False) still draws tqdm bars; they would only garble the log.
    subprocess.run(cmd, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    figures = json.loads((workdir / "cleanvision.json").read_text())
    figures["process_s"] = time.perf_counter() - started
    (workdir / "cleanvision.json").write_text(json.dumps(figures, indent=2))
    return figures


def cleanvision_child(workdir: Path) -> None:
    """In a fresh process: cleanvision over the landed files, results to workdir."""
    started = time.perf_counter()
    from cleanvision import Imagelab, __version__

    import_s = time.perf_counter() - started
    landing = workdir / "lake" / "landing"
    paths = [str(p) for s in SPLITS for p in image_paths(landing / batch_name(s))]
    started, cpu_started = time.perf_counter(), time.process_time()
    lab = Imagelab(filepaths=paths, verbose=False)
    lab.find_issues(n_jobs=1, verbose=False)
    seconds = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    figures = {
        "version": __version__,
        "images": len(paths),
        "seconds": seconds,
        "cpu_s": cpu_s,
        "import_s": import_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "exact_sets": [list(map(str, s)) for s in lab.info["exact_duplicates"]["sets"]],
        "near_sets": [list(map(str, s)) for s in lab.info["near_duplicates"]["sets"]],
        "thresholds": {
            issue: params.get("threshold")
            for manager in lab._issue_managers.values()  # no public accessor for the defaults
            for issue, params in getattr(manager, "params", {}).items()
            if issue in ISSUES
        },
        "summary": {
            str(t): int(n)
            for t, n in zip(
                lab.issue_summary["issue_type"], lab.issue_summary["num_images"], strict=True
            )
        },
    }
    (workdir / "cleanvision.json").write_text(json.dumps(figures))
    lab.issues.rename_axis("path").reset_index().to_parquet(workdir / "cleanvision_issues.parquet")
    print(f"cleanvision {__version__}: {len(paths)} images in {seconds:.1f}s (n_jobs=1)")


# -- 3: comparison -------------------------------------------------------------------------------


def components(pairs: list[tuple[str, str]]) -> list[set[str]]:
    """Connected components (size >= 2) of an undirected edge list (union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, set[str]] = {}
    for x in parent:
        groups.setdefault(find(x), set()).add(x)
    return [g for g in groups.values() if len(g) > 1]


def set_pairs(sets: list[set[str]] | list[list[str]]) -> set[tuple[str, str]]:
    """Every unordered pair inside each set, as sorted tuples."""
    return {tuple(sorted(p)) for s in sets for p in combinations(sorted(s), 2)}  # type: ignore[misc]


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


class Ours:
    """Our curation results, read from the lake's metadata.duckdb (read-only)."""

    def __init__(self, lake: Path) -> None:
        import duckdb

        with duckdb.connect(str(lake / "metadata.duckdb"), read_only=True) as con:
            self.images = con.execute(
                "SELECT i.image_id, i.batch, i.rel_path, c.array_path, c.array_row, c.phash, "
                "d.group_id FROM images i JOIN image_catalog c USING (image_id) "
                "JOIN duplicates d USING (image_id)"
            ).df()
            self.pairs = con.execute(
                "SELECT image_id AS a, other_id AS b, tier, score FROM duplicate_pairs"
            ).df()
            self.issues = con.execute("SELECT image_id, issue, threshold FROM quality_issues").df()
            self.scores = (
                con.execute("SELECT image_id, score, value FROM quality_scores")
                .df()
                .pivot(index="image_id", columns="score", values="value")
            )
        self.lake = lake
        self.images["path"] = [
            str(lake / "landing" / b / p)
            for b, p in zip(self.images["batch"], self.images["rel_path"], strict=True)
        ]
        self.id_of = dict(zip(self.images["path"], self.images["image_id"], strict=True))
        self.path_of = dict(zip(self.images["image_id"], self.images["path"], strict=True))
        self.group = dict(zip(self.images["image_id"], self.images["group_id"], strict=True))
        self.row = self.images.set_index("image_id")
        self._arrays: dict[str, np.ndarray] = {}

    def edges(self, *tiers: str) -> list[tuple[str, str]]:
        part = self.pairs[self.pairs["tier"].isin(tiers)]
        return list(zip(part["a"], part["b"], strict=True))

    def pixels(self, image_id: str, suffix: str = ".npy") -> np.ndarray:
        r = self.row.loc[image_id]
        path = str(self.lake / r["array_path"]).removesuffix(".npy") + suffix
        if path not in self._arrays:
            self._arrays[path] = np.load(path, mmap_mode="r")
        return np.asarray(self._arrays[path][int(r["array_row"])])

    def describe(self, a: str, b: str) -> str:
        """pHash distance and pinned-embedding similarity of two images, and our groups."""
        from ssl_assets.curation.hashing import hamming

        dist = int(
            hamming(np.uint64(self.row.loc[a, "phash"]), np.uint64(self.row.loc[b, "phash"]))
        )
        sim = float(self.pixels(a, ".pinned.npy") @ self.pixels(b, ".pinned.npy"))
        same = "same group" if self.group[a] == self.group[b] else "different groups"
        return f"pHash distance {dist}, similarity {sim:.3f}, {same}"

    def short(self, image_id: str) -> str:
        r = self.row.loc[image_id]
        return f"{r['batch'].removeprefix('cifar-')}/{r['rel_path']}"


def cpu_line(ours_fig: dict[str, Any], cv_fig: dict[str, Any]) -> str:
    """CPU seconds (all threads) of both: steadier than wall time on a shared machine."""
    cpu = ours_fig.get("cpu_s")
    if not cpu or "cpu_s" not in cv_fig:
        return "CPU seconds: not recorded"
    ingest = sum(v for k, v in cpu.items() if k.startswith("ingest"))
    total = sum(cpu.values())
    return (
        f"CPU seconds (user+sys, all threads): ours ingest x2 {ingest:.0f} + curation/audit job "
        f"{total - ingest:.0f} = {total:.0f}; cleanvision {cv_fig['cpu_s']:.0f}; "
        f"ratio cleanvision / ours {cv_fig['cpu_s'] / total:.2f} (audits counted on our side)"
    )


def compare(workdir: Path, ours_fig: dict[str, Any], cv_fig: dict[str, Any], png: Path) -> None:
    from ssl_assets.curation.contact_sheet import grid_png
    from ssl_assets.curation.image_issues import default_thresholds

    ours = Ours(workdir / "lake")
    to_id = ours.id_of
    cv_exact = [{to_id[p] for p in s} for s in cv_fig["exact_sets"]]
    cv_near = [{to_id[p] for p in s} for s in cv_fig["near_sets"]]
    sheet: list[tuple[str, list[np.ndarray]]] = []

    print()
    print("=" * 100)
    curation_s = ours_fig.get("curation_s", ours_fig["total_s"])
    ratio = cv_fig["seconds"] / curation_s
    print(
        f"{'':<44} {'wall s':>8} {'process s':>10} {'peak RSS MB':>12}\n"
        f"{'ours: curation (ingest x2 + curation steps)':<44} {curation_s:>8.1f} "
        f"{'':>10} {ours_fig.get('ingest_rss_mb', 0):>12.0f}  (RSS after ingest)\n"
        f"{'ours: every job run, audits included':<44} {ours_fig['total_s']:>8.1f} "
        f"{ours_fig['process_s']:>10.1f} {ours_fig['peak_rss_mb']:>12.0f}\n"
        f"{'cleanvision n_jobs=1':<44} {cv_fig['seconds']:>8.1f} "
        f"{cv_fig['process_s']:>10.1f} {cv_fig['peak_rss_mb']:>12.0f}\n"
        f"{cpu_line(ours_fig, cv_fig)}\n"
        f"wall-time ratio cleanvision / ours (curation) = {ratio:.2f}; against every job run "
        f"{cv_fig['seconds'] / ours_fig['total_s']:.2f}   ({cv_fig['images']} images; wall: the "
        "job runs / Imagelab() + find_issues(); process: the whole child process, imports, "
        "landing and reporting included)"
    )

    rng = np.random.default_rng(0)

    def examples(pool: list[tuple[str, str]], k: int = 4) -> list[tuple[str, str]]:
        """A seeded sample of `k` pairs (so examples are not all from the first class)."""
        if len(pool) <= k:
            return pool
        return [pool[i] for i in sorted(rng.choice(len(pool), k, replace=False))]

    def pairs_report(
        title: str,
        short: str,
        cv_sets: list[set[str]],
        tiers: tuple[str, ...],
        example_tiers: tuple[str, ...],
    ) -> None:
        our_edges = ours.edges(*tiers)
        our_sets = components(our_edges)
        cv_imgs = set().union(*cv_sets) if cv_sets else set()
        our_imgs = set().union(*our_sets) if our_sets else set()
        cv_p = set_pairs(cv_sets)
        our_p = {tuple(sorted(e)) for e in our_edges}
        # A cleanvision pair counts as found by us when we put both images in one group (any
        # tier, transitively); one of our edges counts as found by cleanvision when both ends
        # share one of its sets (exact or near).
        cv_found = {p for p in cv_p if ours.group[p[0]] == ours.group[p[1]]}
        our_found = {p for p in our_p if cv_any.get(p[0], set()) & cv_any.get(p[1], set())}
        print(
            f"\n{title}\n"
            f"  sets: cleanvision {len(cv_sets)} ({len(cv_imgs)} images), ours {len(our_sets)} "
            f"({len(our_imgs)} images); images flagged by both {len(cv_imgs & our_imgs)}, "
            f"only cleanvision {len(cv_imgs - our_imgs)}, only ours {len(our_imgs - cv_imgs)}; "
            f"Jaccard {jaccard(cv_imgs, our_imgs):.3f}\n"
            f"  pairs: cleanvision {len(cv_p)}, of which we group together {len(cv_found)} "
            f"(only cleanvision {len(cv_p - cv_found)}); ours {len(our_p)} edges, of which "
            f"cleanvision has in one set {len(our_found)} (only ours {len(our_p - our_found)})"
        )
        only_ours = {tuple(sorted(e)) for e in ours.edges(*example_tiers)} - our_found
        for label, missing in (
            ("only cleanvision", sorted(cv_p - cv_found)),
            (f"only ours ({'+'.join(example_tiers)})", sorted(only_ours)),
        ):
            picked = examples(missing)
            for a, b in picked[:3]:
                print(f"    {label}: {ours.short(a)} ~ {ours.short(b)}: {ours.describe(a, b)}")
            if picked:
                images = [ours.pixels(x) for a, b in picked for x in (a, b)]
                sheet.append((f"{short}, {label}: {len(missing)} pairs, e.g.", images))

    cv_any: dict[str, set[int]] = {}
    for k, s in enumerate(cv_exact + cv_near):
        for x in s:
            cv_any.setdefault(x, set()).add(k)
    pairs_report(
        "exact: cleanvision exact_duplicates (md5 of decoded pixels) vs our exact tier",
        "exact",
        cv_exact,
        ("exact",),
        ("exact",),
    )
    pairs_report(
        "near: cleanvision near_duplicates (identical pHash) vs our near tier (pHash <= 4)",
        "near",
        cv_near,
        ("near",),
        ("near",),
    )
    pairs_report(
        "near: cleanvision near_duplicates vs our near + semantic + aligned tiers",
        "near+semantic+aligned",
        cv_near,
        ("near", "semantic", "aligned"),
        ("semantic", "aligned"),
    )

    cv_issues = pd.read_parquet(workdir / "cleanvision_issues.parquet")
    cv_issues["image_id"] = cv_issues["path"].map(to_id)
    cv_issues = cv_issues.set_index("image_id")
    ours_limit = {
        **default_thresholds(),
        **ours.issues.groupby("issue")["threshold"].first(),
    }
    cv_limit = cv_fig.get("thresholds", {})
    print(
        f"\nquality issues (each with its defaults)   {'cleanvision':>11} {'ours':>6} {'both':>6} "
        f"{'only cv':>8} {'only ours':>9}  thresholds cv/ours  score correlation (Spearman)"
    )
    for issue in ISSUES:
        col = f"is_{issue}_issue"
        cv_set = set(cv_issues.index[cv_issues[col]]) if col in cv_issues else set()
        our_set = set(ours.issues.loc[ours.issues["issue"] == issue, "image_id"])
        score = f"{issue}_score"
        corr = "-"
        if score in ours.scores and score in cv_issues:
            cv_s = cv_issues[score]
            our_s = ours.scores[score].reindex(cv_s.index)
            if cv_s.nunique() > 1 and our_s.nunique() > 1:
                corr = f"{cv_s.corr(our_s, method='spearman'):.3f}"
            else:
                corr = "- (constant)"
        limits = f"{cv_limit.get(issue, '?')}/{ours_limit.get(issue, '-')}"
        print(
            f"  {issue:<38} {len(cv_set):>11} {len(our_set):>6} {len(cv_set & our_set):>6} "
            f"{len(cv_set - our_set):>8} {len(our_set - cv_set):>9}  {limits:<18}  {corr}"
        )
        if issue == "blurry" and cv_set ^ our_set:
            for label, ids in (("only cv", cv_set - our_set), ("only ours", our_set - cv_set)):
                picked = [ours.pixels(i) for i in sorted(ids)[:: max(1, len(ids) // 8)][:8]]
                sheet.append((f"blurry, {label}: {len(ids)} images, e.g.", picked))
    print(f"  cleanvision summary: {cv_fig['summary']}")
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(grid_png(sheet or [("no disagreements", [])], cell=64, max_cols=8))
    print(f"\npicture of disagreeing pairs (rows of image pairs): {png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="at most N images per split")
    parser.add_argument("--workdir", type=Path, help="lake and results (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    parser.add_argument(
        "--reuse", action="store_true", help="compare the results already in --workdir only"
    )
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG)
    parser.add_argument("--cleanvision-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cleanvision_child:
        cleanvision_child(args.cleanvision_child)
        return
    if args.reuse and not args.workdir:
        parser.error("--reuse needs --workdir")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cifar-compare-"))
    try:
        if args.reuse:
            ours_fig = json.loads((workdir / "ours.json").read_text())
            cv_fig = json.loads((workdir / "cleanvision.json").read_text())
        else:
            print("# 1/2 ours: curate_cifar10.py", flush=True)
            ours_fig = run_ours(workdir, args.limit)
            print("\n# 2/2 cleanvision on the same files", flush=True)
            cv_fig = run_cleanvision(workdir)
        compare(workdir, ours_fig, cv_fig, args.png)
    finally:
        if args.workdir or args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
