"""Curate all of CIFAR-10 through the real pipeline and print time, memory and what it found.

CIFAR-10's train and test splits land as two batches (`cifar-train` first, then `cifar-test`,
each with `metadata.csv` pinning its split), in a temporary lake and a temporary Dagster instance
(a copy of `dagster_home/dagster.yaml`), with `SSL_PROFILE=demo` (catalog at 32x32). Then, like
`ssl_assets.pipeline.run_pipeline`: the `ingest_batch` job per batch (raw_images, image_catalog),
then `pipeline.curate` (duplicates, quality_issues, curated_images, and whatever else that job
runs, e.g. the audits: timed apart), all in this process.

Printed: wall time per job and per step (from the Dagster event log), the peak RSS of this process
after each job, then from DuckDB: images per batch, duplicates per tier, quality flags per issue,
included per split, excluded per reason, the test images excluded as `cross_split_duplicate`,
the leak report (`split_leaks`: test images with a train duplicate, by tier, and how many share
the matched train image's class; the classes come from metadata.csv and curation never reads
them; the ciFAIR study puts such test images at about 3 % of CIFAR-10's test set) and every
gate. A PNG (default `benchmarks/out/cifar_leaks.png`) shows 30 random flagged test/train pairs
and 30 candidate pairs just below the aligned tier's thresholds, with ids, scores and classes.

    .venv/bin/python benchmarks/curate_cifar10.py                  # all 60,000 images
    .venv/bin/python benchmarks/curate_cifar10.py --limit 1000     # 1,000 per split, quick
    .venv/bin/python benchmarks/curate_cifar10.py --profile        # + cProfile per job (slower)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cifar import CIFAR_TARBALL, batch_name, land_batch, read_cifar  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PNG = REPO / "benchmarks" / "out" / "cifar_leaks.png"
TIER_ORDER = ("exact", "near", "semantic", "aligned")
PICTURE_PAIRS = 30
# "Just below": a candidate pair whose scores fall short of the aligned tier's by at most this.
BELOW_MARGIN = 0.05
SWEEP = (0.98, 0.95, 0.92, 0.90)
# Steps that are curation proper; the job `pipeline.curate` runs may hold more (the audits).
CURATION_STEPS = ("raw_images", "image_catalog", "duplicates", "quality_issues", "curated_images")


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_times(instance: Any, run_id: str) -> dict[str, float]:
    """Seconds per step of a run, from its STEP_START / STEP_SUCCESS|FAILURE events."""
    from dagster import DagsterEventType

    start: dict[str, float] = {}
    out: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            start[entry.step_key] = entry.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            out[entry.step_key] = entry.timestamp - start.get(entry.step_key, entry.timestamp)
    return out


class Stage:
    """Times one job call (and optionally profiles it)."""

    def __init__(self, name: str, profile: bool) -> None:
        self.name, self.profile = name, profile
        self.profiler = cProfile.Profile() if profile else None
        self.seconds = self.cpu_s = 0.0
        self.rss_mb = 0.0

    def __enter__(self) -> Stage:
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        if self.profiler:
            self.profiler.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.profiler:
            self.profiler.disable()
        self.seconds = time.perf_counter() - self.started
        self.cpu_s = time.process_time() - self.cpu_started  # every thread of this process
        self.rss_mb = peak_rss_mb()

    def top(self, n: int = 15, dump: Path | None = None) -> str:
        """Top functions by own time, then the project's own functions by cumulative time."""
        if not self.profiler:
            return ""
        if dump:
            self.profiler.dump_stats(dump)
        parts = []
        for sort, pattern in (
            ("tottime", None),
            ("cumulative", f"^{REPO}/(ssl_assets|quality|resources)/"),
        ):
            buf = io.StringIO()
            stats = pstats.Stats(self.profiler, stream=buf)
            if not pattern:
                stats.strip_dirs()  # before sorting: stripping loses the order
            stats.sort_stats(sort).print_stats(*([pattern] if pattern else []), n)
            text = buf.getvalue()
            # Keep the table only (pstats prints a header of totals first).
            table = text[text.find("   ncalls") :].rstrip().replace(f"{REPO}/", "")
            parts.append(f"by {sort}:\n{table}")
        return "\n".join(parts)


