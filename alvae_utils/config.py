"""Settings dataclasses: what determines a run's numbers, apart from the method and seed.

* :class:`TrainConfig` — the task model's schedule (paper, Experiments).
* :class:`VAEConfig` — the VAE's training (paper, Experiments).
* :class:`ExperimentConfig` — one dataset's Algorithm 1 setting: pool, ξ, β, η and the two above.
* :class:`TSNEConfig` — the core-set snapshot behind Figs. 5–6.

Named bundles of these (the ``paper``, ``quick`` and ``ci`` profiles) live in
:mod:`alvae_utils.profiles`; methods (heuristic + feature family + α) in
:mod:`alvae_utils.methods`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

SCHEMA_VERSION = 1
"""Version of what determines stored numbers (run keys, cached VAEs). Bump it on purpose whenever a
change alters a run's numbers without changing its configuration, so old results are recomputed."""


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the problem and the fix."""


@dataclass(frozen=True)
class TrainConfig:
    """Task-model training (paper, Experiments: SGD, lr 0.001, momentum 0.9)."""

    lr: float = 1e-3
    momentum: float = 0.9
    batch_size: int = 64
    initial_epochs: int = 10  # epochs on the initial labeled set ...
    epoch_increment: int = 5  # ... plus this many after each labeling step
    target_train_accuracy: float | None = None  # if set: train until reached (capped by max_epochs)
    max_epochs: int = 200
    pretrained: bool = False  # ImageNet weights for ResNet-18 (paper: True)
    fine_tune: bool = False  # paper retrains from scratch at every step
    lp_margin: float = 1.0  # ξ of Eq. 3
    lp_weight: float = 1.0  # λ: total loss = task loss + λ · pair loss
    lp_stop_gradient_epoch: int | None = None  # stop LP gradients into the backbone from this epoch

    def epochs_for_step(self, step: int) -> int:
        """Epochs at AL step ``step`` (0 = the initial labeled set)."""
        return self.initial_epochs + self.epoch_increment * step


@dataclass(frozen=True)
class VAEConfig:
    """VAE training (paper, Experiments: 20 epochs, Adam lr 1e-3, weight decay 5e-3)."""

    latent_dim: int = 32
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 5e-3
    batch_size: int = 128


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that determines one Algorithm 1 run except the method and seed.

    The recorded label counts are ξ, ξ+β, …, up to the largest that is ≤ η.
    (The paper's pseudo-code loops ``while |L| ≤ η``; we treat η as the last
    label count on the curve, so the paper's MNIST curve is η = 21,000.)
    """

    dataset: str
    pool_size: int  # n images drawn from the training split (paper: 25k MNIST, 30k ChestMNIST)
    eval_size: int | None  # images of the evaluation split used (None = all)
    initial_labels: int  # ξ
    budget: int  # β
    max_labels: int  # η
    train: TrainConfig = field(default_factory=TrainConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    pool_seed: int = 0  # the pool is fixed per dataset; run seeds vary the initial labels

    def validate(self) -> None:
        """Raise ConfigError before any work if the numbers cannot form Algorithm 1."""
        if self.pool_size <= 0:
            raise ConfigError(f"pool_size must be positive, got {self.pool_size}.")
        if self.initial_labels <= 0 or self.initial_labels > self.pool_size:
            raise ConfigError(
                f"initial labels ξ={self.initial_labels} must be between 1 and the pool size "
                f"{self.pool_size}; lower ξ or raise pool_size."
            )
        if self.max_labels < self.initial_labels:
            raise ConfigError(
                f"η={self.max_labels} is smaller than ξ={self.initial_labels}; "
                "η is the last label count on the curve and must be ≥ ξ."
            )
        if self.budget <= 0:
            raise ConfigError(f"budget β must be positive, got {self.budget}.")
        if self.max_labels > self.initial_labels and self.initial_labels + self.budget > self.pool_size:
            raise ConfigError(
                f"budget β={self.budget} is larger than the unlabeled pool "
                f"({self.pool_size - self.initial_labels} = pool {self.pool_size} − ξ {self.initial_labels}); "
                "lower β or raise pool_size."
            )
        if self.max_labels > self.pool_size:
            raise ConfigError(
                f"η={self.max_labels} exceeds the pool size {self.pool_size}; lower η or raise pool_size."
            )

    def label_counts(self) -> list[int]:
        """|L| at each recorded step: ξ, ξ+β, … ≤ η."""
        return list(range(self.initial_labels, self.max_labels + 1, self.budget))

    def key(self) -> str:
        """Stable short hash: any change to the configuration gives a new key."""
        return config_hash(asdict(self))


def config_hash(obj: object) -> str:
    """12-hex-digit SHA-1 of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


@dataclass(frozen=True)
class TSNEConfig:
    """The t-SNE experiment of Figs. 5–6."""

    dataset: str = "chestmnist"
    fallback_dataset: str = "mnist"  # used (and said in the titles) when ChestMNIST is unavailable
    pool_size: int = 32120  # ξ + 31,120 unlabeled, so a 5% sample is the paper's 1,556
    initial_labels: int = 1000
    unlabeled_fraction: float = 0.05
    budget: int = 100
    epochs: int = 10
    perplexity: float = 30.0


def with_overrides(experiment: ExperimentConfig, **changes: object) -> ExperimentConfig:
    """A copy of ``experiment`` with top-level fields replaced (validated)."""
    updated = replace(experiment, **changes)
    updated.validate()
    return updated
