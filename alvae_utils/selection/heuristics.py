"""The registry of selection heuristics H (Algorithm 1, step 6): one entry per heuristic.

Each :class:`Heuristic` records its selection function, the inputs that function
needs, whether and how it can use a feature family's extra features (its
``+<family>`` variants), whether it trains the loss-prediction module, and how it
is shown in figures. The loop, the CLI, the statistics and the figures all read
this table, so adding a heuristic is one :func:`register_heuristic` call::

    register_heuristic(Heuristic(
        name="maxnorm", needs=("features",), extra_features=APPEND, title="Max norm", colour="tab:olive",
        select=lambda inputs, mask, budget: top_k_select(inputs.features.norm(dim=1), mask, budget)))

Built in: random, entropy, core-set (Eq. 1), MedAL (Eq. 2), loss prediction (Eq. 3–4), and the field's
reference heuristics: margin, BALD, BADGE and TypiClust.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import ConfigError
from ..registry import Registry
from .badge import badge_balanced_alpha, badge_select
from .bald import BALD_DROPOUT, BALD_SAMPLES, bald_scores
from .margin import margin_scores
from .ranking import entropy_scores, random_select, top_k_select
from .typiclust import typiclust_select
from .kcenter import kcenter_greedy
from .medal import medal_greedy

INPUTS: tuple[str, ...] = ("features", "logits", "task", "predicted_loss", "generator", "mc_probabilities",
                           "family_features")
"""What a selection function can ask for (fields of :class:`SelectionInputs`)."""

APPEND = "append"
"""Extra features are appended to the task features T_f (Eq. 6): [T_f(u) ⁀ α·V(u)]."""
LOSS_MODULE = "loss-module"
"""Extra features α·V(u) join the loss-prediction module's concatenation c before its last layer (LP+VAE)."""
EMBEDDING = "embedding"
"""Extra features α·V(u) reach the heuristic as ``family_features``, to append to its own embedding (BADGE);
α = balanced is the heuristic's ``balance``."""
REPRESENTATION = "representation"
"""The family's features V(u), unscaled, are the heuristic's only representation (TypiClust): a family is
required and α refused."""
MODES = (APPEND, LOSS_MODULE, EMBEDDING, REPRESENTATION)


@dataclass(frozen=True)
class SelectionInputs:
    """What the loop hands a selection function; only the heuristic's ``needs`` are set.

    ``features``: (N, d) T_f of the pool, with the family block appended for an
    APPEND variant; ``logits``: (N, C); ``task``: multi-class or multi-label;
    ``predicted_loss``: (N,) from P; ``generator``: a seeded CPU generator (the run's selection generator);
    ``mc_probabilities``: (T, N, C) from T stochastic passes with dropout on (BALD's model only);
    ``family_features``: (N, k) the family's block, α·V for an EMBEDDING variant, V for REPRESENTATION.
    """

    features: Tensor | None = None
    logits: Tensor | None = None
    task: str | None = None
    predicted_loss: Tensor | None = None
    generator: torch.Generator | None = None
    mc_probabilities: Tensor | None = None
    family_features: Tensor | None = None


@dataclass(frozen=True)
class Heuristic:
    """One registered selection heuristic."""

    name: str  # lower case, no "+": method labels are "<heuristic>[+<family>]"
    select: Callable[[SelectionInputs, Tensor, int], Tensor]  # (inputs, labeled mask (N,), β) → β indices
    needs: tuple[str, ...]  # subset of INPUTS
    title: str  # figure titles, e.g. "Core-set"
    colour: str  # matplotlib colour of its lines in every figure
    extra_features: str | None = None  # one of MODES, or None: no +<family> variants
    trains_loss_module: bool = False  # T is trained jointly with the loss-prediction module P
    # Dropout before T's final layer (its task model only) and the Monte Carlo passes behind mc_probabilities.
    mc_dropout: float = 0.0
    mc_samples: int = 0
    # EMBEDDING only: α = balanced, (inputs without family_features, V (N, k), CPU generator) → α.
    balance: Callable[[SelectionInputs, Tensor, torch.Generator], float] | None = None


HEURISTICS: Registry[Heuristic] = Registry("heuristic")
"""The registry, by name, in registration order; an unknown name raises ConfigError listing the known ones."""


