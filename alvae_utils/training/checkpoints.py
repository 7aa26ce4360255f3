"""Checkpoints of the models fitted once per pool (the paper VAE, the mixture-prior VAE): one format, one writer.

A checkpoint holds the model's constructor arguments, its weights as CPU tensors, its
training history and ``meta``, all plain types and tensors, so ``torch.load(weights_only=True)``
reads it on any machine, with or without a GPU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..device import default_device
from ..paths import atomic_path


def save_checkpoint(path: str | os.PathLike, model: nn.Module, history: list[dict], meta: dict,
                    **init: int) -> None:
    """Write ``model`` (weights on the CPU), ``history``, ``meta`` and its constructor arguments ``init`` atomically
    (a temporary file in the same folder, then a rename).

    Raises TypeError, before anything is written, when ``history`` or ``meta`` hold more than plain types (str,
    numbers, lists, dicts): ``torch.load(weights_only=True)`` would refuse the file.
    """
    try:
        json.dumps([history, meta])
    except TypeError as error:
        raise TypeError(f"history and meta must hold plain types (str, numbers, lists, dicts): {error}") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {**init, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                  "history": history, "meta": meta}
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: str | os.PathLike, build: Callable[..., nn.Module], init: tuple[str, ...],
                    device: torch.device | str | None = None) -> tuple[nn.Module, list[dict], dict]:
    """Read a checkpoint of :func:`save_checkpoint` (``weights_only=True``): ``build(**{name: ...})`` with the stored
    constructor arguments ``init``, its weights loaded, on ``device`` (default: the best available), in eval mode;
    and the history and meta."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build(**{name: checkpoint[name] for name in init})
    model.load_state_dict(checkpoint["state_dict"])
    model.to(torch.device(device) if device is not None else default_device()).eval()
    return model, checkpoint["history"], checkpoint["meta"]
