"""Classification heads shared by the fusions."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class HeadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    hidden: int = Field(0, ge=0, description="hidden width of an MLP head (0 = linear head)")


def make_head(in_dim: int, num_labels: int, opts: HeadOptions) -> nn.Module | None:
    """Linear (or one-hidden-layer MLP) head; None for tasks without labels."""
    if num_labels <= 0:
        return None
    if opts.hidden:
        return nn.Sequential(nn.Dropout(opts.dropout), nn.Linear(in_dim, opts.hidden), nn.GELU(),
                             nn.Dropout(opts.dropout), nn.Linear(opts.hidden, num_labels))
    return nn.Sequential(nn.Dropout(opts.dropout), nn.Linear(in_dim, num_labels))


def num_labels(ctx) -> int:
    return ctx.task.num_labels if ctx.task is not None and ctx.task.kind == "classification" else 0
