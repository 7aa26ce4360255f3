"""Where tensors live and how they are cut into batches.

Data stay as uint8 tensors until a batch is taken: :func:`images_to_float` converts
each batch to float in [0, 1] on the network's device. :func:`epoch_batches` gives a
training epoch's seeded batch order; :func:`map_batches` is the one loop that runs a
network over many images for inference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .config import ConfigError

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


def numerics(device: torch.device) -> dict[str, object]:
    """What a fit's numbers depend on beyond its settings and data: the device type and, on the CPU, torch's
    thread count now (oneDNN splits its reductions by thread). Part of a cached fit's key."""
    return {"device": device.type, **({"torch_threads": torch.get_num_threads()} if device.type == "cpu" else {})}


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
    device. The caller sets eval mode.
    """
    for extra in aligned:
        if extra is not None and extra.shape[0] != images.shape[0]:
            raise ValueError(f"an aligned tensor has {extra.shape[0]} rows for {images.shape[0]} images.")
    parts = []
    for start in range(0, images.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        batch = images_to_float(images[rows].to(device))
        out = function(batch, *(None if extra is None else extra[rows].to(device) for extra in aligned))
        parts.append(out if isinstance(out, tuple) else (out,))
    return tuple(torch.cat(column).to(images.device) for column in zip(*parts, strict=True))