def run(
    lake_root: Path,
    limit: int | None = None,
    png: Path = DEFAULT_PNG,
    profile: bool = False,
    tarball: Path = CIFAR_TARBALL,
) -> dict[str, Any]:
    """Land CIFAR-10 under `lake_root`, run the pipeline, print the figures, return them."""
    lake_root.mkdir(parents=True, exist_ok=True)
    home = lake_root.parent / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    # Before any project import: DEFAULT_SPEC and the instance are read from the environment.
    os.environ["SSL_PROFILE"] = "demo"
    os.environ["SSL_LAKE"] = str(lake_root)
    os.environ["DAGSTER_HOME"] = str(home)

    started = time.perf_counter()
    from dagster import DagsterInstance

    from resources.lake import LakeResource
    from ssl_assets import pipeline
    from ssl_assets.definitions import build_definitions

    import_s = time.perf_counter() - started
    LakeResource(root=str(lake_root)).ensure()
    # Built once the lake exists: its curation settings (curation.json, if any) are read here.
    defs = build_definitions("demo", str(lake_root))
    lake, store = defs.resources["lake"], defs.resources["metadata"]
    instance = DagsterInstance.get()
    # Loading the definitions (torch included) is a once-per-process cost, like cleanvision's
    # import: it is timed as an import, not as the first job's run.
    assert defs.resolve_job_def("ingest_batch") is not None

    started = time.perf_counter()
    files = read_cifar(tarball, limit)
    read_s = time.perf_counter() - started
    print(f"lake {lake_root}   DAGSTER_HOME {home}   profile demo")
    print(
        f"read {sum(len(v) for v in files.values())} JPGs from {tarball.name} in {read_s:.1f}s "
        f"(imports {import_s:.1f}s; neither counted below)"
    )

    stages: list[Stage] = []
    runs: list[dict[str, Any]] = []
    land_s = 0.0
    for split in ("train", "test"):  # train arrives first: its images are the ones kept
        t = time.perf_counter()
        land_batch(lake.landing_dir, files[split])
        land_s += time.perf_counter() - t
        with Stage(f"ingest_batch[{batch_name(split)}]", profile) as stage:
            batch_runs = pipeline.ingest_ready_batches(defs, instance)
        stages.append(stage)
        for r in batch_runs:
            runs.append({"job": stage.name, "run_id": r.run_id, "success": r.success})
    with Stage("curate", profile) as stage:
        result = defs.resolve_job_def("curate_and_audit").execute_in_process(
            instance=instance, run_config=pipeline.QUIET, raise_on_error=False
        )
    stages.append(stage)
    runs.append({"job": "curate", "run_id": result.run_id, "success": result.success})
    total_s = sum(s.seconds for s in stages)
    del files

    print(f"landing the files (not counted): {land_s:.1f}s")
    print()
    print(f"{'job run / step':<40} {'seconds':>8}  {'peak RSS MB':>11}  CPU s  result")
    steps: dict[str, float] = {}
    curation_s = audit_s = 0.0
    for stage, r in zip(stages, runs, strict=True):
        job = instance.get_run_by_id(r["run_id"]).job_name
        label = f"{job}[{stage.name.split('[')[1]}" if "[" in stage.name else job
        print(
            f"{label:<40} {stage.seconds:>8.1f}  {stage.rss_mb:>11.0f}  {stage.cpu_s:>5.0f}  "
            f"{'success' if r['success'] else 'FAILED'} (run {r['run_id'][:8]})"
        )
        times = step_times(instance, r["run_id"])
        for step, seconds in times.items():
            key = f"{step}[{stage.name.split('[')[1][:-1]}]" if "[" in stage.name else step
            steps[key] = seconds
            print(f"  {step:<38} {seconds:>8.1f}{'' if step in CURATION_STEPS else '  (audit)'}")
        # Run overhead (Dagster, between steps) is counted as curation, the conservative side.
        audit = sum(v for k, v in times.items() if k not in CURATION_STEPS)
        audit_s += audit
        curation_s += stage.seconds - audit
    print(
        f"{'curation: ingest x2 + duplicates,':<40} {curation_s:>8.1f}\n"
        f"{'  quality_issues, curated_images':<40}\n"
        f"{'audits run by the same job':<40} {audit_s:>8.1f}\n"
        f"{'total wall of the job runs':<40} {total_s:>8.1f}  {peak_rss_mb():>11.0f}"
    )
    metrics = store.query(
        "SELECT asset, partition, metric, value FROM stage_metrics "
        "WHERE metric IN ('decode_seconds', 'seconds') ORDER BY recorded_at"
    )
    for m in metrics.itertuples():
        where = f"[{m.partition}]" if isinstance(m.partition, str) else ""
        print(f"  stage_metrics {m.asset}{where}.{m.metric} = {m.value:.1f}s")

    figures = report(store, lake, png)
    figures.update(
        {
            "total_s": total_s,
            "curation_s": curation_s,
            "cpu_s": {s.name: s.cpu_s for s in stages},
            "audit_s": audit_s,
            "ingest_rss_mb": stages[1].rss_mb,
            "peak_rss_mb": peak_rss_mb(),
            "jobs": {s.name: s.seconds for s in stages},
            "steps": steps,
            "runs": runs,
            "land_s": land_s,
            "lake": str(lake_root),
        }
    )
    if profile:
        for stage in stages:
            dump = lake_root.parent / f"profile-{stage.name.replace('[', '-').rstrip(']')}.prof"
            print()
            print(f"# cProfile, {stage.name} (stats in {dump})")
            print(stage.top(dump=dump))
    return figures


