"""The ``ray`` executor: every family fit and every run is a Ray task.

Each task gets ``cpus_per_run`` CPUs and ``gpus_per_run`` of a GPU (0.25: four runs share each
GPU). Each family is fitted by one task; only the runs that use it wait for it, the others start at
once, the costliest first (:meth:`~alvae_utils.experiment.planning.PlannedRun.remaining_work`). Ray
starts locally (listening on 127.0.0.1 only, no dashboard UI) or attaches to a running cluster
(``address="auto"``, ``"host:port"``, or ``"ray://host:port"`` for Ray Client from a machine outside
the cluster). The pool (once for the runs, once with each fit) and the family features travel through
Ray's object store; each worker writes its steps (and a fit its checkpoint) into the results root
itself, so the results root must be on storage every node sees (checked when a task starts).

A run, and a fit, pins torch's thread count (``threads``, default the CPUs per run) and records it
with the device in its state, so serial at 1 thread gives the same rows as Ray at 1 CPU per run. A
worker process that dies (SIGKILL, out of memory, a lost node), or a task that runs out of GPU memory
(``torch.OutOfMemoryError``, from neighbours on a shared GPU), is retried up to ``max_retries`` times,
resuming from the run's last stored step; Ctrl-C cancels every worker, and every completed step stays
stored.

**One GPU task per worker.** A task that holds a GPU runs in a worker process that has run no other
GPU task, and that exits after it (``max_calls=1``; a worker that ran CPU runs before never touched
CUDA, which alvae's CPU runs leave alone). Ray rewrites ``CUDA_VISIBLE_DEVICES`` for every task,
but CUDA reads it once per process: in a reused worker ``cuda:0`` would stay the GPU of an earlier
task, so runs would pile onto one GPU. Ray makes GPU workers single-use by itself only when
``num_gpus`` is given to ``@ray.remote``, not to ``.options()`` (``ray/remote_function.py``; Ray issue
#29624), and ``.options()`` refuses ``max_calls``, so the tasks are declared with it here. The cost: each
GPU run pays a fresh worker's imports (seconds), and ``train.compile`` compiles once per run, not once
per process. Each run records the GPU behind its ``cuda:0`` (``gpu`` in its placement and state).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from ..config import ConfigError, flag_of
from ..device import CUBLAS_WORKSPACE_VARIABLE, DETERMINISTIC_CUBLAS_WORKSPACE, resolve_device
from ..experiment.planning import FamilyFit, PlannedRun, SweepInputs, SweepPlan
from ..progress import EventBuffer, bar, log_line, note
from .executors import Executor, SweepFailed, fit_failed, register_executor
from .settings import Execution


LOCAL_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Set to 0 before Ray is imported, a Ray started here binds 127.0.0.1 instead of the machine's address."""
CLIENT_SCHEME = "ray://"
"""Ray Client: a driver off the cluster attaches through the head's client server (default port 10001)."""


class ResultsRootNotShared(RuntimeError):
    """A Ray worker cannot see the results root, so it could not store its steps."""


RETRIED_EXCEPTIONS = (torch.OutOfMemoryError,)
"""Exceptions after which Ray runs a task again (up to ``max_retries``, resuming from the last stored step):
running out of GPU memory, which on a shared GPU depends on what the neighbouring runs hold at that moment."""


RESOURCE_GRANULARITY = 1e-4
"""The smallest non-zero CPU or GPU share Ray can reserve (its ``MIN_RESOURCE_GRANULARITY``): ``ray.remote``
refuses a smaller one, but only once Ray has started (about 30 s)."""


def _validate(execution: Execution) -> None:
    """ConfigError for a CPU or GPU share finer than Ray's granularity, more than one GPU per run, or Ray Client
    without grpcio."""
    for name in ("cpus_per_run", "gpus_per_run"):
        share = getattr(execution, name)
        if 0 < share < RESOURCE_GRANULARITY:
            raise ConfigError(f"{name}={share:g} ({flag_of(Execution, name)}) is below {RESOURCE_GRANULARITY:g}, "
                              f"the smallest share of a {name[:3].upper()} that Ray can reserve; give at least "
                              f"{RESOURCE_GRANULARITY:g}" + (" (or 0 to run on CPUs)." if name == "gpus_per_run"
                                                             else "."))
    if execution.gpus_per_run > 1:
        raise ConfigError(f"gpus_per_run={execution.gpus_per_run:g}: a run computes on one device, cuda:0 of the "
                          "GPUs Ray gives it, so every further GPU would sit idle. Use 1, or a fraction to share a "
                          "GPU between runs (0.25: four runs per GPU).")
    if execution.address.startswith(CLIENT_SCHEME) and importlib.util.find_spec("grpc") is None:
        raise ConfigError(f"address {execution.address!r}: Ray Client (ray://) needs grpcio, which alvae's "
                          "requirements include: `pip install 'ray[client]'`, or `make setup`.")


