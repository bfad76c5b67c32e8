"""A run never mixes catalogues: `--resume` after the data changed is refused (exit 2, before Ray),
or runs the stale trials again with `--rerun-stale` (bench/running/stale_rows.py)."""
from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
import pytest
import yaml

from bench.errors import BenchError
from conftest import tiny_trial

TEXT_ONLY = {"text": {"name": "hf_text", "options": {"model": "random", "max_length": 16}}}


def _table(path: Path, title: str = "product") -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "name", "category"])
        writer.writerows([f"i{i}", f"{title} {i}", "abc"[i % 3]] for i in range(36))


def _suite(tmp: Path, seeds: list[int]) -> Path:
    options = {"path": str(tmp / "items.csv"), "columns": {"id": "id", "title": "name", "label": "category"}}
    trial = tiny_trial(dataset={"name": "table", "options": options}, encoders=TEXT_ONLY)
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "catalogue", "trial": trial, "matrix": {"seed": seeds}}))
    return path


def _load(tmp: Path, registry, seeds: list[int]):
    from bench.config.suite import load_suite
    from bench.running.preflight import preflight

    loaded = load_suite(_suite(tmp, seeds), registry)
    return loaded, preflight(loaded, registry)


def test_resume_after_the_data_changed_is_refused_and_reruns_stale_trials_on_request(tmp_path, registry, ray_session):
    from bench.running.runner import check_catalogues, run_suite

    _table(tmp_path / "items.csv")
    loaded, datasets = _load(tmp_path, registry, [0])
    first = run_suite(loaded, registry, out=tmp_path / "results", quiet=True, datasets=datasets)
    assert first.ok == 1, first.rows.get_column("error").to_list()
    old = first.rows["data_fingerprint"][0]

    _table(tmp_path / "items.csv", title="item")  # the same path, other titles: the trial key is unchanged
    loaded, datasets = _load(tmp_path, registry, [0, 1])  # and a seed added
    assert loaded.trials[0].key == first.rows["trial_key"][0]
    for call in (lambda: check_catalogues(loaded, out=tmp_path / "results", resume=True, run_dir=None,
                                          datasets=datasets),
                 lambda: run_suite(loaded, registry, out=tmp_path / "results", resume=True, quiet=True,
                                   datasets=datasets)):
        with pytest.raises(BenchError) as err:
            call()
        assert "the data changed since 1 finished trial(s) of this run were recorded" in err.value.message
        assert "--rerun-stale" in err.value.fix and "without --resume" in err.value.fix
    assert pl.read_parquet(first.run_dir / "trials.parquet").height == 1  # nothing ran, nothing was dropped

    again = run_suite(loaded, registry, out=tmp_path / "results", resume=True, quiet=True, datasets=datasets,
                      rerun_stale=True)
    assert again.run_dir == first.run_dir and again.kept == 0 and again.ok == 2
    fingerprints = set(again.rows["data_fingerprint"].to_list())
    assert len(fingerprints) == 1 and old not in fingerprints


def test_rows_of_the_same_catalogue_are_kept(tmp_path, registry):
    """The check reads only the rows: a run whose data is unchanged resumes as before."""
    from bench.reporting.results import RunDir
    from bench.running.stale_rows import stale_trials

    _table(tmp_path / "items.csv")
    loaded, datasets = _load(tmp_path, registry, [0, 1])
    fingerprint = next(iter(datasets.values()))["fingerprint"]
    run = RunDir(tmp_path / "run")
    specs = {t.key: t for t in loaded.trials}
    keys = list(specs)
    run.write_row({"trial_key": keys[0], "status": "ok", "data_fingerprint": fingerprint})
    run.write_row({"trial_key": keys[1], "status": "failed", "data_fingerprint": "other"})  # runs again anyway
    assert stale_trials(run, specs, datasets) == {}
    run.write_row({"trial_key": keys[1], "status": "ok", "data_fingerprint": "other"})
    assert stale_trials(run, specs, datasets) == {keys[1]: ("other", fingerprint)}
