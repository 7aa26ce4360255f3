"""The notebook table: every numbered notebook, its parameters, how it runs and what it writes.

One :class:`Notebook` entry per notebook declares its name, its parameters (a
dataclass: names, types and defaults, mirrored by the notebook's ``parameters``
cell), whether ``make figures`` runs it once per dataset, whether it trains the
task model, whether it reads what another notebook stored, and the figure files
it writes, as patterns. :mod:`alvae_utils.workflow` runs the table; adding a
notebook is one entry here plus the ``.ipynb`` file.

papermill only *warns* about a parameter the notebook does not declare, and
then injects it as a stray variable. Each notebook therefore calls
:func:`check_parameters` right after its ``parameters`` cell: any unknown name,
wrong type or invalid value stops the notebook before expensive work starts.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields

from .config import ConfigError
from .figures import TSNE_STEMS
from .profiles import PROFILES, get_profile


@dataclass(frozen=True)
class VAETrainingParameters:
    """01_vae_training."""

    profile: str = "quick"
    dataset: str = "mnist"
    n_reconstructions: int = 10


@dataclass(frozen=True)
class ActiveLearningParameters:
    """02_active_learning."""

    profile: str = "quick"
    dataset: str = "mnist"


@dataclass(frozen=True)
class SignificanceParameters:
    """03_significance_tests."""

    profile: str = "quick"
    alpha_level: float = 0.05


@dataclass(frozen=True)
class TSNEParameters:
    """04_tsne."""

    profile: str = "quick"
    seed: int = 0


@dataclass(frozen=True)
class Notebook:
    """One numbered notebook in ``notebooks/``.

    ``figures`` are glob patterns of the files it writes into the figures folder,
    with ``{dataset}`` (per-dataset notebooks), ``{heuristic}`` (each heuristic of
    the profile's methods that has figures, :func:`alvae_utils.figures.figure_heuristics`)
    and ``{family}`` (each feature family of those methods) filled in.
    """

    name: str
    parameters: type  # a frozen dataclass; its fields are the notebook's parameters
    per_dataset: bool = False  # run once for each dataset of the profile
    trains_task_model: bool = False  # needs the ImageNet weights under a pretrained profile
    reads_results_of: str | None = None  # the notebook whose stored results it analyses
    figures: tuple[str, ...] = ()


_BOTH = ("png", "pdf")
NOTEBOOKS: dict[str, Notebook] = {notebook.name: notebook for notebook in (
    Notebook("01_vae_training", VAETrainingParameters, per_dataset=True,
             figures=tuple(f"vae_{{dataset}}_{part}.{ext}" for part in ("loss", "reconstructions", "latent")
                           for ext in _BOTH)),
    Notebook("02_active_learning", ActiveLearningParameters, per_dataset=True, trains_task_model=True,
             figures=tuple(f"*_{{dataset}}_{{heuristic}}{metric}.{ext}" for metric in ("", "_auc") for ext in _BOTH)),
    Notebook("03_significance_tests", SignificanceParameters, reads_results_of="02_active_learning"),
    Notebook("04_tsne", TSNEParameters, trains_task_model=True,
             figures=tuple(f"{stem}.{ext}" for stem in TSNE_STEMS for ext in _BOTH)),
)}
"""The notebooks, in run order."""

# Names an IPython kernel defines on its own.
_KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


def check_parameters(notebook: str, namespace: Mapping[str, object]):
    """Validate the notebook's parameters in ``namespace`` (its ``globals()``); return them as a dataclass.

    Call it directly after the ``parameters`` cell (and papermill's injected
    cell), before anything else is defined. Unknown names are looked for only on
    the first call in a kernel (no ``params`` yet), which is how papermill and
    nbval run; re-running the cell interactively, after later cells defined
    their own variables, checks the declared parameters only.
    """
    try:
        spec = NOTEBOOKS[notebook].parameters
    except KeyError:
        raise ConfigError(f"unknown notebook {notebook!r}; known: {', '.join(NOTEBOOKS)}.") from None
    declared = {f.name: f for f in fields(spec)}
    given = {name: value for name, value in namespace.items()
             if not name.startswith("_") and name not in _KERNEL_NAMES
             and not isinstance(value, (types.ModuleType, types.FunctionType, type))}
    unknown = sorted(set(given) - set(declared))
    if unknown and "params" not in namespace:
        raise ConfigError(
            f"{notebook}: unknown parameter(s) {', '.join(unknown)}; "
            f"this notebook takes {', '.join(declared)} (papermill -p NAME VALUE)."
        )
    hints = typing.get_type_hints(spec)
    values = {}
    for name in declared:
        if name not in given:
            raise ConfigError(f"{notebook}: parameter {name!r} is missing; run the parameters cell first.")
        value, expected = given[name], hints[name]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"{notebook}: parameter {name!r} must be {expected.__name__}, got {type(value).__name__} {value!r}."
            )
        values[name] = value
    params = spec(**values)
    _check_values(notebook, params)
    return params


def _check_values(notebook: str, params) -> None:
    if params.profile not in PROFILES:
        raise ConfigError(f"{notebook}: unknown profile {params.profile!r}; choose one of {', '.join(PROFILES)}.")
    dataset = getattr(params, "dataset", None)
    if dataset is not None:
        get_profile(params.profile).experiment(dataset)  # raises with the profile's datasets
    alpha_level = getattr(params, "alpha_level", None)
    if alpha_level is not None and not 0 < alpha_level < 1:
        raise ConfigError(f"{notebook}: alpha_level must be in (0, 1), got {alpha_level}.")
