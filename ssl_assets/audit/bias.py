"""Representation audit: who is in the data, whether that is shifting, and whether it is visible.

Why: an encoder trained on data where one group is rare, or where a new batch suddenly changes
the mix, or where a group differs in plain image statistics (all photos of one site are darker)
will encode those differences; downstream models then use brightness as a proxy for the group.
Users need to see this before compute is spent, from the attributes they supplied.

Audited columns: every column of `metadata.csv` (the `attributes` table) except the `split` pin,
plus the label wherever labels exist (`label`; among labeled images only). Numeric columns with
more than `MAX_CATEGORIES` distinct values are cut into `NUMERIC_BINS` quantile bins so that
"age" does not become 80 subgroups; other columns are taken as categories. An image without a
value is `(missing)`: counted, but not a subgroup (shares are among images with a value).

For each column:

- counts and shares per scope (`all`, `train`, `val`, `test` of the included images, and
  `newest_batch` / `earlier_batches`); the smallest share in `all` is checked against a floor;
- drift: shares of the newest batch against all earlier included images — total-variation
  distance 0.5 x sum |p - q| and a chi-square test of homogeneity (scipy) on the 2 x subgroups
  count table. It drifted when the distance is above a limit *and* p is below alpha: a big
  difference that could be chance on 20 images, or a tiny one that is significant on 100,000,
  is not reported;
- per-subgroup statistics over every curated image (included or not, so exclusions show):
  brightness (mean luma / 255 of the canonical pixels), contrast (std of luma / 255), resolution
  (sqrt(width x height) of the original file), aspect ratio, the excluded share and the rate of
  each quality issue;
- a shortcut probe: a shallow decision tree (scikit-learn, depth 3, class-balanced) predicts the
  subgroup from those statistics alone (brightness, contrast, log2 resolution, aspect ratio and
  the issue flags), cross-validated (stratified 3-fold) on the included images. Its balanced
  accuracy is compared with chance (1 / classes) as lift = (acc - chance) / (1 - chance): 0 is
  chance, 1 is perfectly predictable. A lift at or above the limit is reported as a shortcut.

Where the data has no attribute (and no label), the audit says so and its gates pass with that
reason; it never invents groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from quality.verdict import Verdict
from ssl_assets.curation.hashing import check_batch, grayscale

RESERVED_KEYS = frozenset({"split"})
LABEL_ATTRIBUTE = "label"
MISSING = "(missing)"
MAX_CATEGORIES = 12
NUMERIC_BINS = 5
STATISTICS = ("brightness", "contrast", "resolution", "aspect_ratio")
PROBE_FOLDS = 3
PROBE_MAX_DEPTH = 3
PROBE_MIN_IMAGES = 30
PROBE_MAX_IMAGES = 20_000
SCOPES = ("all", "train", "val", "test", "newest_batch", "earlier_batches")
NO_ATTRIBUTES_REASON = (
    "no attributes to audit: no batch's metadata.csv has an attribute column (the split pin is "
    "not one) and no image has a label, so there are no subgroups; the bias gates pass for that "
    "reason rather than inventing groups"
)


def image_statistics(pixels: np.ndarray, orig_sizes: np.ndarray) -> pd.DataFrame:
    """brightness, contrast (mean and std of luma / 255 of N x H x W x 3 uint8 pixels),
    resolution (sqrt(h x w)) and aspect_ratio (w / h) of the original (height, width) sizes."""
    sizes = np.asarray(orig_sizes, dtype=np.float64).reshape(-1, 2)
    if len(pixels) == 0:
        return pd.DataFrame({k: np.empty(0) for k in STATISTICS})
    pixels = check_batch(pixels)
    brightness = np.empty(len(pixels))
    contrast = np.empty(len(pixels))
    step = max(1, (1 << 22) // (pixels.shape[1] * pixels.shape[2]))
    for s in range(0, len(pixels), step):
        luma = grayscale(pixels[s : s + step]).reshape(len(pixels[s : s + step]), -1) / 255.0
        brightness[s : s + step] = luma.mean(axis=1)
        contrast[s : s + step] = luma.std(axis=1)
    return pd.DataFrame(
        {
            "brightness": brightness,
            "contrast": contrast,
            "resolution": np.sqrt(sizes[:, 0] * sizes[:, 1]),
            "aspect_ratio": sizes[:, 1] / sizes[:, 0],
        }
    )


def _categorise(values: pd.Series, max_categories: int, bins: int) -> tuple[pd.Series, str]:
    present = values.dropna()
    numeric = pd.to_numeric(present, errors="coerce")
    if present.nunique() > max_categories and numeric.notna().all():
        cut = pd.qcut(numeric.astype(float), q=bins, duplicates="drop")
        labelled = cut.astype(str).reindex(values.index)
        return labelled.where(values.notna()), f"numeric: {cut.cat.categories.size} quantile bins"
    return values, "categorical"


def attribute_columns(
    image_ids: pd.Series,
    attributes: pd.DataFrame,
    labels: pd.DataFrame | None = None,
    max_categories: int = MAX_CATEGORIES,
    numeric_bins: int = NUMERIC_BINS,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """One column per audited attribute, aligned with `image_ids` (NaN = no value), and a note
    per column saying how it was read. `attributes` is long form (image_id, key, value), as in
    the `attributes` table; `labels` has image_id, label (the current label per image)."""
    ids = pd.Index(image_ids.astype(str))
    wide = pd.DataFrame(index=ids)
    if len(attributes):
        usable = attributes[~attributes["key"].isin(RESERVED_KEYS)]
        usable = usable[usable["image_id"].isin(ids)].drop_duplicates(["image_id", "key"])
        if len(usable):
            pivot = usable.pivot(index="image_id", columns="key", values="value")
            wide = wide.join(pivot)
    if labels is not None and len(labels):
        name = LABEL_ATTRIBUTE if LABEL_ATTRIBUTE not in wide.columns else "label (labels.csv)"
        label_map = labels.drop_duplicates("image_id").set_index("image_id")["label"]
        column = label_map.reindex(ids)
        if column.notna().any():
            wide[name] = column.to_numpy()
    notes = {}
    out = {}
    for column in sorted(wide.columns, key=str):
        values = wide[column].astype(object).where(wide[column].notna())
        values = values.where(values.astype(str).str.len() > 0)
        if values.notna().sum() == 0:
            continue
        out[str(column)], notes[str(column)] = _categorise(values, max_categories, numeric_bins)
    frame = pd.DataFrame(out, index=ids).reset_index(drop=True)
    return frame, notes


def subgroup_shares(values: pd.Series, scopes: dict[str, np.ndarray]) -> pd.DataFrame:
    """Counts and shares of each subgroup within each scope (a boolean mask over `values`).

    Shares are among images of the scope with a value; images without one are a `(missing)` row
    with a NULL share."""
    rows = []
    for scope, mask in scopes.items():
        part = values[np.asarray(mask, dtype=bool)]
        present = part.dropna()
        for subgroup, count in present.value_counts().sort_index().items():
            rows.append(
                {
                    "scope": scope,
                    "subgroup": str(subgroup),
                    "images": int(count),
                    "share": count / len(present),
                }
            )
        missing = int(part.isna().sum())
        if missing:
            rows.append({"scope": scope, "subgroup": MISSING, "images": missing, "share": None})
    return pd.DataFrame(rows, columns=["scope", "subgroup", "images", "share"])


def share_drift(newest: pd.Series, earlier: pd.Series) -> dict[str, float | int | None]:
    """Total-variation distance and chi-square test between two samples of subgroup values."""
    from scipy.stats import chi2_contingency

    a = newest.dropna().astype(str).value_counts()
    b = earlier.dropna().astype(str).value_counts()
    groups = sorted(set(a.index) | set(b.index))
    table = np.array([a.reindex(groups, fill_value=0), b.reindex(groups, fill_value=0)], float)
    out: dict[str, float | int | None] = {
        "newest_images": int(table[0].sum()),
        "earlier_images": int(table[1].sum()),
    }
    if table[0].sum() == 0 or table[1].sum() == 0:
        return {**out, "tv_distance": None, "chi2": None, "dof": None, "p_value": None}
    p, q = table[0] / table[0].sum(), table[1] / table[1].sum()
    tv = 0.5 * float(np.abs(p - q).sum())
    if len(groups) < 2:
        return {**out, "tv_distance": tv, "chi2": 0.0, "dof": 0, "p_value": 1.0}
    result = chi2_contingency(table)
    return {
        **out,
        "tv_distance": tv,
        "chi2": float(result.statistic),
        "dof": int(result.dof),
        "p_value": float(result.pvalue),
    }


def subgroup_statistics(values: pd.Series, images: pd.DataFrame) -> pd.DataFrame:
    """Long table (subgroup, statistic, value) of image statistics per subgroup.

    `images` holds `include`, the `STATISTICS` columns and boolean `is_<issue>` columns."""
    issue_columns = [c for c in images.columns if c.startswith("is_")]
    frame = images.assign(_group=values.to_numpy()).dropna(subset=["_group"])
    if frame.empty:
        return pd.DataFrame(columns=["subgroup", "statistic", "value"])
    flags = frame[issue_columns].astype(bool) if issue_columns else pd.DataFrame(index=frame.index)
    frame = frame.assign(
        excluded_rate=~frame["include"].astype(bool),
        issue_rate=flags.any(axis=1) if issue_columns else False,
        **{f"issue_rate_{c.removeprefix('is_')}": flags[c] for c in issue_columns},
    )
    stats = ["excluded_rate", *STATISTICS, "issue_rate"] + [
        f"issue_rate_{c.removeprefix('is_')}" for c in issue_columns
    ]
    grouped = frame.groupby("_group")
    table = grouped[stats].mean().astype(float).assign(images=grouped.size().astype(float))
    long = table.reset_index(names="subgroup").melt(
        id_vars="subgroup", var_name="statistic", value_name="value"
    )
    long["subgroup"] = long["subgroup"].astype(str)
    return long


def probe_features(images: pd.DataFrame) -> pd.DataFrame:
    """The shortcut probe's inputs: brightness, contrast, log2 resolution, aspect ratio, flags."""
    features = pd.DataFrame(
        {
            "brightness": images["brightness"].astype(float),
            "contrast": images["contrast"].astype(float),
            "log2_resolution": np.log2(images["resolution"].astype(float).clip(lower=1.0)),
            "aspect_ratio": images["aspect_ratio"].astype(float),
        }
    )
    for column in (c for c in images.columns if c.startswith("is_")):
        features[column] = images[column].astype(float)
    return features