def _check(execution: Execution, device: torch.device | str | None) -> None:
    """Before any data is loaded: Ray installed, the device consistent with the GPU share, the cluster reachable."""
    _require_ray()
    if device is not None and (resolve_device(device).type == "cuda") != (execution.gpus_per_run > 0):
        raise ConfigError(f"device {device!r} with gpus_per_run={execution.gpus_per_run:g}: under Ray the runs "
                          "and the VAE use the device Ray assigns, a GPU when gpus_per_run > 0, else the CPU. "
                          "Set gpus_per_run instead, or leave device unset.")
    _check_reachable(execution.address)


def _require_ray() -> None:
    if importlib.util.find_spec("ray") is None:  # found, not imported: Ray reads its settings at import
        raise ConfigError("executor='ray' needs Ray: `pip install ray` (alvae's requirements include it; "
                          "`make setup` installs it).")


def _in_kernel() -> bool:
    """True inside a Jupyter kernel, where anything Ray forwards from workers would land in cell outputs."""
    return "ipykernel" in sys.modules


@contextmanager
def ray_session(execution: Execution):
    """The ``ray`` module, connected as ``execution`` says, for the block; an existing connection is reused.

    A connection made here (a local Ray started, or a cluster attached) is closed when the
    block ends; one that already existed (``ray.init`` called by the user) is left as it
    was. A local Ray binds 127.0.0.1 only and has no dashboard. In a Jupyter kernel,
    workers' output is not forwarded (it would land in cell outputs); it stays in Ray's
    session logs (``/tmp/ray/session_latest/logs``). Raises ConfigError when a cluster
    cannot be reached.
    """
    if not execution.address and "ray" not in sys.modules:
        os.environ.setdefault(LOCAL_ONLY_VARIABLE, "0")  # read by Ray once, at import
    import ray

    if ray.is_initialized():
        yield ray
        return
    _connect(ray, execution)
    try:
        yield ray
    finally:
        ray.shutdown()


def _connect(ray, execution: Execution) -> None:
    common = {"log_to_driver": not _in_kernel(), "logging_level": logging.WARNING}
    if execution.address:
        try:
            ray.init(address=execution.address, **common)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ConfigError(f"cannot attach to the Ray cluster at {execution.address!r} ({error}). Start it "
                              "first (docs/parallel.md or `ray start --head`), or leave the address empty to "
                              "start Ray on this machine.") from None
        return
    # Ray announces at every start that token authentication is on. For a session private to this machine
    # that is noise (in every notebook that runs a sweep); errors still show.
    logging.disable(logging.WARNING)
    try:
        ray.init(address="local", include_dashboard=False, **common)
    finally:
        logging.disable(logging.NOTSET)
    host = ray.get_runtime_context().gcs_address.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "::1"):
        note(f"[alvae] the local Ray session listens on {host}, not only 127.0.0.1: Ray was imported before alvae "
             f"could set {LOCAL_ONLY_VARIABLE}=0. Set it in the environment to keep the session private.")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """ConfigError, within ``timeout`` seconds, when a ``host:port`` Ray address does not accept connections."""
    if not address or address == "auto":
        return
    host, _, port = address.removeprefix(CLIENT_SCHEME).rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Ray address {address!r} is not 'auto', host:port (e.g. 10.0.0.5:6379) or "
                          "ray://host:port (Ray Client, e.g. ray://10.0.0.5:10001).")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise ConfigError(f"cannot reach the Ray head at {address} ({error}). Start it first (docs/parallel.md, "
                          "or `ray start --head`), check the address, or leave it empty to start Ray on this "
                          "machine.") from None


def _check_resources(ray, execution: Execution) -> None:
    """ConfigError when no node of the cluster can ever hold one run (Ray would wait forever)."""
    if _capacity(ray, execution):
        return
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    largest = ", ".join(f"{n.get('CPU', 0):g} CPUs and {n.get('GPU', 0):g} GPUs" for n in nodes) or "no nodes"
    raise ConfigError(f"each run asks for {execution.cpus_per_run:g} CPUs and {execution.gpus_per_run:g} GPUs, but "
                      f"no node of the Ray cluster has that much (nodes: {largest}); lower cpus_per_run or "
                      "gpus_per_run (0 runs on CPUs), or attach to a cluster with GPUs.")


