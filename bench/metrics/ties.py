"""Scores that differ by float32 arithmetic noise alone are ties: one rounding before any ranking.

Two identical titles give cosines from 0.99999988 to 1.00000024 depending on where in a batch
they were computed; a ranking metric that tells them apart measures float32 noise, not the model.
Every ranking metric (retrieval rankings and thresholds, pair thresholds and average precision,
and their bootstrap) first rounds its scores to ``TIE_DECIMALS`` decimal places here. Rounding is
monotone, so it never reorders two scores: it only merges those within the same 1e-6 step.
(float32 resolution near 1 is 6e-8, so the noise of a cosine is a few 1e-7.)
"""
from __future__ import annotations

import numpy as np

TIE_DECIMALS = 6


def tie_rounded(scores) -> np.ndarray:
    """Scores as float64, rounded to ``TIE_DECIMALS`` places (inf, -inf and NaN stay as they are)."""
    return np.round(np.asarray(scores, dtype=np.float64), TIE_DECIMALS)


def tie_rounded_tensor(scores):
    """``tie_rounded`` of a torch tensor, in its own dtype (similarity blocks stay float32)."""
    import torch

    return torch.round(scores, decimals=TIE_DECIMALS)
