"""Suite files: valid ones expand into the right matrix; bad ones fail early with a clear message."""
from __future__ import annotations

import pytest
import yaml

from bench.errors import BenchError
from bench.config.suite import load_suite
from conftest import tiny_trial


def _suite(**over):
    base = {"name": "t", "trial": tiny_trial(), "matrix": {"fusion": ["text_only", "image_only"], "seed": [0, 1]}}
    base.update(over)
    return base


def test_matrix_expands_to_every_combination(write_suite, registry):
    loaded = load_suite(write_suite(_suite()), registry)
    assert [t.axes for t in loaded.trials] == [
        {"fusion": "text_only", "seed": 0}, {"fusion": "text_only", "seed": 1},
        {"fusion": "image_only", "seed": 0}, {"fusion": "image_only", "seed": 1}]
    assert len({t.key for t in loaded.trials}) == 4
    assert loaded.trials[2].config["fusion"]["name"] == "image_only"


def test_named_override_axis_and_dotted_path_axis(write_suite, registry):
    suite = _suite(matrix={
        "method": {"short": {"stages": [{"epochs": 1}]}, "long": {"stages": [{"epochs": 3}]}},
        "stages.0.batch_size": [8, 16]})
    loaded = load_suite(write_suite(suite), registry)
    combos = {(t.axes["method"], t.axes["stages.0.batch_size"]): t.config["stages"][0] for t in loaded.trials}
    assert combos[("long", 8)]["epochs"] == 3 and combos[("long", 8)]["batch_size"] == 8
    assert combos[("short", 16)]["epochs"] == 1 and combos[("short", 16)]["batch_size"] == 16


def test_search_space_is_sampled_deterministically(write_suite, registry):
    suite = _suite(matrix={"seed": [0]},
                   search={"space": {"stages.0.optimizer.lr": {"loguniform": [1e-5, 1e-2]},
                                     "stages.0.batch_size": {"grid": [8, 16]}}, "samples": 3, "seed": 7})
    a = load_suite(write_suite(suite), registry)
    b = load_suite(write_suite(suite, name="again.yaml"), registry)
    assert len(a.trials) == 6
    lrs = [t.config["stages"][0]["optimizer"]["lr"] for t in a.trials]
    assert lrs == [t.config["stages"][0]["optimizer"]["lr"] for t in b.trials]
    assert all(1e-5 <= lr <= 1e-2 for lr in lrs) and len(set(lrs)) == 3


def test_include_merges_shared_parts(write_suite, registry, tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"trial": tiny_trial(fusion="image_only")}))
    path = write_suite({"name": "inc", "include": "base.yaml", "matrix": {"seed": [3]}})
    loaded = load_suite(path, registry)
    assert loaded.trials[0].config["fusion"]["name"] == "image_only"
    assert loaded.trials[0].config["seed"] == 3


def test_subset_is_recorded_in_every_trial(write_suite, registry):
    loaded = load_suite(write_suite(_suite()), registry, subset=20)
    assert {t.config["subset"] for t in loaded.trials} == {20}


