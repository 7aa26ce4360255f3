"""Losses and evaluation metrics of the task model, multi-class and multi-label.

* multi-class: cross-entropy; top-1 accuracy; one-vs-rest macro ROC-AUC.
* multi-label (ChestMNIST): BCE-with-logits averaged over the labels; the MedMNIST
  evaluator's ACC (sigmoid > 0.5, accuracy per label, mean over labels) and mean
  per-label ROC-AUC.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score
from torch import Tensor

from .data import MULTICLASS, MULTILABEL
from .device import map_batches, module_device
from .models import TaskModel

TASKS = (MULTICLASS, MULTILABEL)


def check_task(task: str) -> None:
    """Raise ValueError unless ``task`` is multi-class or multi-label."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use {MULTICLASS!r} or {MULTILABEL!r}.")


def per_sample_loss(logits: Tensor, labels: Tensor, task: str) -> Tensor:
    """Loss of each sample (B,): cross-entropy, or BCE-with-logits averaged over the labels."""
    if task == MULTICLASS:
        return F.cross_entropy(logits, labels, reduction="none")
    return F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(1)


def multilabel_accuracy(probs: Tensor, labels: Tensor) -> float:
    """MedMNIST ACC: threshold the probabilities at 0.5, accuracy of each label, mean over labels.

    Every label is scored on the same samples, so this is the mean over all entries.
    """
    if probs.shape != labels.shape or probs.ndim != 2:
        raise ValueError(f"probs and labels must both be (N, C), got {tuple(probs.shape)} and {tuple(labels.shape)}.")
    return ((probs > 0.5) == (labels > 0)).float().mean().item()


def correct_decisions(logits: Tensor, labels: Tensor, task: str) -> tuple[float, int]:
    """(number of correct decisions, number of decisions) for a batch: one per sample, or per label."""
    if task == MULTICLASS:
        return (logits.argmax(1) == labels).sum().item(), labels.numel()
    return multilabel_accuracy(torch.sigmoid(logits), labels) * labels.numel(), labels.numel()


def _multiclass_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    num_classes = probs.shape[1]
    # A class missing from the labels makes the AUC undefined: sklearn warns and gives NaN
    # (or raises, in the binary case); NaN is the documented answer, so no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        try:
            if num_classes == 2:  # sklearn's binary case scores the positive column only
                return float(roc_auc_score(labels, probs[:, 1]))
            return float(
                roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=np.arange(num_classes))
            )
        except ValueError:
            return float("nan")


def _multilabel_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    scores = [
        roc_auc_score(labels[:, j], probs[:, j]) for j in range(labels.shape[1]) if 0 < labels[:, j].sum() < len(labels)
    ]
    return float(np.mean(scores)) if scores else float("nan")


def classification_metrics(logits: Tensor, labels: Tensor, task: str) -> dict[str, float]:
    """``accuracy``, ``medmnist_acc`` and ``auc`` from logits (see :func:`evaluate`)."""
    check_task(task)
    logits, labels = logits.detach().cpu().double(), labels.cpu()
    if task == MULTICLASS:
        probs = torch.softmax(logits, dim=1)
        return {
            "accuracy": (probs.argmax(1) == labels).double().mean().item(),
            "medmnist_acc": float("nan"),
            "auc": _multiclass_auc(probs.numpy(), labels.numpy()),
        }
    probs = torch.sigmoid(logits)
    accuracy = multilabel_accuracy(probs, labels)
    return {"accuracy": accuracy, "medmnist_acc": accuracy, "auc": _multilabel_auc(probs.numpy(), labels.numpy())}


def evaluate(model: TaskModel, images: Tensor, labels: Tensor, task: str) -> dict[str, float]:
    """Accuracy and ROC-AUC of T on a labeled set of uint8 ``images`` (N, 1, 28, 28).

    Multi-class: top-1 accuracy; AUC one-vs-rest macro over softmax probabilities;
    ``medmnist_acc`` NaN. Multi-label (MedMNIST's evaluator): accuracy = ACC =
    per-label accuracy of sigmoid > 0.5, averaged; AUC = mean per-label ROC-AUC over
    labels with both classes present. AUC is NaN when it cannot be computed.
    Leaves the model in eval mode.
    """
    check_task(task)
    model.eval()
    (logits,) = map_batches(lambda x: model(x).logits, images, device=module_device(model))
    return classification_metrics(logits, labels, task)
