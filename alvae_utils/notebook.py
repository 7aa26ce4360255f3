"""Parameter checking for the notebooks.

papermill only *warns* about a parameter the notebook does not declare, and
then injects it as a stray variable. Each notebook therefore calls
:func:`check_parameters` right after its ``parameters`` cell: any unknown name,
wrong type or invalid value stops the notebook before expensive work starts.
The declared names and types live here, next to the code that uses them.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields

from .config import PROFILES, ConfigError, get_profile


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


NOTEBOOK_PARAMETERS: dict[str, type] = {
    "01_vae_training": VAETrainingParameters,
    "02_active_learning": ActiveLearningParameters,
    "03_significance_tests": SignificanceParameters,
    "04_tsne": TSNEParameters,
}

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
        spec = NOTEBOOK_PARAMETERS[notebook]
    except KeyError:
        raise ConfigError(f"unknown notebook {notebook!r}; known: {', '.join(NOTEBOOK_PARAMETERS)}.") from None
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
