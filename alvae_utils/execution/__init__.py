"""Executing a sweep: :func:`~alvae_utils.execution.sweep.run_sweep` plans it, a registered executor runs it.

* :mod:`~alvae_utils.execution.executors` — the registry (:func:`register_executor`);
* :mod:`~alvae_utils.execution.settings` — :class:`Execution`, the execution settings;
* :mod:`~alvae_utils.execution.serial` and :mod:`~alvae_utils.execution.ray_executor` — the built-in executors;
* :mod:`~alvae_utils.execution.sweep` — :func:`run_sweep`.
"""

# The built-in executors register themselves, serial first (the CLI lists them in this order).
from . import serial  # noqa: F401, I001
from . import ray_executor  # noqa: F401
from .executors import EXECUTORS, Executor, SweepFailed, get_executor, register_executor
from .settings import Execution
from .sweep import run_sweep

__all__ = ["EXECUTORS", "Execution", "Executor", "SweepFailed", "get_executor", "register_executor", "run_sweep"]
