"""The pipeline as it runs itself: `dagster dev` with its sensors, a batch dropped into the lake,
and everything from ingestion to a champion model without anyone pressing a button. Then the UI
as a person meets it, in headless Chromium. Last, monitoring: a small batch like the others
starts no retrain, a small batch with inverted colours exactly one (drift), each decision recorded.

Slow (a few minutes): deselect locally with `-m "not slow"`; CI runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
from PIL import Image

from resources.lake import READY_MARKER
from resources.metadata import MetadataStore
from ssl_assets.data.default_dataset import SEED, write_default_dataset
from tests.dagster_server import DagsterServer, dagster_dev

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
DEADLINE_S = 600  # the whole flow, hard
EXPECTED_JOBS = {"ingest_batch", "curate_and_audit", "retrain_evaluate"}
SENSORS = """
{ sensorsOrError(repositorySelector: {repositoryName: "__repository__",
                                      repositoryLocationName: "ssl_assets"}) {
    ... on Sensors { results { name sensorState { id status selectorId } } } } }
"""
START_SENSOR = """
mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
  __typename ... on Sensor { name } ... on PythonError { message } } }
"""
RUNS = "{ runsOrError { ... on Runs { results { runId jobName status } } } }"
DONE = {"SUCCESS", "FAILURE", "CANCELED"}


def _runs(server: DagsterServer) -> list[dict]:
    return server.graphql(RUNS)["runsOrError"]["results"]


def _ensure_sensors_running(server: DagsterServer) -> list[str]:
    sensors = server.graphql(SENSORS)["sensorsOrError"]["results"]
    for s in sensors:
        if s["sensorState"]["status"] != "RUNNING":
            started = server.graphql(
                START_SENSOR,
                {
                    "s": {
                        "repositoryName": "__repository__",
                        "repositoryLocationName": "ssl_assets",
                        "sensorName": s["name"],
                    }
                },
            )["startSensor"]
            assert started["__typename"] == "Sensor", started
    return [s["name"] for s in sensors]


@pytest.fixture(scope="module")
def pipeline_server(tmp_path_factory):
    """A `dagster dev` that has taken a dropped batch all the way to a champion."""
    with dagster_dev(tmp_path_factory.mktemp("e2e")) as server:
        names = _ensure_sensors_running(server)
        assert {"landing_sensor", "curation_sensor", "retrain_sensor"} <= set(names)
        # the data arrives: written completely, then marked _READY
        write_default_dataset(server.lake / "landing", n_images=240, label_fraction=0.4)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            runs = _runs(server)
            failed = [r for r in runs if r["status"] in {"FAILURE", "CANCELED"}]
            assert not failed, f"{failed}\n{server.log.read_text()[-6000:]}"
            done = {r["jobName"] for r in runs if r["status"] == "SUCCESS"}
            busy = [r for r in runs if r["status"] not in DONE]
            if EXPECTED_JOBS <= done and not busy:
                break
            assert time.monotonic() < deadline, (
                f"timed out; runs so far: {[(r['jobName'], r['status']) for r in runs]}\n"
                f"{server.log.read_text()[-6000:]}"
            )
            time.sleep(2)
        yield server


def test_sensors_take_a_dropped_batch_to_a_new_model(pipeline_server):
    runs = _runs(pipeline_server)
    per_job: dict[str, int] = {}
    for r in runs:
        assert r["status"] == "SUCCESS", r
        per_job[r["jobName"]] = per_job.get(r["jobName"], 0) + 1
    assert per_job["ingest_batch"] == 2  # one run per landed batch, never two
    assert per_job["retrain_evaluate"] == 1  # two batches, one retrain
    with duckdb.connect(str(pipeline_server.lake / "metadata.duckdb"), read_only=True) as con:
        models = con.execute("SELECT kind, status FROM models ORDER BY kind").fetchall()
        admitted = con.execute("SELECT count(*) FROM admitted_batches").fetchone()[0]
    assert ("encoder", "champion") in models and ("finetuned", "champion") in models
    assert admitted == 2


def test_later_ticks_start_nothing_more(pipeline_server):
    before = len(_runs(pipeline_server))
    time.sleep(25)  # five ticks of the tiny profile's 5 s sensors
    assert len(_runs(pipeline_server)) == before


def test_asset_pages_lead_with_their_results_inline(pipeline_server):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chromium) and os.path.exists(driver_path)):
        if os.environ.get("CI"):
            pytest.fail(
                "CI must have Debian's chromium and chromium-driver (.ci/run installs them)"
            )
        pytest.skip(
            "chromium/chromedriver not installed (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1200",
        f"--user-data-dir={pipeline_server.home / 'chromium'}",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(driver_path))
    ARTIFACTS.mkdir(exist_ok=True)
    try:

        def visit(path: str, text: str) -> None:
            browser.get(pipeline_server.url + path)
            deadline = time.monotonic() + 60
            while text not in browser.page_source:
                assert time.monotonic() < deadline, f"{text!r} never appeared on {path}"
                time.sleep(1)
            for _ in range(5):  # Dagster's community prompt, once per fresh browser profile
                for skip in browser.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
                    skip.click()
                time.sleep(1)

        visit("/assets", "champion_model")
        names = {
            "raw_images",
            "image_catalog",
            "duplicates",
            "quality_issues",
            "curated_images",
            "diversity_audit",
            "bias_audit",
            "labeling_candidates",
            "ssl_encoder",
            "image_embeddings",
            "probes",
            "finetuned_model",
            "champion_model",
            "batch_monitoring",
        }
        page = browser.page_source
        assert all(name in page for name in names), sorted(n for n in names if n not in page)
        browser.save_screenshot(str(ARTIFACTS / "asset-catalog.png"))
        visit("/asset-groups", "pretraining")
        browser.save_screenshot(str(ARTIFACTS / "asset-graph.png"))
        for name, (header, cell) in HEADLINES.items():
            visit(f"/assets/{name}", header)
            table = _inline_table(browser, header, cell)
            browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", table)
            time.sleep(1)
            assert table.is_displayed(), f"{name}: the headline table is not shown inline"
            browser.save_screenshot(str(ARTIFACTS / f"asset-{name}.png"))
    finally:
        browser.quit()
    assert (ARTIFACTS / "asset-graph.png").stat().st_size > 10_000
    for name in HEADLINES:
        assert (ARTIFACTS / f"asset-{name}.png").stat().st_size > 10_000


#: per asset page, the headline table's column header and a cell it must hold: each is table
#: metadata, which the asset page renders inline (no dialog to open)
HEADLINES = {
    "probes": ("ssl/linear", "±"),
    "ssl_encoder": ("collapse_check", "passed"),
    "duplicates": ("excluded copies", "near"),
    "champion_model": ("rule", "challenger val accuracy"),
}


def _inline_table(browser, header: str, cell: str):
    """The rendered <table> on the page whose header row holds `header` and a cell `cell`."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + 60
    xpath = (
        f"//table[.//th[normalize-space()='{header}']]"
        f"[.//td[contains(normalize-space(), '{cell}')]]"
    )
    while True:
        found = browser.find_elements(By.XPATH, xpath)
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no inline table with {header!r} and {cell!r}"
        time.sleep(1)
    time.sleep(1)


