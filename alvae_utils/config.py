"""Settings dataclasses: what determines a run's numbers, apart from the method and seed.

* :class:`TrainConfig` — the task model's schedule (paper, Experiments).
* :class:`VAEConfig` — the VAE's training (paper, Experiments).
* :class:`SimCLRConfig` — the self-supervised ``simclr`` feature family's training (Chen et al., 2020).
* :class:`ExperimentConfig` — one dataset's Algorithm 1 setting: pool, ξ, β, η and the two above.
* :class:`TSNEConfig` — the core-set snapshot behind Figs. 5–6.

Named bundles of these (the ``paper``, ``quick`` and ``ci`` profiles) live in
:mod:`alvae_utils.experiment.profiles`; methods (heuristic + feature family + α) in
:mod:`alvae_utils.selection.methods`.
"""

from __future__ import annotations

import hashlib
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass

SCHEMA_VERSION = 5
"""Version of what determines stored numbers (run keys, cached VAEs). Bump it on purpose whenever a
change alters a run's numbers without changing its configuration, so old results are recomputed.

2: keys include the data's content fingerprint; one AUC rule for multi-class and multi-label data.
3: rows gain ``alpha_used`` (the α that scaled the family's block, which α = balanced estimates at
every step) and ``features_seconds``; runs stored before have neither, so they are recomputed under
new keys, never mixed with the new rows.
4: a feature family fitted once per pool (the VAE, the MoG-prior VAE) is fitted at its runs' torch
thread count, where the driver's count was used before, and its cache is keyed on the device type
and thread count; runs that used a VAE fitted the old way are recomputed, never mixed with new ones.
5: core-set and MedAL pick the exact argmax in float32 (fast distances shortlist, exact float64
distances decide near ties), where float32 round-off could pick a near-tied point before; the
`quick` and `paper` runs' picks change (the `ci` profile's do not). Rows gain ``balanced_accuracy``
(multi-class data); runs stored before lack it and stay readable (``results.ADDED_COLUMNS``)."""


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the problem and the fix."""


def shown(value: object) -> str:
    """``value`` as a message shows it: a number short (integers exactly up to 15 digits, floats as ``repr`` up to
    12 characters, else 6 significant digits: ``1e+308``, never the 309 digits of ``int(1e308)``), anything else as
    ``repr``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, int) and abs(value) < 10 ** 15:
        return str(value)
    if isinstance(value, float) and len(repr(value)) <= 12:
        return repr(value)  # as typed: 1.0, 0.25, 1e+308
    try:
        return f"{value:.6g}"
    except OverflowError:  # an int beyond float's range
        return f"{'-' if value < 0 else ''}about 1e+{int(abs(value).bit_length() * math.log10(2))}"


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: [low, high], either end open or absent."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '≥'} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


POSITIVE = Range(0, low_open=True)
AT_LEAST_ONE = Range(1)
AT_LEAST_TWO = Range(2)  # batches: BatchNorm cannot normalise a single sample
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1, low_open=True)


