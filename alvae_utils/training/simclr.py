"""The ``simclr`` feature family's fit: SimCLR (Chen et al., 2020) on the whole pool, without labels; its
augmentations, encoding, on-disk cache, and the backbone it gives a task model (``train.init=simclr``).

Why own the loss and the augmentations rather than use ``lightly``, which has both: lightly pulls in
pytorch-lightning, hydra and a dozen more packages, for a loss of a few lines
(:func:`~alvae_utils.models.simclr.nt_xent`) and views that torchvision's functional transforms already
make. Owning them also lets every view be drawn from a seeded ``torch.Generator``: torchvision's transform
classes draw their parameters from torch's global RNG, which would tie the views to whatever ran before.

The views (:func:`augment`) suit 28×28 grey images, after Chen et al.'s finding (§3) that random crops
matter most:

* a random resized crop of 40–100% of the image (aspect 3/4–4/3), resized back to 28×28: Chen et al.'s
  strongest augmentation; the lower bound is 40%, not ImageNet's 8%, since a digit fills most of its image
  and an 8% crop of it is a stroke, not a digit;
* a small affine map: rotation within ±15°, shear within ±10°: handwriting slants, but a larger rotation turns
  a 6 into a 9;
* Gaussian blur (3×3, σ in 0.1–1.0) with probability ½, as Chen et al. do, scaled to a 28-pixel image.

Not used: horizontal flips (a mirrored 2, 3, 7 or S is no longer one; MNIST never shows mirrored digits),
and colour jitter and grey-scale conversion, which do nothing on one grey channel beyond a brightness or
contrast change that ``images_to_float``'s fixed scaling makes uninformative for these images anyway.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SCHEMA_VERSION, SimCLRConfig, config_hash
from ..data.datasets import Dataset
from ..device import default_device, map_batches, module_device
from ..models.resnet import TaskModel
from ..models.simclr import SimCLRNet, nt_xent
from ..paths import results_root
from ..seeds import SIMCLR, SIMCLR_VIEWS, derive_seed
from .checkpoints import load_checkpoint, save_checkpoint
from .ssvae import check_images
from .vae import cached_fit, check_training, fit_epochs

CROP_SCALE = (0.4, 1.0)
"""Share of the image's area a random resized crop keeps."""
CROP_RATIO = (3 / 4, 4 / 3)
"""Aspect ratios (width / height) of the crops, drawn log-uniformly."""
MAX_ROTATION = 15.0
"""Degrees either way."""
MAX_SHEAR = 10.0
"""Degrees either way, along x."""
BLUR_PROBABILITY = 0.5
BLUR_SIGMA = (0.1, 1.0)
"""Pixels: σ of the 3×3 Gaussian blur."""
VIEW_DRAWS = ("area", "ratio", "top", "left", "angle", "shear", "blur", "sigma")
"""The uniform draws behind one view, in the order :func:`views` reads them."""


def augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """One random view of each float image (B, 1, H, W) in [0, 1]: crop, affine, blur (see the module docstring).

    Every parameter is drawn from ``generator`` (a CPU generator), so the same generator state gives the same
    views on any device. The crop, rotation and shear of the whole batch are one affine resampling (bilinear,
    zeros outside, as torchvision's ``affine``), and the blur one grouped convolution (reflect padding, as
    torchvision's ``gaussian_blur``): torchvision's functional transforms take one set of parameters per call,
    so per-image views would cost a Python call per image and operation, slower than the ResNet step they feed
    (``benchmarks/bench_training.py``). Returns (B, 1, H, W) on the images' device.
    """
    return views(images, torch.rand(len(VIEW_DRAWS), images.shape[0], generator=generator, dtype=torch.float64))


