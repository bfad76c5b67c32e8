"""Classification heads shared by the fusions.

The default head normalises its input: on frozen features a bare linear head at a transformer
fine-tuning learning rate ends far from convergence (tests/test_head_convergence.py).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class HeadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout before each linear layer of the head")
    hidden: int = Field(0, ge=0, description="hidden width of an MLP head (0 = linear head)")
    norm: bool = Field(True, description=(
        "LayerNorm on the head's input, so features of any scale (frozen MiniLM vectors are ~0.3 per "
        "dimension) train at the same head_lr; false = the bare linear or MLP head"))


def make_head(in_dim: int, num_labels: int, opts: HeadOptions) -> nn.Module | None:
    """[LayerNorm], then a linear (or one-hidden-layer MLP) head; None for tasks without labels."""
    if num_labels <= 0:
        return None
    layers: list[nn.Module] = [nn.LayerNorm(in_dim)] if opts.norm else []
    layers.append(nn.Dropout(opts.dropout))
    if opts.hidden:
        layers += [nn.Linear(in_dim, opts.hidden), nn.GELU(), nn.Dropout(opts.dropout), nn.Linear(opts.hidden, num_labels)]
    else:
        layers.append(nn.Linear(in_dim, num_labels))
    return nn.Sequential(*layers)


def num_labels(ctx) -> int:
    return ctx.task.num_labels if ctx.task is not None and ctx.task.kind == "classification" else 0
