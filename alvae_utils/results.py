"""Resumable, atomic storage of Algorithm 1 runs: their rows, state and carried model.

Layout under ``results_root()``::

    <profile>/<dataset>/<run_key>.csv         tidy rows, one per completed AL step (:data:`COLUMNS`)
    <profile>/<dataset>/<run_key>.state.json  config, data source, method, seed, current labeled set
    <profile>/<dataset>/<run_key>.model.pt    the model carried across steps (fine-tuning only)
    vae/<dataset>-<vae_key>.pt                 VAE checkpoints, shared by all profiles (alvae_utils.vae)

A run is identified by a hash of its full configuration, its data source, method
and seed, so a changed setting can never be mixed into old results. The data
source matters on its own: offline, ``mnist`` falls back to the embedded 5k
sample, and those runs must not be resumed once the real MNIST files are in
place. Both files of a run are rewritten atomically (temp file +
``os.replace``) after every step: a crash loses at most the step in progress,
and a rerun resumes from the last completed step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .config import SCHEMA_VERSION, ExperimentConfig, config_hash
from .methods import Method
from .overrides import LISTS
from .paths import atomic_path, results_root

COLUMNS: tuple[str, ...] = (
    "profile", "dataset", "data_description", "method", "heuristic", "use_vae", "alpha", "seed",
    "step", "n_labels", "accuracy", "medmnist_acc", "auc", "train_accuracy", "epochs",
    "train_seconds", "select_seconds", "eval_seconds", "config_key", "run_key",
)


def step_row(*, profile: str, config: ExperimentConfig, method: Method, seed: int, step: int, n_labels: int,
             data_description: str, metrics: dict[str, float], train_accuracy: float, epochs: int,
             train_seconds: float, select_seconds: float, eval_seconds: float, run_key: str) -> dict[str, object]:
    """One stored row (:data:`COLUMNS`, in order) for a completed Algorithm 1 step.

    ``metrics`` holds ``accuracy``, ``medmnist_acc`` and ``auc`` (see
    :func:`alvae_utils.metrics.evaluate`); times are wall-clock seconds;
    ``select_seconds`` is the selection that produced this step's labels.
    """
    row = {
        "profile": profile, "dataset": config.dataset, "data_description": data_description,
        "method": method.label, "heuristic": method.heuristic, "use_vae": method.features == "vae",
        "alpha": method.alpha if method.features else float("nan"), "seed": seed, "step": step,
        "n_labels": n_labels, "accuracy": metrics["accuracy"], "medmnist_acc": metrics["medmnist_acc"],
        "auc": metrics["auc"], "train_accuracy": train_accuracy, "epochs": epochs,
        "train_seconds": train_seconds, "select_seconds": select_seconds, "eval_seconds": eval_seconds,
        "config_key": config.key(), "run_key": run_key,
    }
    return {column: row[column] for column in COLUMNS}


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never half of one."""
    with atomic_path(path) as tmp, open(tmp, "x") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def run_key(config: ExperimentConfig, method: Method, seed: int, data_description: str) -> str:
    """Hash of everything that determines a run's numbers (``data_description``: the pool's source)."""
    return config_hash({"schema": SCHEMA_VERSION, "experiment": asdict(config), "data": data_description,
                        "method": method.key_fields(), "seed": seed})


@dataclass
class RunState:
    """What a rerun needs to continue: completed steps and the labeled set for the next one."""

    completed_steps: int
    labeled: list[int]  # pool indices of L for step ``completed_steps``
    pending_select_seconds: float  # time of the selection that produced ``labeled``
    finished: bool


