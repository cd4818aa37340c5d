"""Every gate threshold's default, in one place.

Assets expose these as run config (editable in the Dagster launchpad); the values here are only
the defaults. Each has a comment saying what it protects.
"""

from __future__ import annotations

# raw_images: a batch with more quarantined files than this is not admitted (something upstream
# is broken: a bad export, a truncated copy), rather than silently training on what is left.
RAW_MAX_QUARANTINE_FRACTION = 0.2
# raw_images: a batch must hold at least this many usable images to be admitted.
RAW_MIN_OK_IMAGES = 1

# curated_images: a batch that loses more than this share of its images to exclusions is a sign
# that a threshold is wrong (or the batch is), so the gate blocks pretraining until a person looks.
CURATION_MAX_EXCLUDED_FRACTION = 0.5
# curated_images: included images of one duplicate group in two splits (a leak) allowed.
CURATION_MAX_GROUPS_ACROSS_SPLITS = 0
