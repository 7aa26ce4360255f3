"""BALD with Monte Carlo dropout (Houlsby et al. 2011; Gal, Islam & Ghahramani, ICML 2017).

ResNet-18 has no dropout layer, so BALD's task model (and only BALD's) has one before its final
layer, as MC-dropout baselines on ResNets do (:data:`BALD_DROPOUT`), trained with it. The features
are computed once, in eval mode, and only the last layer is sampled :data:`BALD_SAMPLES` times with
dropout on (:func:`mc_dropout_probabilities`), which costs T small matrix products.
"""

from __future__ import annotations

import torch

from ..data.datasets import MULTICLASS, MULTILABEL

BALD_DROPOUT = 0.5
"""Dropout rate before ResNet-18's final layer in BALD's task model (Gal et al. 2017 use 0.5)."""
BALD_SAMPLES = 20
"""T, the stochastic forward passes of the last layer per selection."""


def mc_dropout_probabilities(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, task: str,
                             rate: float = BALD_DROPOUT, samples: int = BALD_SAMPLES,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """T stochastic passes of the last layer: (T, N, C) probabilities, p_t = act(W·(m_t ⊙ h / (1 − rate)) + b).

    ``features`` h (N, d) are T's penultimate features (eval mode); ``weight`` (C, d) and ``bias`` (C,) the
    final layer; m_t ~ Bernoulli(1 − rate)^(N×d), drawn by the CPU ``generator`` (inverted dropout, as
    ``nn.Dropout`` in training). act: softmax (multi-class) or sigmoid per label (multi-label). One
    (N, d) mask is held at a time. Raises ValueError for a rate outside [0, 1), samples < 1, or mismatched shapes.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}.")
    if samples < 1:
        raise ValueError(f"BALD needs at least one Monte Carlo sample, got {samples}.")
    if features.dim() != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(f"features (N, d) and weight (C, d) must share d; got {tuple(features.shape)} "
                         f"and {tuple(weight.shape)}.")
    if task not in (MULTICLASS, MULTILABEL):
        raise ValueError(f"unknown task {task!r}; use {MULTICLASS!r} or {MULTILABEL!r}.")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    weight, bias, features = weight.detach().float(), bias.detach().float(), features.detach().float()
    out = torch.empty(samples, features.shape[0], weight.shape[0], device=features.device)
    for t in range(samples):
        keep = torch.rand(features.shape, generator=generator) >= rate
        dropped = features * keep.to(features.device) / (1 - rate)
        logits = torch.addmm(bias, dropped, weight.T)
        out[t] = torch.softmax(logits, dim=1) if task == MULTICLASS else torch.sigmoid(logits)
    return out


def _plogp(p: torch.Tensor) -> torch.Tensor:
    return torch.where(p > 0, p * p.clamp_min(torch.finfo(p.dtype).tiny).log(), torch.zeros_like(p))


def bald_scores(mc_probabilities: torch.Tensor, task: str) -> torch.Tensor:
    """BALD score per pool point (N,) from Monte Carlo probabilities (T, N, C); the heuristic takes the *highest*.

    multi-class: I(y; w | x) = H[(1/T) Σ_t p_t] − (1/T) Σ_t H[p_t], with H[p] = −Σ_c p_c log p_c
    (Houlsby et al. 2011, Eq. 2; Gal et al. 2017, Eq. 8). multi-label (sigmoid outputs, labels
    independent given w): the sum over labels of each label's binary mutual information. Nats; 0·log 0 = 0,
    computed in float64. The batch is the top β by this score, the standard batch form of BALD; it is not
    BatchBALD (Kirsch et al. 2019), which scores a batch jointly. Raises ValueError for a tensor that is not
    (T, N, C) of probabilities in [0, 1], or an unknown task.
    """
    if not isinstance(mc_probabilities, torch.Tensor) or mc_probabilities.dim() != 3:
        raise ValueError("BALD needs Monte Carlo probabilities of shape (T, N, C).")
    p = mc_probabilities.double()
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or bool((p > 1).any()):
        raise ValueError("Monte Carlo probabilities must be finite and in [0, 1].")
    if task == MULTICLASS:
        mean = p.mean(0)
        return (-_plogp(mean).sum(1) + _plogp(p).sum(2).mean(0)).float()
    if task == MULTILABEL:
        def binary_entropy(q: torch.Tensor) -> torch.Tensor:
            return -(_plogp(q) + _plogp(1 - q))
        return (binary_entropy(p.mean(0)) - binary_entropy(p).mean(0)).sum(1).float()
    raise ValueError(f"unknown task {task!r}; use {MULTICLASS!r} or {MULTILABEL!r}.")