BAD_SUITES = [
    # (description, suite dict or raw YAML text, words the message must contain)
    ("unknown fusion with close match", _suite(matrix={"fusion": ["text_onyl"]}),
     ["unknown fusion plugin 'text_onyl'", "trial.fusion.name", "did you mean 'text_only'"]),
    ("unknown objective", _suite(trial=tiny_trial(stages=[{"objectives": ["cross_entropi"]}])),
     ["unknown objective plugin 'cross_entropi'", "stages[0].objectives[0].name", "cross_entropy"]),
    ("unknown dataset", _suite(trial=tiny_trial(dataset={"name": "nope"})),
     ["unknown dataset plugin 'nope'", "trial.dataset.name", "synthetic_catalog"]),
    ("misspelled top-level field", {**_suite(), "matirx": {}},
     ["matirx", "unknown field", "allowed:", "matrix"]),
    ("misspelled trial field", _suite(trial={**tiny_trial(), "stagess": []}),
     ["trial.stagess", "unknown field", "stages"]),
    ("bad literal", _suite(trial=tiny_trial(task="ranking")),
     ["trial.task", "classification", "matching"]),
    ("negative learning rate", _suite(trial=tiny_trial(stages=[{"optimizer": {"lr": -1}}])),
     ["trial.stages[0].optimizer.lr", "greater than 0"]),
    ("bad plugin option", _suite(trial=tiny_trial(fusion={"name": "text_only", "options": {"dropout": 2}}),
                                 matrix={"seed": [0]}),
     ["trial.fusion.options", "dropout", "less than 1"]),
    ("unknown plugin option", _suite(trial=tiny_trial(fusion={"name": "late", "options": {"alpah": 0.3}}),
                                     matrix={"seed": [0]}),
     ["trial.fusion.options", "alpah", "allowed options"]),
    ("missing name", {"trial": tiny_trial()}, ["name", "required field is missing"]),
    ("missing trial", {"name": "x"}, ["trial", "required field is missing"]),
    ("empty matrix axis", _suite(matrix={"seed": []}), ["matrix.seed", "at least one value"]),
    ("bad yaml", "name: x\ntrial: [unclosed\n", ["not valid YAML", "line"]),
    ("not a mapping", "- just\n- a list\n", ["YAML mapping"]),
    ("bad suite name", _suite(name="has spaces"), ["name", "pattern"]),
    ("duplicate trials", _suite(matrix={"seed": [1, 1]}), ["same trial", "matrix"]),
    ("bad finetune fraction", _suite(matrix={"finetune_fraction": [0.5, 1.5]}),
     ["finetune_fraction", "less than or equal to 1"]),
    ("bad resources", _suite(resources={"cpu": 0}), ["resources.cpu", "greater than 0"]),
    ("bad list index in axis", _suite(matrix={"stages.5.epochs": [1]}), ["matrix.stages.5.epochs", "index"]),
    ("unknown search distribution", _suite(search={"space": {"seed": {"gaussian": [0, 1]}}}),
     ["search.space.seed", "gaussian"]),
    ("supervised objective on train+ssl",
     _suite(trial=tiny_trial(stages=[{"data": "train+ssl", "objectives": ["cross_entropy"]}]), matrix={"seed": [0]}),
     ["trial.stages[0].data", "'cross_entropy', which needs labels", "data: train+ssl", "set data: train", "simcse"]),
    ("default objective on the ssl split",
     _suite(trial=tiny_trial(stages=[{"name": "adapt", "data": "ssl"}, {"name": "finetune"}]), matrix={"seed": [0]}),
     ["trial.stages[0].data", "stage 'adapt' trains 'cross_entropy'", "data: ssl"]),
    ("image-text matching on late fusion",
     _suite(trial=tiny_trial(fusion="late", stages=[{"objectives": ["cross_entropy", "itm"]}]), matrix={"seed": [0]}),
     ["trial.stages[0].objectives[1].name", "'itm'", "fusion 'late'", "cannot tell a matching pair",
      "cross_modal_gated_attention, single_stream_head"]),
    ("image-text matching on a unimodal fusion, from a matrix axis",
     _suite(trial=tiny_trial(stages=[{"objectives": ["itm"]}]), matrix={"fusion": ["cross_modal_gated_attention",
                                                                                     "text_only"]}),
     ["trial.stages[0].objectives[0].name", "fusion 'text_only' reads one modality only", "(in the trial fusion=text_only)"]),
]


@pytest.mark.parametrize("case", BAD_SUITES, ids=[c[0] for c in BAD_SUITES])
def test_bad_suite_is_rejected_with_a_clear_message(case, write_suite, registry):
    _, content, words = case
    path = write_suite(content)
    with pytest.raises(BenchError) as err:
        load_suite(path, registry)
    text = err.value.render()
    assert str(path) in text
    for word in words:
        assert word in text, f"{word!r} not in {text!r}"
    assert "fix:" in text or "allowed" in text


