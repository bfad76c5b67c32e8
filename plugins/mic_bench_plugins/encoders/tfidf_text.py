"""TF-IDF title vectors (scikit-learn TfidfVectorizer): the classic baseline every leaderboard needs.

On real catalogues character n-gram TF-IDF often matches or beats a frozen pretrained sentence
encoder at same-product retrieval, so a leaderboard without it can crown a model a 20-line
baseline beats. The vocabulary and idf are fitted on the training split's titles only (never
dev, test or ssl): a word seen only in test gets no column. Optionally TruncatedSVD (fitted on
the same train titles) maps the sparse vector to a dense width (latent semantic analysis).

The vector is the pooled output (the fusion's embedding under text_only: cosine similarity for
matching); fusions that read sequences get it as a one-token sequence. Nothing trains: the
encoder is frozen, so its vectors go through the frozen-feature cache.

Width: the fusion is built before the fit, so ``dim`` is fixed by the options: ``max_features``
(or ``svd_dim``). A smaller fitted vocabulary leaves the trailing columns zero, which changes
neither cosine similarities nor what a linear head can learn; the row records the real size
(``tfidf_vocabulary``). Cached features are dense: items x dim x 4 bytes, so give large
catalogues an ``svd_dim``.

Defaults measured on real and generated catalogues (docs/baselines.md,
benchmarks/baseline_defaults.py): a cap of 8,192 terms cost Walmart-Amazon pairs 6.4 (title) and
8.8 ([title, brand, modelno]) test F1 points against 32,768, which holds the whole vocabulary of
most title catalogues; min_df 2 lost 1.5-1.8 points there and 3 nDCG@10 points on the generated
catalogue, so every train term is kept (min_df 1). A small catalogue's vocabulary fits any cap:
suites on such data may set a narrower width (less memory, the same vectors), and so must a
fusion whose layers grow with the square of the text width (cross_modal_gated_attention without
its own ``dim``).
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from bench.errors import BenchError
from bench.trial.fitting import json_tensor, state_digest, tensor_json
from bench.api.interfaces import TEXT, Encoder, EncoderOutput
from bench.api.registry import PluginSpec

VECTOR_KEY = "tfidf"


class TfidfTextOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    analyzer: Literal["char_wb", "char", "word"] = Field(
        "char_wb", description="character n-grams inside word boundaries, raw character n-grams, or words")
    ngram_range: tuple[int, int] = Field((2, 4), description="[min, max] n-gram length")
    sublinear_tf: bool = Field(True, description="1 + log(tf) instead of raw counts")
    lowercase: bool = True
    strip_accents: Literal["unicode", "ascii"] | None = "unicode"
    min_df: int = Field(1, ge=1, description="drop terms in fewer train titles than this")
    max_df: float = Field(1.0, gt=0.0, le=1.0, description="drop terms in more than this share of train titles")
    max_features: int = Field(32768, ge=2, le=262144, description="vocabulary cap (most frequent terms); the width "
                                                                  "without SVD (docs/baselines.md: how it was chosen)")
    svd_dim: int | None = Field(None, ge=2, le=4096, description="TruncatedSVD width (None: the sparse vector itself)")
    svd_seed: int = Field(0, description="random_state of the randomized SVD")

    @model_validator(mode="after")
    def _check_range(self) -> "TfidfTextOptions":
        low, high = self.ngram_range
        if not 1 <= low <= high:
            raise ValueError(f"ngram_range must be [min, max] with 1 <= min <= max, got [{low}, {high}]")
        return self


def _texts(records: list[dict[str, Any]]) -> list[str]:
    return [r.get("title") or "" for r in records]


class TfidfTextEncoder(Encoder):
    """Frozen, fitted encoder: ``fit`` learns vocabulary + idf (+ SVD) from train titles."""

    modality = TEXT

    def __init__(self, opts: TfidfTextOptions):
        super().__init__()
        self.opts = opts
        self.dim = opts.svd_dim or opts.max_features
        self.frozen = True
        self._vectorizer = None
        self._components: np.ndarray | None = None
        self._state_digest: str | None = None
        self._report: dict[str, Any] = {}

    def _make_vectorizer(self, vocabulary: dict[str, int] | None = None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        o = self.opts
        return TfidfVectorizer(analyzer=o.analyzer, ngram_range=tuple(o.ngram_range), sublinear_tf=o.sublinear_tf,
                               lowercase=o.lowercase, strip_accents=o.strip_accents, min_df=o.min_df,
                               max_df=o.max_df, max_features=o.max_features, vocabulary=vocabulary,
                               dtype=np.float64)

    def fit(self, train_records: list[dict[str, Any]]) -> dict[str, Tensor]:
        """Vocabulary, idf (and SVD components) from the train titles, as tensors for the cache."""
        texts = _texts(train_records)
        vectorizer = self._make_vectorizer()
        try:
            matrix = vectorizer.fit_transform(texts)
        except ValueError as exc:  # empty vocabulary, or min_df/max_df leave no term
            raise BenchError(f"tfidf_text cannot build a vocabulary from {len(texts)} train titles: {exc}",
                             field="trial.encoders.text.options",
                             fix="lower min_df / raise max_df, or check that the titles are not empty") from None
        terms = vectorizer.get_feature_names_out().tolist()
        state = {"vocabulary": json_tensor(terms), "idf": torch.from_numpy(np.asarray(vectorizer.idf_, np.float64))}
        if self.opts.svd_dim:
            from sklearn.decomposition import TruncatedSVD

            rank = min(self.opts.svd_dim, matrix.shape[0] - 1, matrix.shape[1] - 1)
            if rank < 1:
                raise BenchError(f"tfidf_text: SVD needs at least 2 train titles and 2 terms "
                                 f"(got {matrix.shape[0]} titles, {matrix.shape[1]} terms)",
                                 field="trial.encoders.text.options.svd_dim", fix="drop svd_dim or use more data")
            svd = TruncatedSVD(n_components=rank, random_state=self.opts.svd_seed).fit(matrix)
            state["svd_components"] = torch.from_numpy(np.ascontiguousarray(svd.components_, np.float64))
            state["svd_explained_variance"] = torch.tensor([float(svd.explained_variance_ratio_.sum())],
                                                           dtype=torch.float64)
        return state

    def load_fitted(self, state: dict[str, Tensor]) -> None:
        terms = tensor_json(state["vocabulary"])
        vectorizer = self._make_vectorizer({t: i for i, t in enumerate(terms)})
        vectorizer.idf_ = state["idf"].numpy().astype(np.float64)
        self._vectorizer = vectorizer
        self._components = state["svd_components"].numpy() if "svd_components" in state else None
        self._state_digest = state_digest(state)
        self._report = {"tfidf_vocabulary": len(terms)}
        if "svd_explained_variance" in state:
            self._report["tfidf_svd_explained_variance"] = round(float(state["svd_explained_variance"][0]), 4)
            self._report["tfidf_svd_rank"] = int(self._components.shape[0])

    def fit_fingerprint(self) -> dict[str, Any]:
        import sklearn

        return {**self.opts.model_dump(mode="json"), "sklearn": sklearn.__version__}  # its tokenisation may change

    def report(self) -> dict[str, Any]:
        return dict(self._report)

    def _require_fitted(self) -> None:
        if self._vectorizer is None:
            raise BenchError("tfidf_text was used before it was fitted on the train split",
                             field="trial.encoders.text.name",
                             fix="run it inside a trial (the trial fits it first), or call fit() then load_fitted()")

    def preprocess(self, records: list[dict[str, Any]]) -> dict[str, Tensor]:
        """The TF-IDF (or SVD) vector of each title, zero-padded to ``dim`` columns."""
        self._require_fitted()
        matrix = self._vectorizer.transform(_texts(records))
        if self._components is not None:
            dense = np.asarray(matrix @ self._components.T)
            norms = np.linalg.norm(dense, axis=1, keepdims=True)
            dense = dense / np.where(norms > 0, norms, 1.0)  # unit length again, as in sklearn's LSA recipe
        else:
            dense = matrix.toarray()
        out = np.zeros((len(records), self.dim), dtype=np.float32)
        out[:, : dense.shape[1]] = dense
        return {VECTOR_KEY: torch.from_numpy(out)}

    def preprocess_fingerprint(self) -> dict[str, Any]:
        self._require_fitted()
        return {**self.opts.model_dump(mode="json"), "fitted": self._state_digest}

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        pooled = inputs[VECTOR_KEY]
        return EncoderOutput(sequence=pooled.unsqueeze(1), mask=pooled.new_ones(pooled.shape[0], 1, dtype=torch.bool),
                             pooled=pooled)


def build(opts: TfidfTextOptions, ctx) -> TfidfTextEncoder:
    return TfidfTextEncoder(opts)


SPECS = [PluginSpec("encoder", "tfidf_text",
                    "TF-IDF of titles (word or character n-grams, optional SVD), fitted on the train split only",
                    build, TfidfTextOptions)]
