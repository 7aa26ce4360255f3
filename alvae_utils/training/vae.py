"""The task-agnostic VAE V (Eq. 5): training, encoding, reconstruction, and its on-disk cache.

V is trained once per pool, without labels, on every pool image; its posterior means
μ are the features that Eq. 6 appends to the task model's. :func:`get_or_train_vae`
caches it under ``results_root()/vae/``, keyed on everything that determines it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SCHEMA_VERSION, VAEConfig, config_hash
from ..data.datasets import Dataset
from ..device import (
    default_device, epoch_batches, images_to_float, map_batches, module_device, numerics, reproducible_cuda,
    synchronized_clock,
)
from ..models.resnet import MIN_BATCH
from ..models.vae import VAE, vae_loss
from .checkpoints import load_checkpoint, save_checkpoint
from ..paths import results_root
from ..progress import AlvaeWarning, track
from ..seeds import VAE as VAE_STREAM
from ..seeds import derive_seed, seed_everything


def train_vae(
    images: Tensor,
    config: VAEConfig,
    seed: int,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[VAE, list[dict]]:
    """Train V on uint8 ``images`` (N, 1, 28, 28) by minimising the negative ELBO (Eq. 5) with Adam.

    ``device`` defaults to CUDA when available. History rows are epoch means:
    ``{"epoch": 1-based, "loss", "reconstruction", "kl"}`` (per image, in nats).
    Returns V in eval mode. Raises ValueError for fewer than two images or epochs < 1.
    """
    check_training(images, config)
    device = torch.device(device) if device is not None else default_device()
    images = images.to(device)
    seed_everything(seed)
    vae = VAE(config.latent_dim).to(device)
    generator = torch.Generator().manual_seed(seed)

    def loss_terms(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        recon_logits, mu, logvar = vae(x)
        return vae_loss(recon_logits, x, mu, logvar)

    history = fit_epochs(vae, images, config, generator, loss_terms, "VAE epochs", progress)
    return vae.eval(), history


def cached_fit(pool: Dataset, config: object, pool_seed: int, device: torch.device | str | None,
               progress: bool, root: Path | None, *, what: str, path_of: Callable[..., Path],
               load: Callable[..., tuple], train: Callable[..., tuple], save: Callable[..., None],
               stream: str = VAE_STREAM) -> tuple[object, list[dict], bool]:
    """(model, history, fitted_now) of a model fitted once on the whole pool: from its cache, or trained and cached.

    ``path_of(pool, config, pool_seed, numerics, root)`` is the cache file, keyed on what
    changes the trained weights (:func:`~alvae_utils.device.numerics`: the device type, the CPU
    thread count, on CUDA the GPU model and the CUDA, cuDNN and torch versions); ``load(path, device=)``
    returns (model, history, meta); ``train(images, config, seed=, device=, progress=)`` (model, history), seeded from
    ``pool_seed`` through the seed stream ``stream``; ``save(path, model, history, meta)``, the meta holding the
    fit's wall-clock ``fit_seconds``. A cache that cannot be read (truncated, corrupted) is reported with a
    warning, removed and fitted again: fits are seeded, so nothing is lost. Shared by the paper VAE, the
    MoG-prior VAE and SimCLR (:mod:`~alvae_utils.training.simclr`).
    """
    device = torch.device(device) if device is not None else default_device()
    path = path_of(pool, config, pool_seed, numerics(device), root)
    if path.exists():
        try:
            model, history, _ = load(path, device=device)
            return model, history, False
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # a damaged file: torch and pickle raise many kinds
            warnings.warn(f"the cached {what} {path} cannot be read ({type(error).__name__}: {error}); it is "
                          "removed and fitted again.", AlvaeWarning, stacklevel=3)
            path.unlink(missing_ok=True)
    started = synchronized_clock(device)
    model, history = train(pool.images, config, seed=derive_seed(stream, pool_seed), device=device,
                           progress=progress)
    save(path, model, history, {"dataset": pool.name, "pool_size": len(pool), "data_description": pool.description,
                                "fit_seconds": synchronized_clock(device) - started})
    return model, history, True


def check_training(images: Tensor, config: VAEConfig) -> None:
    """ValueError, before any training: fewer images than a BatchNorm batch needs, a smaller batch, or epochs < 1.

    ``config``: any settings with ``batch_size`` and ``epochs`` (the VAEs', SimCLR's)."""
    if images.shape[0] < MIN_BATCH or config.batch_size < MIN_BATCH:
        raise ValueError(f"BatchNorm needs at least {MIN_BATCH} images per batch: got {images.shape[0]} images "
                         f"and batch_size={config.batch_size}.")
    if config.epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {config.epochs}.")


def fit_epochs(model: nn.Module, images: Tensor, config: VAEConfig, generator: torch.Generator,
               loss_terms: Callable[[Tensor], tuple[Tensor, ...]], desc: str,
               progress: bool, terms: tuple[str, ...] = ("loss", "reconstruction", "kl")) -> list[dict]:
    """``config.epochs`` epochs of Adam on ``loss_terms(x)`` = batch means named ``terms``, the loss first, in nats.

    ``images``: uint8 (N, 1, 28, 28) on the model's device; batches of ``config.batch_size``
    in ``generator``'s order, a last batch too small for BatchNorm skipped, deterministic IEEE fp32 on
    CUDA (:func:`~alvae_utils.device.reproducible_cuda`). Returns the
    per-epoch means per image: ``{"epoch", *terms}``. ``config``: any settings with ``lr``, ``weight_decay``,
    ``epochs`` and ``batch_size``. Shared by the paper VAE, the mixture-prior VAE
    (:mod:`alvae_utils.training.mixture_prior`) and SimCLR (:mod:`alvae_utils.training.simclr`).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict] = []
    model.train()
    with reproducible_cuda(images.device):
        for epoch in track(range(1, config.epochs + 1), desc=desc, enabled=progress):
            sums = torch.zeros(len(terms), device=images.device)  # summed on the device, read once per epoch
            seen = 0
            for index in epoch_batches(images.shape[0], config.batch_size, generator, images.device):
                if len(index) < MIN_BATCH:
                    continue
                values = loss_terms(images_to_float(images[index]))
                optimizer.zero_grad(set_to_none=True)
                values[0].backward()
                optimizer.step()
                sums += torch.stack(values).detach() * len(index)
                seen += len(index)
            history.append({"epoch": epoch, **dict(zip(terms, (sums / seen).tolist(), strict=True))})
    return history


