"""Training and inference for the task model T (+ loss prediction P) and the VAE V.

Data stay as tensors on the device: each epoch draws a permutation from a seeded
``torch.Generator`` and batches are sliced by index, then converted from uint8 to
float in [0, 1] batch-wise. No DataLoader, no per-sample transforms.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn
from tqdm import tqdm

from .config import TrainConfig, VAEConfig
from .data import MULTICLASS, MULTILABEL
from .models import VAE, LossPredictionModule, TaskModel, pair_ranking_loss, vae_loss
from .paths import atomic_path

TASKS = (MULTICLASS, MULTILABEL)
MIN_BATCH = 2  # BatchNorm cannot normalise one sample: layer4's maps are 1×1 at 28×28 input


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def derive_seed(*parts: object) -> int:
    """A seed in [0, 2**31) from ``parts``, stable across processes and machines.

    Uses SHA-256 of ``repr(parts)``: Python's ``hash`` is salted per process.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


def images_to_float(images: Tensor) -> Tensor:
    """uint8 images → float32 in [0, 1]; float images are taken to be in [0, 1] already."""
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    if images.is_floating_point():
        return images.float()
    raise TypeError(f"images must be uint8 (0–255) or float in [0, 1], got {images.dtype}.")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use {MULTICLASS!r} or {MULTILABEL!r}.")


def _batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Iterator[Tensor]:
    """Index batches of one epoch, in the order of a permutation drawn on the CPU.

    Drawing on the CPU gives the same order on every device.
    """
    order = torch.randperm(n, generator=generator).to(device)
    return iter(order.split(batch_size))


def _module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


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


def _correct(logits: Tensor, labels: Tensor, task: str) -> tuple[float, int]:
    """(number of correct decisions, number of decisions) for a batch."""
    if task == MULTICLASS:
        return (logits.argmax(1) == labels).sum().item(), labels.numel()
    return multilabel_accuracy(torch.sigmoid(logits), labels) * labels.numel(), labels.numel()


def build_task_model(
    num_outputs: int,
    config: TrainConfig,
    seed: int,
    device: torch.device | str,
    with_loss_prediction: bool = False,
    extra_dim: int = 0,
) -> tuple[TaskModel, LossPredictionModule | None]:
    """Seed, then create T (and P): the same seed always gives the same initial weights."""
    if extra_dim and not with_loss_prediction:
        raise ValueError("extra_dim > 0 only makes sense with the loss-prediction module (LP+VAE).")
    seed_everything(seed)
    model = TaskModel(num_outputs, pretrained=config.pretrained).to(device)
    lp_module = LossPredictionModule(extra_dim=extra_dim).to(device) if with_loss_prediction else None
    return model, lp_module


@dataclass
class TrainResult:
    epochs: int  # epochs actually run (more than asked when a target train accuracy is set)
    train_accuracy: float  # of the last epoch, measured on the fly during that epoch
    losses: list[float]  # mean total loss of each epoch
    seconds: float