def test_missing_suite_file(registry, tmp_path):
    with pytest.raises(BenchError) as err:
        load_suite(tmp_path / "nope.yaml", registry)
    assert "suite file not found" in err.value.render() and "nope.yaml" in err.value.render()


def test_shipped_suites_validate(registry):
    from pathlib import Path

    suites = sorted(Path(__file__).resolve().parents[1].glob("suites/**/*.yaml"))
    assert suites
    for path in suites:
        loaded = load_suite(path, registry)
        assert loaded.trials, path


@pytest.mark.parametrize("fusion", ["late", "late_avg_embedding", "shallow", "text_only", "image_only"])
def test_image_text_matching_refusal_recommends_only_fusions_that_mix_title_and_image(fusion, write_suite, registry):
    with pytest.raises(BenchError) as err:
        load_suite(write_suite(_suite(trial=tiny_trial(fusion=fusion, stages=[{"objectives": ["itm"]}]),
                                      matrix={"seed": [0]})), registry)
    fix = err.value.fix
    assert "cross_modal_gated_attention" in fix and "single_stream_head" in fix
    assert not any(name in fix for name in ("late", "shallow", "text_only", "image_only")), fix


def test_pair_scoring_and_self_supervised_ssl_stages_validate(write_suite, registry):
    joint = {"name": "single_stream", "options": {"model": "random", "img_size": 32, "patch_size": 16}}
    suite = _suite(trial=tiny_trial(stages=[{"name": "adapt", "data": "ssl", "objectives": ["simcse"]},
                                            {"name": "mix", "data": "train+ssl", "objectives": ["itm", "triplet"]},
                                            {"name": "finetune", "objectives": ["cross_entropy", "itm"]}]),
                   matrix={"method": {"cmga": {"fusion": "cross_modal_gated_attention"},
                                      "joint": {"fusion": "single_stream_head", "encoders": {"joint": joint}}}})
    loaded = load_suite(write_suite(suite), registry)
    assert [t.axes["method"] for t in loaded.trials] == ["cmga", "joint"]


def _outside_fusion(declared):
    from bench.api.interfaces import IMAGE, TEXT, Fusion
    from bench.api.registry import PluginSpec

    class OutsideFusion(Fusion):  # the class is the factory: what it declares is known without building it
        requires = frozenset({TEXT, IMAGE})
        mixes_modalities = declared

        def __init__(self, opts=None, ctx=None):
            super().__init__()

    return PluginSpec("fusion", f"outside_{declared}".lower(), "an outside fusion", OutsideFusion)


@pytest.mark.parametrize("declared", [False, None])
def test_image_text_matching_follows_what_an_outside_fusion_declares(declared, write_suite):
    """A fusion that declares its title and image stay apart is refused with itm; one that declares
    nothing is not (its author did not say), so no built-in name list decides."""
    import copy

    from bench.api.plugins import get_registry

    registry = copy.deepcopy(get_registry())
    spec = _outside_fusion(declared)
    registry.add(spec)
    path = write_suite(_suite(trial=tiny_trial(fusion=spec.name, stages=[{"objectives": ["itm"]}]), matrix={"seed": [0]}))
    if declared is False:
        with pytest.raises(BenchError, match=f"fusion '{spec.name}' builds it from the title and the image separately"):
            load_suite(path, registry)
    else:
        assert load_suite(path, registry).trials


def test_objective_needs_are_known_without_building_the_objective(registry):
    from bench.api.registry import PluginSpec
    from bench.config.trial_checks import objective_needs

    assert objective_needs(registry.get("objective", "cross_entropy")) == {"labels"}
    assert "labels" not in objective_needs(registry.get("objective", "simcse"))
    assert objective_needs(PluginSpec("objective", "x", "", lambda opts, ctx: None)) is None  # unknown: not refused


# ---- matrix semantics: a plugin axis value replaces the whole {name, options} of its slot -------------