def _exploded_reasons(store: Any) -> Any:
    return store.query(
        "SELECT batch, reason, count(*) AS n FROM (SELECT batch, "
        "unnest(string_split(reasons, ',')) AS reason FROM curated_images WHERE NOT include) "
        "GROUP BY ALL ORDER BY batch DESC, n DESC"
    )


CROSS_SPLIT_PAIRS = """
WITH edges AS (
    SELECT image_id AS a, other_id AS b, tier, score FROM duplicate_pairs
    UNION ALL SELECT other_id, image_id, tier, score FROM duplicate_pairs
),
cross_split AS (
    SELECT image_id FROM curated_images
    WHERE batch = ? AND list_contains(string_split(reasons, ','), 'cross_split_duplicate')
)
SELECT x.image_id AS test_id, e.b AS train_id, e.tier, e.score,
       ti.rel_path AS test_path, tr.rel_path AS train_path
FROM cross_split x
LEFT JOIN edges e ON e.a = x.image_id
    AND e.b IN (SELECT image_id FROM images WHERE batch = ?)
LEFT JOIN images ti ON ti.image_id = x.image_id
LEFT JOIN images tr ON tr.image_id = e.b
QUALIFY row_number() OVER (
    PARTITION BY x.image_id
    ORDER BY CASE e.tier WHEN 'exact' THEN 0 WHEN 'near' THEN 1 ELSE 2 END,
             CASE WHEN e.tier = 'semantic' THEN -e.score ELSE e.score END
) = 1
ORDER BY test_path
"""