def encode_mu(vae: VAE, images: Tensor) -> Tensor:
    """μ of q(z|x) for every image (N, latent_dim): the deterministic VAE features used for selection.

    Runs in eval mode on the VAE's device; returns a tensor on the images' device.
    """
    vae.eval()
    (mu,) = map_batches(lambda x: vae.encode(x)[0], images, device=module_device(vae))
    return mu


def reconstruct(vae: VAE, images: Tensor) -> Tensor:
    """Reconstructions decoded from μ, as pixel probabilities in [0, 1] (N, 1, 28, 28)."""
    vae.eval()
    (probs,) = map_batches(lambda x: torch.sigmoid(vae.decode(vae.encode(x)[0])), images, device=module_device(vae))
    return probs


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
    """Write V, its training history and ``meta`` atomically (:func:`~.checkpoints.save_checkpoint`)."""
    save_checkpoint(path, vae, history, meta, latent_dim=vae.latent_dim)


def load_vae(path: str | os.PathLike, device: torch.device | str | None = None) -> tuple[VAE, list[dict], dict]:
    """Read a checkpoint written by :func:`save_vae` (``weights_only=True``): (V in eval mode, history, meta)."""
    return load_checkpoint(path, VAE, ("latent_dim",), device)


def checkpoint_path(pool: Dataset, config: VAEConfig, pool_seed: int, numerics: Mapping[str, object],
                    root: Path | None = None) -> Path:
    """Where the VAE of this pool (its name, size, seed, source and content) and VAE configuration is cached.

    Shared by every profile and notebook with the same pool and settings, fitted with the
    same ``numerics`` (:func:`alvae_utils.device.numerics`: device type, CPU threads; on CUDA the GPU
    model and software).
    """
    key = config_hash({"schema": SCHEMA_VERSION, "dataset": pool.name, "data": pool.description,
                       "fingerprint": pool.fingerprint, "pool_size": len(pool), "pool_seed": pool_seed,
                       "vae": config.fitted_once_key(), "numerics": dict(numerics)})
    return (root or results_root()) / "vae" / f"{pool.name}-{key}.pt"


def get_or_train_vae(pool: Dataset, config: VAEConfig, pool_seed: int, device: torch.device | str | None = None,
                     progress: bool = True, root: Path | None = None) -> tuple[VAE, list[dict], bool]:
    """The VAE V for this pool, trained once on all of it (seeded from ``pool_seed``) and cached.

    Returns (V in eval mode, per-epoch history, trained_now). V sees labeled and
    unlabeled points alike: its features are task-agnostic. The cache is under ``root``
    (default :func:`~alvae_utils.paths.results_root`), keyed also on what changes the trained
    weights: the device type and, on the CPU, torch's thread count now; on CUDA the GPU model
    and the CUDA, cuDNN and torch versions.
    """
    return cached_fit(pool, config, pool_seed, device, progress, root, what="VAE", path_of=checkpoint_path,
                      load=load_vae, train=train_vae, save=save_vae)
