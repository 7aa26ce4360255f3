"""Running a sweep: plan it (every check before any work), then hand it to its executor."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from ..config import ExperimentConfig
from ..experiment.planning import plan_sweep
from ..experiment.profiles import Profile, get_profile
from ..selection.methods import Method
from .executors import get_executor
from .settings import Execution


def run_sweep(profile: Profile | str, dataset: str, methods: Sequence[Method] | None = None,
              seeds: Sequence[int] | None = None, experiment: ExperimentConfig | None = None,
              device: torch.device | str | None = None, progress: bool = True,
              execution: Execution | None = None) -> pd.DataFrame:
    """Every (method, seed) run of one dataset, resuming what is stored; returns their rows.

    Everything is checked (:func:`alvae_utils.experiment.planning.plan_sweep`, and the
    executor's own checks) before any training starts; the VAE fit and the runs then go to
    ``execution``'s executor (default: the profile's, :attr:`~alvae_utils.experiment.profiles.Profile.executor`;
    :mod:`alvae_utils.execution.executors`). Serial fits the VAE and runs on ``device``;
    under Ray a fit or run uses the device Ray gives it: a GPU when ``gpus_per_run`` > 0, else the CPU.
    ``rows.attrs["placements"]`` lists where and when each run (each attempt, under
    Ray) executed: run, executor, node, GPU ids, the physical GPU behind its ``cuda:0``
    (``gpu``), pid, device, started, finished (Unix seconds). Raises ConfigError for
    invalid settings, and :class:`SweepFailed`, after the other runs finished, naming
    every run that failed.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    execution = (execution or Execution()).resolved(profile)
    executor = get_executor(execution.executor)
    executor.check(execution, device)  # before the data and the fits, not after
    plan = plan_sweep(profile, dataset, methods, seeds, experiment)
    desc = f"{profile.name}/{plan.runs[0].experiment.dataset}" if plan.runs else profile.name
    placements: list[dict] = []
    frames = executor.run(plan, execution, device, progress, desc, placements)
    rows = pd.concat(frames, ignore_index=True)
    rows.attrs["placements"] = placements
    return rows


