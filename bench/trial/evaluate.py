"""Run a trained model over a split and keep everything metrics need (on the CPU)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch

from bench.trial.device import autocast
from bench.api.interfaces import FusionOutput
from bench.trial.model import BenchModel


@dataclass
class Predictions:
    item_ids: list[str]
    labels: torch.Tensor
    groups: torch.Tensor
    embedding: torch.Tensor
    logits: torch.Tensor | None
    head_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    candidate_logits: dict[str, torch.Tensor] = field(default_factory=dict)
    kinds: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    def with_outputs(self, out: FusionOutput) -> "Predictions":
        """These predictions with a fusion's outputs for the same items (a setting chosen on dev)."""
        return replace(self, embedding=out.embedding, logits=out.logits, head_logits=dict(out.head_logits),
                       candidate_logits=dict(out.candidate_logits), kinds=dict(out.kinds))

    def as_fusion_output(self) -> FusionOutput:
        return FusionOutput(embedding=self.embedding, logits=self.logits, head_logits=self.head_logits,
                            candidate_logits=self.candidate_logits, kinds=self.kinds)


def _cat(chunks: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(chunks) if chunks else torch.empty(0)


@torch.no_grad()
def predict(model: BenchModel, loader, device: torch.device, amp: str = "off") -> Predictions:
    model.eval()
    ids, labels, groups, emb, logits = [], [], [], [], []
    named: dict[str, dict[str, list[torch.Tensor]]] = {"head_logits": {}, "candidate_logits": {}, "kinds": {}}
    start = time.perf_counter()
    for batch in loader:
        batch = batch.to(device, non_blocking=device.type == "cuda")
        with autocast(device, amp):
            out = model(batch)
        ids.extend(batch.item_ids)
        labels.append(batch.labels.cpu())
        groups.append(batch.groups.cpu())
        emb.append(out.embedding.float().cpu())
        if out.logits is not None:
            logits.append(out.logits.float().cpu())
        for field_name, chunks in named.items():
            for k, v in getattr(out, field_name).items():
                chunks.setdefault(k, []).append(v.float().cpu())
    joined = {f: {k: _cat(v) for k, v in chunks.items()} for f, chunks in named.items()}
    return Predictions(ids, _cat(labels), _cat(groups), _cat(emb), _cat(logits) if logits else None,
                       seconds=time.perf_counter() - start, **joined)
