"""The registry of selection heuristics H (Algorithm 1, step 6): one entry per heuristic.

Each :class:`Heuristic` records its selection function, the inputs that function
needs, whether and how it can use a feature family's extra features (its
``+<family>`` variants), whether it trains the loss-prediction module, and how it
is shown in figures. The loop, the CLI, the statistics and the figures all read
this table, so adding a heuristic is one :func:`register_heuristic` call::

    register_heuristic(Heuristic(
        name="maxnorm", needs=("features",), extra_features=APPEND, title="Max norm", colour="tab:olive",
        select=lambda inputs, mask, budget: top_k_select(inputs.features.norm(dim=1), mask, budget)))

Built in: random, entropy, core-set (Eq. 1), MedAL (Eq. 2) and loss prediction (Eq. 3–4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import ConfigError
from ..registry import Registry
from .ranking import entropy_scores, random_select, top_k_select
from .kcenter import kcenter_greedy
from .medal import medal_greedy

INPUTS: tuple[str, ...] = ("features", "logits", "task", "predicted_loss", "generator")
"""What a selection function can ask for (fields of :class:`SelectionInputs`)."""

APPEND = "append"
"""Extra features are appended to the task features T_f (Eq. 6): [T_f(u) ⁀ α·V(u)]."""
LOSS_MODULE = "loss-module"
"""Extra features α·V(u) join the loss-prediction module's concatenation c before its last layer (LP+VAE)."""


@dataclass(frozen=True)
class SelectionInputs:
    """What the loop hands a selection function; only the heuristic's ``needs`` are set.

    ``features``: (N, d) T_f of the pool, with the family block appended for an
    APPEND variant; ``logits``: (N, C); ``task``: multi-class or multi-label;
    ``predicted_loss``: (N,) from P; ``generator``: a seeded CPU generator.
    """

    features: Tensor | None = None
    logits: Tensor | None = None
    task: str | None = None
    predicted_loss: Tensor | None = None
    generator: torch.Generator | None = None


@dataclass(frozen=True)
class Heuristic:
    """One registered selection heuristic."""

    name: str  # lower case, no "+": method labels are "<heuristic>[+<family>]"
    select: Callable[[SelectionInputs, Tensor, int], Tensor]  # (inputs, labeled mask (N,), β) → β indices
    needs: tuple[str, ...]  # subset of INPUTS
    title: str  # figure titles, e.g. "Core-set"
    colour: str  # matplotlib colour of its lines in every figure
    extra_features: str | None = None  # APPEND, LOSS_MODULE, or None: no +<family> variants
    trains_loss_module: bool = False  # T is trained jointly with the loss-prediction module P


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
    if heuristic.extra_features not in (None, APPEND, LOSS_MODULE):
        raise ConfigError(f"extra_features of {heuristic.name!r} must be None, {APPEND!r} or {LOSS_MODULE!r}.")
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
    missing = [name for name in spec.needs if inputs.get(name) is None]
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
