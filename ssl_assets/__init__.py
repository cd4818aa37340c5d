"""ssl-assets: unlabeled images to a trusted self-supervised encoder, as Dagster assets.

The Dagster layer lives in `ssl_assets.assets`, `ssl_assets.definitions` and `ssl_assets.cli`;
`ssl_assets.data`, `ssl_assets.curation` and `ssl_assets.ml` are plain Python that knows nothing
of Dagster, so the same code runs in tests, in a Dagster step and under torchrun.
"""
