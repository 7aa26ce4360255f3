"""Margin sampling (Scheffer et al., IDA 2001; Settles' survey, 2009): the smallest gap between the top two classes."""

from __future__ import annotations

import torch

from ..data.datasets import MULTICLASS, MULTILABEL
from .ranking import checked_logits


def margin_scores(logits: torch.Tensor, task: str) -> torch.Tensor:
    """The margin of each pool point (N,) from T's logits (N, C); the heuristic takes the *lowest* first.

    multi-class: p_(1) − p_(2), the two largest of p = softmax(logits) (0: a tie at the top, 1: certain).
    multi-label (sigmoid outputs, labels independent): (1/C) Σ_c |p_c − 0.5|, the distance of each label's
    probability from the decision threshold, averaged over labels; for one label this is half the binary
    margin |p − (1 − p)|, so it ranks as the binary margin does. Source: Scheffer, Decomain & Wrobel,
    "Active hidden Markov models for information extraction", IDA 2001. Raises ValueError for logits that
    are not a finite (N, C) tensor, C < 2 classes (multi-class), or an unknown task.
    """
    logits = checked_logits(logits)
    if task == MULTICLASS:
        if logits.shape[1] < 2:
            raise ValueError(f"margin needs at least two classes, got logits of shape {tuple(logits.shape)}.")
        top = torch.softmax(logits, dim=1).topk(2, dim=1).values
        return top[:, 0] - top[:, 1]
    if task == MULTILABEL:
        return (torch.sigmoid(logits) - 0.5).abs().mean(1)
    raise ValueError(f"unknown task {task!r}; use {MULTICLASS!r} or {MULTILABEL!r}.")
