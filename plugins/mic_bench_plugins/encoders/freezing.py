"""Freezing policy shared by encoders: frozen, last-n blocks trainable, or full fine-tune."""
from __future__ import annotations

from typing import Literal

from torch import nn

FreezePolicy = Literal["none", "all", "last_n"]


def apply_freeze(model: nn.Module, blocks: list[nn.Module], policy: str, last_n: int) -> bool:
    """Set requires_grad per policy; return True when nothing in ``model`` trains."""
    if policy == "none":
        return False
    for p in model.parameters():
        p.requires_grad_(False)
    if policy == "all" or last_n <= 0:
        return True
    for block in blocks[-last_n:]:
        for p in block.parameters():
            p.requires_grad_(True)
    return False
