"""Float32 passes over the pool with a proven error bound, so core-set and MedAL decide in float64 only near the top.

Core-set's first pass (every unlabeled point against every labeled one) and MedAL's refreshes (every
unlabeled point against the centroid) are most of their time, and a float32 product costs about half a
float64 one on the CPU (issue 22). Neither pass decides a pick: they only rank the pool so that the
lazy loops know which points can still be picked. A float32 value within a proven bound R of the exact
one ranks safely: a point whose float32 value plus R stays below what the candidates reach exactly
cannot be picked, and every point that can be is recomputed in float64 before a pick is decided. The
picks are therefore those of the float64 computation (:data:`.distances.WORKING_DTYPE`).

The bounds are worst-case (Higham 2002, *Accuracy and Stability of Numerical Algorithms*, §3.1: an
inner product of length n computed in any order, with or without FMA, errs by at most γ_n Σ|x_k y_k|,
γ_n = nu/(1 − nu), u = 2⁻²⁴ in float32). They hold only when float32 products round as IEEE float32:
TF32 or bfloat16 matmuls (``torch.set_float32_matmul_precision("high")`` or ``"medium"``) round to
10 or 8 bits, and then :func:`ieee_float32_matmul` is False and the callers stay in float64, so the
picks do not depend on those settings.
"""

from __future__ import annotations

import math

import torch

UNIT_ROUNDOFF = 2.0 ** -24
"""u of float32 (round to nearest)."""

FLOAT64_UNIT = 2.0 ** -53

HEADROOM = 1.25
"""Factor on every bound, for the float64 rounding of the bound and of the value it is added to."""

SCALE_RANGE = (2.0 ** -60, 2.0 ** 60)
"""Squared norms outside this range take the float64 path: below it, products reach float32's subnormals
(whose rounding is absolute, not relative); above it, sums of squares approach its overflow."""

_FLOAT32_EXACT = (torch.float32, torch.float16, torch.bfloat16)
"""Feature dtypes that float32 holds exactly (float64 features would be rounded: they take the float64 path)."""


def ieee_float32_matmul(device: torch.device) -> bool:
    """Whether float32 matrix products on ``device`` round as IEEE float32 (PyTorch's default, precision "highest").

    Reads the backend's ``fp32_precision`` (which ``torch.set_float32_matmul_precision`` and
    ``torch.backends.fp32_precision`` set); "none" inherits IEEE. A setting PyTorch refuses to report
    (mixed legacy and new APIs) counts as not IEEE. Devices other than CPU and CUDA: False.
    """
    backend = {"cpu": torch.backends.mkldnn.matmul, "cuda": torch.backends.cuda.matmul}.get(device.type)
    if backend is None:
        return False
    try:
        return backend.fp32_precision in ("none", "ieee")
    except RuntimeError:
        return False


def _gamma(n: int) -> float:
    return n * UNIT_ROUNDOFF / (1.0 - n * UNIT_ROUNDOFF)


def float32_pass_allowed(features: torch.Tensor, largest_norm: float) -> bool:
    """Whether a float32 pass over ``features`` has the bounds below: float32 holds the features exactly,
    matmuls are IEEE, and ``largest_norm`` (the largest squared centred norm) is within :data:`SCALE_RANGE`."""
    return (features.dtype in _FLOAT32_EXACT and ieee_float32_matmul(features.device)
            and SCALE_RANGE[0] <= largest_norm <= SCALE_RANGE[1] and features.shape[1] * UNIT_ROUNDOFF < 0.01)


def squared_distance_bound(d: int, largest_norm: float, mean_norm: float, float64_tol: float) -> float:
    """R ≥ |v₃₂ − v₆₄| for core-set's squared distances between any two pool points: v₃₂ from float32 rows
    centred on the float32-rounded mean (float32 norms, ``addmm`` or ``addmv``, then + ||ũ||²), v₆₄ any
    float64 evaluation within ``float64_tol`` of the exact value (:func:`.distances.lower_min_dist`'s).

    ``largest_norm`` is the largest float64 ||x − m||² over the pool, ``mean_norm`` = ||m||, ``float64_tol``
    the float64 path's own error (:func:`.distances.round_off`). With S ≥ ||x − m₃₂|| for every x
    (S = √largest_norm + u·||m||, since m₃₂ − m is at most u·|m| per entry) and A = (1 + u)S ≥ ||ũ||:
    centring in float32 moves each point by at most uS, so ||ũ − q̃||² is within 2uS(4S + 2uS) of the
    exact ||u − q||²; the two norms err by at most γ_d·A² each; ||q̃||² − 2ũ·q̃ by at most 3γ_{d+1}A²
    whether the product rounds its sum and then adds ||q̃||² (2γ_d A² + u·3A²) or folds ||q̃||² into its
    sum (an inner product of length d + 1, terms of 3A² in all), and adding ||ũ||² by u·4A².
    """
    s = math.sqrt(largest_norm) + UNIT_ROUNDOFF * mean_norm
    a2 = ((1.0 + UNIT_ROUNDOFF) * s) ** 2
    gamma = _gamma(d + 2)
    centring = 2.0 * UNIT_ROUNDOFF * s * (4.0 * s + 2.0 * UNIT_ROUNDOFF * s)
    arithmetic = (5.0 * gamma + 4.0 * UNIT_ROUNDOFF) * a2 * (1.0 + gamma)
    return HEADROOM * (centring + arithmetic + float64_tol)


def centroid_score_bound(d: int, largest_norm: float, mean_norm: float, centroid_norm: float) -> float:
    """e ≥ |s₃₂ − s₆₄| for MedAL's scores s = ||u − m||² − 2(u − m)·c (float64 ||u − m||² in both).

    s₃₂ takes u·c from one float32 matrix-vector product of the raw features with c rounded to float32,
    then subtracts m·c in float64; s₆₄ is the float64 score of :func:`.medal._centroid_scores`. With
    B = √largest_norm + ||m|| ≥ ||u||: rounding c costs u·B·||c||, the product γ_d·B·||c||(1 + u), both
    doubled; both sides' float64 arithmetic adds at most γ₆₄ (d + 4)(B² + 2B||c|| + 2||m||·||c||).
    """
    b = math.sqrt(largest_norm) + mean_norm
    float32_part = 2.0 * (_gamma(d) * (1.0 + UNIT_ROUNDOFF) + UNIT_ROUNDOFF) * b * centroid_norm
    float64_part = 2.0 * (d + 4) * FLOAT64_UNIT * (b * b + 2.0 * b * centroid_norm + 2.0 * mean_norm * centroid_norm)
    return HEADROOM * (float32_part + float64_part)


def float64_score_bound(d: int, largest_norm: float, centroid_norm: float) -> float:
    """e₆₄ ≥ the float64 error of MedAL's score ||u − m||² − 2(u − m)·c from rows centred in float64
    (||u − m||² ≤ ``largest_norm``), however its sums are ordered: γ₆₄ (d + 4)(B² + 2B||c||), doubled, with
    B = √largest_norm. Candidates within 2e₆₄ of the best score are scored again row by row."""
    b = math.sqrt(largest_norm)
    return HEADROOM * 2.0 * (d + 4) * FLOAT64_UNIT * (b * b + 2.0 * b * centroid_norm)