def _outcome(ray, ref, execution: Execution) -> object:
    """The result of a finished task, or its error as text: what it raised, or how its worker died for good.

    Out of GPU memory after its retries, the text says what to change.
    """
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:  # the task raised: report it, keep the others
        cause = error.cause if error.cause is not None else error
        message = f"{type(cause).__name__}: {cause}"
        if isinstance(cause, torch.OutOfMemoryError):
            share = execution.gpus_per_run
            message += (f" [out of GPU memory after {execution.max_retries} retries (max_retries), each resumed "
                        "from the last stored step. " + (
                            f"With gpus_per_run={share:g}, {math.floor(1 / share + 1e-9)} runs share a GPU: give "
                            f"each run a larger GPU fraction, e.g. gpus_per_run={min(1.0, 2 * share):g}, so fewer "
                            "share one.]" if 0 < share < 1 else
                            "The run had its GPU to itself: it needs a GPU with more memory.]"))
        return message
    except ray.exceptions.RayError as error:  # its worker died more than max_retries times
        return f"{type(error).__name__}: {error}"


def _capacity(ray, execution: Execution) -> int:
    """How many tasks of ``execution``'s size the live nodes of the cluster hold at once."""
    def fits(available: float, each: float) -> float:
        return math.floor(available / each + 1e-9) if each else math.inf

    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    return int(sum(min(fits(n.get("CPU", 0), execution.cpus_per_run), fits(n.get("GPU", 0), execution.gpus_per_run))
                   for n in nodes))


@contextmanager
def _visibility_markers(runs: list[PlannedRun]):
    """One marker file per results root of ``runs``, removed afterwards: a worker that cannot see it fails early."""
    markers = {}
    for root in dict.fromkeys(run.store.root for run in runs):
        root.mkdir(parents=True, exist_ok=True)
        markers[root] = root / f".alvae-visible-{uuid.uuid4().hex}"
        markers[root].touch()
    try:
        yield markers
    finally:
        for marker in markers.values():
            marker.unlink(missing_ok=True)


def run_on_ray(plan: SweepPlan, execution: Execution, device: torch.device | str | None, progress: bool, desc: str,
               placements: list[dict]) -> list[pd.DataFrame]:
    """Every unfinished run (and first the fits it needs) as Ray tasks; finished runs are only loaded here.

    ``device`` is checked before (:func:`_check`): each task uses the device Ray gives it.
    """
    runs = plan.runs
    finished = {index for index, run in enumerate(runs) if run.completed_steps() == run.total_steps}
    frames = {index: runs[index].run(torch.device("cpu"), progress=False) for index in finished}  # just loads
    pending = [index for index in range(len(runs)) if index not in finished]
    if pending:
        with ray_session(execution) as ray:
            _check_resources(ray, execution)
            pending_runs = [runs[index] for index in pending]
            done = _fan_out(ray, pending_runs, plan.fits(pending_runs), execution, progress, desc, placements)
        frames.update(zip(pending, done, strict=True))
    return [frames[index] for index in range(len(runs))]