def report(store: Any, lake: Any, png: Path) -> dict[str, Any]:
    """Print the curation figures from DuckDB and save the leak picture."""
    train, test = batch_name("train"), batch_name("test")
    out: dict[str, Any] = {}
    print()
    status = store.query("SELECT batch, files, ok, quarantined, admitted FROM batch_status")
    print("images per batch:")
    for r in status.sort_values("batch", ascending=False).itertuples():
        print(
            f"  {r.batch:<12} files {r.files:>6}  ok {r.ok:>6}  quarantined {r.quarantined:>4}  "
            f"admitted {r.admitted}"
        )
    out["batches"] = status.to_dict("records")
    catalogued = store.query("SELECT batch, count(*) AS n FROM image_catalog GROUP BY batch")
    print("  catalogued: " + ", ".join(f"{r.batch}={r.n}" for r in catalogued.itertuples()))

    dup = store.query(
        "SELECT tier, count(*) AS members FROM duplicates WHERE role = 'member' GROUP BY tier"
    )
    groups = store.query(
        "SELECT count(DISTINCT group_id) AS g, max(n) AS largest FROM "
        "(SELECT group_id, count(*) AS n FROM duplicates GROUP BY group_id HAVING n > 1)"
    )
    per_tier = {t: int(dup.loc[dup["tier"] == t, "members"].sum()) for t in TIER_ORDER}
    print(
        "duplicate members per tier (images that join an earlier image's group): "
        + ", ".join(f"{k}={v}" for k, v in per_tier.items())
        + f"   groups with >1 image: {int(groups['g'].iloc[0])}, "
        f"largest {int(groups['largest'].fillna(1).iloc[0])}"
    )
    out["duplicate_members"] = per_tier

    issues = store.query(
        "SELECT issue, any_value(excludes) AS excludes, any_value(threshold) AS threshold, "
        "count(*) AS n, count(*) FILTER (WHERE batch = ?) AS n_test FROM quality_issues "
        "GROUP BY issue ORDER BY issue",
        [test],
    )
    print("quality issues flagged (score < threshold):")
    for r in issues.itertuples():
        print(
            f"  {r.issue:<17} {r.n:>6}  (test {r.n_test:>5})  threshold {r.threshold:<5} "
            f"{'excludes' if r.excludes else 'annotates'}"
        )
    out["issues"] = dict(zip(issues["issue"], issues["n"].astype(int), strict=True))

    inc = store.query(
        "SELECT batch, split, count(*) AS n FROM curated_images WHERE include GROUP BY ALL "
        "ORDER BY batch DESC, split DESC"
    )
    totals = store.query(
        "SELECT batch, count(*) AS n, count(*) FILTER (WHERE include) AS inc "
        "FROM curated_images GROUP BY batch ORDER BY batch DESC"
    )
    print(
        "included per split: " + ", ".join(f"{r.batch}/{r.split}={r.n}" for r in inc.itertuples())
    )
    for r in totals.itertuples():
        print(
            f"  {r.batch:<12} included {r.inc:>6} of {r.n:>6}  excluded fraction "
            f"{1 - r.inc / r.n:.4f}"
        )
    out["included"] = {f"{r.batch}/{r.split}": int(r.n) for r in inc.itertuples()}
    reasons = _exploded_reasons(store)
    print("excluded per reason (an image can have several):")
    for batch, part in reasons.groupby("batch", sort=False):
        print(f"  {batch:<12} " + ", ".join(f"{r.reason}={r.n}" for r in part.itertuples()))
    out["excluded_reasons"] = {f"{r.batch}/{r.reason}": int(r.n) for r in reasons.itertuples()}

    pairs = store.query(CROSS_SPLIT_PAIRS, [test, train])
    n_test = int(totals.loc[totals["batch"] == test, "n"].sum())
    n_cross = len(pairs)
    by_tier = pairs["tier"].fillna("via another test image").value_counts().to_dict()
    share = n_cross / n_test if n_test else 0.0
    print(
        f"test images excluded as cross_split_duplicate: {n_cross} of {n_test} = {share:.2%} "
        f"(ciFAIR: about 3 %); strongest direct link to a train image: "
        + (", ".join(f"{k}={v}" for k, v in by_tier.items()) or "-")
    )
    train_cross = store.query(
        "SELECT count(*) AS n FROM curated_images WHERE batch = ? AND "
        "list_contains(string_split(reasons, ','), 'cross_split_duplicate')",
        [train],
    )
    print(f"  train images excluded as cross_split_duplicate: {int(train_cross['n'].iloc[0])}")
    for r in pairs.dropna(subset=["tier"]).groupby("tier").head(2).itertuples():
        print(f"  e.g. test/{r.test_path} ~ train/{r.train_path}  {r.tier} score {r.score:.3f}")
    out.update(
        {
            "test_images": n_test,
            "cross_split_test": n_cross,
            "cross_split_share": share,
            "cross_split_by_tier": {k: int(v) for k, v in by_tier.items()},
        }
    )

    sweep = threshold_sweep(store, lake, train, test)
    print(
        "  for reference, not the pipeline: test images whose most similar train image "
        "(exhaustive search, pinned embedding) reaches cosine t; in brackets, or has pHash "
        "distance <= 4: " + ", ".join(f"t={t}: {n} ({m})" for t, (n, m) in sweep.items())
    )
    out["threshold_sweep"] = {str(t): v for t, v in sweep.items()}

    gates = store.query(
        "SELECT asset, check_name, coalesce(partition, '') AS part, passed, details "
        "FROM gate_results QUALIFY row_number() OVER "
        "(PARTITION BY asset, check_name, partition ORDER BY recorded_at DESC) = 1 "
        "ORDER BY asset, check_name, part"
    )
    print("gates:")
    for g in gates.itertuples():
        details = json.loads(g.details or "{}")
        what = details.get("description") or {
            k: details[k] for k in ("metric", "value", "max_value", "min_value") if k in details
        }
        print(
            f"  {'pass' if g.passed else 'FAIL'}  {g.asset}.{g.check_name}"
            f"{'[' + g.part + ']' if g.part else ''}  {what}"
        )
    out["gates"] = {
        f"{g.asset}.{g.check_name}{'[' + g.part + ']' if g.part else ''}": bool(g.passed)
        for g in gates.itertuples()
    }

    out.update(leak_report(store, lake, train, test, png))
    return out


