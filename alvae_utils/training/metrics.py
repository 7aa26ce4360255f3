"""Losses and evaluation metrics of the task model, multi-class and multi-label.

* multi-class: cross-entropy; top-1 accuracy; balanced accuracy (mean per-class recall); one-vs-rest
  macro ROC-AUC.
* multi-label (ChestMNIST): BCE-with-logits averaged over the labels; the MedMNIST
  evaluator's ACC (sigmoid > 0.5, accuracy per label, mean over labels) and mean
  per-label ROC-AUC.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import Tensor

from ..data.datasets import MULTICLASS, MULTILABEL
from ..device import map_batches, module_device
from ..models.resnet import TaskModel

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
    # float64: a float32 mean rounds k/n, and a constant shift of k would then look like noise to a t-test.
    return ((probs > 0.5) == (labels > 0)).double().mean().item()


def balanced_accuracy(predictions: Tensor, labels: Tensor) -> float:
    """Mean per-class recall of multi-class ``predictions`` (N,) against ``labels`` (N,), in float64.

    The mean runs over the classes present in ``labels``: a class the evaluation set lacks has no
    recall (a prediction of it counts as an error of the true class), as in scikit-learn's
    ``balanced_accuracy_score`` (Brodersen et al., ICPR 2010). On a class-balanced set it equals accuracy;
    on an imbalanced one, unlike accuracy, it does not reward predicting the large classes.
    """
    if predictions.shape != labels.shape or labels.ndim != 1:
        raise ValueError(f"predictions and labels must both be (N,), got {tuple(predictions.shape)} and "
                         f"{tuple(labels.shape)}.")
    classes = int(labels.max()) + 1
    support = torch.bincount(labels, minlength=classes).double()
    hits = torch.bincount(labels[predictions == labels], minlength=classes).double()
    present = support > 0
    return (hits[present] / support[present]).mean().item()


def correct_decisions(logits: Tensor, labels: Tensor, task: str) -> tuple[Tensor, int]:
    """(number of correct decisions, number of decisions) for a batch: one per sample, or per label.

    The first is a 0-dim int64 tensor on the logits' device, not read: a training loop sums it
    there and reads the sum once per epoch (each read waits for the GPU).
    """
    if task == MULTICLASS:
        return (logits.argmax(1) == labels).sum(), labels.numel()
    return ((torch.sigmoid(logits) > 0.5) == (labels > 0)).sum(), labels.numel()


def mean_auc(probs: np.ndarray, positives: np.ndarray) -> float:
    """Mean one-vs-rest ROC-AUC over the columns that can be scored.

    ``probs`` (N, C) are scores, ``positives`` (N, C) 0/1 truth per column (one-hot
    classes, or the labels of a multi-label task). A column whose evaluation samples
    are all positive or all negative has no AUC and is left out of the mean; NaN only
    when no column can be scored. One rule for multi-class and multi-label data, so
    an evaluation subset that misses a class gives the AUC of the classes it has, as
    MedMNIST's multi-label AUC does. With every class present this equals scikit-learn's
    macro one-vs-rest AUC (and, for two classes, the binary AUC).
    """
    counts = positives.sum(axis=0)
    scored = [roc_auc_score(positives[:, j], probs[:, j]) for j in range(positives.shape[1])
              if 0 < counts[j] < len(positives)]
    return float(np.mean(scored)) if scored else float("nan")


def classification_metrics(logits: Tensor, labels: Tensor, task: str) -> dict[str, float]:
    """``accuracy``, ``balanced_accuracy``, ``medmnist_acc`` and ``auc`` from logits (see :func:`evaluate`)."""
    check_task(task)
    logits, labels = logits.detach().cpu().double(), labels.cpu()
    if task == MULTICLASS:
        probs = torch.softmax(logits, dim=1)
        one_hot = np.eye(probs.shape[1], dtype=np.int64)[labels.numpy()]
        predictions = probs.argmax(1)
        return {
            "accuracy": (predictions == labels).double().mean().item(),
            "balanced_accuracy": balanced_accuracy(predictions, labels),
            "medmnist_acc": float("nan"),
            "auc": mean_auc(probs.numpy(), one_hot),
        }
    probs = torch.sigmoid(logits)
    accuracy = multilabel_accuracy(probs, labels)
    return {"accuracy": accuracy, "balanced_accuracy": float("nan"), "medmnist_acc": accuracy,
            "auc": mean_auc(probs.numpy(), labels.numpy())}


def evaluate(model: TaskModel, images: Tensor, labels: Tensor, task: str) -> dict[str, float]:
    """Accuracy and ROC-AUC of T on a labeled set of uint8 ``images`` (N, 1, 28, 28).

    Multi-class: top-1 accuracy; balanced accuracy (:func:`balanced_accuracy`); AUC one-vs-rest over
    softmax probabilities; ``medmnist_acc`` NaN. Multi-label (MedMNIST's evaluator): accuracy = ACC =
    per-label accuracy of sigmoid > 0.5, averaged; AUC per label; ``balanced_accuracy`` NaN. Both AUCs are
    averaged over the classes or labels that have positive and negative samples
    in the evaluation set (:func:`mean_auc`), NaN only when none has.
    Leaves the model in eval mode.
    """
    check_task(task)
    model.eval()
    (logits,) = map_batches(lambda x: model(x).logits, images, device=module_device(model))
    return classification_metrics(logits, labels, task)
