"""Names of the retrieval row columns, and rows stored under the old names (no torch needed here).

Definitions: bench/metrics/retrieval.py and docs/metrics.md.
"""
from __future__ import annotations

import re

import polars as pl

# Row metrics that are a mean over per-query values (stored per query beside the test predictions).
PER_QUERY = re.compile(r"^(?:(?:ndcg|mar|p|map|mrr)@\d+|recall@1|f1|f1_all)$")


def ranking_names(k: int) -> list[str]:
    return [f"ndcg@{k}", f"mar@{k}", f"p@{k}", f"map@{k}", f"mrr@{k}", "recall@1"]


LEGACY_F1_NOTE = ("stored by an earlier version whose f1 counted single-item products (today's f1_all) and "
                  "chose the threshold by it; rerun the trial for f1")


def upgrade_legacy_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """Rows stored before the metrics had their names, read with today's meanings.

    Such a row has ``map@k`` but no ``mrr@k``: its ``map@k`` was precision@k and moves to ``p@k``.
    It has ``f1`` but neither ``f1_all`` nor ``f1_note``: that f1 (and its threshold) followed the
    old definition, so both become null with ``f1_note`` saying why. Other rows are unchanged.
    """
    updates = _legacy_updates(rows.collect_schema().names())  # a LazyFrame too, without resolving its schema twice
    return rows.with_columns(updates) if updates else rows


def legacy_columns(columns: list[str]) -> list[str]:
    """The columns among ``columns`` that ``upgrade_legacy_rows`` reads or writes: a reader that
    takes only some of a table's columns takes these too, so the upgrade sees what it would in all."""
    used = {name for e in _legacy_updates(columns) for name in (*e.meta.root_names(), e.meta.output_name())}
    return [c for c in columns if c in used]


def _legacy_updates(columns: list[str]) -> list[pl.Expr]:
    """The expressions ``upgrade_legacy_rows`` applies to rows with these columns."""
    def missing(col: str) -> pl.Expr:
        return pl.col(col).is_null() if col in columns else pl.lit(True)

    updates = []
    for col in columns:
        found = re.fullmatch(r"map@(\d+)", col)
        if found:
            k = found.group(1)
            legacy = pl.col(col).is_not_null() & missing(f"mrr@{k}") & missing(f"p@{k}")
            p_now = pl.col(f"p@{k}") if f"p@{k}" in columns else pl.lit(None, dtype=pl.Float64)
            updates += [pl.when(legacy).then(pl.col(col)).otherwise(p_now).alias(f"p@{k}"),
                        pl.when(legacy).then(None).otherwise(pl.col(col)).alias(col)]
    if "f1" in columns:
        legacy = pl.col("f1").is_not_null() & missing("f1_all") & missing("f1_note")
        note_now = pl.col("f1_note") if "f1_note" in columns else pl.lit(None, dtype=pl.Utf8)
        updates += [pl.when(legacy).then(None).otherwise(pl.col("f1")).alias("f1"),
                    pl.when(legacy).then(pl.lit(LEGACY_F1_NOTE)).otherwise(note_now).alias("f1_note")]
        if "f1_threshold" in columns:
            updates.append(pl.when(legacy).then(None).otherwise(pl.col("f1_threshold")).alias("f1_threshold"))
    return updates
