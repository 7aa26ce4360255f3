"""Datasets: MNIST, Fashion-MNIST, the MedMNIST 2D family, and an embedded MNIST sample.

(Helper: fill in the loaders below this header; keep Dataset and the task constants.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MULTICLASS = "multi-class"
MULTILABEL = "multi-label"


@dataclass(frozen=True)
class Dataset:
    """Images and labels held in memory as tensors.

    images: uint8 (N, 1, 28, 28). labels: int64 (N,) for multi-class (binary
    included), or int64 0/1 (N, C) for multi-label. ``description`` says where
    the data came from (used in figure labels), e.g. ``"mnist (embedded 5k sample)"``.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    task: str
    class_names: tuple[str, ...]
    description: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_outputs(self) -> int:
        """Width of the classifier head: number of classes (or labels, multi-label)."""
        return len(self.class_names)

    def subset(self, indices: torch.Tensor) -> "Dataset":
        return Dataset(self.name, self.images[indices], self.labels[indices], self.task,
                       self.class_names, self.description)