def _configs(write_suite, registry, trial, matrix):
    loaded = load_suite(write_suite({"name": "t", "trial": trial, "matrix": matrix}), registry)
    return {t.axes[next(iter(matrix))]: t.config for t in loaded.trials}


def test_shorthand_plugin_axis_carries_no_options_over(write_suite, registry):
    trial = tiny_trial(fusion={"name": "shallow", "options": {"hidden": 8, "dropout": 0.3}})
    configs = _configs(write_suite, registry, trial, {"fusion": ["shallow", "late"]})
    assert configs["late"]["fusion"] == {"name": "late", "options": {}}
    assert configs["shallow"]["fusion"] == {"name": "shallow", "options": {}}  # the axis value, as written


def test_shorthand_plugin_axis_takes_name_and_options(write_suite, registry):
    matrix = {"fusion": ["text_only", {"name": "shallow", "options": {"hidden": 8}},
                         {"name": "shallow", "options": {"hidden": 32}, "label": "shallow_wide"}]}
    configs = _configs(write_suite, registry, tiny_trial(), matrix)
    assert set(configs) == {"text_only", "shallow", "shallow_wide"}
    assert configs["shallow"]["fusion"] == {"name": "shallow", "options": {"hidden": 8}}
    assert configs["shallow_wide"]["fusion"] == {"name": "shallow", "options": {"hidden": 32}}
    encoders = _configs(write_suite, registry, tiny_trial(), {"text_encoder": [
        {"name": "hf_text", "options": {"model": "random", "max_length": 8}}]})
    assert encoders["hf_text"]["encoders"]["text"]["options"] == {"model": "random", "max_length": 8}


@pytest.mark.parametrize("value, words", [
    ([{"name": "shallow"}, {"name": "shallow", "options": {"hidden": 8}}], ["matrix.fusion", "label 'shallow'", "label:"]),
    ([{"name": "late", "optons": {}}], ["matrix.fusion[0]", "optons"]),
    ([{"options": {}}], ["matrix.fusion[0]", "name"]),
    ([3], ["matrix.fusion[0]", "plugin name"]),
])
def test_bad_plugin_axis_values_are_refused(write_suite, registry, value, words):
    with pytest.raises(BenchError) as err:
        load_suite(write_suite({"name": "t", "trial": tiny_trial(), "matrix": {"fusion": value}}), registry)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_named_axis_naming_a_plugin_replaces_its_slot(write_suite, registry):
    trial = tiny_trial(fusion={"name": "shallow", "options": {"hidden": 8, "dropout": 0.3}})
    matrix = {"method": {"same": {}, "other": {"fusion": {"name": "late", "options": {"alpha_grid_step": 0.1}}},
                         "bare": {"fusion": "text_only"}}}
    configs = _configs(write_suite, registry, trial, matrix)
    assert configs["same"]["fusion"] == {"name": "shallow", "options": {"hidden": 8, "dropout": 0.3}}
    assert configs["other"]["fusion"] == {"name": "late", "options": {"alpha_grid_step": 0.1}}
    assert configs["bare"]["fusion"] == {"name": "text_only", "options": {}}


def test_validate_show_config_prints_each_trials_resolved_config(write_suite):
    import yaml
    from click.testing import CliRunner

    from bench.cli import cli

    path = write_suite(_suite(matrix={"fusion": ["text_only", {"name": "shallow", "options": {"hidden": 8}}]}))
    result = CliRunner().invoke(cli, ["validate", str(path), "--show-config"], obj={})
    assert result.exit_code == 0, result.output
    blocks: dict[str, list[str]] = {}
    for line in result.output.splitlines()[1:]:
        if not line.startswith("    "):
            blocks[line.split()[1]] = []
        else:
            blocks[list(blocks)[-1]].append(line[4:])
    assert list(blocks) == ["fusion=text_only", "fusion=shallow"]
    shallow = yaml.safe_load("\n".join(blocks["fusion=shallow"]))
    assert shallow["fusion"]["options"] == {"hidden": 8, "dropout": 0.1, "norm": True}  # defaults filled in
    assert shallow["encoders"]["text"]["name"] == "hf_text"


