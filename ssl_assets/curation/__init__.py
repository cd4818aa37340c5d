"""Plain-Python curation: exact, near and semantic duplicates, and image quality issues.

Nothing here imports Dagster. Every function takes numpy arrays of canonical RGB images (or
values derived from them) and returns numpy arrays or pandas frames, so the same code runs in
tests, in a Dagster step, and in notebooks, and can be benchmarked on its own.

- `hashing`: exact pixel hashes and 64-bit perceptual hashes (pHash, dHash);
- `near_duplicates`: Hamming-ball search over perceptual hashes with a pigeonhole index;
- `semantic`: a pinned, training-free embedding and SemDeDup-style semantic pairs;
- `image_issues`: cleanvision-style image quality issues, one registered object per issue
  type, and their scores and flags (not to be confused with the `quality/` gates package).
"""