def views(images: Tensor, draws: Tensor) -> Tensor:
    """The views of :func:`augment` for given uniform draws: ``draws`` (8, B) in [0, 1], float64, one row per
    name of :data:`VIEW_DRAWS`. (All ½ but ``area`` = ``blur`` = 1 gives the images back: the whole image, no
    rotation, shear or blur.)"""
    batch, channels, height, width = images.shape
    area, ratio, top, left, angle, shear, blur, sigma = draws
    # The crop, as torchvision's RandomResizedCrop draws it (clamped to the image instead of redrawn).
    area = height * width * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * area)
    low, high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = torch.exp(low + (high - low) * ratio)
    w = torch.sqrt(area * ratio).round().clamp(1, width)
    h = torch.sqrt(area / ratio).round().clamp(1, height)
    x0, y0 = torch.floor(left * (width - w + 1)), torch.floor(top * (height - h + 1))
    # Output pixel p (normalised to [-1, 1]) samples the input at crop(shear⁻¹ · rotation⁻¹ · p).
    angle = torch.deg2rad(MAX_ROTATION * (2 * angle - 1))
    tan_shear = torch.tan(torch.deg2rad(MAX_SHEAR * (2 * shear - 1)))
    cos, sin = torch.cos(angle), torch.sin(angle)
    inverse = torch.stack([torch.stack([cos + tan_shear * sin, sin - tan_shear * cos], -1),
                           torch.stack([-sin, cos], -1)], -2)  # [[1, -t], [0, 1]] @ R(-a)
    scale = torch.stack([w / width, h / height], -1).unsqueeze(-1)  # the crop's half-size, normalised
    centre = torch.stack([(2 * x0 + w) / width - 1, (2 * y0 + h) / height - 1], -1).unsqueeze(-1)
    theta = torch.cat([scale * inverse, centre], -1).to(images.device, images.dtype)  # (B, 2, 3)
    grid = F.affine_grid(theta, [batch, channels, height, width], align_corners=False)
    views = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # A 3-tap Gaussian per image (the identity where no blur is drawn), applied along rows, then columns.
    sigma = BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * sigma
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64) / (2 * sigma.unsqueeze(1) ** 2))
    taps = torch.where((blur < BLUR_PROBABILITY).unsqueeze(1), taps / taps.sum(1, keepdim=True),
                       torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    kernel = taps.repeat_interleave(channels, 0).to(images.device, images.dtype)  # (B·C, 3)
    flat = views.reshape(1, batch * channels, height, width)
    flat = F.conv2d(F.pad(flat, (1, 1, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=batch * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, 1, 1), mode="reflect"), kernel[:, None, :, None], groups=batch * channels)
    return flat.reshape(batch, channels, height, width)


def train_simclr(images: Tensor, config: SimCLRConfig, seed: int, device: torch.device | str | None = None,
                 progress: bool = True) -> tuple[SimCLRNet, list[dict]]:
    """Train SimCLR on uint8 ``images`` (N, 1, 28, 28) by minimising NT-Xent over two views of each batch, with Adam.

    ``config`` must be resolved (:meth:`SimCLRConfig.resolved`: epochs and batch size set). Both views of a batch go
    through the network together, so BatchNorm normalises over all 2B views (Chen et al.'s global BN, on one
    device). History rows: ``{"epoch": 1-based, "loss"}`` (the epoch's mean NT-Xent per anchor, in nats).
    Weights come from ``seed``, batch order and views from streams derived from it; the caller's global torch
    RNG is left as it was. Returns the network in eval mode. Raises ValueError for an unresolved config,
    images that are not (N, 1, 28, 28) uint8, or fewer than two images.
    """
    if config.epochs is None or config.batch_size is None:
        raise ValueError("train_simclr needs a resolved SimCLRConfig (epochs and batch_size set): "
                         "pass config.resolved(vae_config).")
    check_images(images, "simclr")
    check_training(images, config)
    device = torch.device(device) if device is not None else default_device()
    images = images.to(device)
    order, views = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(derive_seed(SIMCLR_VIEWS, seed))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the caller's RNG stays
        torch.manual_seed(seed)
        net = SimCLRNet(config.projection_dim).to(device)

        def loss_terms(x: Tensor) -> tuple[Tensor]:
            z1, z2 = net(torch.cat([augment(x, views), augment(x, views)])).chunk(2)
            return (nt_xent(z1, z2, config.temperature),)

        history = fit_epochs(net, images, config, order, loss_terms, "SimCLR epochs", progress, terms=("loss",))
    return net.eval(), history


def encode_simclr(net: SimCLRNet, images: Tensor) -> Tensor:
    """h = f(x) for every uint8 image (N, 1, 28, 28): (N, 512) on the images' device, in eval mode."""
    net.eval()
    (features,) = map_batches(net.features, images, device=module_device(net))
    return features


def save_simclr(path: str | os.PathLike, net: SimCLRNet, history: list[dict], meta: dict) -> None:
    """Write the network, its history and ``meta`` atomically (:func:`~.checkpoints.save_checkpoint`)."""
    save_checkpoint(path, net, history, meta, projection_dim=net.projection_dim)


def load_simclr(path: str | os.PathLike, device: torch.device | str | None = None
                ) -> tuple[SimCLRNet, list[dict], dict]:
    """Read a checkpoint of :func:`save_simclr`: (network in eval mode, history, meta)."""
    return load_checkpoint(path, SimCLRNet, ("projection_dim",), device)


def checkpoint_path(pool: Dataset, config: SimCLRConfig, pool_seed: int, numerics: Mapping[str, object],
                    root: Path | None = None) -> Path:
    """Where the SimCLR fit of this pool (name, size, seed, source, content) and resolved ``config`` is cached,
    fitted with ``numerics`` (:func:`alvae_utils.device.numerics`), keyed like the VAE's."""
    key = config_hash({"schema": SCHEMA_VERSION, "dataset": pool.name, "data": pool.description,
                       "fingerprint": pool.fingerprint, "pool_size": len(pool), "pool_seed": pool_seed,
                       "simclr": asdict(config), "numerics": dict(numerics)})
    return (root or results_root()) / "simclr" / f"{pool.name}-{key}.pt"


def get_or_train_simclr(pool: Dataset, config: SimCLRConfig, pool_seed: int, device: torch.device | str | None = None,
                        progress: bool = True, root: Path | None = None) -> tuple[SimCLRNet, list[dict], bool]:
    """The pool's SimCLR network, trained once on all of it without labels (seeded from ``pool_seed``), and cached.

    ``config`` resolved (:meth:`SimCLRConfig.resolved`). Returns (network in eval mode, history, trained_now);
    the cache is under ``root`` (default :func:`~alvae_utils.paths.results_root`) in ``simclr/``, keyed as
    :func:`checkpoint_path` says (:func:`~.vae.cached_fit`).
    """
    return cached_fit(pool, config, pool_seed, device, progress, root, what="SimCLR encoder",
                      path_of=checkpoint_path, load=load_simclr, train=train_simclr, save=save_simclr, stream=SIMCLR)


def init_from_encoder(model: TaskModel, backbone: Mapping[str, Tensor]) -> TaskModel:
    """Copy a SimCLR encoder's backbone (:meth:`SimCLRNet.backbone_state`) into task model ``model``; returns it.

    Every weight and BatchNorm statistic but the classification head ``net.fc`` (which keeps its seeded
    initialisation) is replaced. Raises ValueError when the two do not match.
    """
    missing, unexpected = model.load_state_dict(dict(backbone), strict=False)
    if unexpected or any(not name.startswith("net.fc.") for name in missing):
        raise ValueError(f"the SimCLR backbone does not fit this task model: missing {missing}, "
                         f"unexpected {unexpected}.")
    return model
