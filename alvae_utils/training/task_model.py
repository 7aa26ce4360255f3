"""Training and inference of the task model T, jointly with the loss-prediction module P.

Data stay as tensors on the device: each epoch draws a permutation from a seeded
``torch.Generator`` and batches are sliced by index, then converted from uint8 to
float in [0, 1] batch-wise. No DataLoader, no per-sample transforms. Losses and
metrics are in :mod:`alvae_utils.training.metrics`; the VAE's training in :mod:`alvae_utils.training.vae`.

The speed settings of :class:`~alvae_utils.config.TrainConfig` (``channels_last``, ``bf16``,
``cudnn_benchmark``, ``compile``, ``tf32``) are applied to T and P by :func:`build_task_model` and
:func:`train_task_model`; the models carry them, so :func:`predict` and
:func:`alvae_utils.training.metrics.evaluate` run the same way. :func:`check_speed_settings` refuses,
before any work, a setting this device or installation cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import ConfigError, TrainConfig
from ..device import (
    INFERENCE_BATCH, epoch_batches, images_to_float, map_batches, module_device, reproducible_cuda,
    synchronized_clock, tf32_precision,
)
from .metrics import check_task, correct_decisions, per_sample_loss
from ..models.resnet import MIN_BATCH, LossPredictionModule, TaskModel, cudnn_benchmark, pair_ranking_loss
from ..progress import bar as progress_bar
from ..seeds import seed_everything


BF16_CAPABILITY = (8, 0)
"""CUDA compute capability from which a GPU computes in bfloat16 natively (Ampere). Below it (V100: 7.0,
T4: 7.5) torch emulates bfloat16, slowly, and ``torch.cuda.is_bf16_supported()`` still returns True by
default (``including_emulation=True``), so the guard asks for the capability itself."""


def check_speed_settings(config: TrainConfig, device: torch.device | str) -> None:
    """Raise ConfigError if a speed setting of ``config`` cannot run on ``device`` with this installation.

    ``bf16`` on CUDA needs ``device`` itself (the run's GPU, not the current one) to have compute
    capability ≥ :data:`BF16_CAPABILITY`; any CPU runs it (natively with AVX-512 BF16 or AMX,
    emulated and slower otherwise). ``compile`` needs TorchDynamo on this Python, and the code
    generator of its backend: a C++ compiler on the CPU, Triton on CUDA. ``cudnn_benchmark`` and
    ``channels_last`` run everywhere (``cudnn_benchmark`` does nothing off CUDA).
    """
    device = torch.device(device)
    if config.bf16 and device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if tuple(capability) < BF16_CAPABILITY:
            raise ConfigError(f"train.bf16=true needs a GPU that computes in bfloat16 natively (compute capability "
                              f"8.0+: Ampere or newer); {torch.cuda.get_device_name(device)} ({device}) has "
                              f"{capability[0]}.{capability[1]}, where bfloat16 is only emulated. Use "
                              "train.bf16=false.")
    if not config.compile:
        return
    from torch._dynamo import is_dynamo_supported  # imported on demand: loading dynamo takes seconds
    if not is_dynamo_supported():
        raise ConfigError("train.compile=true: torch.compile does not support this Python version; "
                          "use train.compile=false.")
    if device.type == "cuda":
        from torch.utils._triton import has_triton
        if not has_triton():
            raise ConfigError("train.compile=true on CUDA needs Triton (pip install triton); "
                              "use train.compile=false.")
    else:
        from torch._inductor.cpp_builder import get_cpp_compiler
        try:
            get_cpp_compiler()
        except RuntimeError as error:
            raise ConfigError(f"train.compile=true on the CPU needs a C++ compiler ({error}); install g++ "
                              "or use train.compile=false.") from None


def apply_speed_settings(model: TaskModel, lp_module: LossPredictionModule | None, config: TrainConfig) -> None:
    """Give T (and P) the speed settings of ``config`` (see :meth:`TaskModel.set_speed`)."""
    model.set_speed(channels_last=config.channels_last, bf16=config.bf16, cudnn_benchmark=config.cudnn_benchmark,
                    compile=config.compile, tf32=config.tf32)
    if lp_module is not None:
        lp_module.bf16, lp_module.tf32 = config.bf16, config.tf32


def build_task_model(
    num_outputs: int,
    config: TrainConfig,
    seed: int,
    device: torch.device | str,
    with_loss_prediction: bool = False,
    extra_dim: int = 0,
    dropout: float = 0.0,
) -> tuple[TaskModel, LossPredictionModule | None]:
    """Seed, then create T (and P) on ``device``, with the speed settings of ``config`` applied.

    The same seed always gives the same initial weights (the speed settings and ``dropout``, the rate
    before T's final layer, do not change them). Raises ConfigError when a speed setting cannot run here
    (:func:`check_speed_settings`).
    """
    if extra_dim and not with_loss_prediction:
        raise ValueError("extra_dim > 0 only makes sense with the loss-prediction module (LP+VAE).")
    check_speed_settings(config, device)
    seed_everything(seed)
    model = TaskModel(num_outputs, pretrained=config.pretrained, dropout=dropout).to(device)
    lp_module = LossPredictionModule(extra_dim=extra_dim).to(device) if with_loss_prediction else None
    apply_speed_settings(model, lp_module, config)
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

    T and P are given the speed settings of ``config`` first (a model built by
    :func:`build_task_model` with the same ``config`` already has them). On CUDA training is
    deterministic IEEE fp32 (:func:`~alvae_utils.device.reproducible_cuda`) unless a speed setting
    says otherwise. Under ``bf16``
    the forward passes run in bfloat16 while the weights, the optimizer and the losses
    stay float32. ``seconds`` includes any ``torch.compile`` compilation of this call; on CUDA the clock is
    read after the device has finished (:func:`~alvae_utils.device.synchronized_clock`). The losses and the
    accuracy are summed on the device and read once per epoch, never per batch.
    """
    check_task(task)
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

    device = module_device(model)
    check_speed_settings(config, device)
    apply_speed_settings(model, lp_module, config)
    images, labels = images.to(device), labels.to(device)
    if extra_features is not None:
        extra_features = extra_features.to(device)
    modules = [model] if lp_module is None else [model, lp_module]
    parameters = [p for module in modules for p in module.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum)
    generator = torch.Generator().manual_seed(seed)
    target = config.target_train_accuracy

    start = synchronized_clock(device)
    losses: list[float] = []
    accuracy = 0.0
    bar = progress_bar(epochs, "train epochs", enabled=progress)
    for module in modules:
        module.train()
    # The forward pass sets cuDNN's and TF32's flags itself; this covers the backward pass's kernels too.
    with reproducible_cuda(device), cudnn_benchmark(config.cudnn_benchmark, device), \
            tf32_precision(config.tf32, device):
        epoch = 0
        while epoch < epochs or (target is not None and accuracy < target and epoch < config.max_epochs):
            if epoch >= bar.total:
                bar.total = epoch + 1
                bar.refresh()
            stop_lp_gradient = config.lp_stop_gradient_epoch is not None and epoch >= config.lp_stop_gradient_epoch
            # Summed on the device and read once per epoch: on a GPU each read waits for every queued kernel.
            # float64, so the sum is the one a Python float made of each step's loss (the numbers stay as they were).
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen = decisions = 0
            for index in epoch_batches(n, config.batch_size, generator, device):
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
                loss_sum += loss.detach().double() * len(index)
                seen += len(index)
                batch_correct, batch_decisions = correct_decisions(out.logits.detach(), batch_labels, task)
                correct += batch_correct
                decisions += batch_decisions
            epoch_loss, epoch_correct = torch.stack([loss_sum, correct.double()]).tolist()
            losses.append(epoch_loss / seen)
            accuracy = epoch_correct / decisions
            epoch += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", acc=f"{accuracy:.3f}")
    bar.close()
    return TrainResult(epoch, accuracy, losses, synchronized_clock(device) - start)


@dataclass
class Predictions:
    logits: Tensor  # (N, num_outputs)
    features: Tensor  # (N, 512) penultimate T_f
    predicted_loss: Tensor | None  # (N,) from P, when given


def predict(
    model: TaskModel,
    images: Tensor,
    lp_module: LossPredictionModule | None = None,
    extra_features: Tensor | None = None,
    batch_size: int = INFERENCE_BATCH,
) -> Predictions:
    """Logits, T_f features and (with P) predicted losses for all uint8 ``images`` (N, 1, 28, 28).

    ``extra_features`` (N, k) are the rows given to P along with the stage maps (LP+VAE).
    Runs in large batches under ``no_grad`` on the model's device and returns tensors on
    the images' device. Leaves the modules in eval mode (training always sets train mode itself).
    """
    if extra_features is not None and lp_module is None:
        raise ValueError("extra_features are only used by the loss-prediction module; pass lp_module.")
    model.eval()
    if lp_module is not None:
        lp_module.eval()

    def forward(x: Tensor, extra: Tensor | None) -> tuple[Tensor, ...]:
        out = model(x)
        if lp_module is None:
            return out.logits, out.features
        return out.logits, out.features, lp_module(out.stages, extra)

    outputs = map_batches(forward, images, extra_features, device=module_device(model), batch_size=batch_size)
    return Predictions(*outputs) if lp_module is not None else Predictions(*outputs, None)
