"""How a sweep's runs execute: :class:`Execution`, the one source of the execution settings.

Its fields are the CLI's execution options (:func:`alvae_utils.workflow.cli`), the sweep notebooks'
parameters (:mod:`alvae_utils.workflow.notebooks`) and ``make figures``' variables; each field's
``setting`` gives its type, default, range and help once. Which executor reads which setting is
declared by the executor itself (:mod:`alvae_utils.execution.executors`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..config import NON_NEGATIVE, POSITIVE, ConfigError, Range, check_settings, setting
from ..experiment.profiles import Profile
from .executors import EXECUTORS, get_executor


@dataclass(frozen=True)
class Execution:
    """How a sweep's runs are executed (not what they compute: a run's numbers do not depend on it).

    Notebooks 02 and 05 take these fields as parameters, the CLI as options and ``make figures``
    as variables (docs/parallel.md).
    """

    executor: str = setting("", help="how runs execute: serial (one after another, here) or ray (in parallel on "
                                     "Ray); '': the profile's choice")
    address: str = setting("", flag="--ray-address",
                           help="ray: '' starts Ray on this machine (127.0.0.1 only); 'auto', the head's "
                                "'host:port' or 'ray://host:port' (Ray Client) attaches to a running cluster")
    cpus_per_run: float = setting(1.0, allowed=POSITIVE, help="ray: CPUs each run reserves")
    gpus_per_run: float = setting(0.0, allowed=NON_NEGATIVE,
                                  help="ray: GPUs each run reserves, at most 1; a fraction shares a GPU (0.25: 4 runs "
                                       "per GPU)")
    threads: int = setting(0, allowed=NON_NEGATIVE,
                           help="torch threads per run; 0: serial as torch has it, ray the CPUs per run")
    max_retries: int = setting(3, allowed=Range(0, 100),
                               help="ray: retries of a run whose worker process died or that ran out of GPU memory")

    def resolved(self, profile: Profile) -> Execution:
        """This execution with the profile's executor filled in where none is chosen, validated."""
        execution = replace(self, executor=self.executor or profile.executor)
        execution.validate()
        return execution

    def validate(self) -> None:
        """Raise ConfigError for an unknown executor, a value out of range, or a setting the executor ignores."""
        if self.executor not in ("", *EXECUTORS):
            raise ConfigError(f"unknown executor {self.executor!r}; choose {' or '.join(EXECUTORS)} "
                              "(or '' for the profile's choice).")
        check_settings(self, "execution.")
        if not self.executor:
            return
        executor = get_executor(self.executor)
        ignored = [f.name for f in fields(self) if f.name not in {"executor", "threads", *executor.settings}
                   and getattr(self, f.name) != f.default]
        if ignored:
            readers = sorted({name for name, other in EXECUTORS.items() for field in ignored
                              if field in other.settings})
            owners = " or ".join(f"{name.capitalize()}'s" for name in readers)
            raise ConfigError(f"{', '.join(ignored)} are {owners} settings; give executor={readers[0]!r} too, or "
                              f"drop them ({self.executor} ignores them).")
        executor.validate(self)

    @property
    def run_threads(self) -> int | None:
        """torch threads each run is pinned to (None: leave torch's count as it is)."""
        if self.threads:
            return self.threads
        return get_executor(self.executor).default_threads(self) if self.executor else None
