"""The executor registry: how a sweep's runs execute, by name (``serial``, ``ray``, or one you register).

An executor only runs what :func:`alvae_utils.experiment.planning.plan_sweep` planned: the
once-per-pool family fits (:class:`~alvae_utils.experiment.planning.FamilyFit`) and the independent
runs (:class:`~alvae_utils.experiment.planning.PlannedRun`). It knows nothing of heuristics or
features, and a run's numbers do not depend on it (given the same threads per run). Adding one is a
one-file change: a module that builds an :class:`Executor` and calls :func:`register_executor`
(see :mod:`alvae_utils.execution.serial`, the smallest). The CLI's ``--executor`` choices, the
notebooks' ``executor`` parameter and the profiles' default executor read this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..registry import Registry

if TYPE_CHECKING:
    from ..experiment.planning import PlannedRun, SweepPlan
    from .settings import Execution

RunPlan = Callable[["SweepPlan", "Execution", "torch.device | None", bool, str, "list[dict]"], "list[pd.DataFrame]"]
"""``run(plan, execution, device, progress, desc, placements)`` → each planned run's rows, in the order of
``plan.runs``. ``device`` is the caller's choice (None: the executor's default); ``desc`` prefixes progress
bars; the executor appends one placement per run attempt (run, executor, node, gpu_ids, gpu: the physical GPU
behind the run's device or None, pid, device, started, finished). Raises :class:`SweepFailed`, after the other
runs finished, naming every run that failed."""


def _no_check(execution: Execution, device: torch.device | str | None) -> None:
    """Nothing to check before the data is loaded."""


@dataclass(frozen=True)
class Executor:
    """A registered way to execute a sweep's runs."""

    name: str
    title: str  # one line for --help: what it does
    run: RunPlan
    # Fields of Execution besides executor and threads that this executor reads; giving another executor's
    # setting a non-default value is refused (Execution.validate), since it would be silently ignored.
    settings: frozenset[str] = field(default_factory=frozenset)
    # torch threads per run when Execution.threads is 0: None leaves torch's count as it is.
    default_threads: Callable[[Execution], int | None] = lambda execution: None
    # Checks of the settings alone (no side effects), called by Execution.validate.
    validate: Callable[[Execution], None] = lambda execution: None
    # Checks of the environment (installed, reachable), called before any data is loaded.
    check: Callable[[Execution, torch.device | str | None], None] = _no_check


EXECUTORS: Registry[Executor] = Registry("executor")


def register_executor(executor: Executor, replace: bool = False) -> Executor:
    """Register ``executor`` under its name; ConfigError for a bad or taken name (unless ``replace``)."""
    return EXECUTORS.add(executor.name, executor, replace=replace)


def get_executor(name: str) -> Executor:
    """The registered executor ``name``; ConfigError listing the registered ones when unknown."""
    return EXECUTORS[name]


class SweepFailed(RuntimeError):
    """Runs of a sweep failed; the others finished and are stored. ``failures`` maps each run to its error."""

    def __init__(self, failures: dict[str, str], finished: int):
        self.failures = failures
        # By run label: the order in which parallel workers fail is not the same from one sweep to the next.
        listing = "\n".join(f"  {label}: {error}" for label, error in sorted(failures.items()))
        super().__init__(f"{len(failures)} run(s) failed ({finished} finished and are stored; a rerun resumes "
                         f"every run from its last stored step):\n{listing}")


def fit_failed(run: PlannedRun, error: str) -> str:
    """The failure of a run whose family could not be fitted: says it was the fit that failed."""
    return f"fitting the {run.family_entry.title} it uses failed ({error}); the run did not start"
