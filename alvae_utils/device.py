"""Where tensors live, how they are cut into batches, and what a device's numbers depend on.

Data stay as uint8 tensors until a batch is taken: :func:`images_to_float` converts
each batch to float in [0, 1] on the network's device. :func:`epoch_batches` gives a
training epoch's seeded batch order; :func:`map_batches` is the one loop that runs a
network over many images for inference.

On CUDA, alvae computes in IEEE fp32 with deterministic algorithms (:func:`reproducible_cuda`):
torch 2.14 would otherwise run fp32 convolutions in TF32 on Ampere and newer GPUs, and pick
non-deterministic kernels. :func:`numerics` names what a fit's or run's numbers depend on
(device type and CPU threads; on CUDA the GPU model and the CUDA, cuDNN and torch versions).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .config import ConfigError

CUBLAS_WORKSPACE_VARIABLE = "CUBLAS_WORKSPACE_CONFIG"
DETERMINISTIC_CUBLAS_WORKSPACE = ":4096:8"
"""cuBLAS workspace setting under which its matrix products are deterministic (CUDA ≥ 10.2; NVIDIA's cuBLAS
docs, "Results reproducibility"). cuBLAS reads it when torch first creates a handle, so it must be in the
environment before a process's first CUDA matrix product: set here, when alvae is imported (a value already
set is kept), and in Ray's workers through their runtime environment (:mod:`alvae_utils.execution.ray_executor`).
Under deterministic algorithms torch refuses a cuBLAS product without it."""
os.environ.setdefault(CUBLAS_WORKSPACE_VARIABLE, DETERMINISTIC_CUBLAS_WORKSPACE)

INFERENCE_BATCH = 1024
"""Images per forward pass in inference: large, since no activations are kept for backward."""


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """The device to run on: ``None`` → :func:`default_device`; else ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises ConfigError, before any work, for a name torch does not know or a CUDA
    device this machine does not have.
    """
    if spec is None:
        return default_device()
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {spec!r}; use cpu, cuda or cuda:N (default: cuda when available).") \
            from None
    if device.type == "cuda":
        available = torch.cuda.device_count()
        if available == 0:
            raise ConfigError(f"device {spec!r} asked for, but this machine has no CUDA device; use cpu.")
        if device.index is not None and device.index >= available:
            raise ConfigError(f"device {spec!r} asked for, but this machine has {available} CUDA device(s): "
                              f"use cuda:0 … cuda:{available - 1}.")
    elif device.type != "cpu":
        raise ConfigError(f"device {spec!r} is not supported here; use cpu, cuda or cuda:N.")
    return device


def physical_gpu(device: torch.device) -> str | None:
    """The physical GPU behind a CUDA ``device`` as the node names it: its entry in ``CUDA_VISIBLE_DEVICES``
    (an index or a UUID), or its index when that is unset; None for any other device."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = [entry for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry]
    return visible[index] if index < len(visible) else str(index)


def numerics(device: torch.device) -> dict[str, object]:
    """What a fit's or run's numbers depend on beyond its settings and data, as JSON-ready values.

    The device type; on the CPU, torch's thread count now (oneDNN splits its reductions by
    thread); on CUDA, the GPU model (``gpu``, its name) and compute capability (``capability``,
    "major.minor": kernels are chosen per architecture), and the ``cuda``, ``cudnn`` and ``torch``
    versions (their kernels change between releases). Part of the keys of cached fits and of the
    t-SNE caches, and recorded in every run's state for the resume check. The CPU entry is
    what it was before CUDA was covered, so the CPU caches keep their keys.
    """
    if device.type != "cuda":
        return {"device": device.type, **({"torch_threads": torch.get_num_threads()} if device.type == "cpu" else {})}
    properties = torch.cuda.get_device_properties(device)
    return {"device": "cuda", "gpu": properties.name, "capability": f"{properties.major}.{properties.minor}",
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "torch": torch.__version__}


def describe_numerics(values: dict[str, object]) -> str:
    """:func:`numerics` in words: "the CPU at 2 torch thread(s)", "NVIDIA H100 80GB HBM3 (compute capability
    9.0) with CUDA 13.0, cuDNN 92400 and torch 2.14.1"."""
    if values.get("device") == "cpu":
        return f"the CPU at {values.get('torch_threads')} torch thread(s)"
    if values.get("device") != "cuda":
        return f"device {values.get('device')}"
    return (f"{values.get('gpu', 'an unrecorded GPU')} (compute capability {values.get('capability', '?')}) with "
            f"CUDA {values.get('cuda', '?')}, cuDNN {values.get('cudnn', '?')} and torch {values.get('torch', '?')}")


def machine_description() -> str:
    """The machine in words, for timings: "AMD EPYC 7B13, 2 CPUs, no GPU" (CPU model from
    /proc/cpuinfo where there is one, logical CPUs, and each CUDA device's name)."""
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "CPU")
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    return f"{cpu}, {os.cpu_count()} CPUs, " + (", ".join(gpus) if gpus else "no GPU")


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return handle.read().splitlines()
    except OSError:  # not Linux
        return []


