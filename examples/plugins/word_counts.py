"""Encoder example: word counts over a vocabulary fitted on the training titles."""
from collections import Counter

import torch
from pydantic import BaseModel, ConfigDict, Field

from bench import hookimpl
from bench.trial.fitting import json_tensor, state_digest, tensor_json
from bench.api.interfaces import TEXT, Encoder, EncoderOutput
from bench.api.registry import PluginSpec


class WordCountOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_words: int = Field(256, ge=2, le=100_000, description="vocabulary: the most frequent train words")
    lowercase: bool = Field(True, description="lower-case titles before counting")


class WordCountEncoder(Encoder):
    modality = TEXT

    def __init__(self, opts: WordCountOptions):
        super().__init__()
        self.opts = opts
        self.dim = opts.max_words  # fixed by the options: the fusion is built before the fit
        self.frozen = True  # no parameter trains: vectors are computed once and cached
        self.vocabulary: dict[str, int] = {}
        self.fitted = None

    def words(self, title: str) -> list[str]:
        return (title.lower() if self.opts.lowercase else title).split()

    def fit(self, train_records):
        counts = Counter(w for record in train_records for w in self.words(record["title"]))
        return {"words": json_tensor([w for w, _ in counts.most_common(self.opts.max_words)])}

    def load_fitted(self, state):
        self.vocabulary = {w: i for i, w in enumerate(tensor_json(state["words"]))}
        self.fitted = state_digest(state)

    def fit_fingerprint(self):
        return self.opts.model_dump()

    def report(self):
        return {"word_count_vocabulary": len(self.vocabulary)}

    def preprocess(self, records):
        counts = torch.zeros(len(records), self.dim)
        for row, record in enumerate(records):
            for word in self.words(record["title"]):
                if word in self.vocabulary:
                    counts[row, self.vocabulary[word]] += 1
        return {"counts": counts}

    def preprocess_fingerprint(self):
        return {**self.opts.model_dump(), "fitted": self.fitted}

    def forward(self, inputs):
        pooled = inputs["counts"]
        mask = torch.ones(len(pooled), 1, dtype=torch.bool, device=pooled.device)
        return EncoderOutput(sequence=pooled.unsqueeze(1), mask=mask, pooled=pooled)


def build(opts: WordCountOptions, ctx) -> WordCountEncoder:
    return WordCountEncoder(opts)


@hookimpl
def bench_encoders():
    return [PluginSpec("encoder", "word_counts", "counts of the most frequent train words", build, WordCountOptions)]