def register_heuristic(heuristic: Heuristic, replace: bool = False) -> Heuristic:
    """Add ``heuristic`` to :data:`HEURISTICS` and return it.

    Raises ConfigError for a malformed name, an unknown input, predicted losses
    without the loss-prediction module, or a name already taken (unless ``replace``).
    """
    if not callable(heuristic.select) or not isinstance(heuristic.trains_loss_module, bool) \
            or not isinstance(heuristic.title, str) or not isinstance(heuristic.needs, tuple):
        raise ConfigError(f"heuristic {heuristic.name!r}: select must be callable, needs a tuple, title a string and "
                          "trains_loss_module a bool.")
    unknown = sorted(set(heuristic.needs) - set(INPUTS))
    if unknown:
        raise ConfigError(f"heuristic {heuristic.name!r} needs unknown input(s) {unknown}; choose from {INPUTS}.")
    if "predicted_loss" in heuristic.needs and not heuristic.trains_loss_module:
        raise ConfigError(f"heuristic {heuristic.name!r} needs predicted losses, which only the loss-prediction "
                          "module gives; set trains_loss_module=True.")
    if heuristic.extra_features not in (None, *MODES):
        raise ConfigError(f"extra_features of {heuristic.name!r} must be None or one of {MODES}.")
    if ("family_features" in heuristic.needs) != (heuristic.extra_features in (EMBEDDING, REPRESENTATION)):
        raise ConfigError(f"heuristic {heuristic.name!r}: 'family_features' is the input of the {EMBEDDING!r} "
                          f"and {REPRESENTATION!r} variants, and needed by exactly those.")
    if ("mc_probabilities" in heuristic.needs) != (heuristic.mc_samples > 0) or not 0 <= heuristic.mc_dropout < 1 \
            or (heuristic.mc_samples > 0) != (heuristic.mc_dropout > 0):
        raise ConfigError(f"heuristic {heuristic.name!r} needs 'mc_probabilities' exactly when it sets "
                          "mc_samples ≥ 1 and a dropout rate in (0, 1).")
    if heuristic.extra_features == LOSS_MODULE and not heuristic.trains_loss_module:
        raise ConfigError(f"heuristic {heuristic.name!r} gives extra features to the loss-prediction module, "
                          "so it must set trains_loss_module=True.")
    if heuristic.extra_features == APPEND and "features" not in heuristic.needs:
        raise ConfigError(f"heuristic {heuristic.name!r} appends extra features to T_f, so it must need 'features'.")
    return HEURISTICS.add(heuristic.name, heuristic, replace)


def get_heuristic(name: str) -> Heuristic:
    """The registered heuristic ``name``; ConfigError listing the known ones otherwise."""
    return HEURISTICS[name]


def with_variants() -> list[str]:
    """Names of the heuristics that accept a feature family (have ``+<family>`` variants)."""
    return [name for name, heuristic in HEURISTICS.items() if heuristic.extra_features is not None]


def needs_predictions(heuristic: Heuristic) -> bool:
    """Whether the heuristic reads T's predictions of the pool (TypiClust and random do not)."""
    return bool({"features", "logits", "predicted_loss", "mc_probabilities"} & set(heuristic.needs))


def select(heuristic: str, labeled_mask: Tensor, budget: int, **inputs: object) -> Tensor:
    """Step 6 of Algorithm 1: β pool indices chosen by ``heuristic``, in pick order.

    ``inputs`` are fields of :class:`SelectionInputs` (``features=``, ``logits=``,
    ``task=``, ``predicted_loss=``, ``generator=``); the heuristic's ``needs`` must be
    given, others are ignored. Raises ConfigError for an unknown heuristic and
    ValueError for a missing input.
    """
    spec = get_heuristic(heuristic)
    unknown = sorted(set(inputs) - set(INPUTS))
    if unknown:
        raise TypeError(f"select() got unknown input(s) {unknown}; the inputs are {', '.join(INPUTS)}.")
    # A plain EMBEDDING heuristic (badge) has no family block: the one input that may be None.
    optional = {"family_features"} if spec.extra_features == EMBEDDING else set()
    missing = [name for name in spec.needs if inputs.get(name) is None and name not in optional]
    if missing:
        raise ValueError(f"heuristic {heuristic!r} needs {' and '.join(missing)}; pass "
                         f"{', '.join(f'{name}=...' for name in missing)} to select().")
    given = SelectionInputs(**{name: inputs.get(name) for name in spec.needs})
    return checked_picks(heuristic, spec.select(given, labeled_mask, budget), labeled_mask, budget)