SUITE_TEXT = """\
name: parsers
base: &base {lr: 1.0e-4, eps: .inf, missing: .nan, flag: yes, day: 2024-05-01, octal: 0o17, plain: 1e3}
trial:
  <<: *base
  note: |
    two
    lines
  folded: >-
    one
    line
  quoted: "tab\\there \\u00e9"
matrix:
  fusion: [late, 'shallow', "text_only"]
  seed: [0, 1]
"""


@pytest.mark.skipif(getattr(yaml, "CSafeLoader", None) is None, reason="PyYAML without libyaml")
def test_libyaml_reads_a_suite_as_pyyaml_does(tmp_path):
    """Suites are parsed by libyaml when PyYAML has it; the document must be PyYAML's own."""
    from bench.config.yaml_files import FAST_LOADER, _load_bounded, load_yaml_bounded

    path = tmp_path / "suite.yaml"
    fast, plain = (_load_bounded(SUITE_TEXT, path, cls) for cls in (FAST_LOADER, yaml.SafeLoader))
    assert repr(fast) == repr(plain) == repr(load_yaml_bounded(SUITE_TEXT, path))
    assert fast["trial"]["lr"] == 1e-4 and fast["trial"]["note"] == "two\nlines\n" and fast["trial"]["flag"] is True


@pytest.mark.parametrize("loader", ["libyaml", "pure"])
def test_repeated_keys_are_refused_by_both_parsers_and_merge_keys_are_not(loader, tmp_path, monkeypatch):
    from bench.config import yaml_files

    if loader == "pure":
        monkeypatch.setattr(yaml_files, "FAST_LOADER", None)
    elif yaml_files.FAST_LOADER is None:
        pytest.skip("PyYAML without libyaml")
    merged = yaml_files.load_yaml_bounded("base: &b {epochs: 1, lr: 2}\nstage:\n  <<: *b\n  epochs: 3\n", tmp_path)
    assert merged["stage"] == {"epochs": 3, "lr": 2}
    assert yaml_files.load_yaml_bounded("a: 1\n'1': x\n1: y\n", tmp_path) == {"a": 1, "1": "x", 1: "y"}
    with pytest.raises(BenchError) as info:
        yaml_files.load_yaml_bounded("name: x\nstages:\n  - epochs: 1\n    lr: 2\n    epochs: 3\n", tmp_path)
    assert "the key 'epochs' appears twice in one mapping (lines 3 and 5)" in info.value.message
    assert info.value.field == "line 5"


def test_includes_are_bounded_in_number_not_only_in_cycles(tmp_path, registry):
    from bench.config.yaml_files import MAX_INCLUDED_FILES

    (tmp_path / "shared.yaml").write_text("description: shared\n")
    for many in (MAX_INCLUDED_FILES, MAX_INCLUDED_FILES + 1):
        (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "x", "trial": tiny_trial()})
                                         + "include: [" + ", ".join(["shared.yaml"] * many) + "]\n")
        if many == MAX_INCLUDED_FILES:
            assert load_suite(tmp_path / "s.yaml", registry).suite.description == "shared"
        else:
            with pytest.raises(BenchError, match=f"the includes read more than {MAX_INCLUDED_FILES} files"):
                load_suite(tmp_path / "s.yaml", registry)


