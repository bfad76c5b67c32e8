"""The leaderboard's fast paths give the same text as before: the markdown writer equals tabulate,
a lazy scan gives the same leaderboard as the rows in memory, the failed-trial list equals a plain
per-row loop, and `bench leaderboard` (which does not read the config column) equals rendering
every column."""
from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
import yaml
from tabulate import tabulate

from bench.reporting.leaderboard import (LeaderboardSpec, display_rows, failed_lines, failed_table, failed_trials,
                                          leaderboard_table, pivot_table, render_csv, render_html,
                                          render_markdown)
from bench.reporting.markdown_table import github_table


def _rows(n: int = 600, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    failed = rng.random(n) < 0.1
    fraction = rng.choice([0.1, 0.25, 1.0, 1e-05, None], n).tolist()
    errors = rng.choice(["RuntimeError: boom\r\nTraceback ...", "", "line one\nline two", "\u2028x"], n).tolist()
    return pl.DataFrame({
        "trial_key": [f"k{i:05d}" for i in range(n)],
        "fusion": rng.choice(["late", "shallow", "text_only", "日本語"], n).tolist(),
        "fraction": pl.Series(fraction, dtype=pl.Float64),
        "flag": rng.choice([True, False], n).tolist(),
        "seed": rng.integers(0, 3, n).tolist(),
        "status": np.where(failed, "failed", np.where(rng.random(n) < 0.05, "stopped", "ok")).tolist(),
        "error": [e if f else None for e, f in zip(errors, failed)],
        "accuracy": np.where(failed, np.nan, rng.uniform(0.3, 0.9, n)),
        "macro_f1": pl.Series(np.where(failed, None, rng.uniform(0.3, 0.9, n)).tolist(), dtype=pl.Float64),
        "dev_macro_f1": rng.uniform(0.3, 0.9, n),
        "lr": rng.choice([1e-3, 1e-4], n).tolist(),
        "wall_s": rng.uniform(1, 100, n),
        "n_params": rng.integers(1000, 10**7, n).tolist(),
        "config": [json.dumps({"i": i, "pad": "x" * 50}) for i in range(n)],
    })


SPECS = [
    LeaderboardSpec(group_by=["fusion", "fraction"], sort="macro_f1", metrics=["accuracy", "macro_f1"],
                    pivot={"rows": "fusion", "columns": "flag", "value": "macro_f1", "extra_values": ["accuracy"]}),
    LeaderboardSpec(group_by=["fusion", "flag"], sort="wall_s"),
    LeaderboardSpec(group_by=["fusion"], select=["lr"], select_metric="dev_macro_f1"),
]


@pytest.mark.parametrize("headers,body", [
    (["rank", "group", "macro_f1"], [["1", "late", "0.812 ± 0.010"], ["10", "", "-"]]),
    (["rank", ""], []),
    (["a", "b"], [["  padded  ", "x"], ["wide 日本語", "≈best p=0.040"], ["†1", "0.1–0.2"]]),
    (["h"], [["two\nlines"]]),  # a line break: escaped, one line
    (["only"], [[""]]),
    ([" spaced header ", "b"], [[" x ", "y"]]),  # tabulate strips the cells, not the headers
    (["mean", "wide"], [["0.5 ± 0.1", "e\u0301"], ["0.25 ± 0.125", "👍🏽 \U0001F1EF\U0001F1F5"]]),  # combining, emoji, flag
    (["a"], [["\x1b[31mred\x1b[0m"]]),  # colour codes: escaped
    (["a|b", "c"], [["x|y", "\u202eevil"], ["\r\n", "ok"]]),  # pipes and a bidi override
    (["a", "日本"], [["\u3000wide space", "x\xa0"], ["\u2003em\u2003", " 100% "], ["%s %d", "\u3000"]]),  # stripped spaces, printf marks
])
def test_markdown_writer_equals_tabulate(headers, body):
    """The same text as tabulate over the escaped cells (every row one line, as many cells as headers)."""
    from bench.reporting.visible_text import markdown_cell

    text = github_table(headers, body)
    assert text == tabulate([list(map(markdown_cell, row)) for row in body], headers=list(map(markdown_cell, headers)),
                            tablefmt="github", disable_numparse=True)
    assert len(text.splitlines()) == 2 + len(body) and "\x1b" not in text and "\u202e" not in text
    assert all(len(re.split(r"(?<!\\)\|", line)) == len(headers) + 2 for line in text.splitlines())


def test_a_label_with_a_pipe_a_line_break_or_control_characters_stays_in_its_cell(tmp_path):
    """Group values and errors as a user or plugin may write them: the table keeps its columns, the
    failed list one line per trial, and no control character reaches the page or the terminal."""
    labels = ["a|b", "two\nlines", "\x1b[31mred\x1b[0m", "\u202eevil", "plain"]
    rows = pl.DataFrame({"trial_key": [f"k{i}" for i in range(6)], "fusion": labels + ["x|\ny"],
                         "seed": [0] * 6, "status": ["ok"] * 5 + ["failed"],
                         "error": [None] * 5 + ["\x1b[2Jboom | \u202e"], "accuracy": [0.1, 0.2, 0.3, 0.4, 0.5, None]})
    spec = LeaderboardSpec(group_by=["fusion"])
    text = render_markdown(rows, spec)
    assert "\x1b" not in text and "\u202e" not in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 6 and len({len(re.split(r"(?<!\\)\|", line)) for line in table}) == 1
    assert "a\\|b" in text and "two\\nlines" in text and "\\x1b[31mred" in text and "\\u202eevil" in text
    failed = text.split("## Failed trials")[1].strip().splitlines()
    assert failed == ["- `k5` fusion=x|\\ny seed=0: \\x1b[2Jboom | \\u202e"]
    page = render_html(rows, spec)
    assert "\x1b" not in page and "\u202e" not in page and "\\u202eevil" in page


@pytest.mark.parametrize("spec", SPECS)
def test_main_table_text_equals_tabulate_of_the_same_cells(spec):
    rows = _rows()
    headers, body = display_rows(leaderboard_table(rows, spec), spec)
    text = render_markdown(rows, spec)
    assert tabulate(body, headers=headers, tablefmt="github", disable_numparse=True) in text


@pytest.mark.parametrize("spec", SPECS)
def test_lazy_scan_gives_the_same_leaderboard(tmp_path, spec):
    rows = _rows()
    path = tmp_path / "trials.parquet"
    rows.write_parquet(path)
    assert render_markdown(pl.scan_parquet(path), spec) == render_markdown(rows, spec)
    eager, lazy = (leaderboard_table(r, spec) for r in (rows, pl.scan_parquet(path)))
    assert eager.columns == lazy.columns and eager["rank"].to_list() == lazy["rank"].to_list()
    for col in eager.columns:  # a streaming sum may differ in the last bit, never more
        if eager[col].dtype.is_float():
            assert np.allclose(eager[col].to_numpy(), lazy[col].to_numpy(), rtol=1e-12, atol=0, equal_nan=True), col
        else:
            assert eager[col].to_list() == lazy[col].to_list(), col
    if spec.pivot:
        assert pivot_table(pl.scan_parquet(path), spec.pivot) == pivot_table(rows, spec.pivot)


def test_group_means_equal_a_plain_loop():
    rows, spec = _rows(), SPECS[1]
    table = leaderboard_table(rows, spec)
    for r in table.iter_rows(named=True):
        mine = [x for x in rows.iter_rows(named=True)
                if x["fusion"] == r["fusion"] and x["flag"] == r["flag"] and x["status"] == "ok"]
        assert r["n"] == len(mine)
        assert r["wall_s"] == pytest.approx(sum(x["wall_s"] for x in mine) / len(mine), rel=1e-12)
        assert r["failed"] == sum(1 for x in rows.iter_rows(named=True)
                                  if x["fusion"] == r["fusion"] and x["flag"] == r["flag"] and x["status"] == "failed")


def test_a_null_axis_value_is_a_group_with_its_figures():
    rows = _rows()
    table = leaderboard_table(rows, LeaderboardSpec(group_by=["fraction"], metrics=["accuracy"]))
    unset = table.filter(pl.col("fraction").is_null()).row(0, named=True)
    mine = rows.filter(pl.col("fraction").is_null() & (pl.col("status") == "ok"))
    assert unset["n"] == mine.height > 0
    assert unset["accuracy"] == pytest.approx(float(np.mean(mine["accuracy"].to_numpy())), rel=1e-12)


@pytest.mark.parametrize("spec", SPECS)
def test_failed_list_equals_a_per_row_loop(tmp_path, spec):
    rows = _rows()
    expected = []
    for r in rows.filter(pl.col("status") == "failed").iter_rows(named=True):
        labels = " ".join(f"{g}={r[g]}" for g in spec.group_by if g in r)
        first_line = (r.get("error") or "").splitlines()[0] if r.get("error") else ""
        expected.append((r["trial_key"], f"{labels} seed={r.get('seed')}", first_line))
    assert failed_trials(rows, spec) == expected
    path = tmp_path / "trials.parquet"
    rows.write_parquet(path)
    assert failed_trials(pl.scan_parquet(path), spec) == expected
    lines = [f"- `{key}` {labels}: {first}" for key, labels, first in expected]
    assert failed_lines(rows, spec) == failed_lines(pl.scan_parquet(path), spec) == lines  # Python and polars paths
    assert list(failed_table(rows, spec).iter_rows()) == expected
    no_axes = LeaderboardSpec(group_by=["absent"])
    assert failed_trials(rows.drop("seed"), no_axes)[0][1] == " seed=None"


def _legacy_retrieval_rows(n: int = 600, seed: int = 1) -> pl.DataFrame:
    """_rows plus retrieval columns, some stored the old way (map@10 without mrr@10 or p@10, f1 without
    f1_all), and placeholder counts."""
    rng = np.random.default_rng(seed)
    some = lambda share: pl.Series([None if x < share else float(x) for x in rng.random(n)], dtype=pl.Float64)  # noqa: E731
    return _rows(n, seed).with_columns(
        pl.Series("map@10", rng.uniform(0, 1, n)), some(0.5).alias("mrr@10"), some(0.6).alias("p@10"),
        pl.Series("f1", rng.uniform(0, 1, n)), some(0.5).alias("f1_all"), pl.Series("f1_threshold", rng.uniform(0, 1, n)),
        pl.Series("n_image_placeholders", rng.choice([0, 0, 3], n)))


@pytest.mark.parametrize("rows,board", [
    (_rows(), {"group_by": ["fusion", "fraction"], "sort": "macro_f1", "metrics": ["accuracy", "macro_f1"]}),
    (_legacy_retrieval_rows(), {"group_by": ["fusion"], "sort": "p@10", "metrics": ["p@10", "map@10", "f1", "accuracy"],
                                "pivot": {"rows": "fusion", "columns": "flag", "value": "p@10", "extra_values": ["f1"]}}),
    (_legacy_retrieval_rows(), {"group_by": ["fusion", "flag"]}),  # every quality metric
], ids=["classification", "legacy-retrieval", "default-metrics"])
def test_bench_leaderboard_reads_only_its_columns_and_gives_the_same_text(tmp_path, rows, board):
    """`bench leaderboard` reads only the columns the tables use (never the config): the text is that
    of every column, old retrieval rows included (the upgrade of their names sees all it needs)."""
    from bench.reporting.leaderboard import columns_read
    from bench.reporting.write import leaderboard_for_run

    run = tmp_path / "run"
    run.mkdir()
    rows.write_parquet(run / "trials.parquet")
    suite = {"name": "s", "trial": {"dataset": "synthetic_catalog"}, "matrix": {"fusion": ["late"], "seed": [0]},
             "leaderboard": board}
    (run / "suite.yaml").write_text(yaml.safe_dump(suite))
    spec = LeaderboardSpec(**{k: v for k, v in board.items()}, title=f"Leaderboard: {suite['name']}")
    assert "config" not in columns_read(spec, rows.columns)
    text = leaderboard_for_run(run, "md")
    assert text.split("\n", 1)[1] == render_markdown(rows, spec).split("\n", 1)[1]  # title aside
    assert leaderboard_for_run(run, "csv") == render_csv(rows, spec)


def test_rows_without_a_trial_key_still_make_a_leaderboard():
    """Tables a user assembles by hand may lack trial_key: failed lines then say so."""
    rows = pl.DataFrame({"fusion": ["a", "b", "c"], "status": ["ok", "ok", "failed"], "accuracy": [0.5, 0.6, None],
                         "error": [None, None, "boom\nmore"]})
    board = render_markdown(rows, LeaderboardSpec(group_by=["fusion"]))
    assert "boom" in board and "more" not in board
    assert failed_table(rows, LeaderboardSpec(group_by=["fusion"])).row(0) == ("(no trial_key)", "fusion=c seed=None", "boom")


def test_groups_tied_on_the_sort_metric_come_in_the_order_of_their_group_values(tmp_path):
    """Ties (equal means, or no ok row at all) no longer take polars' hash order: eager and lazy agree."""
    names = ["k", "c", "j", "a", "h", "d", "i", "b", "g", "f", "e"]
    rows = pl.DataFrame({"fusion": names, "status": ["ok"] * 3 + ["failed"] * 8,
                         "accuracy": [0.5, 0.5, 0.7] + [None] * 8})
    spec = LeaderboardSpec(group_by=["fusion"], metrics=["accuracy"])
    expected = ["j", "c", "k", "a", "b", "d", "e", "f", "g", "h", "i"]
    assert leaderboard_table(rows, spec)["fusion"].to_list() == expected
    rows.write_parquet(tmp_path / "trials.parquet")
    assert leaderboard_table(pl.scan_parquet(tmp_path / "trials.parquet"), spec)["fusion"].to_list() == expected


def test_a_null_pivot_column_value_is_a_column_of_its_own():
    """Trials that left the column axis unset get a "None" column (it used to fail to sort)."""
    rows = _rows()
    headers, body = pivot_table(rows, {"rows": "fusion", "columns": "fraction", "value": "macro_f1"})
    assert headers[1:] == ["1e-05", "0.1", "0.25", "1.0", "None"]
    unset = rows.filter(pl.col("fraction").is_null() & (pl.col("status") == "ok") & (pl.col("fusion") == "late"))
    values = np.array(unset["macro_f1"].to_list(), dtype=float)
    expected = f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
    assert next(line for line in body if line[0] == "late")[-1] == expected


@pytest.mark.parametrize("values,stds", [
    ([0.5, 0.123456, 1e6, -0.0005], [0.01, 0.2, 0.0, 1.5]),  # every cell on the one-call path
    ([0.5, None, float("nan"), 0.25], [0.01, 0.2, 0.3, None]),  # missing means and spreads
    ([0.5, float("inf"), float("-inf")], [float("nan"), 0.1, 0.2]),
    ([], []),
])
def test_a_column_of_cells_reads_as_each_value_written_alone(values, stds):
    """Cells written a column at a time are the text of each value formatted on its own."""
    from bench.reporting.leaderboard import _fmt, _fmt_column, _thousands

    table = pl.DataFrame({"m": pl.Series(values, dtype=pl.Float64), "m_std": pl.Series(stds, dtype=pl.Float64)})
    assert _fmt_column(table, "m", "m_std") == [_fmt(v, s) for v, s in zip(values, stds)]
    assert _fmt_column(table, "m", digits=1) == [_fmt(v, None, 1) for v in values]
    for counts in ([12345.9, 7.0, 1e9], [12345.9, None], []):  # parameter counts: truncated, thousands marked
        assert _thousands(counts) == [f"{int(v):,}" if v is not None else "-" for v in counts]


def test_every_column_the_legacy_upgrade_touches_passes_the_name_check():
    """columns_read skips the upgrade's own column list when no wanted name could be one of them."""
    from bench.metrics.retrieval_columns import legacy_columns
    from bench.reporting.leaderboard import _MAY_BE_LEGACY

    names = ["accuracy", "ndcg@10", "map@10", "map@5", "mrr@5", "p@10", "p@5", "f1", "f1_all", "f1_note",
             "f1_threshold", "pair_f1", "macro_f1", "recall@1", "mar@10"]
    for i in range(len(names)):  # each name left out in turn, so the upgrade sees other combinations
        some = names[:i] + names[i + 1:]
        touched = legacy_columns(some)
        assert touched and all(_MAY_BE_LEGACY.fullmatch(c) for c in touched)
    assert not any(_MAY_BE_LEGACY.fullmatch(c) for c in ["accuracy", "macro_f1", "pair_f1", "ndcg@10", "recall@1"])


def test_pivot_cells_equal_a_plain_loop(tmp_path):
    """Each pivot cell is the mean ± std of the value over the ok rows of its row and column values;
    a scan gives the same tables, also where a column value is NaN."""
    from bench.reporting.leaderboard import pivot_tables

    rows = _rows()
    pivot = {"rows": "fusion", "columns": "flag", "value": "macro_f1", "extra_values": ["accuracy", "absent"]}
    tables = pivot_tables(rows, pivot)
    assert [v for v, _, _ in tables] == ["macro_f1", "accuracy", "absent"] and tables[2][1:] == ([], [])
    for value, headers, body in tables[:2]:
        assert headers == [f"fusion \\ flag ({value})", "False", "True"]
        for line in body:
            for flag, cell in zip([False, True], line[1:]):
                ok = rows.filter((pl.col("fusion") == line[0]) & (pl.col("flag") == flag) & (pl.col("status") == "ok"))
                values = np.array([v for v in ok[value].to_list() if v is not None], dtype=float)
                assert cell == (f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else
                                f"{values.mean():.3f}" if len(values) else "-")
    with_nan = rows.with_columns(pl.when(pl.col("seed") == 0).then(float("nan")).otherwise(pl.col("fraction")).alias("fraction"))
    path = tmp_path / "rows.parquet"
    with_nan.write_parquet(path)
    for frame in (rows, with_nan):
        frame.write_parquet(path)
        pivot = {"rows": "fusion", "columns": "fraction", "value": "accuracy"}
        assert pivot_tables(frame, pivot) == pivot_tables(pl.scan_parquet(path), pivot)
