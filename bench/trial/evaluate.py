"""Run a trained model over a split and keep everything metrics need (on the CPU)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch

from bench.trial.device import autocast
from bench.interfaces import FusionOutput
from bench.trial.model import BenchModel


@dataclass
class Predictions:
    item_ids: list[str]
    labels: torch.Tensor
    groups: torch.Tensor
    embedding: torch.Tensor
    logits: torch.Tensor | None
    logits_parts: list[torch.Tensor] = field(default_factory=list)
    kinds: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    def with_outputs(self, out: FusionOutput) -> "Predictions":
        """These predictions with a fusion's outputs for the same items (a setting chosen on dev)."""
        return replace(self, embedding=out.embedding, logits=out.logits, logits_parts=list(out.logits_parts),
                       kinds=dict(out.kinds))

    def as_fusion_output(self) -> FusionOutput:
        return FusionOutput(embedding=self.embedding, logits=self.logits, logits_parts=self.logits_parts, kinds=self.kinds)


def _cat(chunks: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(chunks) if chunks else torch.empty(0)


@torch.no_grad()
def predict(model: BenchModel, loader, device: torch.device, amp: str = "off") -> Predictions:
    model.eval()
    ids, labels, groups, emb, logits = [], [], [], [], []
    parts: list[list[torch.Tensor]] = []
    kinds: dict[str, list[torch.Tensor]] = {}
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
        for i, p in enumerate(out.logits_parts):
            if len(parts) <= i:
                parts.append([])
            parts[i].append(p.float().cpu())
        for k, v in out.kinds.items():
            kinds.setdefault(k, []).append(v.float().cpu())
    return Predictions(ids, _cat(labels), _cat(groups), _cat(emb), _cat(logits) if logits else None,
                       [_cat(p) for p in parts], {k: _cat(v) for k, v in kinds.items()},
                       time.perf_counter() - start)