def threshold_sweep(
    store: Any, lake: Any, train: str, test: str, thresholds: tuple[float, ...] = SWEEP
) -> dict[float, tuple[int, int]]:
    """How many test images would have a train duplicate at other semantic thresholds.

    Exhaustive test x train cosine similarities of the stored pinned embeddings (no k-means),
    and the smallest pHash distance to any train image. Seconds for 10,000 x 50,000.
    """
    from ssl_assets.curation.hashing import hamming
    from ssl_assets.data.catalog import load_array

    rows = store.query(
        "SELECT batch, array_path, phash FROM image_catalog WHERE batch IN (?, ?) "
        "ORDER BY batch, array_row",
        [train, test],
    )
    emb, phash = {}, {}
    for batch in (train, test):
        part = rows[rows["batch"] == batch]
        if part.empty:
            return {}
        path = part["array_path"].iloc[0].removesuffix(".npy") + ".pinned.npy"
        emb[batch] = np.asarray(load_array(lake.path(path)))
        phash[batch] = part["phash"].to_numpy(np.uint64)
    best = np.empty(len(emb[test]), np.float32)
    near = np.empty(len(emb[test]), bool)
    for s in range(0, len(best), 1000):
        best[s : s + 1000] = (emb[test][s : s + 1000] @ emb[train].T).max(axis=1)
        dist = hamming(phash[test][s : s + 1000, None], phash[train][None, :])
        near[s : s + 1000] = dist.min(axis=1) <= 4
    return {t: (int((best >= t).sum()), int(((best >= t) | near).sum())) for t in thresholds}


def _pixels_reader(store: Any, lake: Any) -> Any:
    """pixels(image_ids) -> N x H x W x 3 from the catalog arrays."""
    from ssl_assets.data.catalog import load_array

    catalog = store.query("SELECT image_id, array_path, array_row FROM image_catalog")
    where = {r.image_id: (r.array_path, r.array_row) for r in catalog.itertuples()}
    arrays: dict[str, np.ndarray] = {}

    def pixels(ids: list[str]) -> np.ndarray:
        out = []
        for image_id in ids:
            path, row = where[image_id]
            if path not in arrays:
                arrays[path] = load_array(lake.path(path))
            out.append(np.asarray(arrays[path][row]))
        return np.stack(out) if out else np.zeros((0, 32, 32, 3), np.uint8)

    return pixels