class RunRecord:
    """The stored rows and state of one (config, method, seed) run."""

    def __init__(self, directory: Path, key: str, header: dict[str, object]):
        self.directory = directory
        self.key = key
        self.header = header
        self.csv_path = directory / f"{key}.csv"
        self.state_path = directory / f"{key}.state.json"
        self.model_path = directory / f"{key}.model.pt"

    def load(self) -> tuple[pd.DataFrame, RunState | None]:
        """Rows and state written so far; (empty, None) for a run never started."""
        if not self.state_path.exists():
            return pd.DataFrame(columns=list(COLUMNS)), None
        state = json.loads(self.state_path.read_text())
        rows = pd.read_csv(self.csv_path) if self.csv_path.exists() else pd.DataFrame(columns=list(COLUMNS))
        # The state is written after the rows; trust whichever says less was done.
        completed = min(int(state["completed_steps"]), len(rows))
        rows = rows.iloc[:completed]
        return rows, RunState(completed, list(state["labeled"]), float(state["pending_select_seconds"]),
                              bool(state["finished"]) and completed == int(state["completed_steps"]))

    def save(self, rows: pd.DataFrame, state: RunState) -> None:
        """Persist after a step: rows first, then the state that refers to them."""
        atomic_write_text(self.csv_path, rows.to_csv(index=False))
        payload = {**self.header, **asdict(state)}
        atomic_write_text(self.state_path, json.dumps(payload))

    def save_model(self, modules: dict[str, nn.Module | None]) -> None:
        """Keep the modules a fine-tuned run carries to its next step (e.g. ``{"model": T, "lp": P}``).

        Written atomically; ``None`` entries are stored as absent.
        """
        state = {name: None if module is None else module.state_dict() for name, module in modules.items()}
        with atomic_path(self.model_path) as tmp:
            torch.save(state, tmp)

    def load_model(self, modules: dict[str, nn.Module | None], device: torch.device) -> None:
        """Load what :meth:`save_model` kept into ``modules`` (same names; ``None`` entries are skipped)."""
        state = torch.load(self.model_path, map_location=device, weights_only=True)
        for name, module in modules.items():
            if module is not None:
                module.load_state_dict(state[name])


class ResultStore:
    """All runs of one profile: ``results_root()/<profile>/``.

    ``overrides`` (a profile's :attr:`~alvae_utils.profiles.Profile.overrides`) are
    recorded in each run's state, except the choice of methods and seeds, which
    picks runs without changing them; :func:`stored_sets` reads them back.
    """

    def __init__(self, profile: str, root: Path | None = None, overrides: Iterable[tuple[str, object]] = ()):
        self.profile = profile
        self.root = (root or results_root()) / profile
        self.overrides = {key: list(value) if isinstance(value, tuple) else value
                          for key, value in overrides if key not in LISTS}

    def record(self, config: ExperimentConfig, method: Method, seed: int, data_description: str) -> RunRecord:
        key = run_key(config, method, seed, data_description)
        header = {"schema": SCHEMA_VERSION, "profile": self.profile, "overrides": self.overrides,
                  "experiment": asdict(config), "data_description": data_description,
                  "method": method.key_fields(), "seed": seed}
        return RunRecord(self.root / config.dataset, key, header)

    def load(self, experiments: Iterable[ExperimentConfig] | None = None) -> pd.DataFrame:
        """Stored rows of this profile as one tidy DataFrame (see ``COLUMNS``).

        With ``experiments``, only rows of exactly those configurations: results
        of an older configuration left in the folder are never mixed in.
        """
        rows = load_results(self.root)
        if experiments is not None:
            rows = rows[rows["config_key"].isin({e.key() for e in experiments})].reset_index(drop=True)
        return rows


def stored_sets(root: Path | None = None) -> list[dict[str, object]]:
    """The sets of stored runs: one entry per (profile, overrides), with its number of runs, sorted.

    Each entry is ``{"profile": name, "overrides": {key: value}, "runs": n}``; runs
    stored before overrides existed count as having none.
    """
    counts: dict[tuple[str, str], int] = {}
    for path in sorted((root or results_root()).glob("*/*/*.state.json")):
        header = json.loads(path.read_text(encoding="utf-8"))
        identity = (header["profile"], json.dumps(header.get("overrides", {}), sort_keys=True))
        counts[identity] = counts.get(identity, 0) + 1
    return [{"profile": profile, "overrides": json.loads(overrides), "runs": runs}
            for (profile, overrides), runs in sorted(counts.items())]


def load_results(directory: Path | None = None) -> pd.DataFrame:
    """All result rows below ``directory`` (default: every profile in ``results_root()``)."""
    directory = directory or results_root()
    frames = [pd.read_csv(path) for path in sorted(Path(directory).rglob("*.csv"))]
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)