def test_leaderboard_names_are_checked_against_axes_and_metrics(tmp_path, registry):
    def suite_with(leaderboard: dict):
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump({"name": "x", "trial": tiny_trial(), "matrix": {"fusion": ["text_only", "late"]},
                                        "leaderboard": leaderboard}))
        return path

    # a value a plugin reports in its rows (a fitted weight) may be shown; a misspelt metric may not
    assert load_suite(suite_with({"metrics": ["accuracy", "ndcg@5", "dev_macro_f1", "hybrid_weight"]}), registry)
    for board, field in (({"metrics": ["acuracy"]}, "leaderboard.metrics[0]"), ({"sort": "hybrid_weight"}, "leaderboard.sort"),
                         ({"group_by": ["fuson"]}, "leaderboard.group_by[0]"),
                         ({"pivot": {"rows": "fusion", "columns": "sed"}}, "leaderboard.pivot.columns")):
        with pytest.raises(BenchError) as info:
            load_suite(suite_with(board), registry)
        assert info.value.field == field


FINETUNE = {"name": "finetune", "objectives": ["cross_entropy"], "epochs": 3, "batch_size": 16,
            "optimizer": {"lr": 0.002, "head_lr": 0.01}}


def _stages(spec) -> list[tuple]:
    return [(s["name"], s["epochs"], s["batch_size"], s["optimizer"]["lr"], s["optimizer"]["head_lr"])
            for s in spec.config["stages"]]


def test_a_matrix_stage_list_merges_into_the_trial_stages_by_name(write_suite, registry):
    """A named value's `stages:` decides which stages run, in its order; a stage named like one of
    the trial's keeps every field the value leaves out (epochs, lr); a new name is taken as written."""
    suite = write_suite(_suite(trial=tiny_trial(stages=[FINETUNE]), matrix={"method": {
        "plain": {},
        "adapted": {"stages": [{"name": "adapt", "objectives": ["cross_entropy"], "epochs": 1},
                               {"name": "finetune", "batch_size": 8}]}}}))
    trials = {t.axes["method"]: t for t in load_suite(suite, registry).trials}
    assert _stages(trials["plain"]) == [("finetune", 3.0, 16, 0.002, 0.01)]
    adapt, finetune = _stages(trials["adapted"])
    assert finetune == ("finetune", 3.0, 8, 0.002, 0.01)  # only batch_size changed
    assert adapt[:3] == ("adapt", 1.0, 32) and adapt[3] != 0.002  # a new stage: its own defaults


def test_a_stages_axis_of_lists_merges_by_name_too(write_suite, registry):
    suite = write_suite(_suite(trial=tiny_trial(stages=[FINETUNE]),
                               matrix={"stages": [[{"name": "finetune", "epochs": 1}], [{"name": "finetune"}]]}))
    epochs = sorted(_stages(t)[0][1:] for t in load_suite(suite, registry).trials)
    assert epochs == [(1.0, 16, 0.002, 0.01), (3.0, 16, 0.002, 0.01)]


@pytest.mark.parametrize("matrix, field, trial_field", [
    ({"method": {"fine": {}, "bad": {"stages": [{"name": "finetune", "epochs": -1}]}}},
     "matrix.method.bad.stages[0].epochs", "trial.stages[0].epochs"),
    ({"fusion": ["text_only", {"name": "shallow", "options": {"hiden": 3}}]}, "matrix.fusion[1].options",
     "trial.fusion.options"),
    ({"stages.0.optimizer.lr": [0.1, -1.0]}, "matrix.stages.0.optimizer.lr[1]", "trial.stages[0].optimizer.lr"),
])
def test_an_error_inside_a_matrix_entry_names_the_entry(write_suite, registry, matrix, field, trial_field):
    suite = write_suite(_suite(trial=tiny_trial(stages=[FINETUNE]), matrix=matrix))
    with pytest.raises(BenchError) as err:
        load_suite(suite, registry)
    assert err.value.field == field and err.value.file == str(suite)
    assert trial_field in err.value.message and "(in the trial " in err.value.message


def test_an_error_in_the_trial_itself_still_names_the_trial_field(write_suite, registry):
    trial = tiny_trial(stages=[FINETUNE], fusion={"name": "shallow", "options": {"hiden": 3}})
    with pytest.raises(BenchError) as err:
        load_suite(write_suite(_suite(trial=trial, matrix={"seed": [0, 1]})), registry)
    assert err.value.field == "trial.fusion.options"
