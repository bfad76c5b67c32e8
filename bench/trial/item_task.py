"""The item tasks' steps (classification and same-product retrieval): items split by item, batches of
items, classification and retrieval metrics. A task plugin that scores items another way subclasses
``ItemTask`` and overrides what differs (docs/writing-a-plugin.md, "Task")."""
from __future__ import annotations

from typing import Any

import polars as pl

from bench.errors import BenchError
from bench.api.interfaces import CLASSIFICATION, MATCHING, Fusion, Task
from bench.metrics.classification import classification_metrics
from bench.metrics.retrieval import retrieval_metrics
from bench.trial.evaluate import Predictions
from bench.trial.output_checks import check_fusion_output
from bench.trial.outputs import prediction_table, retrieval_embeddings, retrieval_figures
from bench.trial.prepare import TrialData, prepare_data
from bench.trial.records import make_loader, seen_share, served_item_ids


class ItemTask(Task):
    """Items with a label (classification) or a product group (retrieval), split by item.

    Classification scores labels and, when the catalogue has product groups, same-product
    retrieval too; retrieval (``kind = MATCHING``) scores retrieval only."""

    kind = CLASSIFICATION
    needs = CLASSIFICATION
    main_metric = "macro_f1"

    def __init__(self, options=None, ctx=None):
        self.options = options
        self.test_per_query = None  # each test query's retrieval values, stored with the predictions

    def prepare(self, cfg, ctx) -> TrialData:
        return prepare_data(cfg, ctx, kind=self.kind, needs=self.needs)

    def training_loader(self, run, stage, index: int, objectives: list, preprocessors):
        """Batches of the items of the stage's split(s) (``train``, ``ssl`` or ``ssl+train``)."""
        records = [r for part in stage.data.split("+") for r in run.data.splits[part]]
        if not records:
            raise BenchError(f"stage '{stage.name}' trains on the {stage.data} split, which is empty",
                             field=f"trial.stages[{index}].data",
                             fix="give that split a fraction (splits.fractions.ssl) or use data: train")
        sampler = stage.sampler
        if sampler == "auto":
            sampler = "pk" if any(o.sampler == "pk" for o, _ in objectives) else "random"
        return make_loader(records, preprocessors(records), batch_size=stage.batch_size, train=True, sampler=sampler,
                           pk_items=stage.pk_items, seed=run.cfg.seed + index, **run.loader_kw)

    def note_served(self, run, loader, steps: int) -> None:
        run.served_ids |= served_item_ids(loader, steps)

    def seen_shares(self, run) -> dict[str, float | None]:
        return {"train_items_seen_share": seen_share(run.served_ids, run.data.splits["train"])}

    def fit_on_dev(self, run, dev: Predictions) -> Predictions:
        """A fusion's setting chosen among ``Fusion.dev_choices`` by the selection metric, then what
        the fusion fits on dev item labels (``Fusion.fit_on_dev``, late fusion's weight)."""
        dev = run.choose_on_dev(dev)
        fusion = run.model.fusion
        if dev.logits is None or type(fusion).fit_on_dev is Fusion.fit_on_dev:
            return dev
        metric = "accuracy" if run.selection_metric == "dev_accuracy" else "macro_f1"
        refit = fusion.fit_on_dev(dev.as_fusion_output(), dev.labels, metric=metric)
        if refit is None:
            return run.predict("dev")
        check_fusion_output(refit, fusion=run.model.names["fusion"], items=len(dev.item_ids),
                            num_labels=run.data.task.num_labels, step="fit_on_dev")
        return dev.with_outputs(refit)

    def dev_metrics(self, run, dev: Predictions) -> dict[str, float]:
        """The dev_* columns: classification, and retrieval when the data has groups."""
        out = {}
        if run.data.task.kind == CLASSIFICATION and dev.logits is not None:
            out.update({f"dev_{k}": v for k, v in classification_metrics(dev.labels.numpy(), dev.logits.numpy()).items()})
        if run.data.task.has_groups and run.cfg.eval.retrieval != "off" and len(dev.item_ids) > 1:
            found = retrieval_metrics(retrieval_embeddings(run.cfg, dev), dev.groups.numpy(), k=run.cfg.eval.k)
            out.update({f"dev_{k}": v for k, v in found.items()})
        return out

    def test_metrics(self, run, dev: Predictions | None, test: Predictions) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if run.data.task.kind == CLASSIFICATION and test.logits is not None:
            out.update(classification_metrics(test.labels.numpy(), test.logits.numpy(), run.data.train_labels,
                                              head_labels=run.data.head_labels))
        if run.data.task.has_groups and run.cfg.eval.retrieval != "off":
            found, self.test_per_query = retrieval_figures(run.cfg, dev, test)
            out.update(found)
        if dev is not None:
            out.update(self.dev_metrics(run, dev))
        return out

    def prediction_table(self, run, key: str, test: Predictions) -> pl.DataFrame:
        """The test predictions kept beside the row (with each query's retrieval values)."""
        return prediction_table(test, run.data.task.label_names, key, per_query=self.test_per_query)


class RetrievalTask(ItemTask):
    """Same-product retrieval: items with a product group, ranked by embedding similarity."""

    kind = MATCHING
    needs = MATCHING
    main_metric = "ndcg@{k}"
