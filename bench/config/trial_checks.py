"""Trial settings that validate field by field but make no sense together, refused at suite load.

- A stage that reads the ssl split (``data: ssl`` or ``train+ssl``) may not use an objective that
  needs labels: the ssl split stands for unlabeled listings, and the trial hides its labels.
- Image-text matching (an objective with ``scores_title_image_pairs``: itm, vtm) scores a (title,
  image) pair with a linear head on the fusion's multimodal vector. A fusion that declares
  ``mixes_modalities = False`` builds that vector from the title and the image separately (late,
  shallow) or reads one side only, so the score is blind to whether the two belong together.
- Task pairs (labelled item pairs) needs a pair-labelled dataset and pair objectives, keeps
  the dataset's pair split, and a pair-labelled dataset needs task pairs.
"""
from __future__ import annotations

import typing

from bench.errors import BenchError

PAIRS = "pairs"  # bench.api.interfaces.PAIRS (that module imports torch)


def plugin_class(spec, base: type) -> type | None:
    """The class a plugin's factory is, or is annotated to return, if it derives from ``base``:
    what the plugin declares (needs, mixes_modalities ...) is then known without building it."""
    factory = spec.factory
    cls = factory if isinstance(factory, type) else None
    if cls is None:
        try:
            cls = typing.get_type_hints(factory).get("return")
        except Exception:  # not a plain function, or an annotation that does not resolve
            return None
    return cls if isinstance(cls, type) and issubclass(cls, base) else None


def objective_needs(spec) -> frozenset[str] | None:
    """What an objective plugin's batches must carry; None when its class is unknown."""
    from bench.api.interfaces import Objective  # imports torch: only once plugins are loaded anyway

    cls = plugin_class(spec, Objective)
    return frozenset(cls.needs) if cls is not None else None


def check_stage_needs(stage, index: int, objective: str, needs, file: str | None = None, suffix: str = "") -> None:
    """Refuse an objective that needs labels in a stage that reads the (unlabeled) ssl split."""
    if stage.data == "train" or "labels" not in needs:
        return
    raise BenchError(
        f"stage '{stage.name}' trains '{objective}', which needs labels, on data: {stage.data}; the ssl split "
        f"stands for unlabeled listings and no stage sees its labels{suffix}",
        file=file, field=f"trial.stages[{index}].data",
        fix=f"set data: train for the stage with '{objective}', and adapt on the ssl split in a stage before "
            "it with a self-supervised objective (simcse, convirt, mlm)")


def check_pair_scoring(trial, stage, index: int, registry, file: str | None = None, suffix: str = "") -> None:
    """Refuse image-text matching on a fusion that declares its multimodal vector keeps title and image apart."""
    from bench.api.interfaces import IMAGE, TEXT, Fusion, Objective

    fusion = plugin_class(registry.get("fusion", trial.fusion.name, file=file, field="trial.fusion.name"), Fusion)
    if fusion is None or fusion.mixes_modalities is not False:
        return
    for j, ref in enumerate(stage.objectives):
        objective = plugin_class(registry.get("objective", ref.name, file=file,
                                              field=f"trial.stages[{index}].objectives[{j}].name"), Objective)
        if objective is None or not objective.scores_title_image_pairs:
            continue
        how = ("reads one modality only" if not {TEXT, IMAGE} <= set(fusion.requires) else
               "builds it from the title and the image separately, so the score is a title part plus an image "
               "part and cannot tell a matching pair from a mismatched one")
        mixing = [name for name in registry.names("fusion")
                  if getattr(plugin_class(registry.get("fusion", name), Fusion), "mixes_modalities", None)]
        raise BenchError(
            f"objective '{ref.name}' scores whether a title and an image belong together from the fusion's "
            f"multimodal vector, but fusion '{trial.fusion.name}' {how}{suffix}",
            file=file, field=f"trial.stages[{index}].objectives[{j}].name",
            fix=f"use a fusion whose title and image interact ({', '.join(mixing) or 'none is installed'}), "
                f"or drop '{ref.name}' from this stage")


