"""linear_probe: logistic regression (scikit-learn) on frozen pooled features, in seconds.

The fusion-level baseline: concatenate the pooled vectors of its encoders, standardise them
(mean and scale of the train split), and fit sklearn's LogisticRegression on the train split in
closed form through ``fit_on_train``, which the trial calls once before the stages. Its weights
are buffers, not parameters, so no stage has anything to train (run_stage skips an optimizer
without parameters) and gradient training never moves the fitted classifier.

C (inverse regularisation) is either given, or one probe per value of ``c_grid`` is fitted on
train and the value with the best dev accuracy is kept (``fit_on_dev``; ties go to the value
nearest sklearn's default C = 1); without a dev split the default C = 1 is used. The default grid
0.01 ... 100 holds the dev-best C of every catalogue measured (docs/baselines.md): 0.01-0.1 on
standardised MiniLM features, 1-100 on unstandardised TF-IDF vectors, whose unit-length sparse
rows want weak regularisation. ``logits`` are the
classifier's log-probabilities, log(max(p, 1e-12)) as in late fusion; labels absent from train
get p = 0. The embedding (retrieval) is the concatenation of the unit-length pooled vectors.
"""
from __future__ import annotations

import math
import warnings
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from bench.errors import BenchError
from bench.api.interfaces import EncoderOutput, Fusion, FusionOutput
from bench.api.registry import PluginSpec

from .heads import num_labels

DEFAULT_C = 1.0
LOG_FLOOR = math.log(1e-12)


class LinearProbeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    modalities: list[Literal["text", "image", "joint"]] | None = Field(
        None, description="encoders whose pooled vectors are concatenated (default: every encoder of the trial)")
    C: float | None = Field(None, gt=0, description="inverse regularisation; None: the best of c_grid on dev")
    c_grid: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0], min_length=1,
                                description="values of C tried when C is not given (docs/baselines.md: how it "
                                            "was chosen)")
    standardize: bool = Field(True, description="scale every feature to train mean 0, variance 1 first")
    max_iter: int = Field(2000, ge=10, description="lbfgs iterations per fit")