def setting(default: object = MISSING, *, allowed: Range | None = None, help: str = "", flag: str = ""):
    """A dataclass field with its allowed range and a one-line description, read by :func:`check_settings`.

    ``flag`` is its command-line option when that is not ``--`` + the field name with ``-`` for ``_``.
    """
    metadata = {"range": allowed, "help": help, "flag": flag}
    if default is MISSING:
        return field(metadata=metadata)
    if is_dataclass(default):  # nested settings: a fresh default per instance
        return field(default_factory=type(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_of(owner: type, name: str) -> str:
    """The command-line option of field ``name`` of settings dataclass ``owner``: its ``flag``, else ``--`` + the
    name with ``-`` for ``_`` (``cpus_per_run`` → ``--cpus-per-run``)."""
    field_ = next(f for f in fields(owner) if f.name == name)
    return field_.metadata.get("flag") or "--" + name.replace("_", "-")


def setting_type(owner: type, name: str) -> object:
    """The annotated type of field ``name`` of dataclass ``owner`` (annotations are strings here)."""
    return typing.get_type_hints(owner)[name]


def check_value(owner: type, name: str, value: object, label: str | None = None, check_range: bool = True) -> object:
    """``value`` checked against the type (and range) of field ``name`` of ``owner``; ints widen to float.

    Raises ConfigError naming ``label`` (default ``name``), the value and what is allowed.
    """
    label = label or name
    expected = setting_type(owner, name)
    options = typing.get_args(expected) if typing.get_origin(expected) in (typing.Union, types.UnionType) else ()
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{label} cannot be None; give a value of type {_type_name(expected)}.")
    base = next((option for option in options if option is not type(None)), expected)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, base) or (base in (int, float) and isinstance(value, bool)):
        raise ConfigError(f"{label} must be {_type_name(expected)}, got {type(value).__name__} {shown(value)}.")
    allowed = next(f for f in fields(owner) if f.name == name).metadata.get("range")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{label} must be a finite number, got {shown(value)}.")
    if check_range and allowed is not None and value not in allowed:
        raise ConfigError(f"{label} must be {allowed}, got {shown(value)}.")
    return value


def _type_name(expected: object) -> str:
    options = typing.get_args(expected) or (expected,)
    return " or ".join("None" if option is type(None) else option.__name__ for option in options)


def check_settings(config: object, prefix: str = "") -> None:
    """Check every field of a settings dataclass (and nested ones) against its type and range."""
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            check_settings(value, f"{prefix}{f.name}.")
        else:
            check_value(type(config), f.name, value, f"{prefix}{f.name}")


@dataclass(frozen=True)
class TrainConfig:
    """Task-model training (paper, Experiments: SGD, lr 0.001, momentum 0.9).

    The last five fields are speed settings. They apply to every forward pass of T and P
    (training, selection features, evaluation; :func:`alvae_utils.training.task_model.build_task_model`)
    and are off by default: IEEE fp32, as the paper trained, and reproducible on the same device
    and software (:func:`alvae_utils.device.reproducible_cuda` on CUDA). Each one can change a run's
    numbers (bf16 rounds, tf32 rounds fp32 products' inputs to 10 mantissa bits, channels_last and
    ``torch.compile`` reorder floating-point sums, cuDNN's autotuner picks algorithms by timing,
    run to run), so they are part of the configuration and of the run key. Adding the first four
    changed all stored run and configuration keys once (``tests/ci_profile_keys.json``); fields
    added since (:data:`KEYED_WHEN_ON`) enter a key only when on, so existing keys stay. What each
    buys is measured by ``benchmarks/bench_training.py`` (``benchmarks/README.md``).
    """

    lr: float = setting(1e-3, allowed=POSITIVE, help="SGD learning rate")
    momentum: float = setting(0.9, allowed=Range(0, 1, high_open=True), help="SGD momentum")
    batch_size: int = setting(64, allowed=AT_LEAST_TWO, help="images per SGD step")
    initial_epochs: int = setting(10, allowed=AT_LEAST_ONE, help="epochs on the initial labeled set ...")
    epoch_increment: int = setting(5, allowed=NON_NEGATIVE, help="... plus this many after each labeling step")
    target_train_accuracy: float | None = setting(
        None, allowed=FRACTION, help="if set: train until reached (capped by max_epochs)")
    max_epochs: int = setting(200, allowed=AT_LEAST_ONE, help="cap on epochs with target_train_accuracy")
    pretrained: bool = setting(False, help="ImageNet weights for ResNet-18 (paper: true)")
    fine_tune: bool = setting(False, help="carry the model across steps (paper: retrain from scratch)")
    lp_margin: float = setting(1.0, allowed=NON_NEGATIVE, help="margin ξ of the pair loss, Eq. 3")
    lp_weight: float = setting(1.0, allowed=NON_NEGATIVE, help="λ: total loss = task loss + λ · pair loss")
    lp_stop_gradient_epoch: int | None = setting(
        None, allowed=NON_NEGATIVE, help="stop the loss module's gradient into the backbone from this epoch")
    channels_last: bool = setting(False, help="speed: channels-last memory format for T's convolutions")
    bf16: bool = setting(False, help="speed: bfloat16 autocast in T's and P's forward passes (CPU or CUDA)")
    cudnn_benchmark: bool = setting(False, help="speed: let cuDNN time and pick conv algorithms (CUDA; not "
                                                "reproducible: the pick can change from run to run; no-op on CPU)")
    compile: bool = setting(False, help="speed: torch.compile T's forward (compiled once per process, so once per "
                                        "run under Ray with GPUs; minutes on CPU)")
    tf32: bool = setting(False, help="speed: TF32 for T's and P's fp32 convolutions and matrix products (CUDA, "
                                     "Ampere+; no-op elsewhere)")
    init: str = setting("scratch", help="T's backbone at each step: scratch (or ImageNet with pretrained), or simclr "
                                        "(the pool's fitted SimCLR encoder)")

    def epochs_for_step(self, step: int) -> int:
        """Epochs at AL step ``step`` (0 = the initial labeled set)."""
        return self.initial_epochs + self.epoch_increment * step

    def key_fields(self) -> dict[str, object]:
        """The fields that keys hash: all of them, but those of :data:`KEYED_WHEN_ON` only when not at their default."""
        return {name: value for name, value in asdict(self).items()
                if name not in KEYED_WHEN_ON or value != _DEFAULT_TRAIN[name]}


KEYED_WHEN_ON: frozenset[str] = frozenset({"tf32", "init"})
"""Settings of :class:`TrainConfig` added after run keys were pinned: hashed into a key only when not at
their default (tf32 on, init other than scratch), so every run stored without them keeps its key
(``tests/ci_profile_keys.json``)."""

TASK_INITS: tuple[str, ...] = ("scratch", "simclr")
"""Values of ``train.init``: T's backbone from scratch (or ImageNet, with ``pretrained``), or from the pool's
fitted SimCLR encoder (:mod:`alvae_utils.training.simclr`)."""


@dataclass(frozen=True)
class VAEConfig:
    """VAE training (paper, Experiments: 20 epochs, Adam lr 1e-3, weight decay 5e-3)."""

    latent_dim: int = setting(32, allowed=AT_LEAST_ONE, help="size of μ, the VAE features")
    epochs: int = setting(20, allowed=AT_LEAST_ONE, help="training epochs")
    lr: float = setting(1e-3, allowed=POSITIVE, help="Adam learning rate")
    weight_decay: float = setting(5e-3, allowed=NON_NEGATIVE, help="Adam weight decay")
    batch_size: int = setting(128, allowed=AT_LEAST_TWO, help="images per Adam step")
    refit_epochs: int | None = setting(
        None, allowed=AT_LEAST_ONE, help="epochs of a VAE refitted at every AL step (ssvae); None: epochs")

    @property
    def epochs_per_refit(self) -> int:
        """Epochs of a family refitted at every step (:mod:`~alvae_utils.training.ssvae`): ``refit_epochs``, else
        ``epochs``."""
        return self.epochs if self.refit_epochs is None else self.refit_epochs

    def fitted_once_key(self) -> dict[str, object]:
        """The fields that determine a VAE fitted once per pool: all but ``refit_epochs``.

        Cache keys of the paper VAE and the MoG-prior VAE use this, so tuning the
        refitted family's epochs does not retrain (or orphan) the cached ones.
        """
        return {name: value for name, value in asdict(self).items() if name != "refit_epochs"}


@dataclass(frozen=True)
class SimCLRConfig:
    """The ``simclr`` feature family's training (Chen et al., 2020, "A Simple Framework for Contrastive Learning").

    ``epochs`` and ``batch_size`` left at None take the VAE's (:class:`VAEConfig`): both are the profile's
    one label-free fit of the pool, so a profile's budget for it is set once, and ``ci`` stays tiny. A
    setting given explicitly enters the configuration key (:meth:`ExperimentConfig.key_fields`); at the
    defaults nothing does, so every key stored before this family existed stays.
    """

    epochs: int | None = setting(None, allowed=AT_LEAST_ONE, help="training epochs (None: vae.epochs)")
    batch_size: int | None = setting(None, allowed=AT_LEAST_TWO,
                                     help="images per Adam step, two views each (None: vae.batch_size)")
    temperature: float = setting(0.5, allowed=POSITIVE, help="τ of the NT-Xent loss")
    lr: float = setting(1e-3, allowed=POSITIVE, help="Adam learning rate")
    weight_decay: float = setting(1e-6, allowed=NON_NEGATIVE, help="Adam weight decay")
    projection_dim: int = setting(128, allowed=AT_LEAST_ONE, help="output of the projection head g (the loss's z)")

    def resolved(self, vae: VAEConfig) -> SimCLRConfig:
        """This configuration with ``epochs`` and ``batch_size`` taken from ``vae`` where they are None."""
        return SimCLRConfig(**{**asdict(self), "epochs": self.epochs or vae.epochs,
                               "batch_size": self.batch_size or vae.batch_size})

    def key_fields(self) -> dict[str, object]:
        """The settings given away from their defaults, which keys hash (none: keys stay as before SimCLR)."""
        return {name: value for name, value in asdict(self).items() if value != getattr(_DEFAULT_SIMCLR, name)}


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that determines one Algorithm 1 run except the method and seed.

    The recorded label counts are ξ, ξ+β, …, up to the largest that is ≤ η.
    (The paper's pseudo-code loops ``while |L| ≤ η``; we treat η as the last
    label count on the curve, so the paper's MNIST curve is η = 21,000.)
    """

    dataset: str = setting(help="dataset name")
    pool_size: int = setting(
        allowed=AT_LEAST_ONE, help="images drawn from the training split (paper: 25k MNIST, 30k ChestMNIST)")
    eval_size: int | None = setting(allowed=AT_LEAST_ONE, help="images of the evaluation split used (None: all)")
    initial_labels: int = setting(allowed=AT_LEAST_TWO, help="ξ, the initial number of labels")
    budget: int = setting(allowed=AT_LEAST_ONE, help="β, labels added per step")
    max_labels: int = setting(allowed=AT_LEAST_ONE, help="η, the last label count on the curve")
    train: TrainConfig = setting(TrainConfig(), help="task-model training")
    vae: VAEConfig = setting(VAEConfig(), help="VAE training")
    simclr: SimCLRConfig = setting(SimCLRConfig(), help="SimCLR training (the simclr family, train.init=simclr)")
    pool_seed: int = setting(
        0, allowed=NON_NEGATIVE, help="seed of the pool draw (fixed per dataset; run seeds vary the initial labels)")
    pool_imbalance: float = setting(
        1.0, allowed=AT_LEAST_ONE, help="ρ: largest/smallest class of a long-tailed pool (multi-class data; 1: the "
                                        "pool drawn as the dataset gives it)")

    def validate(self) -> None:
        """Raise ConfigError before any work if the numbers cannot form Algorithm 1, or a setting is out of range."""
        pool, xi, beta, eta = (shown(n) for n in (self.pool_size, self.initial_labels, self.budget, self.max_labels))
        if self.pool_size <= 0:
            raise ConfigError(f"pool_size must be positive, got {pool}.")
        if self.initial_labels < 2 or self.initial_labels > self.pool_size:
            raise ConfigError(
                f"initial labels ξ={xi} must be between 2 (the task model trains in batches of at "
                f"least two images, for BatchNorm) and the pool size {pool}; lower ξ or raise pool_size."
            )
        if self.max_labels < self.initial_labels:
            raise ConfigError(
                f"η={eta} is smaller than ξ={xi}; "
                "η is the last label count on the curve and must be ≥ ξ."
            )
        if self.budget <= 0:
            raise ConfigError(f"budget β must be positive, got {beta}.")
        if self.max_labels == self.initial_labels:
            raise ConfigError(
                f"η={eta} equals ξ={xi}: no selection step would run (β={beta} labels are never added), so the "
                "run could not compare methods and its curve would have one point. Raise η to at least ξ + β = "
                f"{shown(self.initial_labels + self.budget)}, or lower ξ."
            )
        if self.initial_labels + self.budget > self.pool_size:
            raise ConfigError(
                f"budget β={beta} is larger than the unlabeled pool "
                f"({shown(self.pool_size - self.initial_labels)} = pool {pool} − ξ {xi}); lower β or raise pool_size."
            )
        if self.budget > self.max_labels - self.initial_labels:
            room = shown(self.max_labels - self.initial_labels)
            raise ConfigError(
                f"budget β={beta} is larger than η − ξ = {room} (η={eta}, ξ={xi}): no selection step would run, "
                f"and the curve would have one point. Lower β to at most {room}, or raise η."
            )
        if self.max_labels > self.pool_size:
            raise ConfigError(f"η={eta} exceeds the pool size {pool}; lower η or raise pool_size.")
        check_settings(self)
        if self.train.init not in TASK_INITS:
            raise ConfigError(f"train.init must be one of {', '.join(TASK_INITS)}, got {self.train.init!r}.")
        if self.train.init != "scratch" and self.train.pretrained:
            raise ConfigError(f"train.init={self.train.init} sets T's backbone, and train.pretrained=True sets it to "
                              "ImageNet's: choose one (set train.pretrained=false).")

    def label_counts(self) -> list[int]:
        """|L| at each recorded step: ξ, ξ+β, … ≤ η."""
        return list(range(self.initial_labels, self.max_labels + 1, self.budget))

    def key(self, simclr: bool = False) -> str:
        """Stable short hash of the configuration (the ``config_key`` column): any change to it gives a new key.
        SimCLR's settings enter only with ``simclr``, for runs that read them, as in their run keys
        (:func:`alvae_utils.experiment.results.run_key`): a study giving SimCLR its own budget then shares the
        runs that never use it with the other notebooks, and runs of two SimCLR budgets never share a key."""
        return config_hash(self.key_fields(simclr=simclr))

    def key_fields(self, simclr: bool = True) -> dict[str, object]:
        """The configuration as keys hash it: every field, the training's as :meth:`TrainConfig.key_fields`,
        ``pool_imbalance`` only when it is not 1, and of :class:`SimCLRConfig` only those set away from their
        defaults (none: no ``simclr`` entry), and only with ``simclr`` (a run that reads them). Both were
        added after keys were pinned: a configuration that does not use them keeps the key it had
        (``tests/ci_profile_keys.json``); at the defaults SimCLR's settings are the VAE's, which are hashed."""
        fields = {**asdict(self), "train": self.train.key_fields()}
        del fields["simclr"]
        if self.pool_imbalance == 1:
            del fields["pool_imbalance"]
        settings = self.simclr.key_fields() if simclr else {}
        return {**fields, "simclr": settings} if settings else fields


_DEFAULT_TRAIN = asdict(TrainConfig())
_DEFAULT_SIMCLR = SimCLRConfig()


def config_hash(obj: object) -> str:
    """12-hex-digit SHA-1 of a JSON-serialisable object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


@dataclass(frozen=True)
class TSNEConfig:
    """The t-SNE experiment of Figs. 5–6."""

    dataset: str = setting("chestmnist", help="dataset of the snapshot (paper: ChestMNIST)")
    fallback_dataset: str = setting("mnist", help="used, and said in the titles, when the dataset is unavailable")
    pool_size: int = setting(32120, allowed=AT_LEAST_TWO,
                             help="pool images: ξ + 31,120 unlabeled, so a 5% sample is the paper's 1,556")
    initial_labels: int = setting(1000, allowed=AT_LEAST_TWO, help="labels the ResNet is trained on")
    unlabeled_fraction: float = setting(0.05, allowed=FRACTION, help="share of the unlabeled points embedded")
    budget: int = setting(100, allowed=AT_LEAST_ONE, help="points core-set picks")
    epochs: int = setting(10, allowed=AT_LEAST_ONE, help="ResNet training epochs")
    perplexity: float = setting(30.0, allowed=POSITIVE, help="t-SNE perplexity")

    def validate(self) -> None:
        """Raise ConfigError for a setting out of range, or more picks than sampled points."""
        check_settings(self, "tsne.")
        if self.initial_labels >= self.pool_size:
            raise ConfigError(f"tsne.initial_labels={shown(self.initial_labels)} must be below "
                              f"tsne.pool_size={shown(self.pool_size)}.")
        sampled = round(self.unlabeled_fraction * (self.pool_size - self.initial_labels))
        if self.budget > sampled:
            raise ConfigError(f"tsne.budget={shown(self.budget)} exceeds the {shown(sampled)} sampled unlabeled points "
                              "(tsne.unlabeled_fraction × (tsne.pool_size − tsne.initial_labels)); lower the budget "
                              "or sample more.")


def describe_overrides(overrides: Mapping[str, object] | Iterable[tuple[str, object]]) -> str:
    """``"budget=200, train.initial_epochs=3"`` (sorted by key; lists joined by commas); empty for none."""
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    return ", ".join(f"{key}={','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"
                     for key, value in sorted(items))
