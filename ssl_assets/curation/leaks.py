"""The leak report: held-out images that duplicate a training image, per held-out split.

Why: every accuracy the project reports is only as honest as its held-out splits. Curation
already keeps a duplicate group in one split and excludes a pinned image whose group sits in
another (`cross_split_duplicate`); this module says how much it found and whether any of it is
still in use, from the store's `split_leaks` view (one row per duplicate edge between a val or
test image and a train image, with the tier and scores that linked them).

Per held-out split it measures the *leak rate*, the share of the split's images with a training
duplicate (what curation found: with CIFAR-10's folders pinned, a few percent of test), and the
*included leaks*, held-out images still included although a training image they duplicate is
included too (what slipped through: an `include` override, or splits assigned before a tier
found the pair). The gate fails when either is above its limit (`quality/thresholds.py`), but
only an included leak blocks: it inflates every score computed on that split. A high leak rate
alone is a warning for a person (curation excluded those images; a split that duplicates its
training split this often was probably not drawn apart from it, e.g. the same files landed
twice under two pins, and a small split reaches a high rate with one copy).
"""

from __future__ import annotations

import pandas as pd

from quality.verdict import Verdict

HELD_OUT = ("val", "test")


def leak_summary(leaks: pd.DataFrame, split_sizes: dict[str, int]) -> pd.DataFrame:
    """One row per held-out split: images, leaked (held-out images with a training duplicate),
    leak_rate, included_leaks, and the leaked images per tier of their strongest link."""
    from ssl_assets.curation.dedup import TIERS

    rows = []
    for split in HELD_OUT:
        part = leaks[leaks["held_out_split"] == split]
        rank = part["tier"].map({t: k for k, t in enumerate(TIERS)})
        strongest = part.assign(rank=rank).sort_values("rank").drop_duplicates("held_out_id")
        included = part[part["held_out_included"] & part["train_included"]]
        images = int(split_sizes.get(split, 0))
        leaked = int(part["held_out_id"].nunique())
        rows.append(
            {
                "split": split,
                "images": images,
                "leaked": leaked,
                "leak_rate": leaked / images if images else 0.0,
                "included_leaks": int(included["held_out_id"].nunique()),
                **{f"by_{t}": int((strongest["tier"] == t).sum()) for t in TIERS},
            }
        )
    return pd.DataFrame(rows)


def leak_verdicts(
    summary: pd.DataFrame, max_leak_rate: float, max_included_leaks: int
) -> list[tuple[Verdict, bool]]:
    """(`leak_rate_val` and `leak_rate_test`, blocking): the split's leak rate at most
    `max_leak_rate` and its included leaks at most `max_included_leaks`; blocking when the
    included leaks are over their limit, a warning when only the rate is."""
    out = []
    for row in summary.itertuples(index=False):
        problems = []
        if row.leak_rate > max_leak_rate:
            problems.append(
                f"{row.leak_rate:.2%} of {row.split} duplicates training images (limit "
                f"{max_leak_rate:.2%}): was {row.split} drawn apart from train?"
            )
        if row.included_leaks > max_included_leaks:
            problems.append(
                f"{row.included_leaks} {row.split} images are still included beside a training "
                f"image they duplicate (limit {max_included_leaks})"
            )
        tiers = {k.removeprefix("by_"): v for k, v in row._asdict().items() if k.startswith("by_")}
        found = (
            f"{row.leaked} of {row.images} {row.split} images ({row.leak_rate:.2%}) have a "
            f"training duplicate ({', '.join(f'{t} {n}' for t, n in tiers.items())}); "
            f"{row.included_leaks} still included"
        )
        verdict = Verdict(
            check_name=f"leak_rate_{row.split}",
            passed=not problems,
            metric=f"leak_rate[{row.split}]",
            value=float(row.leak_rate),
            description="; ".join(problems) or found,
            details={
                "images": row.images,
                "leaked": row.leaked,
                "included_leaks": row.included_leaks,
                "max_value": max_leak_rate,
                "max_included_leaks": max_included_leaks,
                "leaked_by_tier": tiers,
            },
        )
        out.append((verdict, row.included_leaks > max_included_leaks))
    return out


def sample_pairs(leaks: pd.DataFrame, limit: int = 12, seed: int = 0) -> pd.DataFrame:
    """A seeded sample of leak pairs for a picture: one row per held-out image (its strongest
    link), every tier represented where it can be."""
    from ssl_assets.curation.dedup import TIERS

    if leaks.empty:
        return leaks
    rank = leaks["tier"].map({t: k for k, t in enumerate(TIERS)})
    firsts = leaks.assign(rank=rank).sort_values(["rank", "held_out_id"], kind="stable")
    firsts = firsts.drop_duplicates("held_out_id")
    per_tier = max(1, limit // max(1, firsts["tier"].nunique()))
    picked = pd.concat(
        [
            part.sample(min(len(part), per_tier), random_state=seed)
            for _, part in firsts.groupby("tier", sort=False)
        ]
    )
    rest = firsts.drop(picked.index)
    extra = rest.sample(min(len(rest), limit - len(picked)), random_state=seed)
    return pd.concat([picked, extra]).sort_values("rank", kind="stable").head(limit)
