"""Leaderboards for a stored run folder."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.leaderboard import LeaderboardSpec, render_csv, render_html, render_markdown, spec_from_suite
from bench.results import load_run


def run_leaderboard_spec(run_dir: Path, rows) -> LeaderboardSpec:
    """The leaderboard settings of the suite as it was run (its copy in the run folder)."""
    suite_copy = Path(run_dir) / "suite.yaml"
    if suite_copy.exists():
        from bench.suite import Suite, _with_includes

        raw = _with_includes(suite_copy)
        try:
            return spec_from_suite(Suite.model_validate(raw))
        except Exception:
            pass
    axes = [c for c in rows.columns if c not in ("trial_key",)][:1]
    return LeaderboardSpec(group_by=axes)


def leaderboard_for_run(run_dir: str | Path, fmt: str = "md", group_by: list[str] | None = None,
                        sort: str | None = None) -> str:
    run, rows = load_run(run_dir)
    spec = run_leaderboard_spec(run.path, rows)
    if group_by:
        spec = replace(spec, group_by=group_by)
    if sort:
        spec = replace(spec, sort=sort)
    if fmt == "csv":
        return render_csv(rows, spec)
    if fmt == "html":
        return render_html(rows, spec)
    return render_markdown(rows, spec)