def check_trial(trial, registry, file: str, where: str = "") -> None:
    """Suite-load checks across fields of one expanded trial (a TrialConfig)."""
    suffix = f" (in the trial {where})" if where else ""
    check_pairs_dataset(trial, file, suffix, on_pairs(trial, registry))
    if registry is None:
        return
    for i, stage in enumerate(trial.stages):
        for j, ref in enumerate(stage.objectives):
            spec = registry.get("objective", ref.name, file=file, field=f"trial.stages[{i}].objectives[{j}].name")
            known = objective_needs(spec)
            check_stage_needs(stage, i, ref.name, known or (), file, suffix)
            check_pair_objective(trial, i, j, ref.name, known or (), known is None, file, suffix,
                                 on_pairs(trial, registry))
        check_pair_scoring(trial, stage, i, registry, file, suffix)


def on_pairs(trial, registry) -> bool:
    """Whether the trial's task trains and scores labelled pairs: its plugin's kind (an outside task
    may be one), else its name."""
    if registry is not None:
        from bench.api.interfaces import Task

        task = plugin_class(registry.get("task", trial.task.name, field="trial.task.name"), Task)
        return getattr(task, "kind", None) == PAIRS if task is not None else trial.task.name == PAIRS
    return trial.task.name == PAIRS


# Built-in datasets that hold labelled pairs only (no item labels or groups): they need task pairs.
PAIR_DATASETS = {"deepmatcher", "wdc_products"}
PAIR_OBJECTIVES = "pair_contrastive, pair_classification, pair_cross_encoder"


def check_pairs_dataset(trial, file: str | None, suffix: str = "", pairs: bool | None = None) -> None:
    """Task pairs and pair-labelled data go together; the benchmark's own pair split is kept."""
    name = trial.dataset.name
    pairs = trial.task.name == PAIRS if pairs is None else pairs
    if name in PAIR_DATASETS and not pairs:
        raise BenchError(f"dataset '{name}' holds labelled pairs, which task '{trial.task.name}' cannot use{suffix}",
                         file=file, field="trial.task", fix="set task: pairs")
    if not pairs:
        return
    if name == "synthetic_catalog" and not trial.dataset.options.get("pairs"):
        raise BenchError(f"task pairs needs labelled pairs; synthetic_catalog emits them only when asked{suffix}",
                         file=file, field="trial.dataset.options.pairs", fix="set pairs: true in the dataset options")
    if trial.splits.fractions is not None or trial.splits.use_given is not None:
        raise BenchError(f"task pairs keeps the dataset's own train / dev / test pairs; item splits do not apply{suffix}",
                         file=file, field="trial.splits", fix="remove splits.fractions and splits.use_given")


def check_pair_objective(trial, i: int, j: int, name: str, needs, unknown: bool, file: str | None,
                         suffix: str = "", pairs: bool | None = None) -> None:
    """Pair objectives read pair batches, which only task pairs makes, and task pairs makes nothing else."""
    field = f"trial.stages[{i}].objectives[{j}].name"
    pairs = trial.task.name == PAIRS if pairs is None else pairs
    if "pairs" in needs and not pairs:
        raise BenchError(f"objective '{name}' trains on labelled pairs, but the task is '{trial.task.name}'{suffix}",
                         file=file, field=field, fix="set task: pairs (with a pair-labelled dataset) or use an item "
                                                     "objective (cross_entropy, contrastive, triplet ...)")
    if pairs and "pairs" not in needs and not unknown:
        raise BenchError(f"task pairs trains on batches of labelled pairs; objective '{name}' reads single items{suffix}",
                         file=file, field=field, fix=f"use a pair objective: {PAIR_OBJECTIVES}")
    if pairs and trial.stages[i].data != "train":
        raise BenchError(f"task pairs trains on the train pairs; stage data '{trial.stages[i].data}' has none{suffix}",
                         file=file, field=f"trial.stages[{i}].data", fix="set data: train")
