"""Plain-Python audits of curated data, run before any compute is spent on pretraining.

Why a separate package: biased or homogeneous unlabeled data makes brittle features, and people
need to see coverage and representation *before* an encoder exists. So every audit here works on
embeddings from the pinned, training-free embedder that curation already computed
(`ssl_assets.curation.semantic.pinned_embed`), on image statistics, and on the attributes and
labels users supplied — never on the encoder being trained. Nothing here imports Dagster: the
functions take arrays and frames and return frames, so they run the same in a Dagster step, a test,
a notebook or a benchmark.

- `diversity`: k-means clusters (near-identical clusters merged), cluster-size entropy, largest
  cluster share, effective number of clusters, kNN outlier / typicality scores, redundancy and a
  2-D PCA projection;
- `bias`: subgroup shares per split, drift of the newest batch (total variation + chi-square),
  per-subgroup image statistics and a shortcut probe (does brightness & co. predict the group?);
- `coreset`: k-center greedy selection of the images whose labels would help most;
- `plots`: the PNGs the Dagster UI shows (matplotlib, imported lazily);
Each gate's verdict is decided here as a `quality.verdict.Verdict` and only recorded by the assets.
"""
