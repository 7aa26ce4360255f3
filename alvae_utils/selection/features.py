"""Feature families: task-agnostic features that a method appends to the task model's (Eq. 6).

A method is a heuristic plus, optionally, one feature family and its scale α
(:mod:`alvae_utils.selection.methods`). A family says

* how it is fitted: ``fit(context)`` trains its encoder, or loads it from the family's own cache;
* how it encodes images: ``encode(fitted, images)`` → (N, k) float features;
* whether it is fitted once per pool (fitted before the runs that use it, and shared by them)
  or refitted at every Algorithm 1 step, and whether it reads the labels of L
  (only a refitted family can: L grows at every step).

The paper's VAE is the first entry. The paper's future work adds two more: ``ssvae``, a
semi-supervised VAE refitted at every step from the labels of L (:mod:`alvae_utils.training.ssvae`),
and ``mixvae``, a VAE with a mixture-of-Gaussians prior (:mod:`alvae_utils.training.mixture_prior`).
``simclr`` is contrastive self-supervised features: the pooled output of a ResNet-18 trained with
SimCLR on the pool (:mod:`alvae_utils.training.simclr`).
Adding a family is one :func:`register_family`
call; every heuristic that accepts extra features (:mod:`alvae_utils.selection.heuristics`)
can then use it, under the method label ``<heuristic>+<family>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..config import ConfigError, SimCLRConfig, VAEConfig
from ..data.datasets import Dataset
from ..training.mixture_prior import encode_mixvae, get_or_train_mixvae
from ..registry import Registry
from ..seeds import FEATURES, derive_seed
from ..training.simclr import encode_simclr, get_or_train_simclr
from ..training.ssvae import encode_ssvae, train_ssvae
from ..training.vae import encode_mu, get_or_train_vae


@dataclass(frozen=True)
class FeatureContext:
    """What a family's ``fit`` may use.

    ``labeled`` and ``seed`` are set only for families refitted at every step:
    ``labeled`` holds the pool indices of L (int64, (|L|,)) when the family uses
    labels (read them as ``pool.labels[labeled]``); ``seed`` is derived from the
    run's seed, the family and the step, so a resumed run refits identically.
    ``cache_root`` is the results root of the sweep, where a family fitted once per
    pool caches its fit (None: :func:`~alvae_utils.paths.results_root` of this process;
    a worker on another node may have another). ``simclr`` holds the experiment's SimCLR settings (the
    ``simclr`` family resolves them against ``vae``).
    """

    pool: Dataset
    vae: VAEConfig  # the experiment's VAE settings (used by VAE-based families)
    pool_seed: int
    device: torch.device
    progress: bool = True
    labeled: Tensor | None = None
    seed: int | None = None
    cache_root: Path | None = None
    simclr: SimCLRConfig = SimCLRConfig()


@dataclass(frozen=True)
class FeatureFamily:
    """One registered family of task-agnostic features."""

    name: str  # method-label suffix: "coreset+<name>"; lower case, no "+" or "("
    title: str  # for messages and figure titles, e.g. "VAE"
    fit: Callable[[FeatureContext], object]  # trains the encoder, or loads it from the family's cache
    encode: Callable[[object, Tensor], Tensor]  # (fitted, uint8 images (N, 1, 28, 28)) → (N, k) features
    refit_each_step: bool = False  # False: fitted once per pool, before the runs that use it
    uses_labels: bool = False  # reads the labels of L (requires refit_each_step)

    @property
    def fitted_once(self) -> bool:
        """Fitted once per pool, before the runs that use it (and shared by them), rather than at every step."""
        return not self.refit_each_step

    def step_context(self, pool: Dataset, vae: VAEConfig, pool_seed: int, device: torch.device, progress: bool,
                     labeled: Tensor, seed: int, step: int, cache_root: Path | None = None,
                     simclr: SimCLRConfig | None = None) -> FeatureContext:
        """The context of this family's fit at Algorithm 1 step ``step`` of the run with ``seed``.

        A family refitted at every step gets the labels of L (``labeled``, pool indices) when it uses
        labels, and a seed derived from (family, run seed, step), so that a resumed run refits
        identically; a family fitted once per pool gets neither (its fit is the pool's alone).
        """
        refit = self.refit_each_step
        return FeatureContext(pool, vae, pool_seed, device, progress,
                              labeled=labeled.clone() if refit and self.uses_labels else None,
                              seed=derive_seed(FEATURES, self.name, seed, step) if refit else None,
                              cache_root=cache_root, simclr=simclr or SimCLRConfig())


FAMILIES: Registry[FeatureFamily] = Registry("feature family")
"""The registry, by name, in registration order; an unknown name raises ConfigError listing the known ones."""


def register_family(family: FeatureFamily, replace: bool = False) -> FeatureFamily:
    """Add ``family`` to :data:`FAMILIES` and return it.

    Raises ConfigError for a malformed name, a family that uses labels but is
    fitted only once, or a name already taken (unless ``replace``).
    """
    if not callable(family.fit) or not callable(family.encode) or not isinstance(family.title, str):
        raise ConfigError(f"feature family {family.name!r}: fit and encode must be callable and title a string.")
    if family.uses_labels and not family.refit_each_step:
        raise ConfigError(f"feature family {family.name!r} uses the labels of L, which grow at every step; "
                          "set refit_each_step=True.")
    return FAMILIES.add(family.name, family, replace)


def get_family(name: str) -> FeatureFamily:
    """The registered family ``name``; ConfigError listing the known ones otherwise."""
    return FAMILIES[name]


def pool_features(family: FeatureFamily, context: FeatureContext, points: Tensor | None = None) -> Tensor:
    """Fit ``family`` (or load it from its cache) and encode the pool's images: (N, k) float32 on the pool's device.

    ``points`` (int64 pool indices, (n,)) encodes those images only, in that order: (n, k).
    Raises ValueError naming the family when its features are not a finite (n, k ≥ 1) tensor.
    """
    images = context.pool.images if points is None else context.pool.images[points.to(context.pool.images.device)]
    return checked_features(family.name, family.encode(family.fit(context), images), len(images))


def checked_features(name: str, features: object, n: int) -> Tensor:
    """``features`` as float32 if they are a finite (n, k ≥ 1) tensor, else ValueError naming the family."""
    if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] != n or features.shape[1] < 1:
        found = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"feature family {name!r} gave {found} for {n} pool images; its encode must return a "
                         f"tensor ({n}, k) with k ≥ 1, one row per image in pool order.")
    if not features.is_floating_point() and features.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise ValueError(f"feature family {name!r} gave {features.dtype} features; return real numbers.")
    features = features.detach().to(torch.float32)
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"feature family {name!r} gave NaN or infinite features; check its fit and encode.")
    return features


VAE_FAMILY = register_family(FeatureFamily(
    name="vae",
    title="VAE",
    # Trained once on the whole pool without labels, cached on disk (alvae_utils.training.vae).
    fit=lambda context: get_or_train_vae(context.pool, context.vae, context.pool_seed, device=context.device,
                                         progress=context.progress, root=context.cache_root)[0],
    encode=encode_mu,  # the posterior means μ, not sampled z
))

SSVAE_FAMILY = register_family(FeatureFamily(
    name="ssvae",
    title="SSVAE",
    # Kingma et al.'s M2, retrained on the whole pool with the labels of L at every step (alvae_utils.training.ssvae).
    fit=lambda context: train_ssvae(context.pool, context.labeled, context.vae, context.seed, device=context.device,
                                    progress=context.progress)[0],
    encode=encode_ssvae,  # E[z|x] under q(z|x) = Σ_y q(y|x) q(z|x, y): μ(x, ŷ)
    refit_each_step=True,
    uses_labels=True,
))

MIXVAE_FAMILY = register_family(FeatureFamily(
    name="mixvae",
    title="MoG-prior VAE",
    # The paper's VAE with a learnable mixture-of-Gaussians prior: fitted once per pool, cached
    # (alvae_utils.training.mixture_prior).
    fit=lambda context: get_or_train_mixvae(context.pool, context.vae, context.pool_seed, device=context.device,
                                            progress=context.progress, root=context.cache_root)[0],
    encode=encode_mixvae,  # μ of q(z|x)
))

SIMCLR_FAMILY = register_family(FeatureFamily(
    name="simclr",
    title="SimCLR",
    # A ResNet-18 (the task model's architecture) trained with NT-Xent on two augmented views of every pool
    # image, without labels; fitted once per pool and cached (alvae_utils.training.simclr).
    fit=lambda context: get_or_train_simclr(context.pool, context.simclr.resolved(context.vae), context.pool_seed,
                                            device=context.device, progress=context.progress,
                                            root=context.cache_root)[0],
    encode=encode_simclr,  # the encoder's pooled 512 features h, not the projection head's z
))
