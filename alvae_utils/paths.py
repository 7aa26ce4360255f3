"""Filesystem locations, anchored at the repository root.

papermill and nbval start kernels inside ``notebooks/`` (or ``build/``), so nothing
here depends on the current working directory. Each location can be redirected
with an environment variable; the test harness uses this to keep its data,
results and figures out of the user's folders.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parent.parent


def _env_path(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value).expanduser().resolve() if value else default


def data_root() -> Path:
    """Where datasets are read from and downloaded to (``$ALVAE_DATA_ROOT``, default ``data/``)."""
    return _env_path("ALVAE_DATA_ROOT", REPO_ROOT / "data")


def results_root() -> Path:
    """Where AL results and cached VAEs go (``$ALVAE_RESULTS_ROOT``, default ``results/``)."""
    return _env_path("ALVAE_RESULTS_ROOT", REPO_ROOT / "results")


def figures_dir() -> Path:
    """Where figures are written (``$ALVAE_FIGURES_DIR``, default ``figures/``)."""
    return _env_path("ALVAE_FIGURES_DIR", REPO_ROOT / "figures")


def build_dir() -> Path:
    """Executed notebooks and other build products (``build/``)."""
    return REPO_ROOT / "build"
