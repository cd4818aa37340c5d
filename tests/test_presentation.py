"""What a person reads in the UI: markdown tables keep their columns, labels and descriptions are
plain text, tables are inline table metadata with rounded numbers, and no machine's lake path
is baked into the launchpad's defaults."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import pytest
from dagster import TableMetadataValue

from ssl_assets.definitions import build_definitions
from ssl_assets.markdown import markdown_table, markdown_tables
from ssl_assets.ml.evaluate.budgets import LabelBudget
from ssl_assets.ml.evaluate.efficiency import efficiency_wide, summarise
from ssl_assets.ml.evaluate.model_card import write_model_card
from ssl_assets.presentation import numbers, table

ROOT = Path(__file__).resolve().parents[1]


def assert_tables_well_formed(text: str) -> int:
    """Every markdown table in `text` has as many cells in each row as in its header; returns
    how many tables there were."""
    tables = markdown_tables(text)
    for header, rows in tables:
        for row in rows:
            assert len(row) == len(header), (header, row)
    return len(tables)


def test_a_bar_or_a_line_break_in_a_value_never_splits_a_markdown_row():
    frame = pd.DataFrame(
        {"budget": ["5%|k>=2", "two\nlines"], "accuracy": [0.123456, float("nan")], "n": [3, 4]}
    )
    text = markdown_table(frame)
    assert assert_tables_well_formed(text) == 1
    (header, rows) = markdown_tables(text)[0]
    assert header == ["budget", "accuracy", "n"]
    assert rows[0] == ["5%\\|k>=2", "0.1235", "3"] and rows[1][0] == "two lines"


def test_budget_labels_are_plain_text_for_tables_and_keys():
    names = [LabelBudget(0.05, 2).name, LabelBudget(1.0, 1).name]
    assert names == ["5% (k≥2)", "100% (k≥1)"]
    assert not any(ch in name for name in names for ch in "|<>")


def _probe_rows() -> pd.DataFrame:
    rows = []
    for budget, n in ((LabelBudget(0.05, 2), 21), (LabelBudget(1.0, 1), 354)):
        for method in ("ssl/linear", "scratch/supervised", "random/knn"):
            for seed in (0, 1):
                rows.append(
                    {
                        "budget": budget.name,
                        "fraction": budget.fraction,
                        "min_per_class": budget.min_per_class,
                        "n_labels": n,
                        "method": method,
                        "seed": seed,
                        "accuracy": 0.5 + 0.1 * seed + (0.3 if method == "ssl/linear" else 0),
                    }
                )
    return pd.DataFrame(rows)


def test_the_label_efficiency_table_is_one_row_per_budget_smallest_first():
    wide = efficiency_wide(summarise(_probe_rows()))
    assert list(wide.columns) == [
        "budget",
        "labels",
        "ssl/linear",
        "random/knn",
        "scratch/supervised",
    ]
    assert wide["budget"].tolist() == ["5% (k≥2)", "100% (k≥1)"]
    assert wide["labels"].tolist() == [21, 354]
    assert wide.loc[0, "ssl/linear"] == "0.850 ± 0.071"
    text = markdown_table(wide)
    assert assert_tables_well_formed(text) == 1 and "5% (k≥2)" in text


def test_table_metadata_is_typed_and_rounded():
    value = table(
        pd.DataFrame({"method": ["a", "b"], "accuracy": [0.956521739, float("nan")], "n": [3, 4]})
    )
    assert isinstance(value, TableMetadataValue)
    assert [c.type for c in value.schema.columns] == ["string", "float", "int"]
    assert value.records[0].data == {"method": "a", "accuracy": 0.9565, "n": 3}
    assert value.records[1].data["accuracy"] == "n/a"  # every cell present, even a missing one
    assert numbers({"x": 0.123456789, "nan": float("nan"), "text": "a", "flag": True}) == {
        "x": 0.1235
    }


def test_a_model_card_has_well_formed_tables_and_no_json(tmp_path):
    card = write_model_card(
        tmp_path,
        {
            "title": "card",
            "summary": "A sentence.",
            "model": {"backbone": "small_cnn", "kwargs": {"widths": [8, 16]}},
            "metrics": [{"metric": "accuracy", "value": 0.9}, {"metric": "a|b", "value": 1}],
            "label_efficiency": efficiency_wide(summarise(_probe_rows())),
        },
    ).read_text()
    assert assert_tables_well_formed(card) >= 3
    assert "{" not in card and "widths: 8, 16" in card


def test_markdown_tables_go_through_the_escaping_writer():
    """No module writes a markdown table any other way (pandas' `to_markdown` does not escape
    `|`)."""
    offenders = []
    for path in (ROOT / "ssl_assets").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "to_markdown":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders


def _descriptions(defs) -> list[tuple[str, str]]:
    """Every description a person reads on an asset page: column descriptions, check
    descriptions and config field descriptions."""
    found = []
    for spec in defs.resolve_all_asset_specs():
        schema = spec.metadata.get("dagster/column_schema")
        for column in getattr(schema, "columns", None) or getattr(
            getattr(schema, "schema", None), "columns", []
        ):
            found.append((f"{spec.key.to_user_string()}.{column.name}", column.description or ""))
    for asset in defs.assets or []:
        for check in asset.check_specs:
            found.append((check.name, check.description or ""))
        for op in [asset.node_def]:
            field = op.config_field
            if field is None:
                continue
            stack = [(op.name, field.config_type)]
            while stack:
                where, config_type = stack.pop()
                for name, sub in (getattr(config_type, "fields", None) or {}).items():
                    found.append((f"{where}.{name}", sub.description or ""))
                    stack.append((f"{where}.{name}", sub.config_type))
                inner = getattr(config_type, "inner_type", None)
                if inner is not None:
                    stack.append((where, inner))
    return found


def test_descriptions_are_plain_text_the_ui_cannot_swallow_as_html():
    found = _descriptions(build_definitions("tiny"))
    assert len(found) > 50
    html_like = [(where, text) for where, text in found if "<" in text or ">" in text]
    assert not html_like


def test_the_launchpad_shows_no_machine_path_and_runs_resolve_the_lake(tmp_path, monkeypatch):
    defs = build_definitions("tiny")
    lake, store = defs.resources["lake"], defs.resources["metadata"]
    assert lake.root is None and store.path is None  # nothing resolved at load time
    monkeypatch.setenv("SSL_LAKE", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("SSL_METADATA", raising=False)
    assert lake.root_path == (tmp_path / "elsewhere").resolve()
    assert Path(store.db_path) == (tmp_path / "elsewhere" / "metadata.duckdb").resolve()


@pytest.mark.parametrize("name", ["probes", "ssl_encoder"])
def test_list_and_mapping_settings_are_typed_config_not_strings(name):
    defs = build_definitions("tiny")
    asset = next(a for a in defs.assets if a.key.to_user_string() == name)
    fields = asset.node_def.config_field.config_type.fields
    if name == "probes":
        budgets = fields["budgets"]
        listed = budgets.config_type
        while listed.kind.name == "NONEABLE":
            listed = listed.inner_type
        assert listed.kind.name == "ARRAY"
        assert set(listed.inner_type.fields) == {"fraction", "min_per_class"}
        assert budgets.default_value[0] == {"fraction": 0.05, "min_per_class": 2}
    else:
        assert {"objective", "backbone_kwargs", "max_steps"} <= set(fields)
        assert not {"objective_json", "backbone_json"} & set(fields)
        for name in ("objective", "backbone_kwargs"):
            mapping = fields[name].config_type
            while mapping.kind.name == "NONEABLE":
                mapping = mapping.inner_type
            assert mapping.kind.name == "MAP"
