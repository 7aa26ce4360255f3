"""When float32 distances can be trusted: the working dtype and the proven error of the fast form.

Core-set and MedAL compute squared distances fast, as ||x||² + ||y||² − 2x·y, and decide near-ties
with exact distances (:func:`.distances.exact_squared_distances`). The radius of "near" is the
bound below; it holds only when float32 products round as IEEE float32, which global settings
(TF32, bfloat16) can change, so the working dtype falls back to float64 when they do.
"""

from __future__ import annotations

import os

import torch


def ieee_float32_products(device: torch.device) -> bool:
    """Whether float32 matrix products on ``device`` round as IEEE float32, as fast_form_error assumes.

    PyTorch runs them in TF32 or bfloat16 under set_float32_matmul_precision("high"/"medium"),
    allow_tf32 or an fp32_precision of "tf32"/"bf16"; oneDNN and MKL do when their environment
    variables say so. Those round 2^13 to 2^16 times more coarsely.
    """
    if os.environ.get("MKL_BLAS_COMPUTE_MODE") or any(
            os.environ.get(name, "strict").lower() != "strict"
            for name in ("ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE")):
        return False
    try:
        if torch.get_float32_matmul_precision() != "highest":
            return False
    except RuntimeError:  # PyTorch raises when the legacy and the per-backend settings were mixed
        return False
    backend = torch.backends.cuda.matmul if device.type == "cuda" else getattr(torch.backends.mkldnn, "matmul", None)
    return getattr(backend, "fp32_precision", "ieee") in ("ieee", "none")  # absent before torch 2.9


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def working_dtype(features: torch.Tensor) -> torch.dtype:
    """float32 for floating features of ≤ 32 bits (widening them is exact) when float32 products are
    IEEE and d is within fast_form_error's range; float64 otherwise, integer features included."""
    narrow = features.is_floating_point() and torch.finfo(features.dtype).bits <= 32
    fits = (features.shape[1] + 8) * unit_roundoff(torch.float32) <= 0.01
    return torch.float32 if narrow and fits and ieee_float32_products(features.device) else torch.float64


def fast_form_error(dtype: torch.dtype, d: int) -> float:
    """κ such that every squared distance computed below in ``dtype`` is within κ(||x̃||² + ||ỹ||²) of
    the exact ||x − y||² (x̃ = x − mean as rounded; MedAL: ||x̃||² − 2x̃·c̃ + ||c̃||² against ||x − c||²).

    An inner product of length n, summed in any order (BLAS blocking and FMAs included), errs by at
    most γ_n Σ|a_i b_i| ≤ γ_n ||a||·||b||, γ_n = nu/(1 − nu), u the unit round-off (Higham 2002,
    §3.1). The products carry one squared norm as their bias (length d + 1); with both norms' own
    errors, the centering and the last addition, and 2||x̃||·||ỹ|| ≤ ||x̃||² + ||ỹ||², the error is at
    most (3γ_{d+1} + 8u)(||x̃||² + ||ỹ||²). 3.3(d + 8)u covers that, second-order terms and the
    rounding of the comparisons included, while (d + 8)u ≤ 0.01 (:func:`working_dtype`).
    """
    return 3.3 * (d + 8) * unit_roundoff(dtype)