class LinearProbeFusion(Fusion):
    mixes_modalities = False
    uses_sequence = False

    def __init__(self, modalities: list[str], dims: list[int], n_labels: int, opts: LinearProbeOptions):
        super().__init__()
        self.opts = opts
        self.modalities = list(modalities)
        self.requires = frozenset(modalities)
        self.c_values = [opts.C] if opts.C is not None else sorted(set(opts.c_grid))
        width = sum(dims)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        # one fitted classifier per C (buffers: read by fit_on_dev), and the kept one as frozen
        # parameters, so the row's n_params counts the model that predicts (n_trainable_params: 0)
        self.register_buffer("weight", torch.zeros(len(self.c_values), n_labels, width))
        self.register_buffer("bias", torch.zeros(len(self.c_values), n_labels))
        self.classifier = nn.Linear(width, n_labels).requires_grad_(False)
        self.register_buffer("present", torch.zeros(n_labels, dtype=torch.bool))
        default = min(range(len(self.c_values)), key=lambda i: abs(math.log10(self.c_values[i] / DEFAULT_C)))
        self.register_buffer("chosen", torch.tensor(default))
        self.fitted = False
        self.converged = True

    def _concat(self, pooled: dict[str, Tensor]) -> Tensor:
        return torch.cat([pooled[m].float() for m in self.modalities], dim=-1)

    def _log_probs(self, z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        logits = (z @ weight.T + bias).masked_fill(~self.present, float("-inf"))
        return F.log_softmax(logits, dim=-1).clamp_min(LOG_FLOOR)

    def _keep(self, index: int) -> None:
        self.chosen.fill_(index)
        self.classifier.weight.copy_(self.weight[index])
        self.classifier.bias.copy_(self.bias[index])

    def forward(self, features: dict[str, EncoderOutput]) -> FusionOutput:
        if not self.fitted:
            raise RuntimeError("linear_probe was called before fit_on_train (the trial fits it before the stages)")
        pooled = {m: features[m].pooled for m in self.modalities}
        z = (self._concat(pooled) - self.mean) / self.scale
        parts = [self._log_probs(z, w, b) for w, b in zip(self.weight, self.bias)]
        kinds = {m: v for m, v in pooled.items()}
        embedding = torch.cat([F.normalize(pooled[m].float(), dim=-1) for m in self.modalities], dim=-1)
        if len(self.modalities) > 1:
            kinds["multimodal"] = embedding
        logits = self._log_probs(z, self.classifier.weight, self.classifier.bias)  # = parts[chosen]
        candidates = {f"C={c:g}": part for c, part in zip(self.c_values, parts)}
        return FusionOutput(embedding=embedding, logits=logits, candidate_logits=candidates, kinds=kinds)

    @torch.no_grad()
    def fit_on_train(self, features: dict[str, Tensor], labels: Tensor) -> None:
        """One sklearn LogisticRegression per C on the train items with a known label."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
        from threadpoolctl import threadpool_limits

        known = labels >= 0
        x = self._concat(features)[known].cpu().double().numpy()
        y = labels[known].cpu().numpy()
        classes = np.unique(y)
        if len(classes) < 2:
            raise BenchError(f"linear_probe needs at least 2 labels in the train split, found {len(classes)}",
                             field="trial.splits", fix="use more training data (splits.fractions, --subset)")
        if self.opts.standardize:
            scaler = StandardScaler().fit(x)
            mean, scale = scaler.mean_, scaler.scale_  # scale_ is 1 where a feature is constant
        else:
            mean, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
        z = (x - mean) / scale
        # A feature constant on train gets weight 0 at the optimum (the unpenalised intercept absorbs
        # it), so fitting without those columns is exact and much faster (TF-IDF's unused columns).
        active = np.flatnonzero(np.ptp(z, axis=0) > 0)
        cols = torch.as_tensor(active, dtype=torch.long, device=self.weight.device)
        self.converged = True
        for i, c in enumerate(self.c_values):
            # BLAS threads as many as the trial's torch threads: more only fight over shared cores
            with warnings.catch_warnings(record=True) as caught, threadpool_limits(torch.get_num_threads()):
                warnings.simplefilter("always", ConvergenceWarning)
                clf = LogisticRegression(C=c, max_iter=self.opts.max_iter).fit(z[:, active], y)
            self.converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            coef, intercept = clf.coef_, clf.intercept_
            if len(classes) == 2:  # binary: sigmoid(w.x + b) = softmax over [0, w.x + b]
                coef = np.vstack([np.zeros_like(coef), coef])
                intercept = np.concatenate([[0.0], intercept])
            rows = torch.as_tensor(clf.classes_, dtype=torch.long, device=self.weight.device)
            self.weight[i].zero_()
            self.bias[i].zero_()
            self.weight[i, rows[:, None], cols[None, :]] = torch.as_tensor(coef, dtype=self.weight.dtype,
                                                                           device=self.weight.device)
            self.bias[i, rows] = torch.as_tensor(intercept, dtype=self.bias.dtype, device=self.bias.device)
        self.mean.copy_(torch.as_tensor(mean))
        self.scale.copy_(torch.as_tensor(scale))
        self.present.zero_()
        self.present[torch.as_tensor(classes, dtype=torch.long)] = True
        self._keep(int(self.chosen))
        self.fitted = True

    @torch.no_grad()
    def fit_on_dev(self, outputs: FusionOutput, labels: Tensor, metric: str = "macro_f1") -> None:
        """Keep the C with the best dev ``metric`` (accuracy or macro-F1, the suite's selection metric;
        ties: nearest C = 1); nothing to do for a given C."""
        from bench.metrics.classification import macro_f1

        known = labels >= 0
        if len(self.c_values) < 2 or not known.any() or len(outputs.candidate_logits) != len(self.c_values):
            return
        y = labels[known].numpy()

        def score(logits: Tensor) -> float:
            pred = logits[known].argmax(-1).numpy()
            if metric == "accuracy":
                return float((pred == y).mean())
            return macro_f1(y, pred)

        scores = [score(p) for p in outputs.candidate_logits.values()]  # in the order of c_values
        best = max(scores)
        candidates = [i for i, s in enumerate(scores) if s >= best - 1e-9]
        self._keep(min(candidates, key=lambda i: abs(math.log10(self.c_values[i] / DEFAULT_C))))

    def report(self) -> dict:
        return {"linear_probe_C": float(self.c_values[int(self.chosen)]), "linear_probe_converged": self.converged}


def build(opts: LinearProbeOptions, ctx) -> LinearProbeFusion:
    modalities = opts.modalities or sorted(ctx.encoders)
    missing = [m for m in modalities if m not in ctx.encoders]
    if missing:
        raise BenchError(f"linear_probe reads the {', '.join(missing)} encoder, which the trial does not have",
                         field="trial.fusion.options.modalities", fix=f"use some of: {', '.join(sorted(ctx.encoders))}")
    for m in modalities:
        if not getattr(ctx.encoders[m], "frozen", False):
            raise BenchError(f"linear_probe fits on frozen features, but the {m} encoder trains",
                             field=f"trial.encoders.{m}.options.freeze",
                             fix="set freeze: all on that encoder (a fitted encoder such as tfidf_text is always frozen)")
    n_labels = num_labels(ctx)
    if n_labels < 2:
        raise BenchError("linear_probe is a classifier: it needs a classification task with 2+ labels",
                         field="trial.fusion.name", fix="for matching use text_only / image_only on frozen encoders")
    return LinearProbeFusion(modalities, [ctx.encoders[m].dim for m in modalities], n_labels, opts)


SPECS = [PluginSpec("fusion", "linear_probe",
                    "logistic regression (sklearn) on concatenated frozen pooled vectors, fitted on train; C on dev",
                    build, LinearProbeOptions)]