def shortcut_probe(
    features: pd.DataFrame,
    target: pd.Series,
    seed: int = 0,
    folds: int = PROBE_FOLDS,
    max_depth: int = PROBE_MAX_DEPTH,
    min_images: int = PROBE_MIN_IMAGES,
    max_images: int = PROBE_MAX_IMAGES,
) -> dict[str, float | int | str | None]:
    """Cross-validated balanced accuracy of a shallow tree predicting `target` from `features`.

    Subgroups with fewer than `folds` images are left out (they cannot be stratified); with fewer
    than `min_images` images or fewer than two subgroups the probe is skipped, with the reason."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.tree import DecisionTreeClassifier

    y = target.reset_index(drop=True)
    x = features.reset_index(drop=True)
    keep = y.notna().to_numpy()
    x, y = x[keep].reset_index(drop=True), y[keep].astype(str).reset_index(drop=True)
    counts = y.value_counts()
    y_ok = y.isin(counts[counts >= folds].index).to_numpy()
    x, y = x[y_ok].reset_index(drop=True), y[y_ok].reset_index(drop=True)
    classes = int(y.nunique())
    empty = {
        "images": len(y),
        "classes": classes,
        "chance": 1.0 / classes if classes else None,
        "balanced_accuracy": None,
        "lift": None,
        "top_feature": None,
    }
    if classes < 2:
        return {**empty, "skipped_reason": "fewer than two subgroups with enough images"}
    if len(y) < min_images:
        return {**empty, "skipped_reason": f"only {len(y)} images (at least {min_images})"}
    if len(y) > max_images:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(y), max_images, replace=False))
        x, y = x.iloc[pick].reset_index(drop=True), y.iloc[pick].reset_index(drop=True)
        counts = y.value_counts()
        y_ok = y.isin(counts[counts >= folds].index).to_numpy()
        x, y = x[y_ok].reset_index(drop=True), y[y_ok].reset_index(drop=True)
        classes = int(y.nunique())
    model = DecisionTreeClassifier(
        max_depth=max_depth, class_weight="balanced", min_samples_leaf=2, random_state=seed
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(model, x.to_numpy(), y.to_numpy(), cv=cv)
    accuracy = float(balanced_accuracy_score(y, predicted))
    chance = 1.0 / classes
    importances = model.fit(x.to_numpy(), y.to_numpy()).feature_importances_
    return {
        "images": len(y),
        "classes": classes,
        "chance": chance,
        "balanced_accuracy": accuracy,
        "lift": (accuracy - chance) / (1.0 - chance),
        "top_feature": str(x.columns[int(np.argmax(importances))]),
        "skipped_reason": None,
    }


@dataclass
class BiasReport:
    """Everything one bias audit computed, as tables ready for DuckDB, plus summary metrics."""

    attributes: list[str]
    notes: dict[str, str]
    shares: pd.DataFrame  # attribute, scope, subgroup, images, share
    drift: pd.DataFrame  # attribute, newest_batch, newest/earlier_images, tv, chi2, dof, p, ...
    stats: pd.DataFrame  # attribute, subgroup, statistic, value
    probes: pd.DataFrame  # attribute, images, classes, chance, balanced_accuracy, lift, ...
    metrics: dict[str, float]
    no_attributes_reason: str | None = None
    limits: dict[str, float] = field(default_factory=dict)

    def gates(self) -> list[Verdict]:
        """Share floor, drift and shortcut verdicts (all pass, with the reason, when there is
        nothing to audit)."""
        if self.no_attributes_reason:
            return [
                Verdict(name, True, metric, None, self.no_attributes_reason, {"attributes": 0})
                for name, metric in (
                    ("subgroup_share_floor", "min_subgroup_share"),
                    ("subgroup_drift", "max_drift_tv"),
                    ("attribute_shortcut", "max_shortcut_lift"),
                )
            ]
        return [self._floor(), self._drift(), self._shortcut()]

    def _floor(self) -> Verdict:
        floor = self.limits["min_subgroup_share"]
        overall = self.shares[(self.shares["scope"] == "all") & self.shares["share"].notna()]
        worst = overall.sort_values(["share", "attribute", "subgroup"]).head(1)
        low = overall[overall["share"] < floor]
        value = float(worst["share"].iloc[0]) if len(worst) else None
        where = f"{worst['attribute'].iloc[0]}={worst['subgroup'].iloc[0]}" if len(worst) else "-"
        details = {
            "min_value": floor,
            "smallest": where,
            "below_floor": [
                f"{r.attribute}={r.subgroup} ({r.share:.2%})" for r in low.itertuples()
            ],
        }
        if low.empty:
            text = f"smallest subgroup {where} holds {value:.2%}, at least the floor {floor:.2%}"
        else:
            text = f"{len(low)} subgroup(s) below the share floor {floor:.2%}: " + ", ".join(
                details["below_floor"][:5]
            )
        return Verdict(
            "subgroup_share_floor", low.empty, "min_subgroup_share", value, text, details
        )

    def _drift(self) -> Verdict:
        tested = self.drift[self.drift["tv_distance"].notna()]
        drifted = tested[tested["drifted"]]
        details = {
            "max_value": self.limits["max_drift_tv"],
            "alpha": self.limits["drift_alpha"],
            "newest_batch": self.drift["newest_batch"].iloc[0] if len(self.drift) else None,
            "drifted": [
                f"{r.attribute} (tv {r.tv_distance:.3f}, p {r.p_value:.2g})"
                for r in drifted.itertuples()
            ],
        }
        value = float(tested["tv_distance"].max()) if len(tested) else None
        if tested.empty:
            reasons = sorted(set(self.drift["skipped_reason"].dropna())) or ["nothing to compare"]
            text = "no drift test possible: " + "; ".join(reasons)
            return Verdict("subgroup_drift", True, "max_drift_tv", value, text, details)
        if drifted.empty:
            text = (
                f"newest batch {details['newest_batch']}: largest share shift tv={value:.3f} "
                f"(limit {self.limits['max_drift_tv']:.3f} with p < {self.limits['drift_alpha']})"
            )
        else:
            text = f"newest batch {details['newest_batch']} shifted subgroup shares: " + ", ".join(
                details["drifted"]
            )
        return Verdict("subgroup_drift", drifted.empty, "max_drift_tv", value, text, details)

    def _shortcut(self) -> Verdict:
        probed = self.probes[self.probes["lift"].notna()]
        flagged = probed[probed["shortcut"]]
        value = float(probed["lift"].max()) if len(probed) else None
        details = {
            "max_value": self.limits["max_shortcut_lift"],
            "shortcuts": [
                f"{r.attribute} (balanced accuracy {r.balanced_accuracy:.2f} vs chance "
                f"{r.chance:.2f}, mostly {r.top_feature})"
                for r in flagged.itertuples()
            ],
        }
        if probed.empty:
            reasons = sorted(set(self.probes["skipped_reason"].dropna())) or ["nothing to probe"]
            text = "no shortcut probe possible: " + "; ".join(reasons)
        elif flagged.empty:
            text = (
                f"image statistics predict no attribute beyond lift {value:.2f} "
                f"(limit {self.limits['max_shortcut_lift']:.2f})"
            )
        else:
            text = "attributes predictable from image statistics alone: " + ", ".join(
                details["shortcuts"]
            )
        return Verdict(
            "attribute_shortcut", flagged.empty, "max_shortcut_lift", value, text, details
        )


def measure_bias(
    images: pd.DataFrame,
    attributes: pd.DataFrame,
    newest_batch: str | None,
    min_subgroup_share: float,
    max_drift_tv: float,
    drift_alpha: float,
    max_shortcut_lift: float,
    notes: dict[str, str] | None = None,
    seed: int = 0,
) -> BiasReport:
    """Audit every column of `attributes` (from `attribute_columns`, aligned with `images`).

    `images` holds one row per curated image: `batch`, `split`, `include`, the `STATISTICS`
    columns and boolean `is_<issue>` flags. Shares, drift and the probe use included images;
    per-subgroup statistics use every row."""
    limits = {
        "min_subgroup_share": min_subgroup_share,
        "max_drift_tv": max_drift_tv,
        "drift_alpha": drift_alpha,
        "max_shortcut_lift": max_shortcut_lift,
    }
    images = images.reset_index(drop=True)
    attributes = attributes.reset_index(drop=True)
    names = [str(c) for c in attributes.columns]
    empty = BiasReport(
        attributes=[],
        notes={},
        shares=pd.DataFrame(columns=["attribute", "scope", "subgroup", "images", "share"]),
        drift=pd.DataFrame(
            columns=["attribute", "newest_batch", "tv_distance", "drifted", "skipped_reason"]
        ),
        stats=pd.DataFrame(columns=["attribute", "subgroup", "statistic", "value"]),
        probes=pd.DataFrame(columns=["attribute", "lift", "shortcut", "skipped_reason"]),
        metrics={"images": float(images["include"].sum()) if len(images) else 0.0},
        no_attributes_reason=NO_ATTRIBUTES_REASON,
        limits=limits,
    )
    if not names:
        return empty
    included = images["include"].astype(bool).to_numpy()
    newest = (images["batch"] == newest_batch).to_numpy() if newest_batch else np.zeros(0, bool)
    scopes: dict[str, np.ndarray] = {"all": included}
    for split in ("train", "val", "test"):
        scopes[split] = included & (images["split"] == split).to_numpy()
    has_earlier = bool(newest_batch) and bool((included & ~newest).any())
    if newest_batch:
        scopes["newest_batch"] = included & newest
        if has_earlier:
            scopes["earlier_batches"] = included & ~newest
    features = probe_features(images[included])
    shares, drift, stats, probes = [], [], [], []
    for name in names:
        values = attributes[name]
        shares.append(subgroup_shares(values, scopes).assign(attribute=name))
        stats.append(subgroup_statistics(values, images).assign(attribute=name))
        row: dict = {"attribute": name, "newest_batch": newest_batch}
        if not newest_batch:
            row.update(skipped_reason="no curated batch")
        elif not has_earlier:
            row.update(skipped_reason=f"{newest_batch} is the only batch with included images")
        else:
            row.update(share_drift(values[included & newest], values[included & ~newest]))
            if row["tv_distance"] is None:
                row["skipped_reason"] = (
                    f"no {name} values in the newest batch"
                    if row["newest_images"] == 0
                    else f"no {name} values in earlier batches"
                )
        tv, p = row.get("tv_distance"), row.get("p_value")
        row["drifted"] = bool(tv is not None and tv > max_drift_tv and p < drift_alpha)
        drift.append(row)
        probe = shortcut_probe(features, values[included], seed=seed)
        lift = probe["lift"]
        probes.append(
            {
                **probe,
                "attribute": name,
                "shortcut": bool(lift is not None and lift >= max_shortcut_lift),
            }
        )
    shares_df = pd.concat(shares, ignore_index=True)
    drift_df = pd.DataFrame(drift)
    for column in ("newest_images", "earlier_images", "tv_distance", "chi2", "dof", "p_value"):
        if column not in drift_df:
            drift_df[column] = None
    if "skipped_reason" not in drift_df:
        drift_df["skipped_reason"] = None
    probes_df = pd.DataFrame(probes)
    overall = shares_df[(shares_df["scope"] == "all") & shares_df["share"].notna()]
    metrics: dict[str, float] = {
        "images": float(included.sum()),
        "attributes": float(len(names)),
        "subgroups_below_floor": float((overall["share"] < min_subgroup_share).sum()),
        "drifted_attributes": float(drift_df["drifted"].sum()),
        "shortcut_attributes": float(probes_df["shortcut"].sum()),
    }
    if len(overall):
        metrics["min_subgroup_share"] = float(overall["share"].min())
    tested = drift_df[drift_df["tv_distance"].notna()]
    if len(tested):
        metrics["max_drift_tv"] = float(tested["tv_distance"].max())
        metrics["min_drift_p_value"] = float(tested["p_value"].min())
    probed = probes_df[probes_df["lift"].notna()]
    if len(probed):
        metrics["max_shortcut_lift"] = float(probed["lift"].max())
    for name in names:
        part = overall[overall["attribute"] == name]
        if len(part):
            metrics[f"min_share[{name}]"] = float(part["share"].min())
        d = tested[tested["attribute"] == name]
        if len(d):
            metrics[f"drift_tv[{name}]"] = float(d["tv_distance"].iloc[0])
        p = probed[probed["attribute"] == name]
        if len(p):
            metrics[f"shortcut_lift[{name}]"] = float(p["lift"].iloc[0])
    return BiasReport(
        attributes=names,
        notes=dict(notes or {}),
        shares=shares_df,
        drift=drift_df,
        stats=pd.concat(stats, ignore_index=True),
        probes=probes_df,
        metrics=metrics,
        limits=limits,
    )


def audit_frame(
    curated: pd.DataFrame, pixels: np.ndarray, issue_pairs: pd.DataFrame, issues: list[str]
) -> pd.DataFrame:
    """The per-image frame `measure_bias` reads: batch, split, include, the image statistics
    and an `is_<issue>` flag per quality issue. `curated` holds image_id, batch, split, include,
    orig_height, orig_width (aligned with `pixels`); `issue_pairs` holds (image_id, issue)."""
    stats = image_statistics(pixels, curated[["orig_height", "orig_width"]].to_numpy())
    ids = curated["image_id"].astype(str)
    flags = pd.DataFrame(
        {
            f"is_{issue}": ids.isin(set(issue_pairs.loc[issue_pairs["issue"] == issue, "image_id"]))
            for issue in issues
        }
    ).reset_index(drop=True)
    return pd.concat(
        [curated[["image_id", "batch", "split", "include"]].reset_index(drop=True), stats, flags],
        axis=1,
    )


DRIFT_COLUMNS = [
    "attribute",
    "newest_batch",
    "newest_images",
    "earlier_images",
    "tv_distance",
    "chi2",
    "dof",
    "p_value",
    "drifted",
    "skipped_reason",
]
PROBE_COLUMNS = [
    "attribute",
    "images",
    "classes",
    "chance",
    "balanced_accuracy",
    "lift",
    "top_feature",
    "shortcut",
    "skipped_reason",
]


def report_tables(report: BiasReport) -> dict[str, pd.DataFrame]:
    """What the store records of a bias audit, by table (nothing when no attribute exists)."""
    if not report.attributes:
        return {}
    return {
        "bias_groups": report.shares,
        "bias_drift": report.drift[DRIFT_COLUMNS],
        "bias_group_stats": report.stats,
        "bias_shortcuts": report.probes[PROBE_COLUMNS],
    }
