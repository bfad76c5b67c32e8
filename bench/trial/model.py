"""The trial's model: named encoders plus one fusion."""
from __future__ import annotations

from torch import nn

from bench.api.interfaces import Batch, Encoder, EncoderOutput, Fusion, FusionOutput
from bench.trial.output_checks import check_encoder_output, check_fusion_output

EXTRA_PREFIX = "cached_extra_"  # per-item extras of a frozen encoder (e.g. per-kind embeddings)


class BenchModel(nn.Module):
    """encoders (by modality) + fusion. Frozen encoders stay in eval mode while training,
    so their outputs are deterministic (and cacheable).

    Outputs are checked (bench/trial/output_checks.py) on every batch in eval mode, where figures
    are computed from them, and in training mode while ``check_training_outputs`` is set (run_stage
    sets it for a stage's first batch: shapes do not change, and a NaN there shows in the loss).
    ``names``: the plugin name of the fusion ("fusion") and of each encoder (by slot), for messages;
    ``num_labels``: the task's label count, the width logits must have (0: no labels).
    """

    def __init__(self, encoders: dict[str, Encoder], fusion: Fusion, names: dict[str, str] | None = None,
                 num_labels: int = 0):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = fusion
        self.names = {"fusion": type(fusion).__name__, **{m: type(e).__name__ for m, e in encoders.items()},
                      **(names or {})}
        self.num_labels = num_labels
        self.check_training_outputs = False

    def _checking(self) -> bool:
        return not self.training or self.check_training_outputs

    def encode(self, batch: Batch, modalities=None) -> dict[str, EncoderOutput]:
        wanted = modalities if modalities is not None else self.fusion.requires
        out = {}
        for m in wanted:
            inputs = batch.inputs[m]
            if "cached_pooled" in inputs:  # frozen-encoder features from the feature cache
                pooled = inputs["cached_pooled"]
                extras = {k[len(EXTRA_PREFIX):]: v for k, v in inputs.items() if k.startswith(EXTRA_PREFIX)}
                if "cached_sequence" in inputs:
                    out[m] = EncoderOutput(inputs["cached_sequence"], inputs["cached_mask"].bool(), pooled, extras)
                else:  # pooled-only entry: a one-token sequence keeps the shapes valid
                    out[m] = EncoderOutput(pooled.unsqueeze(1), pooled.new_ones(pooled.shape[0], 1).bool(), pooled,
                                           extras)
            else:
                out[m] = self.encoders[m](inputs)
            if self._checking():
                check_encoder_output(out[m], encoder=self.names.get(m, m), items=len(batch.item_ids))
        return out

    def forward(self, batch: Batch) -> FusionOutput:
        out = self.fusion(self.encode(batch))
        if self._checking():
            check_fusion_output(out, fusion=self.names["fusion"], items=len(batch.item_ids), num_labels=self.num_labels)
        return out

    def train(self, mode: bool = True) -> "BenchModel":
        """Switch the fusion and trainable encoders; a frozen encoder is only ever put in eval mode
        (and its hundreds of submodules are walked only when it is not there already: this runs
        after every evaluation)."""
        self.training = mode
        self.encoders.training = mode
        self.fusion.train(mode)
        for enc in self.encoders.values():
            if not getattr(enc, "frozen", False):
                enc.train(mode)
            elif enc.training:
                enc.eval()
        return self

    def encoder_parameters(self):
        return [p for p in self.encoders.parameters() if p.requires_grad]

    def head_parameters(self):
        return [p for p in self.fusion.parameters() if p.requires_grad]


def count_parameters(*modules: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameters over modules, each tensor counted once."""
    seen, total, trainable = set(), 0, 0
    for m in modules:
        for p in m.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
    return total, trainable
