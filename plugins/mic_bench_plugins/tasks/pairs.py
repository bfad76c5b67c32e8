"""The pairs task: train on labelled (left, right) item pairs; score each pair by the cosine of its
two embeddings, or by an objective that scores pairs jointly (a cross-encoder).

The dev pairs choose the epoch (``dev_pair_ap``, threshold-free), the F1 threshold, and a fusion's
setting offered by ``Fusion.dev_choices``; the test pairs are scored once, at the end. The data
side (pair batches, pair splits) is bench/trial/pairs.py.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch

from bench.errors import BenchError
from bench.api.interfaces import PAIRS, Fusion, Task
from bench.metrics.pairs import average_precision, best_f1_threshold, pair_scores_at, predicted_matches
from bench.data.pair_table import PAIR_SPLITS
from bench.trial.device import autocast
from bench.trial.evaluate import Predictions
from bench.trial.output_checks import check_pair_scores
from bench.trial.pairs import PairTrialData, make_pair_loader, pair_similarities, prepare_pair_data


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


class PairsTask(Task):
    """Labelled pairs, split by pair: pair AP and F1 at the dev-chosen threshold."""

    kind = PAIRS
    needs = PAIRS
    main_metric = "pair_f1"

    def __init__(self, options=None, ctx=None):
        self.options = options
        self.scorer = None  # an objective with scores_pairs, while its stage is the latest trained
        self.scorer_notes: dict[str, Any] = {}  # what the scorer settled on the train pairs (pair_max_length)
        self.served_pairs: set[tuple[str, str]] = set()
        self.pair_records: list[dict] = []
        self.row: dict[str, Any] = {}
        self.test_scores: np.ndarray | None = None

    def selection_metric(self, k: int) -> str:
        return "dev_pair_ap"  # threshold-free, so it does not move with a threshold fitted on dev itself

    def prepare(self, cfg, ctx) -> PairTrialData:
        return prepare_pair_data(cfg, ctx)

    def check_model(self, run) -> None:
        if type(run.model.fusion).fit_on_train is not Fusion.fit_on_train:
            raise BenchError(f"fusion '{run.cfg.fusion.name}' is fitted on item labels, which task pairs does not have",
                             field="trial.fusion.name", fix="use an embedding fusion (text_only, image_only, late ...)")

    def stage_objectives(self, run, stage, index: int, objectives: list) -> None:
        """An objective that scores pairs jointly becomes the scorer while its stage is the latest
        trained (a later stage without one scores by cosine)."""
        scorers = [o for o, _ in objectives if o.scores_pairs]
        if len(scorers) > 1:
            raise BenchError(f"stage '{stage.name}' has {len(scorers)} objectives that score pairs; the pairs can be "
                             "scored one way only", field=f"trial.stages[{index}].objectives",
                             fix="keep one pair-scoring objective (e.g. pair_cross_encoder) in the stage")
        self.scorer = scorers[0] if scorers else None

    def trained_modules(self, run) -> list:
        """The scorer's head scores the pairs: selection keeps and restores it with the model."""
        return [self.scorer] if self.scorer is not None else []

    def training_loader(self, run, stage, index: int, objectives: list, preprocessors):
        """Shuffled batches of the train pairs (every stage trains on them: suite checks refuse others)."""
        train_items = run.data.splits["train"]
        by_id = {r["item_id"]: r for r in train_items}
        self.pair_records = [{"left": by_id[a], "right": by_id[b], "label": label}
                             for a, b, label in run.data.pairs["train"]]
        if self.scorer is not None and hasattr(self.scorer, "fit_train_pairs"):
            self.scorer_notes.update(self.scorer.fit_train_pairs(
                run.model, [p["left"]["title"] or "" for p in self.pair_records],
                [p["right"]["title"] or "" for p in self.pair_records]))
        return make_pair_loader(self.pair_records, preprocessors(train_items), batch_size=stage.batch_size,
                                seed=run.cfg.seed + index, **run.loader_kw)

    def note_served(self, run, loader, steps: int) -> None:
        for idx in loader.batch_sampler.served(steps):
            record = self.pair_records[idx]
            self.served_pairs.add((record["left"]["item_id"], record["right"]["item_id"]))

    def seen_shares(self, run) -> dict[str, float | None]:
        distinct = {(a, b) for a, b, _ in run.data.pairs["train"]}
        return {"train_pairs_seen_share": round(len(self.served_pairs & distinct) / len(distinct), 4)
                if distinct else None}

    def pair_scores(self, run, split: str, predictions: Predictions) -> tuple[np.ndarray, np.ndarray]:
        """(score, label) of each pair of the split: the scorer's, else the embeddings' cosine."""
        pairs = run.data.pairs[split]
        if self.scorer is None:
            return pair_similarities(predictions, pairs)
        by_id = {r["item_id"]: r for r in run.data.splits[split]}
        size, scores = run.cfg.eval.batch_size, []
        run.model.eval()
        self.scorer.eval()
        with torch.no_grad(), autocast(run.device, run.cfg.amp):
            for start in range(0, len(pairs), size):
                chunk = pairs[start:start + size]
                found = self.scorer.pair_scores(run.model, [by_id[a] for a, _, _ in chunk],
                                                [by_id[b] for _, b, _ in chunk])
                check_pair_scores(found, plugin=f"objective '{type(self.scorer).__name__}'", pairs=len(chunk))
                scores.append(found.float().cpu())
        labels = np.array([label for *_, label in pairs], dtype=int)
        return (torch.cat(scores).numpy().astype(float) if scores else np.zeros(0)), labels

    def fit_on_dev(self, run, dev: Predictions) -> Predictions:
        """Nothing is fitted on dev item labels here (pairs have none); the dev pairs choose the
        epoch, the threshold, and a fusion's setting offered by ``Fusion.dev_choices``."""
        return run.choose_on_dev(dev)

    def dev_metrics(self, run, dev: Predictions) -> dict[str, float]:
        return self.dev_columns(*self.pair_scores(run, "dev", dev))[0]

    @staticmethod
    def dev_columns(scores: np.ndarray, labels: np.ndarray) -> tuple[dict[str, float | None], float | None]:
        """dev_pair_ap and dev_pair_f1 (F1 at the threshold that is best on dev itself), and that threshold."""
        threshold, best_f1 = best_f1_threshold(scores, labels)
        return {"dev_pair_ap": _round(average_precision(scores, labels)), "dev_pair_f1": _round(best_f1)}, threshold

    def test_metrics(self, run, dev: Predictions | None, test: Predictions) -> dict[str, Any]:
        """Dev figures and the dev-best threshold (the dev pairs scored once), then test pairwise
        precision / recall / F1 at that threshold, and test average precision."""
        threshold, note, dev_figures = None, None, {}
        if dev is None:
            note = "no dev pairs: the F1 threshold is chosen on dev"
        else:
            dev_figures, threshold = self.dev_columns(*self.pair_scores(run, "dev", dev))
            if threshold is None:
                note = "no dev pair is a match: the F1 threshold cannot be chosen"
        scores, labels = self.pair_scores(run, "test", test)
        self.test_scores = scores
        out: dict[str, Any] = {"pair_ap": _round(average_precision(scores, labels)), "pair_threshold": _round(threshold)}
        if threshold is None:
            out.update(pair_precision=None, pair_recall=None, pair_f1=None, pair_note=note)
        else:
            found = pair_scores_at(scores, labels, threshold)
            out.update({f"pair_{k}": _round(v) for k, v in found.items()})
            if found["precision"] is None and labels.sum():
                out["pair_note"] = "no test pair scores above the threshold: precision is undefined"
        if out["pair_ap"] is None:
            out["pair_note"] = "; ".join(filter(None, [out.get("pair_note"), "no test pair is a match: no average "
                                                       "precision, precision, recall or F1"]))
        out.update({f"n_{split}_pairs": len(run.data.pairs[split]) for split in PAIR_SPLITS})
        out["n_test_pair_matches"] = int(labels.sum())
        out.update(self.scorer_notes)
        out.update(dev_figures)
        self.row = out
        return out

    def prediction_table(self, run, key: str, test: Predictions) -> pl.DataFrame:
        """Each test pair with its score, and the prediction at the row's threshold (null without one)."""
        pairs = run.data.pairs["test"]
        threshold = self.row.get("pair_threshold")
        return pl.DataFrame({
            "trial_key": [key] * len(pairs), "left_id": [a for a, _, _ in pairs], "right_id": [b for _, b, _ in pairs],
            "label": [label for *_, label in pairs], "score": self.test_scores,
            "predicted": None if threshold is None else predicted_matches(self.test_scores, threshold),
        }, schema={"trial_key": pl.Utf8, "left_id": pl.Utf8, "right_id": pl.Utf8, "label": pl.Int8,
                   "score": pl.Float64, "predicted": pl.Int8})
