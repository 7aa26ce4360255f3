"""The task model T (ResNet-18, ImageNet stem) and the loss-prediction module P of Yoo & Kweon (Eq. 3–4).

Both take float images (B, 1, 28, 28) in [0, 1]; convert uint8 batches with
``alvae_utils.device.images_to_float``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights, resnet18

from ..device import tf32_precision
from ..paths import offline

PRETRAINED_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1

# ImageNet statistics reduced to one grey channel. conv1's kernel is the sum of the
# RGB kernels (see TaskModel), which equals the RGB network applied to a grey image
# replicated on 3 channels *if* the three channels share one mean and std. The ImageNet
# per-channel values are close (mean 0.485/0.456/0.406, std 0.229/0.224/0.225), so
# their averages are the single scalar normalisation that keeps conv1's activations
# on the scale the pretrained BatchNorm statistics expect. Used with and without
# pretrained weights so the two models differ only in their initialisation.
GREY_MEAN: float = (0.485 + 0.456 + 0.406) / 3
GREY_STD: float = (0.229 + 0.224 + 0.225) / 3

STAGE_CHANNELS: tuple[int, int, int, int] = (64, 128, 256, 512)
"""Output channels of ResNet-18's layer1..layer4, the inputs of the loss-prediction module."""

MIN_BATCH = 2
"""Smallest trainable batch: BatchNorm cannot normalise one sample (layer4's maps are 1×1 at 28×28)."""

COMPILE_BACKEND = "inductor"
"""``torch.compile`` backend of the ``compile`` speed setting (the tests use "eager", which skips code generation)."""


class PretrainedWeightsUnavailable(RuntimeError):
    """The ImageNet ResNet-18 weights are not cached and cannot be downloaded."""


@dataclass
class TaskOutput:
    """What the task model T returns for a batch."""

    logits: Tensor  # (B, num_outputs), float32
    features: Tensor  # (B, 512) float32: the penultimate features T_f used by core-set / MedAL (Eqs. 1, 2, 6)
    stages: tuple[Tensor, Tensor, Tensor, Tensor]  # layer1..layer4 outputs (64/128/256/512 channels); bf16 under bf16


