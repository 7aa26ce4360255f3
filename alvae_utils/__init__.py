"""alvae: task-agnostic VAE features in task-based active learning (Godwin et al., SciPy 2022).

The package is layered; each sub-package imports only from those above it in this list
(``tests/test_layers.py`` checks it):

* base modules here: :mod:`.paths`, :mod:`.config`, :mod:`.registry`, :mod:`.seeds`, :mod:`.device`, :mod:`.progress`;
* :mod:`.data` (datasets, generated test files) and :mod:`.models` (the networks);
* :mod:`.training` (T, P and the VAEs) and :mod:`.selection` (the algorithms, heuristic and feature-family
  registries, methods);
* :mod:`.experiment` (profiles, overrides, the results store, Algorithm 1, sweep planning, t-SNE);
* :mod:`.execution` (executors and :func:`run_sweep`);
* :mod:`.analysis` (statistics, AUBC, tables, figures, plots);
* :mod:`.workflow` (the notebook table, papermill and nbval, the CLI).

The public API is one import away: ``from alvae_utils import run_sweep, Execution, ...``
(:data:`__all__`). Names are imported on first use, so ``import alvae_utils`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "Dataset": "data.datasets", "load_dataset": "data.datasets",
    "Heuristic": "selection.heuristics", "register_heuristic": "selection.heuristics",
    "FeatureFamily": "selection.features", "register_family": "selection.features",
    "Method": "selection.methods",
    "Profile": "experiment.profiles", "get_profile": "experiment.profiles",
    "load_results": "experiment.results",
    "Execution": "execution.settings", "Executor": "execution.executors",
    "register_executor": "execution.executors", "run_sweep": "execution.sweep",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    """The public names of :data:`_PUBLIC`, imported from their modules on first use (PEP 562)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'alvae_utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
