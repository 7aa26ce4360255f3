"""Generated test data: small files in the exact MedMNIST format, for tests and the ``ci`` profile.

They let the multi-label (ChestMNIST) path run offline. Every generated file carries
:data:`alvae_utils.data.datasets.SYNTHETIC_MARKER`, so its data description, and every figure
made from it, says it is synthetic.
"""

from __future__ import annotations

from pathlib import Path

import medmnist
import numpy as np

from .datasets import MULTILABEL
from .medmnist_2d import MEDMNIST_2D, SYNTHETIC_MARKER, medmnist_task
from ..paths import atomic_path


def write_medmnist_npz(path: str | Path, n_train: int, n_val: int, n_test: int,
                       flag: str = "chestmnist", seed: int = 0) -> Path:
    """Write a small synthetic dataset in the exact MedMNIST 28x28 ``.npz`` format.

    A test and CI fixture generator: it lets the multi-label code path run
    offline. Keys ``{train,val,test}_{images,labels}``; images uint8 (N, 28, 28)
    ((N, 28, 28, 3) for RGB flags), labels uint8 (N, L) for multi-label flags and
    (N, 1) otherwise. Each label (or class) owns a 7x7 cell of the image that is
    brightened when the label is on, over noisy background, so a classifier can
    learn the labels. Written atomically; returns the path.
    """
    if flag not in MEDMNIST_2D:
        raise ValueError(f"unknown MedMNIST 2D flag {flag!r}; choose from {', '.join(MEDMNIST_2D)}.")
    info = medmnist.INFO[flag]
    n_outputs = len(info["label"])
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        if n <= 0:
            raise ValueError(f"n_{split} must be positive, got {n}.")
        if medmnist_task(flag) == MULTILABEL:
            on = rng.random((n, n_outputs)) < 0.3
            labels = on.astype(np.uint8)
        else:
            labels = rng.integers(0, n_outputs, size=(n, 1), dtype=np.uint8)
            on = np.eye(n_outputs, dtype=bool)[labels[:, 0]]
        images = rng.normal(60, 25, size=(n, 28, 28))
        for k in range(n_outputs):  # cell k of a 4x4 grid of 7x7 cells
            row, col = divmod(k, 4)
            images[on[:, k], 7 * row:7 * row + 7, 7 * col:7 * col + 7] += 120
        images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
        if info["n_channels"] == 3:
            images = np.repeat(images[..., None], 3, axis=-1)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    arrays[SYNTHETIC_MARKER] = np.array(True)  # so figures never pass this off as real MedMNIST
    path = Path(path)
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return path