@contextmanager
def cudnn_benchmark(enabled: bool, device: torch.device) -> Iterator[None]:
    """Set ``torch.backends.cudnn.benchmark`` to ``enabled`` for the block on a CUDA ``device``, then restore it.

    On other devices nothing is touched: the flag only steers cuDNN's convolutions.
    """
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def bf16_autocast(enabled: bool, device: torch.device) -> AbstractContextManager:
    """``torch.autocast(device.type, dtype=torch.bfloat16)`` when ``enabled``, else a context that does nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()



def global_average(maps: Tensor) -> Tensor:
    """Global average pooling: (B, C, H, W) maps → (B, C), the mean over the spatial dimensions.

    The same numbers as ``adaptive_avg_pool2d(maps, 1).flatten(1)`` (torch computes that output
    size as this mean, so no stored run changes), but its backward is deterministic on CUDA, where
    adaptive average pooling's backward raises under ``torch.use_deterministic_algorithms(True)``.
    """
    return maps.mean(dim=(2, 3))


def pretrained_weights_path() -> Path:
    """Where torch's hub cache keeps the ImageNet ResNet-18 weights (moves with ``$TORCH_HOME``)."""
    filename = os.path.basename(urlparse(PRETRAINED_WEIGHTS.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _ensure_pretrained_weights() -> Path:
    """Return the cached weights file, downloading it first unless offline."""
    path = pretrained_weights_path()
    if path.is_file():
        return path
    url = PRETRAINED_WEIGHTS.url
    reason = "ALVAE_OFFLINE is set, so no download was attempted"
    if not offline():
        path.parent.mkdir(parents=True, exist_ok=True)
        # The file name carries the first hex digits of its SHA-256 (torchvision's convention).
        hash_prefix = path.stem.rsplit("-", 1)[-1]
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=hash_prefix, progress=False)
            return path
        except Exception as error:  # network, proxy, disk or hash failure: all mean "not available"
            reason = f"the download failed ({type(error).__name__}: {error})"
    raise PretrainedWeightsUnavailable(
        f"ImageNet ResNet-18 weights {path.name!r} are not available: {reason}. "
        f"Download {url} and place it in {path.parent} (set TORCH_HOME to move that folder: "
        f"the file is looked up in $TORCH_HOME/hub/checkpoints), or run without pretrained weights."
    )


def check_pretrained_weights_available() -> None:
    """Raise PretrainedWeightsUnavailable now, before any expensive work, if the weights cannot be had.

    Downloads the file into the hub cache when it is missing and downloads are allowed.
    """
    _ensure_pretrained_weights()


class TaskModel(nn.Module):
    """ResNet-18 for 28×28 grey images, keeping the ImageNet stem (7×7 conv stride 2, max-pool).

    Keeping the stem lets the pretrained weights be used as they are; a 28×28 input
    then gives stage maps of 7/4/2/1 pixels. conv1 takes one channel, with weights
    equal to the sum of the pretrained RGB kernels: a grey image copied to R, G and B
    gives exactly that response, so pretrained features transfer (averaging instead
    would shrink conv1's outputs threefold and mismatch bn1's statistics).

    Speed settings (:meth:`set_speed`; all off after construction) change how the
    forward pass runs, not the parameters: it always returns float32 logits and features.
    """

    def __init__(self, num_outputs: int, pretrained: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be ≥ 1 (classes or labels), got {num_outputs}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        # Dropout before the final layer, for MC-dropout BALD only; at 0 the model is exactly the plain ResNet-18
        # (no module, no random numbers drawn), so every other heuristic's numbers stay as they were.
        self.dropout = nn.Dropout(dropout) if dropout else None
        net = resnet18(weights=None)
        grey_conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if pretrained:
            state = torch.load(_ensure_pretrained_weights(), map_location="cpu", weights_only=True)
            net.load_state_dict(state)
            with torch.no_grad():
                grey_conv1.weight.copy_(net.conv1.weight.sum(dim=1, keepdim=True))
        net.conv1 = grey_conv1
        net.fc = nn.Linear(net.fc.in_features, num_outputs)
        self.net = net
        self.num_outputs = num_outputs
        self.channels_last = False
        self.bf16 = False
        self.cudnn_benchmark = False
        self.tf32 = False
        self._compiled: Callable[[Tensor], tuple[Tensor, Tensor, tuple[Tensor, ...]]] | None = None

    def set_speed(self, *, channels_last: bool, bf16: bool, cudnn_benchmark: bool, compile: bool,
                  tf32: bool = False) -> TaskModel:
        """Apply the speed settings of :class:`~alvae_utils.config.TrainConfig`; returns ``self``.

        ``channels_last`` converts the conv weights' memory format (parameters stay the same
        objects, so an existing optimizer keeps working); ``bf16`` runs the forward pass under
        bfloat16 autocast; ``cudnn_benchmark`` lets cuDNN time its algorithms during the forward
        pass (CUDA only); ``compile`` wraps the layers in ``torch.compile`` (compiled lazily at
        the first forward of each input shape and mode); ``tf32`` runs the forward pass's fp32
        convolutions and matrix products in TF32 (CUDA only, :func:`~alvae_utils.device.tf32_precision`).
        Calling it again with other values undoes what they turn off.
        """
        if channels_last != self.channels_last:
            self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        self.channels_last, self.bf16, self.cudnn_benchmark, self.tf32 = channels_last, bf16, cudnn_benchmark, tf32
        if not compile:
            self._compiled = None
        elif self._compiled is None:
            self._compiled = torch.compile(self._layers, backend=COMPILE_BACKEND)
        return self

    def forward(self, x: Tensor) -> TaskOutput:
        if x.ndim != 4 or x.shape[1] != 1 or not x.is_floating_point():
            raise ValueError(
                f"TaskModel expects float images (B, 1, H, W) in [0, 1], got {tuple(x.shape)} {x.dtype}; "
                "convert uint8 batches with images_to_float."
            )
        with bf16_autocast(self.bf16, x.device), cudnn_benchmark(self.cudnn_benchmark, x.device), \
                tf32_precision(self.tf32, x.device):
            logits, features, stages = (self._compiled or self._layers)(x)
        # Selection distances and metrics stay float32 whatever the forward pass ran in (a no-op in fp32).
        return TaskOutput(logits.float(), features.float(), stages)

    def _layers(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
        net = self.net
        h = (x - GREY_MEAN) / GREY_STD
        h = net.maxpool(net.relu(net.bn1(net.conv1(h))))
        s1 = net.layer1(h)
        s2 = net.layer2(s1)
        s3 = net.layer3(s2)
        s4 = net.layer4(s3)
        features = global_average(s4)
        head_input = features if self.dropout is None else self.dropout(features)
        return net.fc(head_input), features, (s1, s2, s3, s4)


class LossPredictionModule(nn.Module):
    """Loss-prediction network P of Yoo & Kweon (2019), optionally with VAE features (LP+VAE).

    Each stage map → global average pooling (:func:`global_average`, so any map size works) →
    Linear(c, hidden) → ReLU; the four results concatenate to c (4·hidden = 512), and
    a last FC maps c to the predicted loss.

    LP+VAE concatenates the VAE features v to c before that last FC. An FC over
    [c ⁀ v] is ``W_c·c + W_v·v + b``, implemented as ``self.fc(c) + v @ extra_weight.T``
    with ``extra_weight`` (= W_v) zero-initialised and created after every other
    parameter: building the module consumes the same random numbers as the plain
    one, and with v = 0 (α = 0) the outputs, gradients and whole training trajectory
    are bit-identical to the plain module.

    With ``bf16`` set (by :func:`alvae_utils.training.task_model.build_task_model`) the module runs under
    bfloat16 autocast, as T does, and returns float32; with ``tf32`` set its fp32 matrix products run in
    TF32 on CUDA, as T's do.
    """

    def __init__(
        self,
        stage_channels: tuple[int, ...] = STAGE_CHANNELS,
        hidden: int = 128,
        extra_dim: int = 0,
    ) -> None:
        super().__init__()
        if extra_dim < 0:
            raise ValueError(f"extra_dim must be ≥ 0, got {extra_dim}.")
        self.stage_fcs = nn.ModuleList(nn.Linear(c, hidden) for c in stage_channels)
        self.fc = nn.Linear(hidden * len(stage_channels), 1)
        self.extra_dim = extra_dim
        if extra_dim:
            self.extra_weight = nn.Parameter(torch.zeros(1, extra_dim))
        self.bf16 = False
        self.tf32 = False

    def forward(self, stages: tuple[Tensor, ...], extra: Tensor | None = None) -> Tensor:
        """Predicted loss (B,). ``extra`` (B, extra_dim) is α·V(x), required iff extra_dim > 0."""
        if len(stages) != len(self.stage_fcs):
            raise ValueError(f"expected {len(self.stage_fcs)} stage maps, got {len(stages)}.")
        batch = stages[0].shape[0]
        if self.extra_dim:
            if extra is None or extra.shape != (batch, self.extra_dim):
                got = None if extra is None else tuple(extra.shape)
                raise ValueError(
                    f"this module was built with extra_dim={self.extra_dim}: pass extra of shape "
                    f"({batch}, {self.extra_dim}) (α times the VAE means), got {got}."
                )
        elif extra is not None:
            raise ValueError("extra features given, but the module was built with extra_dim=0.")
        with bf16_autocast(self.bf16, stages[0].device), tf32_precision(self.tf32, stages[0].device):
            pooled = (global_average(s) for s in stages)
            c = torch.cat([F.relu(fc(p)) for fc, p in zip(self.stage_fcs, pooled, strict=True)], dim=1)
            out = self.fc(c)
            if self.extra_dim:
                out = out + extra @ self.extra_weight.T
        return out.float().squeeze(1)


def pair_ranking_loss(predicted: Tensor, target: Tensor, margin: float = 1.0) -> Tensor:
    """Mean pair loss of Eq. 3 over the pairs (i, B−1−i), i < B/2, of a batch.

    ``L_pair = max(0, −I(p)·(p̃1 − p̃2) + ξ)`` with the indicator of Eq. 4:
    I(p) = +1 if p1 > p2, else −1 (ties count as −1). ``target`` holds the true
    per-sample losses p and is detached: P learns to rank, T is not pushed by it.
    """
    if predicted.ndim != 1 or predicted.shape != target.shape:
        raise ValueError(
            f"predicted and target must be 1-D of equal length, got {tuple(predicted.shape)} "
            f"and {tuple(target.shape)}."
        )
    batch = predicted.shape[0]
    if batch == 0 or batch % 2:
        raise ValueError(
            f"pair ranking needs an even, non-empty batch (sample i pairs with B−1−i), got B={batch}; "
            "drop the last sample of an odd batch."
        )
    half = batch // 2
    target = target.detach()
    pred_diff = (predicted - predicted.flip(0))[:half]
    true_diff = (target - target.flip(0))[:half]
    sign = torch.where(true_diff > 0, 1.0, -1.0).to(predicted.dtype)
    return torch.clamp(margin - sign * pred_diff, min=0).mean()