def leak_report(store: Any, lake: Any, train: str, test: str, png: Path) -> dict[str, Any]:
    """Print the leak figures from `split_leaks` (with the benchmark's own check of the classes)
    and save the picture of flagged and nearly flagged pairs."""
    from ssl_assets.curation.contact_sheet import pairs_png

    classes = store.query("SELECT image_id, value AS class FROM attributes WHERE key = 'class'")
    cls = dict(zip(classes["image_id"], classes["class"], strict=True))
    leaks = store.query(
        "SELECT * FROM split_leaks WHERE held_out_split = 'test' QUALIFY row_number() OVER ("
        "PARTITION BY held_out_id ORDER BY CASE tier WHEN 'exact' THEN 0 WHEN 'near' THEN 1 "
        "WHEN 'semantic' THEN 2 ELSE 3 END, cosine DESC) = 1 ORDER BY held_out_id"
    )
    n_test = int(store.query("SELECT count(*) AS n FROM images WHERE batch = ?", [test])["n"][0])
    same = np.array(
        [
            cls.get(a) == cls.get(b)
            for a, b in zip(leaks["held_out_id"], leaks["train_id"], strict=True)
        ]
    )
    by_tier = leaks["tier"].value_counts().reindex(TIER_ORDER, fill_value=0).to_dict()
    print(
        f"LEAKS: test images flagged as duplicates of a train image (split_leaks): {len(leaks)} "
        f"of {n_test} = {len(leaks) / max(n_test, 1):.2%} (strongest link: "
        + ", ".join(f"{k}={v}" for k, v in by_tier.items())
        + f"); sharing the matched train image's class: {int(same.sum())} of {len(leaks)} = "
        f"{same.mean() if len(same) else 0:.2%}; still included: "
        f"{int(leaks['held_out_included'].sum())}"
    )
    edges = store.query(
        "SELECT held_out_id, train_id FROM split_leaks WHERE held_out_split = 'test'"
    )
    agree = [cls.get(a) == cls.get(b) for a, b in edges.itertuples(index=False)]
    print(
        f"  every test-train duplicate edge: {len(edges)}, same class {np.mean(agree) if agree else 0:.2%}"
    )
    for tier in TIER_ORDER:
        part = same[(leaks["tier"] == tier).to_numpy()]
        if len(part):
            print(f"  {tier:<9} {len(part):>5} test images, same class {part.mean():.2%}")
    rng = np.random.default_rng(0)
    flagged = leaks.iloc[
        np.sort(rng.choice(len(leaks), min(PICTURE_PAIRS, len(leaks)), replace=False))
    ]
    below = nearly_flagged(store, lake, train, test, set(leaks["held_out_id"]))
    print(
        f"  just below the aligned thresholds (scores short by <= {BELOW_MARGIN}): {len(below)} "
        f"candidate pairs of unflagged test images; same class "
        f"{np.mean([cls.get(a) == cls.get(b) for a, b in zip(below['test_id'], below['train_id'], strict=True)]) if len(below) else 0:.2%}"
    )
    near_miss = below.iloc[
        np.sort(rng.choice(len(below), min(PICTURE_PAIRS, len(below)), replace=False))
    ]
    pixels = _pixels_reader(store, lake)

    def tiles(ids_a, ids_b, captions) -> list:
        a, b = pixels(list(ids_a)), pixels(list(ids_b))
        return [(c, a[k], b[k]) for k, c in enumerate(captions)]

    def caption(a: str, b: str, scores: str) -> tuple[str, str, str]:
        return (f"{a[:6]}~{b[:6]}", scores, f"{cls.get(a)}/{cls.get(b)}")

    sections = [
        (
            f"{len(flagged)} random flagged pairs of {len(leaks)} (test, then its train match)",
            tiles(
                flagged["held_out_id"],
                flagged["train_id"],
                [
                    caption(
                        r.held_out_id,
                        r.train_id,
                        f"{r.tier} {r.cosine:.2f} {r.pixel_ncc:.2f} {r.pixel_gradient:.2f}",
                    )
                    for r in flagged.itertuples()
                ],
            ),
        ),
        (
            f"{len(near_miss)} random pairs of {len(below)} just below the thresholds (not merged)",
            tiles(
                near_miss["test_id"],
                near_miss["train_id"],
                [
                    caption(
                        r.test_id,
                        r.train_id,
                        f"- {r.cosine:.2f} {r.pixel_ncc:.2f} {r.pixel_gradient:.2f}",
                    )
                    for r in near_miss.itertuples()
                ],
            ),
        ),
    ]
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(pairs_png(sections, cols=6, cell=64))
    print(
        f"  picture of flagged and nearly flagged pairs (captions: ids; tier, cosine, ZNCC, "
        f"gradient cosine; classes): {png}"
    )
    return {
        "leaked_test": len(leaks),
        "leaked_test_share": len(leaks) / max(n_test, 1),
        "leaked_same_class": float(same.mean()) if len(same) else 0.0,
        "leaked_by_tier": {k: int(v) for k, v in by_tier.items()},
        "nearly_flagged_pairs": len(below),
        "png": str(png),
    }


