"""Baselines that rank the pool: random selection, entropy, and the top β of any score.

:func:`top_k_select` also ranks loss prediction's predicted losses (Eq. 3–4).
"""

from __future__ import annotations


import torch

from ..data.datasets import MULTICLASS, MULTILABEL
from .pool import check_pool



def random_select(labeled_mask: torch.Tensor, budget: int, generator: torch.Generator) -> torch.Tensor:
    """Uniformly random β unlabeled points, without replacement.

    ``generator`` is a CPU ``torch.Generator`` (so a seed gives the same picks
    on every device); the result is moved to the mask's device.
    """
    budget = check_pool(labeled_mask, budget)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError("random selection needs a seeded CPU generator: "
                         "pass generator=torch.Generator().manual_seed(seed).")
    unlabeled = (~labeled_mask).nonzero().squeeze(1).cpu()
    order = torch.randperm(len(unlabeled), generator=generator)[:budget]
    return unlabeled[order].to(labeled_mask.device)


def checked_logits(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` as at least float32 if they are a finite (N, C) tensor; ValueError otherwise."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("logits must be a 2-D tensor (N, C) of the task model's outputs.")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain NaN or inf; check the task model before selecting.")
    if not logits.is_floating_point() or torch.finfo(logits.dtype).bits < 32:
        logits = logits.float()
    return logits


def entropy_scores(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Predictive entropy per point (N,) from logits (N, C).

    multi-class: Shannon entropy of softmax(logits) (maximal, log C, for uniform logits).
    multi-label: Σ_c of the binary entropies of sigmoid(logits_c) (labels treated as independent).
    Log-probabilities come from log_softmax / logsigmoid, and 0·log 0 is taken
    as 0, so extreme finite logits give no NaN.
    """
    logits = checked_logits(logits)

    def plogp(log_p: torch.Tensor) -> torch.Tensor:
        p = log_p.exp()
        return torch.where(p > 0, p * log_p, torch.zeros_like(p))

    if task == MULTICLASS:
        return -plogp(torch.log_softmax(logits, dim=1)).sum(1)
    if task == MULTILABEL:
        log_p, log_q = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
        return -(plogp(log_p) + plogp(log_q)).sum(1)
    raise ValueError(f"unknown task {task!r}; use {MULTICLASS!r} or {MULTILABEL!r}.")


def top_k_select(scores: torch.Tensor, labeled_mask: torch.Tensor, budget: int) -> torch.Tensor:
    """The β unlabeled points of highest score, highest first; ties → lowest index first."""
    if not isinstance(scores, torch.Tensor):
        raise ValueError("scores must be a tensor with one score per pool point.")
    scores = scores.reshape(-1) if scores.dim() == 2 and scores.shape[1] == 1 else scores
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape (N,) or (N, 1), got {tuple(scores.shape)}.")
    budget = check_pool(labeled_mask, budget, scores.shape[0])
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN; check the model that produced them.")
    unlabeled = (~labeled_mask.to(scores.device)).nonzero().squeeze(1)
    # A stable descending sort keeps equal scores in index order: deterministic ties.
    order = torch.sort(scores.index_select(0, unlabeled), descending=True, stable=True).indices[:budget]
    return unlabeled.index_select(0, order)


