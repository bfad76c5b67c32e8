"""Building a trial's parts from the registry, refusing parts the catalogue cannot feed."""
from __future__ import annotations

from bench.data.catalog import Catalog
from bench.config.schema import TrialConfig
from bench.config.trial_checks import check_stage_needs
from bench.errors import BenchError
from bench.api.interfaces import IMAGE, JOINT, TEXT, BuildContext, Fusion, TaskInfo
from bench.trial.context import TrialContext
from bench.trial.model import BenchModel


def build_model(cfg: TrialConfig, ctx: TrialContext, task: TaskInfo, catalog: Catalog | None = None) -> BenchModel:
    bctx = BuildContext(task=task, seed=cfg.seed, cache_dir=ctx.cache_dir)
    for slot, ref in cfg.encoders.items():
        encoder = ctx.registry.create("encoder", ref.name, ref.options, bctx, field=f"trial.encoders.{slot}")
        bctx.encoders[slot] = encoder
    fusion: Fusion = ctx.registry.create("fusion", cfg.fusion.name, cfg.fusion.options, bctx, field="trial.fusion")
    missing = set(fusion.requires) - set(bctx.encoders)
    if missing:
        raise BenchError(f"fusion '{cfg.fusion.name}' needs a {', '.join(sorted(missing))} encoder; "
                         f"the trial has {', '.join(sorted(bctx.encoders))}", field="trial.encoders",
                         fix=f"add encoders.{sorted(missing)[0]} to the trial")
    names = {"fusion": cfg.fusion.name, **{slot: ref.name for slot, ref in cfg.encoders.items()}}
    model = BenchModel(dict(bctx.encoders), fusion, names, num_labels=task.num_labels)
    if catalog is not None:
        model.data_gaps = (catalog.name, absent_modalities(catalog))  # build_objectives checks objectives too
        check_data_modalities(model.data_gaps, fusion.requires, f"fusion '{cfg.fusion.name}'", "trial.fusion.name")
    return model


def absent_modalities(catalog: Catalog) -> dict[str, str]:
    absent = {IMAGE: "images"} if not catalog.has_images else {}
    if not catalog.has_titles:
        absent[TEXT] = "titles"
    return absent


def check_data_modalities(gaps: tuple[str, dict[str, str]], needs, what: str, field_name: str) -> None:
    """A catalogue without pictures (or titles) cannot feed a part that reads them: grey
    placeholders or empty strings would be trained as if they were the data."""
    name, absent = gaps
    wanted = set(needs) | ({TEXT, IMAGE} if JOINT in needs else set())
    lacking = [absent[m] for m in (TEXT, IMAGE) if m in wanted and m in absent]
    if lacking:
        other = "image_only" if IMAGE not in absent else "text_only"
        raise BenchError(f"{what} needs {' and '.join(lacking)}, but the catalogue {name} has none "
                         f"(a {'titles' if 'images' in lacking else 'images'}-only catalogue)", field=field_name,
                         fix=f"use a part that reads only what the data has (e.g. fusion {other}), or give the "
                             f"dataset its {' and '.join(lacking)} (dataset options images / columns.title)")


def build_objectives(stage, cfg: TrialConfig, ctx: TrialContext, model: BenchModel, task: TaskInfo, index: int):
    bctx = BuildContext(task=task, encoders=dict(model.encoders.items()), fusion=model.fusion, seed=cfg.seed,
                        cache_dir=ctx.cache_dir)
    built = []
    for j, ref in enumerate(stage.objectives):
        field_name = f"trial.stages[{index}].objectives[{j}]"
        objective = ctx.registry.create("objective", ref.name, ref.options, bctx, field=field_name)
        check_stage_needs(stage, index, ref.name, objective.needs)
        if getattr(model, "data_gaps", None) is not None:
            check_data_modalities(model.data_gaps, objective.needs, f"objective '{ref.name}'", f"{field_name}.name")
        if "labels" in objective.needs and task.num_labels < 2:
            raise BenchError(f"objective '{ref.name}' needs labels; this data has none", field=f"{field_name}.name",
                             fix="use an embedding objective (triplet, contrastive, ...) or data with labels")
        if "groups" in objective.needs and not task.has_groups:
            raise BenchError(f"objective '{ref.name}' needs product groups; this data has none",
                             field=f"{field_name}.name", fix="map a group column in the dataset options")
        built.append((objective, ref.weight))
    return built