def checked_picks(heuristic: str, picks: object, labeled_mask: Tensor, budget: int) -> Tensor:
    """``picks`` if they are β distinct unlabeled pool indices (1-D int64), else ValueError naming the heuristic.

    A registered function that returns anything else would corrupt the labeled set that
    is stored and resumed from, so nothing it returns is used unchecked.
    """
    problem = None
    if not isinstance(picks, Tensor) or picks.dim() != 1 or picks.dtype != torch.int64:
        shape = tuple(picks.shape) if isinstance(picks, Tensor) else type(picks).__name__
        dtype = picks.dtype if isinstance(picks, Tensor) else ""
        problem = f"{shape} {dtype}".strip() + ", not a 1-D int64 tensor of pool indices"
    elif len(picks) != budget:
        problem = f"{len(picks)} indices, not β = {budget}"
    elif len(picks) and (int(picks.min()) < 0 or int(picks.max()) >= len(labeled_mask)):
        problem = f"indices in [{int(picks.min())}, {int(picks.max())}], outside the pool 0 … {len(labeled_mask) - 1}"
    elif len(torch.unique(picks)) != len(picks):
        problem = "the same index more than once"
    elif bool(labeled_mask[picks.to(labeled_mask.device)].any()):
        problem = "points that are already labeled"
    if problem:
        raise ValueError(f"heuristic {heuristic!r} returned {problem}; its selection function must return β "
                         "distinct unlabeled pool indices. Nothing of this step was stored.")
    return picks


register_heuristic(Heuristic(
    name="random", needs=("generator",), title="Random", colour="0.5",
    select=lambda inputs, mask, budget: random_select(mask, budget, inputs.generator)))
register_heuristic(Heuristic(
    name="entropy", needs=("logits", "task"), title="Entropy", colour="tab:purple",
    select=lambda inputs, mask, budget: top_k_select(entropy_scores(inputs.logits, inputs.task), mask, budget)))
register_heuristic(Heuristic(
    name="coreset", needs=("features",), extra_features=APPEND, title="Core-set", colour="tab:blue",
    select=lambda inputs, mask, budget: kcenter_greedy(inputs.features, mask, budget)))
register_heuristic(Heuristic(
    name="medal", needs=("features",), extra_features=APPEND, title="MedAL", colour="tab:green",
    select=lambda inputs, mask, budget: medal_greedy(inputs.features, mask, budget)))
register_heuristic(Heuristic(
    name="lossprediction", needs=("predicted_loss",), extra_features=LOSS_MODULE, trains_loss_module=True,
    title="Loss prediction", colour="tab:red",
    select=lambda inputs, mask, budget: top_k_select(inputs.predicted_loss, mask, budget)))
register_heuristic(Heuristic(
    name="margin", needs=("logits", "task"), title="Margin", colour="tab:brown",
    select=lambda inputs, mask, budget: top_k_select(-margin_scores(inputs.logits, inputs.task), mask, budget)))
register_heuristic(Heuristic(
    name="bald", needs=("mc_probabilities", "task"), title="BALD", colour="tab:pink",
    mc_dropout=BALD_DROPOUT, mc_samples=BALD_SAMPLES,
    select=lambda inputs, mask, budget: top_k_select(bald_scores(inputs.mc_probabilities, inputs.task), mask,
                                                     budget)))
register_heuristic(Heuristic(
    name="badge", needs=("features", "logits", "task", "generator", "family_features"), extra_features=EMBEDDING,
    title="BADGE", colour="tab:olive",
    select=lambda inputs, mask, budget: badge_select(inputs.logits, inputs.features, inputs.task, mask, budget,
                                                     inputs.generator, inputs.family_features),
    balance=lambda inputs, family, generator: badge_balanced_alpha(inputs.logits, inputs.features, inputs.task,
                                                                   family, generator)))
register_heuristic(Heuristic(
    name="typiclust", needs=("family_features", "generator"), extra_features=REPRESENTATION,
    title="TypiClust", colour="tab:cyan",
    select=lambda inputs, mask, budget: typiclust_select(inputs.family_features, mask, budget, inputs.generator)))
