"""What pretraining and evaluation read (curated, included images, their catalog rows and
labels), the frozen-embedding index and the label-efficiency table (`probes`)."""

from __future__ import annotations

import pandas as pd

from resources.store.core import Queries
from resources.store.sql import sql


class EvaluationQueries(Queries):
    """`image_embeddings`, `probes`, and the training/evaluation views of curated data."""

    def training_rows(self, version: str) -> pd.DataFrame:
        """Included train and val images at `version`: image_id, split, array_path, array_row,
        label (NULL when unlabeled), ordered by array and row."""
        return self.query(sql("evaluation", "training_rows"), [version])

    def labeled_rows(self, version: str) -> pd.DataFrame:
        """Included labeled images of every split at `version`."""
        return self.query(sql("evaluation", "labeled_rows"), [version])

    def latest_attributes(self) -> pd.DataFrame:
        """image_id, key, value: each attribute's latest value (the split pin left out)."""
        return self.query(sql("evaluation", "latest_attributes"))

    def curated_rows(self, version: str) -> pd.DataFrame:
        """image_id, array_path, array_row of every curated image at `version`."""
        return self.query(sql("evaluation", "curated_rows"), [version])

    def replace_embeddings(self, model_id: str, rows: pd.DataFrame) -> None:
        self.replace(("image_embeddings", rows, {"model_id": model_id}))

    def embedding_index(self, model_id: str) -> pd.DataFrame:
        """image_id -> (array_path, array_row) of an encoder's frozen features."""
        return self.query(sql("evaluation", "embedding_index"), [model_id]).set_index("image_id")

    def embedded_train_ids(self, model_id: str) -> list[str]:
        return self.query(sql("evaluation", "embedded_train_ids"), [model_id])["image_id"].tolist()

    def replace_probes(self, model_id: str, rows: pd.DataFrame) -> None:
        self.replace(("probes", rows, {"model_id": model_id}))

    def probes(self, model_id: str) -> pd.DataFrame:
        return self.query(sql("evaluation", "probes"), [model_id])

    def latest_probe_summary(self) -> pd.DataFrame:
        """The newest evaluated encoder's label-efficiency table (mean, std, seeds)."""
        return self.query(sql("evaluation", "latest_probe_summary"))

    def curated_split_counts(self) -> pd.DataFrame:
        """split, included, images."""
        return self.query(sql("evaluation", "curated_split_counts"))