@contextmanager
def reproducible_cuda(device: torch.device) -> Iterator[None]:
    """Run the block in deterministic IEEE fp32 on a CUDA ``device``, then restore the settings as they were.

    Sets ``torch.use_deterministic_algorithms(True)`` (with cuBLAS's workspace setting,
    :data:`DETERMINISTIC_CUBLAS_WORKSPACE`), ``torch.backends.cudnn.deterministic``, and fp32
    precision "ieee" for cuDNN's convolutions (``torch.backends.cudnn.conv.fp32_precision``, "tf32"
    by default in torch 2.14) and cuBLAS's matrix products (``torch.backends.cuda.matmul.fp32_precision``).
    The same seed on the same GPU model and software then gives the same numbers, and the paper's
    RTX 2080, which has no TF32, computed in this precision. ``train.tf32`` brings TF32 back for the
    task model (:func:`tf32_precision`); ``train.cudnn_benchmark`` lets cuDNN choose among its
    deterministic algorithms by timing, which is not reproducible. Training, inference, the
    Algorithm 1 loop and the t-SNE experiment run under it; contexts nest.

    On any other device nothing is touched: CPU runs keep their numbers (deterministic mode
    changes some CPU kernels, such as ``index_put``).
    """
    if device.type != "cuda":
        yield
        return
    backends = torch.backends
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              backends.cudnn.deterministic, backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision)
    torch.use_deterministic_algorithms(True)
    backends.cudnn.deterministic = True
    backends.cudnn.conv.fp32_precision = backends.cuda.matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        deterministic, warn_only, cudnn_deterministic, conv, matmul = before
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        backends.cudnn.deterministic = cudnn_deterministic
        backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision = conv, matmul


@contextmanager
def tf32_precision(enabled: bool, device: torch.device) -> Iterator[None]:
    """With ``enabled`` on a CUDA ``device``: fp32 convolutions and matrix products in TF32 for the block.

    The ``train.tf32`` speed setting: TF32 keeps fp32's range with a 10-bit mantissa, and runs
    on the tensor cores of Ampere and newer GPUs (nothing changes below). Otherwise, and on
    other devices, nothing is touched. Restores the precisions as they were.
    """
    if not enabled or device.type != "cuda":
        yield
        return
    backends = torch.backends
    before = backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision
    backends.cudnn.conv.fp32_precision = backends.cuda.matmul.fp32_precision = "tf32"
    try:
        yield
    finally:
        backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision = before


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to ``threads`` (None: leave it), then restore it.

    On the CPU a run's numbers depend on this count (oneDNN splits its reductions by
    thread), so every executor pins it per run. Raises ConfigError for ``threads`` < 1.
    """
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be an integer ≥ 1, got {threads!r}.")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def synchronized_clock(device: torch.device) -> float:
    """``time.perf_counter()`` (seconds) once ``device`` has finished the work queued on it.

    CUDA runs kernels asynchronously: a clock read while they are still queued would time
    their launch, not their run. Timings of training, selection and evaluation take both ends
    with this. On the CPU it is the plain clock.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter."""
    return next(module.parameters()).device


def images_to_float(images: Tensor) -> Tensor:
    """uint8 images → float32 in [0, 1]; float images are taken to be in [0, 1] already.

    Raises TypeError for any other dtype.
    """
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    if images.is_floating_point():
        return images.float()
    raise TypeError(f"images must be uint8 (0–255) or float in [0, 1], got {images.dtype}.")


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Iterator[Tensor]:
    """Index batches of one epoch, in the order of a permutation drawn on the CPU.

    Drawing on the CPU gives the same order on every device.
    """
    order = torch.randperm(n, generator=generator).to(device)
    return iter(order.split(batch_size))


@torch.no_grad()
def map_batches(function: Callable[..., Tensor | tuple[Tensor, ...]], images: Tensor, *aligned: Tensor | None,
                device: torch.device, batch_size: int = INFERENCE_BATCH) -> tuple[Tensor, ...]:
    """Apply ``function`` to ``images`` (N, ...) batch by batch, under ``no_grad``, on ``device``.

    ``function(x, *rows)`` gets a float batch ``x`` in [0, 1] and the matching rows of
    each ``aligned`` tensor (N, ...) (``None`` passes through as ``None``); it returns
    one tensor or a tuple of tensors, each with the batch as its first dimension.
    Returns those outputs concatenated over all N images, as a tuple, on the images'
    device. Runs under :func:`reproducible_cuda`. The caller sets eval mode.
    """
    for extra in aligned:
        if extra is not None and extra.shape[0] != images.shape[0]:
            raise ValueError(f"an aligned tensor has {extra.shape[0]} rows for {images.shape[0]} images.")
    parts = []
    with reproducible_cuda(device):
        for start in range(0, images.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            batch = images_to_float(images[rows].to(device))
            out = function(batch, *(None if extra is None else extra[rows].to(device) for extra in aligned))
            parts.append(out if isinstance(out, tuple) else (out,))
    return tuple(torch.cat(column).to(images.device) for column in zip(*parts, strict=True))
