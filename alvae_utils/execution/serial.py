"""The ``serial`` executor: the family fits, then one run after another, in this process.

Progress bars per run and per step; a run that fails does not stop the others, nor does a fit
that fails stop the runs without its family (:class:`~alvae_utils.execution.executors.SweepFailed`
names them at the end). A run pins torch to ``threads`` threads when given.
"""

from __future__ import annotations

import os
import platform
import time

import pandas as pd
import torch

from ..device import physical_gpu, resolve_device
from ..experiment.planning import SweepPlan
from ..progress import track
from .executors import Executor, SweepFailed, fit_failed, register_executor
from .settings import Execution


def run_serially(plan: SweepPlan, execution: Execution, device: torch.device | str | None, progress: bool,
                 desc: str, placements: list[dict]) -> list[pd.DataFrame]:
    """Every fit on ``device`` (default: the best available), then every run there; rows in run order."""
    device = resolve_device(device)
    runs, fit_errors = plan.fitted(device, execution.run_threads, progress)
    frames, failures = [], {}
    for run in track(runs, desc=f"{desc} runs", enabled=progress, leave=True):
        if run.once_fitted_family in fit_errors:
            failures[run.label] = fit_failed(run, fit_errors[run.once_fitted_family])
            continue
        placement = {"executor": "serial", "node": platform.node(), "gpu_ids": [], "gpu": physical_gpu(device),
                     "pid": os.getpid()}
        started = time.time()
        try:
            frames.append(run.run(device, execution.run_threads, progress, placement=placement))
        except Exception as error:  # reported with the others' results at the end
            failures[run.label] = f"{type(error).__name__}: {error}"
        placements.append({"run": run.label, **placement, "device": str(device), "started": started,
                           "finished": time.time()})
    if failures:
        raise SweepFailed(failures, len(frames))
    return frames


register_executor(Executor("serial", "one run after another, in this process, on its device", run_serially))
