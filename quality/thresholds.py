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
# curated_images: per held-out split (val, test), the share of its images that duplicate a
# training image. Curation excludes those, but a split that duplicates train this often was not
# drawn apart from it (the same files landed twice under two pins); CIFAR-10's test folder
# measures a few percent.
CURATION_MAX_LEAK_RATE = 0.1
# curated_images: held-out images still included beside an included training image they
# duplicate (an `include` override, or a pair found after the split was assigned).
CURATION_MAX_INCLUDED_LEAKS = 0

# ssl_encoder: collapse. A collapsed encoder maps everything to (nearly) one point: the std of
# L2-normalised embeddings falls towards 0 (healthy is about 1/sqrt(d)) and the effective rank
# (RankMe) towards 1. Either under its floor fails the blocking check and the model is rejected.
ENCODER_MIN_STD_RATIO = 0.2  # embedding std / (1/sqrt(d))
ENCODER_MIN_EFFECTIVE_RANK = 4.0

# diversity_audit: normalised k-means cluster-size entropy H / ln(k) of the included train split
# (pinned embeddings, near-identical clusters merged). 1 is evenly spread, 0 is one mode; below
# this floor most images are variations of a few scenes and pretraining learns brittle features.
# The default data (sklearn digits) measures ~0.97, CIFAR-10 ~0.99, one picture with noise ~0.
AUDIT_MIN_CLUSTER_ENTROPY = 0.5
# diversity_audit: the largest cluster may hold at most this share of the train split (digits
# ~0.10, CIFAR-10 ~0.03); above it one mode dominates what the encoder sees.
AUDIT_MAX_LARGEST_CLUSTER_SHARE = 0.5
# diversity_audit: with fewer included train images than this, k-means measures nothing, so the
# diversity gates pass and say so instead of failing a tiny run on noise.
AUDIT_DIVERSITY_MIN_IMAGES = 30
# bias_audit: every subgroup of every attribute (and label) should hold at least this share of
# the included images with a value; rarer groups get too few examples for the encoder to
# represent them well (and too few to evaluate on).
AUDIT_MIN_SUBGROUP_SHARE = 0.05
# bias_audit: drift of the newest batch's subgroup shares against all earlier included images is
# reported when the total-variation distance exceeds this AND the chi-square p-value is below
# AUDIT_DRIFT_ALPHA (large and not chance: a 10-point swing in who is represented).
AUDIT_MAX_DRIFT_TV = 0.1
AUDIT_DRIFT_ALPHA = 0.01
# bias_audit: a shallow tree predicting an attribute from brightness, contrast, resolution,
# aspect ratio and issue flags alone, with lift (balanced accuracy - chance) / (1 - chance) at
# or above this, is a shortcut: the encoder can separate the groups by image statistics.
AUDIT_MAX_SHORTCUT_LIFT = 0.5

# champion_model: a challenger replaces the champion only when the lower bound of the 95 %
# paired-bootstrap interval of its val-accuracy difference is at least -tolerance (equal within
# noise may replace, clearly worse may not) ...
CHAMPION_TOLERANCE = 0.01
# ... its largest accuracy gap between subgroups of an attribute on val is at most this ...
CHAMPION_MAX_SUBGROUP_GAP = 0.15
# ... counting only subgroups with at least this many val images (smaller ones are noise) ...
CHAMPION_MIN_GROUP_SIZE = 10
# ... estimated from this many bootstrap resamples of the val images.
CHAMPION_BOOTSTRAP_RESAMPLES = 1000

# batch_monitoring: a newly curated batch has drifted from the data the champion was trained on
# when the energy coefficient (energy distance / 2 E|X-Y|, 0 = same distribution, 1 = apart;
# ssl_assets/audit/drift.py) is at least this AND the permutation p-value is below
# MONITOR_DRIFT_ALPHA: large enough to matter and not chance. Measured (pinned / a small SimCLR
# encoder): batches drawn from the training distribution -0.011 to 0.003 (sklearn digits,
# CIFAR-10, made scenes; the p-value keeps such small-sample wobbles from counting); CIFAR-10
# with inverted colours 0.016 / 0.04; digits of three classes only 0.04; inverted digits 0.4.
# Distances between embeddings concentrate in high dimensions, so real shifts read small here.
MONITOR_MAX_DRIFT_EFFECT = 0.01
MONITOR_DRIFT_ALPHA = 0.01
# batch_monitoring: ... or when more than this share of its images are out of distribution
# (nearest training image farther than the training set's own 99th percentile of nearest-
# neighbour distances: about 1 % of an in-distribution batch), a new sub-population.
MONITOR_MAX_OOD_SHARE = 0.2
# batch_monitoring: the champion has decayed on a batch's new labels when the upper end of the
# 95 % Wilson interval of its accuracy there is more than this below its reference accuracy
# (its test accuracy when it was fine-tuned): worse beyond doubt, not by a few unlucky images.
MONITOR_MAX_ACCURACY_DROP = 0.05
