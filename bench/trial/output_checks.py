"""Checks of what encoder, fusion and objective plugins return, before any figure is computed from it.

A NaN embedding scores retrieval 0, an ``inf`` breaks cosine similarity, and a fusion with more
logit columns than the task has labels predicts classes that do not exist: each would become an
``ok`` row that a leaderboard ranks. Checked here, the trial fails with a message naming the
plugin, the tensor and what was wrong.
"""
from __future__ import annotations

import torch

from bench.errors import TrialFailure
from bench.api.interfaces import EncoderOutput, FusionOutput


class PluginOutputError(TrialFailure):
    """A plugin returned a tensor of the wrong shape, or with NaN or infinite values."""


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(n) for n in t.shape) + "]"


def check_tensor(t, *, plugin: str, name: str, rows: int, dims: int, width: int | None = None) -> None:
    """``t`` is a ``dims``-D tensor with ``rows`` rows (and ``width`` columns when given), every value finite."""
    if not isinstance(t, torch.Tensor):
        raise PluginOutputError(f"{plugin} returned {name} as {type(t).__name__}, not a tensor")
    if t.dim() != dims or t.shape[0] != rows:
        want = f"[{rows}, ...]" if dims > 1 else f"[{rows}]"
        raise PluginOutputError(f"{plugin} returned {name} of shape {_shape(t)} for a batch of {rows} items "
                                f"(expected a {dims}-D tensor {want})")
    if width is not None and t.shape[-1] != width:
        raise PluginOutputError(f"{plugin} returned {name} of shape {_shape(t)}: {t.shape[-1]} columns, "
                                f"but the task has {width} labels")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = ~torch.isfinite(t)
        kinds = [k for k, found in (("NaN", torch.isnan(t).any()), ("infinite", torch.isinf(t).any())) if found]
        raise PluginOutputError(f"{plugin} returned {name} with {int(bad.sum())} {' and '.join(kinds)} value(s) "
                                f"(shape {_shape(t)})")


def check_fusion_output(out: FusionOutput, *, fusion: str, items: int, num_labels: int, step: str = "") -> None:
    """A fusion's output for ``items`` items: embedding [items, D], logits (and each part)
    [items, num_labels] when the task has labels, kinds [items, D]; all finite. ``step``: the fusion
    method that returned it, when not forward (e.g. fit_on_dev)."""
    plugin = f"fusion '{fusion}'" + (f" ({step})" if step else "")
    if not isinstance(out, FusionOutput):
        raise PluginOutputError(f"{plugin} returned {type(out).__name__}, not a FusionOutput")
    check_tensor(out.embedding, plugin=plugin, name="embedding", rows=items, dims=2)
    width = num_labels if num_labels >= 2 else None
    if out.logits is not None:
        check_tensor(out.logits, plugin=plugin, name="logits", rows=items, dims=2, width=width)
    for field_name in ("head_logits", "candidate_logits", "kinds"):
        if not isinstance(getattr(out, field_name), dict):
            raise PluginOutputError(f"{plugin} returned {field_name} as {type(getattr(out, field_name)).__name__}, "
                                    "not a dict of named tensors (FusionOutput's positional order is embedding, "
                                    "logits, head_logits, candidate_logits, kinds: pass them by name)")
    for field_name in ("head_logits", "candidate_logits"):
        for name, part in getattr(out, field_name).items():
            check_tensor(part, plugin=plugin, name=f"{field_name}[{name!r}]", rows=items, dims=2, width=width)
    for kind, emb in out.kinds.items():
        check_tensor(emb, plugin=plugin, name=f"kinds['{kind}']", rows=items, dims=2)


def check_encoder_output(out: EncoderOutput, *, encoder: str, items: int) -> None:
    """An encoder's output for ``items`` items: pooled [items, D] and sequence [items, N, D], finite."""
    plugin = f"encoder '{encoder}'"
    if not isinstance(out, EncoderOutput):
        raise PluginOutputError(f"{plugin} returned {type(out).__name__}, not an EncoderOutput")
    check_tensor(out.pooled, plugin=plugin, name="pooled", rows=items, dims=2)
    check_tensor(out.sequence, plugin=plugin, name="sequence", rows=items, dims=3)
    for name, extra in out.extras.items():
        if isinstance(extra, torch.Tensor) and extra.dim() >= 1:
            check_tensor(extra, plugin=plugin, name=f"extras['{name}']", rows=items, dims=extra.dim())


def check_pair_scores(scores, *, plugin: str, pairs: int) -> None:
    """A pair-scoring objective's scores: one finite value per pair."""
    check_tensor(scores, plugin=plugin, name="pair scores", rows=pairs, dims=1)