def nearly_flagged(store: Any, lake: Any, train: str, test: str, flagged: set[str]) -> Any:
    """Candidate pairs (the aligned tier's, test against train) of unflagged test images whose
    pixel scores fall short of the lake's thresholds by at most `BELOW_MARGIN`: what a slightly
    looser setting would have merged. Computed with curation's own functions."""
    import pandas as pd

    from resources.curation_settings import CurationSettings
    from ssl_assets.curation.aligned import aligned_scores, candidate_pairs
    from ssl_assets.curation.semantic import cluster_labels
    from ssl_assets.data.catalog import load_array

    cfg = CurationSettings.for_lake(lake).dedup_config()
    rows = store.query(
        "SELECT image_id, batch, array_path FROM image_catalog WHERE batch IN (?, ?) "
        "ORDER BY batch, array_row",
        [train, test],
    )
    ids, emb = {}, {}
    for batch in (train, test):
        part = rows[rows["batch"] == batch]
        ids[batch] = part["image_id"].to_numpy()
        path = part["array_path"].iloc[0].removesuffix(".npy") + ".pinned.npy"
        emb[batch] = np.asarray(load_array(lake.path(path)), np.float32)
    labels = cluster_labels(np.concatenate([emb[test], emb[train]]), None, cfg.seed)
    pairs = candidate_pairs(
        emb[test],
        emb[train],
        labels,
        cfg.aligned_neighbours,
        cfg.aligned_min_similarity,
        cfg.aligned_probes,
    )
    pairs = pairs[pairs["right_is_existing"]]
    test_ids, train_ids = ids[test][pairs["left"]], ids[train][pairs["right"]]
    keep = np.array([t not in flagged for t in test_ids])
    test_ids, train_ids, cosine = (
        test_ids[keep],
        train_ids[keep],
        pairs["similarity"].to_numpy()[keep],
    )
    pixels = _pixels_reader(store, lake)
    scores = aligned_scores(pixels(list(test_ids)), pixels(list(train_ids)), cfg.align)
    short = np.maximum(
        cfg.aligned_min_ncc - scores["pixel_ncc"],
        cfg.aligned_min_gradient - scores["pixel_gradient"],
    )
    band = ((short > 0) & (short <= BELOW_MARGIN)).to_numpy()
    return pd.DataFrame(
        {
            "test_id": test_ids[band],
            "train_id": train_ids[band],
            "cosine": cosine[band],
            "pixel_ncc": scores["pixel_ncc"].to_numpy()[band],
            "pixel_gradient": scores["pixel_gradient"].to_numpy()[band],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="at most N images per split")
    parser.add_argument("--workdir", type=Path, help="where the lake goes (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary lake")
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--profile", action="store_true", help="cProfile each job (slower)")
    parser.add_argument("--tarball", type=Path, default=CIFAR_TARBALL)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cifar-curate-"))
    try:
        figures = run(workdir / "lake", args.limit, args.png, args.profile, args.tarball)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2, default=str))
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep or args.workdir:
            print(f"kept {workdir}")


if __name__ == "__main__":
    main()
