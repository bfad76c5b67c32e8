"""Random masks for the masked-prediction objectives (MLM, GMLM, MRFR, GMRFR).

Whole-word masking: a fraction of the *words* of each title is chosen (at least one when the
title has words), and every token of a chosen word is predicted. Of the chosen words 80% are
replaced by [MASK], 10% by random tokens and 10% kept as they are; the treatment is drawn per
word, so the tokens of one word are always treated alike. Words come from the tokenizer's
word_ids (-1 for special and padding tokens, which are never chosen).
"""
from __future__ import annotations

import torch
from torch import Tensor

IGNORE = -100  # label of positions that are not predicted (cross_entropy's ignore_index)


def _count(n: Tensor, fraction: float) -> Tensor:
    """round(fraction * n), at least 1 where n > 0."""
    k = torch.floor(fraction * n.double() + 0.5).long()
    return torch.where(n > 0, k.clamp(min=1), torch.zeros_like(k))


def _choose(scores: Tensor, available: Tensor, k: Tensor) -> Tensor:
    """Per row, the k available columns with the lowest random score."""
    scores = scores.masked_fill(~available, float("inf"))
    rank = scores.argsort(1).argsort(1)
    return (rank < k.unsqueeze(1)) & available


def whole_word_mask(input_ids: Tensor, word_ids: Tensor, *, mask_token_id: int, vocab_size: int,
                    word_fraction: float = 0.15, mask_prob: float = 0.8, random_prob: float = 0.1,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(masked input_ids, labels): labels hold the original id at chosen positions, IGNORE elsewhere."""
    device = input_ids.device
    n_words_max = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
    if n_words_max <= 0:
        return input_ids.clone(), torch.full_like(input_ids, IGNORE)
    present = torch.zeros(input_ids.shape[0], n_words_max, dtype=torch.bool, device=device)
    rows, cols = (word_ids >= 0).nonzero(as_tuple=True)
    present[rows, word_ids[rows, cols]] = True
    scores = torch.rand(present.shape, generator=generator, device=device)
    chosen_words = _choose(scores, present, _count(present.sum(1), word_fraction))
    treatment = torch.rand(present.shape, generator=generator, device=device)  # one draw per word
    safe_words = word_ids.clamp(min=0)
    token_chosen = (word_ids >= 0) & chosen_words.gather(1, safe_words)
    token_treatment = treatment.gather(1, safe_words)
    to_mask = token_chosen & (token_treatment < mask_prob)
    to_random = token_chosen & (token_treatment >= mask_prob) & (token_treatment < mask_prob + random_prob)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=device)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    labels = torch.where(token_chosen, input_ids, torch.full_like(input_ids, IGNORE))
    return masked, labels


def random_patch_mask(batch_size: int, n_patches: int, fraction: float = 0.15, *, device=None,
                      generator: torch.Generator | None = None) -> Tensor:
    """bool [B, n_patches]: round(fraction * n_patches) patches per image (at least one) set True."""
    n = torch.full((batch_size,), n_patches, dtype=torch.long, device=device)
    scores = torch.rand(batch_size, n_patches, generator=generator, device=device)
    available = torch.ones(batch_size, n_patches, dtype=torch.bool, device=device)
    return _choose(scores, available, _count(n, fraction))