def _fan_out(ray, runs: list[PlannedRun], fits: Sequence[FamilyFit], execution: Execution, progress: bool,
             desc: str, placements: list[dict]) -> list[pd.DataFrame]:
    """Run ``runs`` (and first the ``fits`` they use) as Ray tasks; their rows in the order of ``runs``.

    Each family is fitted by one task, started first. Runs are handed to Ray as slots free
    up (Ray's pattern of limiting pending tasks), at most as many as the cluster can run at
    once: the costliest run first (longest-processing-time order) among those whose family
    is fitted, so that a run waiting for the VAE does not hold a slot, and no long run is
    left alone at the end. Nodes that join the cluster are used as they come.
    """
    # Workers send their events (a run or fit started, a step stored, a run ended) without waiting: a worker
    # blocked in ray.get lends its CPU to another task, which would then run on a core already taken.
    events = ray.remote(num_cpus=0)(EventBuffer).remote()
    work, fit_family = _task(ray, _work, execution), _task(ray, _fit, execution)
    done = [run.completed_steps() for run in runs]
    steps = bar(sum(run.total_steps for run in runs), f"{desc} steps (Ray)", enabled=progress,
                initial=sum(done), leave=True)
    frames: dict[int, pd.DataFrame] = {}
    failures: dict[str, str] = {}
    waiting = sorted(range(len(runs)), key=lambda index: -runs[index].remaining_work(done[index]))
    with _visibility_markers(runs) as markers:
        users = {run.once_fitted_family: str(markers[run.store.root]) for run in runs if run.once_fitted_family}
        sweep = uuid.uuid4().hex  # with a run's index or a fit's family, the owner of its lock: a retry takes it over
        features = {fit.family.name: fit_family.remote(fit, execution.run_threads, users[fit.family.name], events,
                                                       f"{sweep}-fit-{fit.family.name}")
                    for fit in fits if fit.family.name in users}
        fitting = {ref: name for name, ref in features.items()}
        fit_errors: dict[str, str] = {}
        shared = {}  # the runs of a sweep share one SweepInputs: put it into the object store once
        pending: dict = {}
        try:
            while waiting or pending:
                for index in [index for index in waiting if runs[index].once_fitted_family in fit_errors]:
                    waiting.remove(index)
                    failures[runs[index].label] = fit_failed(runs[index], fit_errors[runs[index].once_fitted_family])
                free = max(1, _capacity(ray, execution)) - len(pending) - len(fitting)
                for index in _next_runs(runs, waiting, set(fitting.values()), free):
                    run = runs[index]
                    inputs = shared.setdefault(id(run.inputs), ray.put(run.inputs))
                    ref = work.remote(run.with_inputs(None), inputs, features.get(run.once_fitted_family), index,
                                      execution.run_threads, str(markers[run.store.root]), events, f"{sweep}-{index}")
                    pending[ref] = index
                ready, _ = ray.wait([*pending, *fitting], num_returns=1, timeout=0.5)
                for event in ray.get(events.drain.remote()):
                    _show(event, runs, done, steps, progress, placements)
                for ref in ready:
                    name = fitting.pop(ref, None)
                    result = _outcome(ray, ref, execution)
                    if name is not None:  # its runs may start, or fail with it
                        if isinstance(result, str):
                            fit_errors[name] = result
                    elif isinstance(result, str):
                        failures[runs[pending.pop(ref)].label] = result
                    else:
                        frames[pending.pop(ref)] = result
            for event in ray.get(events.drain.remote()):
                _show(event, runs, done, steps, progress, placements)
        except BaseException:  # Ctrl-C included: stop every worker; their completed steps are stored
            for ref in [*pending, *fitting]:
                ray.cancel(ref, force=True)
            raise
        finally:
            steps.close()
            ray.kill(events)
    if failures:
        raise SweepFailed(failures, len(frames))
    return [frames[index] for index in sorted(frames)]


def _task(ray, function, execution: Execution):
    """``function`` as a Ray task with ``execution``'s resources, retries and runtime environment.

    With a GPU share, each task gets a worker of its own that exits after it (``max_calls=1``,
    which Ray accepts only where the task is declared, not in ``.options()``): see the module
    docstring. Every worker gets cuBLAS's deterministic workspace setting in its environment
    before it starts, so it is there before CUDA's first matrix product
    (:data:`~alvae_utils.device.DETERMINISTIC_CUBLAS_WORKSPACE`).
    """
    workspace = os.environ.get(CUBLAS_WORKSPACE_VARIABLE, DETERMINISTIC_CUBLAS_WORKSPACE)
    return ray.remote(max_calls=1 if execution.gpus_per_run > 0 else 0)(function).options(
        num_cpus=execution.cpus_per_run, num_gpus=execution.gpus_per_run, max_retries=execution.max_retries,
        retry_exceptions=list(RETRIED_EXCEPTIONS), runtime_env={"env_vars": {CUBLAS_WORKSPACE_VARIABLE: workspace}})


def _next_runs(runs: list[PlannedRun], waiting: list[int], fitting: set[str], free: int) -> list[int]:
    """Up to ``free`` runs taken from ``waiting`` (costliest first) whose family, if any, is not ``fitting`` still."""
    chosen = [index for index in waiting if runs[index].once_fitted_family not in fitting][:max(0, free)]
    for index in chosen:
        waiting.remove(index)
    return chosen