def train_task_model(
    model: TaskModel,
    images: Tensor,
    labels: Tensor,
    task: str,
    epochs: int,
    config: TrainConfig,
    seed: int,
    lp_module: LossPredictionModule | None = None,
    extra_features: Tensor | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train T (jointly with P when given) with SGD(lr, momentum) on uint8 ``images``.

    Task loss: cross-entropy (multi-class) or BCE-with-logits (multi-label). With P,
    total = mean task loss + λ·mean pair loss (Eq. 3) against the detached per-sample
    losses. Pairs need an even batch, so in that mode an odd batch drops its last
    sample (a different one each epoch, as the order is reshuffled). A batch of one
    sample is always skipped: BatchNorm cannot train on it. From epoch
    ``config.lp_stop_gradient_epoch`` (0-based, i.e. after that many epochs) the
    stage maps given to P are detached, so P's gradient no longer reaches the backbone.
    ``extra_features`` (N, k) are sliced with the batch and given to P (LP+VAE).

    With ``config.target_train_accuracy`` set, training goes on past ``epochs``
    until an epoch's accuracy reaches it or ``config.max_epochs`` is hit. The
    accuracy is accumulated over the epoch's training batches (train mode), the
    usual cheap estimate; for multi-label it is the mean per-label accuracy.
    """
    _check_task(task)
    if epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {epochs}.")
    n = images.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"{n} images but {labels.shape[0]} labels.")
    if n < MIN_BATCH or config.batch_size < MIN_BATCH:
        raise ValueError(
            f"BatchNorm (and pairing) need at least {MIN_BATCH} images per batch: got {n} labeled images "
            f"and batch_size={config.batch_size}."
        )
    if extra_features is not None:
        if lp_module is None:
            raise ValueError("extra_features are only used by the loss-prediction module; pass lp_module.")
        if extra_features.shape[0] != n:
            raise ValueError(f"extra_features has {extra_features.shape[0]} rows for {n} images.")

    device = _module_device(model)
    images, labels = images.to(device), labels.to(device)
    if extra_features is not None:
        extra_features = extra_features.to(device)
    modules = [model] if lp_module is None else [model, lp_module]
    parameters = [p for module in modules for p in module.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum)
    generator = torch.Generator().manual_seed(seed)
    target = config.target_train_accuracy

    start = time.perf_counter()
    losses: list[float] = []
    accuracy = 0.0
    bar = tqdm(total=epochs, desc="train", leave=False, disable=not progress)
    for module in modules:
        module.train()
    epoch = 0
    while epoch < epochs or (target is not None and accuracy < target and epoch < config.max_epochs):
        if epoch >= bar.total:
            bar.total = epoch + 1
            bar.refresh()
        stop_lp_gradient = config.lp_stop_gradient_epoch is not None and epoch >= config.lp_stop_gradient_epoch
        loss_sum, seen, correct, decisions = 0.0, 0, 0.0, 0
        for index in _batches(n, config.batch_size, generator, device):
            if lp_module is not None and len(index) % 2:
                index = index[:-1]
            if len(index) < MIN_BATCH:
                continue
            out = model(images_to_float(images[index]))
            batch_labels = labels[index]
            sample_losses = per_sample_loss(out.logits, batch_labels, task)
            loss = sample_losses.mean()
            if lp_module is not None:
                stages = tuple(s.detach() for s in out.stages) if stop_lp_gradient else out.stages
                extra = None if extra_features is None else extra_features[index]
                predicted = lp_module(stages, extra)
                loss = loss + config.lp_weight * pair_ranking_loss(predicted, sample_losses, config.lp_margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
            seen += len(index)
            batch_correct, batch_decisions = _correct(out.logits.detach(), batch_labels, task)
            correct += batch_correct
            decisions += batch_decisions
        losses.append(loss_sum / seen)
        accuracy = correct / decisions
        epoch += 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", acc=f"{accuracy:.3f}")
    bar.close()
    return TrainResult(epoch, accuracy, losses, time.perf_counter() - start)


@dataclass
class Predictions:
    logits: Tensor  # (N, num_outputs)
    features: Tensor  # (N, 512) penultimate T_f
    predicted_loss: Tensor | None  # (N,) from P, when given


@torch.no_grad()
def predict(
    model: TaskModel,
    images: Tensor,
    lp_module: LossPredictionModule | None = None,
    extra_features: Tensor | None = None,
    batch_size: int = 1024,
) -> Predictions:
    """Logits, T_f features and (with P) predicted losses for all ``images``, in large batches.

    Runs on the model's device and returns tensors on the images' device. Leaves
    the modules in eval mode (training always sets train mode itself).
    """
    if extra_features is not None and extra_features.shape[0] != images.shape[0]:
        raise ValueError(f"extra_features has {extra_features.shape[0]} rows for {images.shape[0]} images.")
    device = _module_device(model)
    model.eval()
    if lp_module is not None:
        lp_module.eval()
    logits, features, predicted = [], [], []
    for start in range(0, images.shape[0], batch_size):
        out = model(images_to_float(images[start : start + batch_size].to(device)))
        logits.append(out.logits)
        features.append(out.features)
        if lp_module is not None:
            extra = None if extra_features is None else extra_features[start : start + batch_size].to(device)
            predicted.append(lp_module(out.stages, extra))
    home = images.device
    return Predictions(
        torch.cat(logits).to(home),
        torch.cat(features).to(home),
        torch.cat(predicted).to(home) if lp_module is not None else None,
    )


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
    """``accuracy``, ``medmnist_acc`` and ``auc`` from logits (see ``evaluate``)."""
    _check_task(task)
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
    """Accuracy and ROC-AUC of T on a labeled set.

    Multi-class: top-1 accuracy; AUC one-vs-rest macro over softmax probabilities;
    ``medmnist_acc`` NaN. Multi-label (MedMNIST's evaluator): accuracy = ACC =
    per-label accuracy of sigmoid > 0.5, averaged; AUC = mean per-label ROC-AUC over
    labels with both classes present. AUC is NaN when it cannot be computed.
    """
    _check_task(task)
    return classification_metrics(predict(model, images).logits, labels, task)


def train_vae(
    images: Tensor,
    config: VAEConfig,
    seed: int,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[VAE, list[dict]]:
    """Train V on uint8 ``images`` by minimising the negative ELBO (Eq. 5) with Adam.

    ``device`` defaults to CUDA when available. History rows are epoch means:
    ``{"epoch": 1-based, "loss", "reconstruction", "kl"}`` (per image, in nats).
    Returns V in eval mode.
    """
    if images.shape[0] < MIN_BATCH or config.batch_size < MIN_BATCH:
        raise ValueError(
            f"BatchNorm needs at least {MIN_BATCH} images per batch: got {images.shape[0]} images "
            f"and batch_size={config.batch_size}."
        )
    if config.epochs < 1:
        raise ValueError(f"VAE epochs must be ≥ 1, got {config.epochs}.")
    device = torch.device(device) if device is not None else default_device()
    images = images.to(device)
    seed_everything(seed)
    vae = VAE(config.latent_dim).to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    vae.train()
    for epoch in tqdm(range(1, config.epochs + 1), desc="vae", leave=False, disable=not progress):
        sums = torch.zeros(3, device=device)
        seen = 0
        for index in _batches(images.shape[0], config.batch_size, generator, device):
            if len(index) < MIN_BATCH:
                continue
            x = images_to_float(images[index])
            recon_logits, mu, logvar = vae(x)
            loss, reconstruction, kl = vae_loss(recon_logits, x, mu, logvar)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += torch.stack([loss, reconstruction, kl]).detach() * len(index)
            seen += len(index)
        loss_mean, recon_mean, kl_mean = (sums / seen).tolist()
        history.append({"epoch": epoch, "loss": loss_mean, "reconstruction": recon_mean, "kl": kl_mean})
    vae.eval()
    return vae, history


@torch.no_grad()
def encode_mu(vae: VAE, images: Tensor, batch_size: int = 1024) -> Tensor:
    """μ of q(z|x) for every image (N, latent_dim): the deterministic VAE features used for selection.

    Runs in eval mode on the VAE's device; returns a tensor on the images' device.
    """
    device = _module_device(vae)
    vae.eval()
    mus = [
        vae.encode(images_to_float(images[start : start + batch_size].to(device)))[0]
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(mus).to(images.device)


@torch.no_grad()
def reconstruct(vae: VAE, images: Tensor, batch_size: int = 1024) -> Tensor:
    """Reconstructions decoded from μ, as pixel probabilities in [0, 1] (N, 1, 28, 28)."""
    device = _module_device(vae)
    vae.eval()
    parts = [
        torch.sigmoid(vae.decode(vae.encode(images_to_float(images[start: start + batch_size].to(device)))[0]))
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(parts).to(images.device)


@torch.no_grad()
def reconstruction_quality(vae: VAE, train_images: Tensor, eval_images: Tensor) -> dict[str, float]:
    """Per-image Bernoulli NLL (the reconstruction term of Eq. 5, summed over pixels) on ``eval_images``.

    ``vae_bce`` decodes each image from its μ; ``mean_image_bce`` predicts every
    image by the mean training image, the output of a VAE whose posterior
    collapsed. A useful VAE has ``vae_bce`` well below ``mean_image_bce``.
    """
    targets = images_to_float(eval_images).cpu()
    mean_image = images_to_float(train_images).cpu().mean(dim=0, keepdim=True).clamp(1e-4, 1 - 1e-4)
    recon = reconstruct(vae, eval_images).cpu().clamp(1e-6, 1 - 1e-6)

    def nll(probs: Tensor) -> float:
        per_pixel = F.binary_cross_entropy(probs.expand_as(targets), targets, reduction="none")
        return per_pixel.flatten(1).sum(dim=1).mean().item()

    return {"vae_bce": nll(recon), "mean_image_bce": nll(mean_image)}


def save_vae(path: str | os.PathLike, vae: VAE, history: list[dict], meta: dict) -> None:
    """Write V, its training history and ``meta`` atomically (temp file in the same folder, then rename).

    Everything is stored as tensors and plain types, so ``torch.load(weights_only=True)`` reads it.
    """
    try:
        json.dumps([history, meta])
    except TypeError as error:
        raise TypeError(f"history and meta must hold plain types (str, numbers, lists, dicts): {error}") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "latent_dim": vae.latent_dim,
        "state_dict": {k: v.detach().cpu() for k, v in vae.state_dict().items()},
        "history": history,
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_vae(path: str | os.PathLike, device: torch.device | str | None = None) -> tuple[VAE, list[dict], dict]:
    """Read a checkpoint written by ``save_vae`` (``weights_only=True``): (V in eval mode, history, meta)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    vae = VAE(checkpoint["latent_dim"])
    vae.load_state_dict(checkpoint["state_dict"])
    vae.to(torch.device(device) if device is not None else default_device()).eval()
    return vae, checkpoint["history"], checkpoint["meta"]
