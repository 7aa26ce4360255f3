"""A VAE with a learnable mixture-of-Gaussians prior (the paper's future work: a multimodal prior) and its KL estimator.

The paper's VAE has the prior N(0, I). Here the prior is instead
p(z) = Σ_k π_k N(z; m_k, diag s_k²), with K = :data:`COMPONENTS` components whose
weights (softmax of logits), means and log-variances are learned with the networks.
The encoder and decoder are the paper VAE's (:class:`alvae_utils.models.vae.VAE`); only the
prior and the KL term change. The selection features are μ of q(z|x), as for the VAE.

Why a mixture of Gaussians rather than a VampPrior (Tomczak & Welling 2018), whose prior
is the mixture (1/K) Σ_k q(z|u_k) of the encoder's posteriors at K learned pseudo-inputs:

* The encoder uses BatchNorm. A VampPrior sends the pseudo-inputs through it. In training
  mode they would either join the batch statistics, or be normalised by their own, and
  the prior would then depend on the batch. In eval mode it would use the running
  statistics instead, so the model trained and the model used would differ.
* A MoG costs O(K·d) per sample. A VampPrior costs K encoder passes per batch, with K
  in the hundreds in Tomczak & Welling.
* A MoG's components can be read directly: K weights, means and spreads in latent
  space. (K = 10 matches MNIST's digits, though nothing ties a component to a class.)

KL(q(z|x) ‖ p) has no closed form under a mixture. Training uses the Monte Carlo
estimator :func:`monte_carlo_kl` = (1/S) Σ_s [log q(z_s|x) − log p(z_s)], z_s ~ q(z|x),
with S = :data:`KL_SAMPLES` reparametrised samples per image. These are the samples the
reconstruction term uses: the generic SGVB estimator (Kingma & Welling 2014, §2.3,
estimator A). It is unbiased for the KL and so for the ELBO. Its variance falls as 1/S,
and averaging over a batch divides it again by the batch size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SCHEMA_VERSION, VAEConfig, config_hash
from ..data.datasets import Dataset
from ..device import default_device
from ..models.vae import VAE
from .checkpoints import load_checkpoint, save_checkpoint
from ..paths import results_root
from .ssvae import check_images
from .vae import cached_fit, check_training, encode_mu, fit_epochs

COMPONENTS = 10
"""K, the prior's components: the classes of MNIST, and a small number for ChestMNIST's 14 labels too."""

KL_SAMPLES = 1
"""S, samples of z per image and step. One is the usual choice for the ELBO, with the batch averaging the noise."""

_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; μ, diag exp(logvar)), summed over the last dimension; the arguments broadcast. In nats."""
    return -0.5 * (_LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


class MixturePrior(nn.Module):
    """p(z) = Σ_k softmax(logits)_k N(z; means_k, diag exp(logvars_k)), all three learnable.

    Initial means are standard normal draws, from torch's global RNG, which the caller
    seeds. The initial variances are 1 and the initial weights uniform.
    """

    def __init__(self, latent_dim: int, components: int) -> None:
        super().__init__()
        if latent_dim < 1 or components < 1:
            raise ValueError(f"latent_dim and components must be ≥ 1, got {latent_dim} and {components}.")
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        self.logvars = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) for z (..., latent_dim): (...), by log-sum-exp over the components."""
        per_component = gaussian_log_density(z.unsqueeze(-2), self.means, self.logvars)  # (..., K)
        return torch.logsumexp(torch.log_softmax(self.logits, dim=0) + per_component, dim=-1)


def sample_posterior(mu: Tensor, logvar: Tensor, samples: int, generator: torch.Generator | None = None) -> Tensor:
    """``samples`` reparametrised draws z = μ + σ·ε from q(z|x) = N(μ, diag exp(logvar)): (S, B, d).

    ε comes from ``generator`` (a generator on μ's device), or from torch's global RNG when None.
    """
    if samples < 1:
        raise ValueError(f"samples must be ≥ 1, got {samples}.")
    eps = torch.randn((samples, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


def monte_carlo_kl(mu: Tensor, logvar: Tensor, prior: MixturePrior, z: Tensor) -> Tensor:
    """Monte Carlo estimate of KL(q(z|x) ‖ p) per image: (B,), in nats.

    (1/S) Σ_s [log q(z_s|x) − log p(z_s)] for draws ``z`` (S, B, d) from q(z|x) =
    N(μ, diag exp(logvar)), with ``mu`` and ``logvar`` of shape (B, d). Its expectation is the KL
    exactly, and its variance is Var[log q − log p] / S. A single estimate may be negative.
    """
    if z.dim() != 3 or z.shape[1:] != mu.shape or mu.shape != logvar.shape:
        raise ValueError(f"monte_carlo_kl: z must be (S, B, d) with mu and logvar (B, d); got z {tuple(z.shape)}, "
                         f"mu {tuple(mu.shape)}, logvar {tuple(logvar.shape)}.")
    return (gaussian_log_density(z, mu, logvar) - prior.log_prob(z)).mean(0)


class MixVAE(nn.Module):
    """The paper's VAE (``vae``) with a :class:`MixturePrior` (``prior``) in place of N(0, I).

    The VAE's parameters are created first. From the same seed they start as the paper VAE's
    do, so the two models differ only by their prior.
    """

    def __init__(self, latent_dim: int = 32, components: int = COMPONENTS) -> None:
        super().__init__()
        self.vae = VAE(latent_dim)
        self.prior = MixturePrior(latent_dim, components)
        self.latent_dim, self.components = latent_dim, components


def mixvae_loss(model: MixVAE, x: Tensor, samples: int = KL_SAMPLES) -> tuple[Tensor, Tensor, Tensor]:
    """Negative ELBO with the mixture prior, as (loss, reconstruction, kl), each a batch mean, in nats per image.

    The reconstruction (Bernoulli NLL summed over pixels) and :func:`monte_carlo_kl` both
    use the same ``samples`` draws of z per image of ``x`` (B, 1, 28, 28).
    """
    mu, logvar = model.vae.encode(x)
    z = sample_posterior(mu, logvar, samples)
    logits = model.vae.decode(z.flatten(0, 1))
    targets = x.unsqueeze(0).expand(samples, *x.shape).flatten(0, 1)
    nll = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).sum(1)
    reconstruction = nll.view(samples, -1).mean(0).mean()
    kl = monte_carlo_kl(mu, logvar, model.prior, z).mean()
    return reconstruction + kl, reconstruction, kl


def train_mixvae(images: Tensor, config: VAEConfig, seed: int, device: torch.device | str | None = None,
                 progress: bool = True, components: int = COMPONENTS,
                 samples: int = KL_SAMPLES) -> tuple[MixVAE, list[dict]]:
    """Train :class:`MixVAE` on uint8 ``images`` (N, 1, 28, 28) as :func:`alvae_utils.training.vae.train_vae` trains V.

    Adam on the networks and the prior together, with ``config``'s settings; its weight decay
    also pulls the prior's means to 0, its variances to 1 and its weights to uniform. Weights, batch
    order and noise come from ``seed``, and the caller's global torch RNG is left as it was.
    History rows are epoch means per image, in nats: ``{"epoch", "loss", "reconstruction", "kl"}``.
    Returns the model in eval mode. Raises ValueError for malformed images, fewer than two
    images or a batch below two, or epochs < 1.
    """
    check_images(images, "mixvae")
    check_training(images, config)
    device = torch.device(device) if device is not None else default_device()
    images = images.to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = MixVAE(config.latent_dim, components).to(device)
        generator = torch.Generator().manual_seed(seed)
        history = fit_epochs(model, images, config, generator, lambda x: mixvae_loss(model, x, samples),
                             "MixVAE epochs", progress)
    return model.eval(), history


def encode_mixvae(model: MixVAE, images: Tensor) -> Tensor:
    """The selection features: μ of q(z|x) (N, latent_dim), deterministic, as for the paper VAE.

    Returns a tensor on the images' device. Raises ValueError for images that are not
    (N, 1, 28, 28) or a model that is not a :class:`MixVAE`.
    """
    if not isinstance(model, MixVAE):
        raise ValueError(f"encode_mixvae takes the MixVAE that fit returns, got {type(model).__name__}.")
    check_images(images, "mixvae")
    return encode_mu(model.vae, images)


def checkpoint_path(pool: Dataset, config: VAEConfig, pool_seed: int, numerics: Mapping[str, object],
                    root: Path | None = None) -> Path:
    """Where the MixVAE of this pool and configuration is cached: ``<results root>/mixvae/<dataset>-<key>.pt``.

    The key hashes what determines the model: the pool (name, source, content, size,
    seed), the VAE settings, K and S, and the ``numerics`` it is fitted with
    (:func:`alvae_utils.device.numerics`).
    """
    key = config_hash({"schema": SCHEMA_VERSION, "family": "mixvae", "dataset": pool.name, "data": pool.description,
                       "fingerprint": pool.fingerprint, "pool_size": len(pool), "pool_seed": pool_seed,
                       "vae": config.fitted_once_key(), "components": COMPONENTS, "kl_samples": KL_SAMPLES,
                       "numerics": dict(numerics)})
    return (root or results_root()) / "mixvae" / f"{pool.name}-{key}.pt"


def save_mixvae(path: str | os.PathLike, model: MixVAE, history: list[dict], meta: dict) -> None:
    """Write the model, its history and ``meta`` atomically (:func:`~.checkpoints.save_checkpoint`)."""
    save_checkpoint(path, model, history, meta, latent_dim=model.latent_dim, components=model.components)


def load_mixvae(path: str | os.PathLike, device: torch.device | str | None = None) -> tuple[MixVAE, list[dict], dict]:
    """Read a checkpoint written by :func:`save_mixvae`: (model in eval mode, history, meta)."""
    return load_checkpoint(path, MixVAE, ("latent_dim", "components"), device)


def get_or_train_mixvae(pool: Dataset, config: VAEConfig, pool_seed: int, device: torch.device | str | None = None,
                        progress: bool = True, root: Path | None = None) -> tuple[MixVAE, list[dict], bool]:
    """The MixVAE of this pool, trained once on all of it, without labels, and cached: (model, history, trained_now).

    Seeded like the paper VAE (its stream and ``pool_seed``), so the two share their initial
    networks and batch order. The cache is under ``root`` (default
    :func:`~alvae_utils.paths.results_root`).
    """
    return cached_fit(pool, config, pool_seed, device, progress, root, what="MoG-prior VAE", path_of=checkpoint_path,
                      load=load_mixvae, train=train_mixvae, save=save_mixvae)
