"""Plugin discovery through the entry-point group, for built-ins and really installed packages."""
from __future__ import annotations

import json

import pytest

from bench.errors import BenchError
from bench.api.plugins import build_registry
from bench.api.registry import PluginSpec, Registry
from conftest import invoke_bench, tiny_trial


def test_builtins_come_from_the_entry_point_group(registry):
    kinds = {(s.kind, s.name): s.distribution for s in registry.all()}
    assert kinds[("dataset", "synthetic_catalog")] == "mic-bench"
    assert kinds[("fusion", "cross_modal_gated_attention")] == "mic-bench"
    assert {"text_only", "image_only", "late", "shallow", "cross_modal_gated_attention"} <= set(registry.names("fusion"))


def test_duplicate_names_name_both_distributions():
    reg = Registry()
    reg.add(PluginSpec("fusion", "late", "a", lambda o, c: None, distribution="pkg-one"))
    with pytest.raises(BenchError) as err:
        reg.add(PluginSpec("fusion", "late", "b", lambda o, c: None, distribution="pkg-two"))
    assert "pkg-one" in str(err.value) and "pkg-two" in str(err.value) and "MIC_BENCH_PLUGINS" in str(err.value)


def test_unknown_name_lists_closest(registry):
    with pytest.raises(BenchError) as err:
        registry.get("fusion", "shallw")
    assert "did you mean 'shallow'" in str(err.value)


def test_outside_package_is_discovered_and_broken_one_reported(outside_plugins):
    reg = build_registry()
    film = reg.get("fusion", "film")
    assert film.distribution == "mic-bench-film" and film.version == "0.1.0"
    assert reg.get("objective", "nan_loss").distribution == "mic-bench-faulty"
    assert any("broken" in name and "broken on purpose" in err for name, err in reg.load_errors.items())
    assert reg.distributions["mic-bench-film"] == "0.1.0"


def test_env_var_restricts_outside_plugins(outside_plugins, monkeypatch):
    monkeypatch.setenv("MIC_BENCH_PLUGINS", "mic-bench-film")
    reg = build_registry()
    assert "film" in reg.names("fusion")
    assert "nan_loss" not in reg.names("objective")
    assert "cross_entropy" in reg.names("objective")  # built-ins always load
    assert not reg.load_errors


def test_cli_plugins_json_lists_kind_name_distribution(outside_plugins, monkeypatch):
    """The real `bench plugins` in this process on a fresh entry-point scan (a fresh `bench` process
    finds the outside packages in test_suite_using_an_outside_plugin_runs_under_ray)."""
    monkeypatch.setattr("bench.api.plugins.get_registry", build_registry)
    proc = invoke_bench("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rows = {(p["kind"], p["name"]): p for p in data["plugins"]}
    assert rows[("fusion", "film")]["distribution"] == "mic-bench-film"
    assert rows[("encoder", "hf_text")]["description"]
    assert any("broken" in k for k in data["load_errors"])
    table = invoke_bench("plugins")
    assert "film" in table.stdout and "mic-bench-film 0.1.0" in table.stdout


def test_suite_using_an_outside_plugin_runs_under_ray(faults_run):
    """The outside FiLM fusion trains under Ray beside the faulty package's trials (conftest.FAULTS_MATRIX)."""
    import polars as pl

    proc, run = faults_run
    rows = pl.read_parquet(run / "trials.parquet").filter(pl.col("method") == "film")
    assert rows["status"].to_list() == ["ok"], rows["error"].to_list()
    assert json.loads(rows["config"][0])["fusion"]["name"] == "film" and rows["accuracy"].is_between(0, 1).all()
    assert json.loads(rows["plugins"][0])["mic-bench-film"] == "0.1.0"
    assert "film" in (run / "leaderboard.md").read_text()
    meta = json.loads((run / "run.json").read_text())
    assert any("broken" in name and "broken on purpose" in err for name, err in meta["plugin_load_errors"].items())
    assert proc.stderr.count("broken on purpose") == 1  # said once, by the driver


def test_plugins_name_shows_options_from_the_options_model(registry):
    from click.testing import CliRunner

    from bench.cli import cli

    result = CliRunner().invoke(cli, ["plugins", "omni", "--json"], obj={})
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)["plugins"]
    options = {o["name"]: o for o in entry["options"]}
    model = registry.get("objective", "omni").options.model_fields
    assert set(options) == set(model)
    assert options["mining"]["choices"] == ["hard", "all"] and options["mining"]["default"] == "hard"
    assert options["margin"]["bounds"] == {"gt": 0} and options["margin"]["type"] == "float"
    assert options["margin"]["description"] == model["margin"].description
    table = CliRunner().invoke(cli, ["plugins", "table"], obj={}).output
    assert "columns.title" in table and "one of: auto, csv, tsv," in table and "(required)" in table
    everything = CliRunner().invoke(cli, ["plugins", "--options"], obj={}).output
    assert all(f"{s.kind} {s.name} (" in everything for s in registry.all())
    unknown = CliRunner().invoke(cli, ["plugins", "shallw"], obj={})
    assert unknown.exit_code == 2 and "did you mean 'shallow'" in unknown.output


def test_missing_plugin_error_says_what_was_filtered_out_or_failed():
    reg = Registry(load_errors={"mic-bench-gmu:gmu": "ModuleNotFoundError: No module named 'gmu_extra'"},
                   left_out=["mic-bench-film"])
    with pytest.raises(BenchError) as err:
        reg.get("fusion", "gmu", file="s.yaml", field="trial.fusion.name")
    text = str(err.value)
    assert "mic-bench-film is left out by MIC_BENCH_PLUGINS" in text
    assert "mic-bench-gmu:gmu failed to import (ModuleNotFoundError: No module named 'gmu_extra')" in text


def test_filtered_distribution_is_named(monkeypatch):
    monkeypatch.setenv("MIC_BENCH_PLUGINS", "no-such-distribution")
    reg = build_registry()
    assert "cross_entropy" in reg.names("objective")  # built-ins always load
    outside = {ep.dist.name for ep in __import__("importlib").metadata.entry_points(group="mic_bench")
               if ep.dist is not None and ep.dist.name != "mic-bench"}
    assert set(reg.left_out) == outside


def test_create_parses_options_and_calls_the_factory(registry):
    from bench.api.interfaces import BuildContext, TaskInfo

    enc = registry.create("encoder", "hf_text", {"model": "random", "max_length": 8}, BuildContext(), field="trial.encoders.text")
    ctx = BuildContext(task=TaskInfo("classification", ["a", "b", "c"], False), encoders={"text": enc})
    fusion = registry.create("fusion", "text_only", {"hidden": 4}, ctx, field="trial.fusion")
    assert fusion.head[-1].out_features == 3
    with pytest.raises(BenchError) as err:
        registry.create("fusion", "text_only", {"hiden": 4}, ctx, field="trial.fusion", file="s.yaml")
    assert "trial.fusion.options" in str(err.value) and "hiden" in str(err.value)


def test_load_errors_are_logged_once_per_process(caplog):
    from bench.api.plugins import warn_load_errors

    reg = Registry(load_errors={"pkg-x:x": "ImportError: no module named x_extra"})
    with caplog.at_level("WARNING", logger="bench.api.plugins"):
        warn_load_errors(reg)
        warn_load_errors(reg)
    assert [r.getMessage() for r in caplog.records].count(
        "plugin pkg-x:x failed to load (its plugins are unavailable): ImportError: no module named x_extra") == 1