# -- monitoring: a batch like the others starts nothing, a shifted one exactly one retrain -------

MONITOR_DEADLINE_S = 900  # ingest + curate (+ one retrain) of a 10-image batch, hard
TICKS_S = 20  # four ticks of the tiny profile's 5 s sensors


def _land_digits(landing: Path, batch: str, positions: slice, invert: bool) -> None:
    """Digits the first two batches did not use (positions in the same seeded permutation),
    unlabeled, optionally with inverted colours (dark ink on white: another scanner)."""
    from sklearn.datasets import load_digits

    digits = load_digits().images
    pixels = np.clip(np.rint(digits * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    batch_dir = landing / batch / "images"
    batch_dir.mkdir(parents=True)
    for idx in np.random.default_rng(SEED).permutation(len(pixels))[positions]:
        Image.fromarray(255 - pixels[idx] if invert else pixels[idx]).save(
            batch_dir / f"digit_{int(idx):04d}.png"
        )
    (landing / batch / READY_MARKER).write_text("")


def _refused(store: MetadataStore, run_id: str) -> bool:
    decided = store.query("SELECT promoted FROM promotions WHERE run_id = ?", [run_id])
    return len(decided) == 1 and not decided["promoted"].iloc[0]


def _settle(server: DagsterServer, batch: str, retrains: int) -> list[dict]:
    """Wait until the batch is ingested, curated and decided on (a recorded retrain decision
    that names it), `retrains` retrain runs exist and nothing is running; then a few more ticks."""
    store = MetadataStore(path=str(server.lake / "metadata.duckdb"), lock_timeout_s=60)
    deadline = time.monotonic() + MONITOR_DEADLINE_S
    while True:
        runs = _runs(server)
        # a retrain whose challenger the promotion rule refused fails its blocking checks: a
        # decision (in `promotions`), not a broken pipeline; every other failure is one
        failed = [
            r
            for r in runs
            if r["status"] in {"FAILURE", "CANCELED"}
            and not (r["jobName"] == "retrain_evaluate" and _refused(store, r["runId"]))
        ]
        assert not failed, f"{failed}\n{server.log.read_text()[-6000:]}"
        busy = [r for r in runs if r["status"] not in DONE]
        started = sum(r["jobName"] == "retrain_evaluate" for r in runs)
        decided = (server.lake / "metadata.duckdb").is_file() and store.retrain_decisions()[
            "evidence"
        ].str.contains(f'"{batch}"').any()
        if decided and not busy and started >= retrains:
            break
        assert time.monotonic() < deadline, (
            f"timed out; runs so far: {[(r['jobName'], r['status']) for r in runs]}\n"
            f"{server.log.read_text()[-6000:]}"
        )
        time.sleep(2)
    time.sleep(TICKS_S)
    return _runs(server)


def test_a_shifted_batch_starts_exactly_one_retrain_a_familiar_one_none(pipeline_server):
    store = MetadataStore(path=str(pipeline_server.lake / "metadata.duckdb"), lock_timeout_s=60)
    landing = pipeline_server.lake / "landing"

    def retrain_runs() -> int:
        return sum(r["jobName"] == "retrain_evaluate" for r in _runs(pipeline_server))

    before = retrain_runs()
    _land_digits(landing, "digits-more", slice(240, 250), invert=False)
    runs = _settle(pipeline_server, "digits-more", retrains=before)
    assert sum(r["jobName"] == "retrain_evaluate" for r in runs) == before
    drift = store.query("SELECT drifted FROM batch_drift WHERE batch = 'digits-more'")
    assert len(drift) == 2 and not drift["drifted"].any()
    familiar = store.retrain_decisions().iloc[-1]
    assert not familiar["retrain"] and "no drift in digits-more" in familiar["reason"]

    _land_digits(landing, "digits-inverted", slice(250, 260), invert=True)
    runs = _settle(pipeline_server, "digits-inverted", retrains=before + 1)
    assert sum(r["jobName"] == "retrain_evaluate" for r in runs) == before + 1
    decisions = store.retrain_decisions()
    shifted = decisions[decisions["retrain"]].iloc[-1]
    assert json.loads(shifted["triggers"]) == ["drift"]
    assert "drift: batch digits-inverted" in shifted["reason"]
    evidence = json.loads(shifted["evidence"])
    assert evidence["new_since_last_encoder"] < 20  # the count alone would not have retrained
    # the retrain answered the drift: later decisions say no
    assert not decisions["retrain"].iloc[-1]