def _show(event: tuple, runs: list[PlannedRun], done: list[int], steps, progress: bool,
          placements: list[dict]) -> None:
    """Apply one worker event: advance the driver's bar (a step stored), say where a run or a fit started, or log
    that a run ended.

    ``event`` is (kind, run index or, for "fitting", the family's title, value). A retried
    run starts again, so it has one placement per attempt.
    """
    kind, index, value = event
    if kind == "step":
        done[index] = max(done[index], value)
        steps.update(sum(done) - steps.n)
        if progress:
            log_line(f"{steps.desc}: {sum(done)}/{steps.total}")
    elif kind in ("started", "fitting"):
        what = runs[index].label if kind == "started" else f"fitting the {index}"
        if kind == "started":
            placements.append({"run": what, **value})
        where = f"GPU {','.join(value['gpu_ids'])}" if value["gpu_ids"] else "CPU"
        note(f"[alvae] {what}: node {value['node']}, {where} ({value['device']}, pid {value['pid']})",
             enabled=progress)
    elif kind == "finished":
        attempt = next(p for p in reversed(placements) if p["run"] == runs[index].label and p["pid"] == value["pid"])
        attempt["finished"] = value["time"]


def _placed(marker: str) -> tuple[torch.device, dict]:
    """In a Ray worker: check that the results root is visible, then the device Ray gave and the placement.

    The placement names the node, the GPU ids Ray assigned, ``gpu``, the physical GPU behind the
    run's ``cuda:0`` (the first of ``CUDA_VISIBLE_DEVICES``; None without a GPU), on CUDA that GPU's
    ``gpu_uuid``, and the worker's pid.
    """
    import ray

    node = ray.util.get_node_ip_address()
    if not Path(marker).exists():
        raise ResultsRootNotShared(
            f"node {node} cannot see the results root {Path(marker).parent.parent} (the driver's marker "
            f"{Path(marker).name} is missing there). The results root must be on storage every node sees: set "
            "ALVAE_RESULTS_ROOT to a shared path (see docs/parallel.md, Clusters).")
    gpu_ids = [str(gpu) for gpu in ray.get_gpu_ids()]
    # Ray restricts CUDA_VISIBLE_DEVICES to the GPUs it assigned, and this worker is fresh (max_calls=1), so CUDA
    # reads it now: cuda:0 is its first entry. Logical GPUs on a CPU machine run on the CPU.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    gpu = visible.split(",")[0] if gpu_ids and visible else None
    device = torch.device("cuda:0" if gpu_ids and torch.cuda.is_available() else "cpu")
    placement = {"executor": "ray", "node": node, "gpu_ids": gpu_ids, "gpu": gpu, "pid": os.getpid()}
    if device.type == "cuda":  # the physical GPU itself, whatever its index is called on this node
        placement["gpu_uuid"] = str(torch.cuda.get_device_properties(device).uuid)
    return device, placement


def _fit(fit: FamilyFit, threads: int | None, marker: str, events, lock_owner: str) -> torch.Tensor:
    """One family fitted once per pool, in a Ray worker: its (N, k) features of the pool, on the CPU.

    ``lock_owner`` is the same in every attempt of the task, as in :func:`_work`.
    """
    device, placement = _placed(marker)
    events.add.remote(("fitting", fit.family.title, {**placement, "device": str(device)}))
    return fit.fit(device, threads, progress=False, lock_owner=lock_owner)


def _work(run: PlannedRun, inputs: SweepInputs, features: torch.Tensor | None, index: int, threads: int | None,
          marker: str, events, lock_owner: str) -> pd.DataFrame:
    """One run in a Ray worker: check the results root, pick the device Ray gave, run (or resume) it.

    ``features`` are the run's once-fitted family features (:attr:`PlannedRun.once_fitted_family`), if any.
    ``lock_owner`` is the same in every attempt of the task (Ray retries it with the same arguments), so a
    retry takes over the lock that its killed attempt left (:mod:`~alvae_utils.experiment.locks`).
    """
    device, placement = _placed(marker)
    events.add.remote(("started", index, {**placement, "device": str(device), "started": time.time()}))
    if features is not None:
        inputs = replace(inputs, family_features={run.once_fitted_family: features})
    rows = run.with_inputs(inputs).run(device, threads, progress=False, placement=placement, lock_owner=lock_owner,
                                       on_step=lambda completed: events.add.remote(("step", index, completed)))
    events.add.remote(("finished", index, {"pid": os.getpid(), "time": time.time()}))
    return rows


register_executor(Executor(
    "ray", "in parallel on Ray: this machine's cores and GPUs, or a cluster", run_on_ray,
    settings=frozenset({"address", "cpus_per_run", "gpus_per_run", "max_retries"}),
    default_threads=lambda execution: max(1, int(execution.cpus_per_run)),
    validate=_validate, check=_check))
