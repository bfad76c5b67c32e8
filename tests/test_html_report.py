"""The self-contained HTML leaderboard: tables, notes and every plot inlined as a PNG data URI."""
from __future__ import annotations

import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from bench.reporting.plots import render_plots
from bench.reporting.write import leaderboard_for_run, run_leaderboard_spec
from bench.reporting.results import load_run
from conftest import run_bench
from report_runs import N_LABELS, noisy_predictions, suite_copy, trial, write_run


class PageParser(HTMLParser):
    """Collects tables (header and body cells), images and every URL-bearing attribute."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self.images: list[dict] = []
        self.urls: list[str] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag == "table":
            self.tables.append({"header": [], "rows": []})
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attrs)
        elif tag in ("h1", "h2"):
            self._in_heading = True
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            table = self.tables[-1]
            if table["header"]:
                table["rows"].append(self._row)
            else:
                table["header"] = self._row
            self._row = None
        elif tag in ("h1", "h2"):
            self._in_heading = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_heading:
            self.headings[-1] += data


def _parse(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    parser.close()
    return parser


@pytest.fixture
def ssl_run(tmp_path):
    true = np.random.default_rng(0).integers(0, N_LABELS, 90)
    trials = [trial(f"{m}-{f}-{s}", {"method": m, "finetune_fraction": f}, s, true,
                    noisy_predictions(true, base + f / 3, 100 * s + 10 * i + j))
              for i, (m, base) in enumerate((("origin", 0.3), ("convirt", 0.5)))
              for j, f in enumerate((0.1, 1.0)) for s in (0, 1)]
    suite = suite_copy("ssl", {"method": ["origin", "convirt"], "finetune_fraction": [0.1, 1.0], "seed": [0, 1]},
                       group_by=["method", "finetune_fraction"], metrics=["accuracy", "macro_f1"],
                       pivot={"rows": "method", "columns": "finetune_fraction", "value": "accuracy"})
    return write_run(tmp_path / "ssl", trials, suite)


def test_html_page_has_tables_notes_and_one_png_per_plot(ssl_run):
    page = leaderboard_for_run(ssl_run, "html")
    doc = _parse(page)
    board, cost, intervals, pivot = doc.tables
    assert board["header"][:3] == ["rank", "method", "finetune_fraction"]
    assert board["header"][3:] == ["accuracy", "macro_f1", "≈best", "n", "failed"]
    assert len(board["rows"]) == 4 and all(len(r) == len(board["header"]) for r in board["rows"])
    assert board["rows"][0][board["header"].index("≈best")] == "best"
    # the secondary tables: led by the same rank and groups, in the same row order
    assert cost["header"][:3] == intervals["header"][:3] == board["header"][:3]
    assert [r[:3] for r in cost["rows"]] == [r[:3] for r in intervals["rows"]] == [r[:3] for r in board["rows"]]
    assert cost["header"][3:] == ["train_samples_per_s", "wall_s", "n_params"]
    assert intervals["header"][3:] == ["accuracy 95% CI", "macro_f1 95% CI"]
    assert '<details open><summary>Cost' in page and "<details><summary>95% bootstrap intervals" in page
    assert pivot["header"][0] == "method \\ finetune_fraction (accuracy)" and len(pivot["rows"]) == 2
    assert doc.headings[0] == "ssl leaderboard" and "paired over the same test items" in page and "at most 5% of leaderboards" in page

    _, rows = load_run(ssl_run)
    expected = render_plots(rows, run_leaderboard_spec(ssl_run, rows))
    assert len(doc.images) == len(expected) >= 4
    assert {img["alt"] for img in doc.images} == {name.removesuffix(".png") for name in expected}
    for img in doc.images:
        head, _, payload = img["src"].partition(",")
        assert head == "data:image/png;base64"
        png = base64.b64decode(payload, validate=True)
        with Image.open(io.BytesIO(png)) as decoded:
            assert decoded.format == "PNG" and decoded.width > 300
    assert all(url.startswith("data:") for url in doc.urls)  # nothing to fetch: readable offline


def test_cli_writes_the_html_page_to_a_file(ssl_run, tmp_path):
    out = tmp_path / "board.html"
    proc = run_bench("leaderboard", ssl_run, "--format", "html", "--output", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = _parse(out.read_text(encoding="utf-8"))
    assert len(doc.tables) == 4 and len(doc.images) >= 4


def test_failed_trials_are_listed_with_their_error_escaped(tmp_path):
    true = np.random.default_rng(1).integers(0, N_LABELS, 40)
    run = write_run(tmp_path / "run", [trial("ok0", {"fusion": "late"}, 0, true, noisy_predictions(true, 0.6, 1))],
                    suite_copy("f", {"fusion": ["late", "gated"]}),
                    failed=[{"key": "bad0", "axes": {"fusion": "gated"}, "error": "ValueError: <script>x</script>\nmore"}])
    page = leaderboard_for_run(run, "html")
    doc = _parse(page)
    assert "Failed trials" in doc.headings
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page and "more" not in page
    board = doc.tables[0]
    gated = next(r for r in board["rows"] if r[1] == "gated")
    assert gated[board["header"].index("failed")] == "1" and gated[board["header"].index("n")] == "0"


def test_reference_figures_sit_beside_their_column_and_are_described_as_the_suite_says(tmp_path):
    from bench.reporting.leaderboard import LeaderboardSpec, render_html, render_markdown
    from report_runs import matching_run

    run = matching_run(tmp_path / "m", {"omni": [0.9, 0.8], "triplet": [0.6, 0.62]})
    _, rows = load_run(run)
    source = "figures from our own earlier run on the same split"
    spec = LeaderboardSpec(group_by=["method"], sort="f1", metrics=["f1", "ndcg@10", "p@10"],
                           reference={"omni": {"p@10": 0.5, "macro_f1_B": 0.7}}, reference_source=source)
    text = render_markdown(rows, spec)
    header = [c.strip() for c in next(l for l in text.splitlines() if l.startswith("| ")).strip("|").split("|")]
    assert header.index("p@10 (reference)") == header.index("p@10") + 1  # beside the column it matches
    assert header.index("macro_f1_B (reference)") > header.index("p@10 (reference)")  # no such column: after
    assert f"as the suite states it: {source}" in text
    assert "published" not in text and "other data" not in text  # nothing the suite did not say
    page = PageParser()
    page.feed(render_html(rows, spec))
    main, *_, references = page.tables
    assert "p@10 (reference)" not in main["header"]  # the main table keeps to the ranking
    assert references["header"] == ["rank", "method", "p@10 (reference)", "macro_f1_B (reference)"]
    assert source in render_html(rows, spec)
    bare = render_markdown(rows, LeaderboardSpec(group_by=["method"], reference={"omni": {"f1": 0.5}}))
    assert "the suite states no source" in bare


def test_terminal_table_fits_the_width_and_names_what_it_left_out(tmp_path):
    from bench.reporting.write import load_predictions, terminal_leaderboard

    true = np.random.default_rng(2).integers(0, N_LABELS, 120)
    names = {"cross_modal_gated_attention": 0.9, "shallow": 0.85, "late": 0.8, "image_only": 0.55}
    run = write_run(tmp_path / "run", [trial(f"{n}-{s}", {"fusion": n}, s, true, noisy_predictions(true, a, 10 * i + s))
                                       for i, (n, a) in enumerate(names.items()) for s in (0, 1)],
                    {**suite_copy("wide", {"fusion": list(names), "seed": [0, 1]}, sort="macro_f1"),
                     "reference": {n: {"macro_f1_B": 0.7, "macro_f1_A": 0.72} for n in names}})
    _, rows = load_run(run)
    spec, predictions = run_leaderboard_spec(run, rows), load_predictions(run)
    wide = terminal_leaderboard(rows, spec, 1000, predictions)
    table_width = max(len(l) for l in wide.splitlines() if l.startswith("|"))
    assert table_width > 200 and "Left out" not in wide  # the whole table when the terminal is wide enough
    for width in (100, 160):
        text = terminal_leaderboard(rows, spec, width, predictions)
        lines = text.splitlines()
        header = [c.strip() for c in next(l for l in lines if l.startswith("| ")).strip("|").split("|")]
        assert max(map(len, lines)) <= width, width
        assert header[:2] == ["rank", "fusion"] and {"macro_f1", "≈best", "n", "failed"} <= set(header)
        note = next(l for l in text.replace("\n", " ").split("  ") if "Left out to fit" in l)
        assert "macro_f1_B (reference)" in note and "macro_f1_B (reference)" not in header
