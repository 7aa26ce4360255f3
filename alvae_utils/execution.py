"""Executing a sweep: its runs one after another in this process, or fanned out over Ray.

:func:`alvae_utils.loop.plan_sweep` checks a sweep, loads its data and returns independent
runs (:class:`~alvae_utils.loop.PlannedRun`) and the once-per-pool feature-family fits (the
VAE, :class:`~alvae_utils.loop.FamilyFit`) that some of them need. An executor only runs
them; it knows nothing of heuristics or features.

* ``serial`` — the fits, then one run after another, in this process (progress bars per
  run and per step).
* ``ray`` — every fit and every run is a Ray task with ``cpus_per_run`` CPUs and
  ``gpus_per_run`` of a GPU (0.25: four runs share each GPU). Each family is fitted by one
  task; only the runs that use it wait for it, the others start at once, the costliest
  first (:meth:`~alvae_utils.loop.PlannedRun.remaining_work`). Ray starts locally
  (listening on 127.0.0.1 only, no dashboard UI) or attaches to a running cluster
  (``address="auto"``, ``"host:port"``, or ``"ray://host:port"`` for Ray Client from a
  machine outside the cluster). The pool (once for the runs, once with each fit) and the family
  features travel through Ray's object store; each worker writes its steps (and a fit its checkpoint) into the
  results root itself, so the results root must be on storage every node sees (checked
  when a task starts).

Either way a run, and a fit, pins torch's thread count (serial: ``threads``, default as torch
has it; Ray: ``threads``, default the CPUs per run) and records it with the device in its
state, so serial at 1 thread gives the same rows as Ray at 1 CPU per run. A run that fails does not stop
the others, nor does a fit that fails stop the runs without its family: failures are reported
together at the end (:class:`SweepFailed`). Under Ray a
worker process that dies (SIGKILL, out of memory, a lost node) is retried up to
``max_retries`` times, resuming from the run's last stored step; Ctrl-C cancels every
worker, and every completed step stays stored.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import platform
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from .config import NON_NEGATIVE, POSITIVE, ConfigError, ExperimentConfig, Range, check_settings, setting
from .device import resolve_device
from .loop import FamilyFit, PlannedRun, SweepInputs, SweepPlan, plan_sweep
from .methods import Method
from .profiles import Profile, get_profile
from .progress import EventBuffer, bar, log_line, note, track

EXECUTORS = ("serial", "ray")
LOCAL_ONLY_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Set to 0 before Ray is imported, a Ray started here binds 127.0.0.1 instead of the machine's address."""
CLIENT_SCHEME = "ray://"
"""Ray Client: a driver off the cluster attaches through the head's client server (default port 10001)."""


@dataclass(frozen=True)
class Execution:
    """How a sweep's runs are executed (not what they compute: a run's numbers do not depend on it).

    Notebook 02 takes these fields as parameters, the CLI as options and ``make figures``
    as variables (README, Running in parallel).
    """

    executor: str = setting("", help="serial: one run after another here; ray: runs in parallel on Ray; "
                                     "'': the profile's choice")
    address: str = setting("", help="ray: '' starts Ray on this machine; 'auto', the head's 'host:port' or "
                                    "'ray://host:port' (Ray Client) "
                                    "attaches to a running cluster")
    cpus_per_run: float = setting(1.0, allowed=POSITIVE, help="ray: CPUs each run reserves")
    gpus_per_run: float = setting(0.0, allowed=NON_NEGATIVE,
                                  help="ray: GPUs each run reserves; a fraction shares a GPU (0.25: 4 runs per GPU)")
    threads: int = setting(0, allowed=NON_NEGATIVE,
                           help="torch threads per run; 0: serial as torch has it, ray the CPUs per run")
    max_retries: int = setting(3, allowed=Range(0, 100), help="ray: retries of a run whose worker process died")

    def resolved(self, profile: Profile) -> Execution:
        """This execution with the profile's executor filled in where none is chosen, validated."""
        execution = replace(self, executor=self.executor or profile.executor)
        execution.validate()
        return execution

    def validate(self) -> None:
        """Raise ConfigError for an unknown executor, a value out of range, or Ray options given to ``serial``."""
        if self.executor not in ("", *EXECUTORS):
            raise ConfigError(f"unknown executor {self.executor!r}; choose {' or '.join(EXECUTORS)} "
                              "(or '' for the profile's choice).")
        check_settings(self, "execution.")
        if self.gpus_per_run > 1 and self.gpus_per_run != int(self.gpus_per_run):
            raise ConfigError(f"gpus_per_run={self.gpus_per_run:g}: Ray takes a fraction of one GPU or a whole "
                              "number of GPUs; use e.g. 0.25 or 2.")
        if self.executor == "serial" and (self.address or self.gpus_per_run or self.cpus_per_run != 1
                                          or self.max_retries != 3):
            raise ConfigError("address, cpus_per_run, gpus_per_run and max_retries are Ray's settings; give "
                              "executor='ray' too, or drop them (serial runs in this process, on its device).")
        if self.address.startswith(CLIENT_SCHEME) and importlib.util.find_spec("grpc") is None:
            raise ConfigError(f"address {self.address!r}: Ray Client (ray://) needs grpcio, which alvae's "
                              "requirements include: `pip install 'ray[client]'`, or `make setup`.")

    @property
    def run_threads(self) -> int | None:
        """torch threads each run is pinned to (None: serial leaves torch's count as it is)."""
        if self.threads:
            return self.threads
        return max(1, int(self.cpus_per_run)) if self.executor == "ray" else None


class SweepFailed(RuntimeError):
    """Runs of a sweep failed; the others finished and are stored. ``failures`` maps each run to its error."""

    def __init__(self, failures: dict[str, str], finished: int):
        self.failures = failures
        # By run label: the order in which Ray's workers failed is not the same from one sweep to the next.
        listing = "\n".join(f"  {label}: {error}" for label, error in sorted(failures.items()))
        super().__init__(f"{len(failures)} run(s) failed ({finished} finished and are stored; a rerun resumes "
                         f"every run from its last stored step):\n{listing}")


class ResultsRootNotShared(RuntimeError):
    """A Ray worker cannot see the results root, so it could not store its steps."""


def run_sweep(profile: Profile | str, dataset: str, methods: Sequence[Method] | None = None,
              seeds: Sequence[int] | None = None, experiment: ExperimentConfig | None = None,
              device: torch.device | str | None = None, progress: bool = True,
              execution: Execution | None = None) -> pd.DataFrame:
    """Every (method, seed) run of one dataset, resuming what is stored; returns their rows.

    Everything is checked (:func:`alvae_utils.loop.plan_sweep`) before any training
    starts; the VAE fit and the runs then go to ``execution``'s executor (default: the
    profile's, :attr:`~alvae_utils.profiles.Profile.executor`). Serial fits the VAE and
    runs on ``device``; under Ray a fit or run uses the device Ray gives it: a GPU when
    ``gpus_per_run`` > 0, else the CPU.
    ``rows.attrs["placements"]`` lists where and when each run (each attempt, under
    Ray) executed: run, executor, node, GPU ids, pid, device, started, finished (Unix
    seconds). Raises ConfigError for invalid settings, and :class:`SweepFailed`, after
    the other runs finished, naming every run that failed.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    execution = (execution or Execution()).resolved(profile)
    if execution.executor == "ray":
        _require_ray()
        if device is not None and (resolve_device(device).type == "cuda") != (execution.gpus_per_run > 0):
            raise ConfigError(f"device {device!r} with gpus_per_run={execution.gpus_per_run:g}: under Ray the runs "
                              "and the VAE use the device Ray assigns, a GPU when gpus_per_run > 0, else the CPU. "
                              "Set gpus_per_run instead, or leave device unset.")
        _check_reachable(execution.address)  # before the data and the VAE, not after
    plan = plan_sweep(profile, dataset, methods, seeds, experiment)
    desc = f"{profile.name}/{plan.runs[0].experiment.dataset}" if plan.runs else profile.name
    placements: list[dict] = []
    if execution.executor == "serial":
        device = resolve_device(device)
        runs, fit_errors = plan.fitted(device, execution.run_threads, progress)
        frames = _run_serially(runs, fit_errors, execution, device, progress, desc, placements)
    else:
        frames = _run_on_ray(plan, execution, progress, desc, placements)
    rows = pd.concat(frames, ignore_index=True)
    rows.attrs["placements"] = placements
    return rows


def _run_serially(runs: list[PlannedRun], fit_errors: dict[str, str], execution: Execution, device: torch.device,
                  progress: bool, desc: str, placements: list[dict]) -> list[pd.DataFrame]:
    frames, failures = [], {}
    for run in track(runs, desc=f"{desc} runs", enabled=progress, leave=True):
        if run.fitted_once in fit_errors:
            failures[run.label] = _fit_failed(run, fit_errors[run.fitted_once])
            continue
        placement = {"executor": "serial", "node": platform.node(), "gpu_ids": [], "pid": os.getpid()}
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


def _fit_failed(run: PlannedRun, error: str) -> str:
    """The failure of a run whose family could not be fitted: says it was the fit that failed."""
    return f"fitting the {run.entries[1].title} it uses failed ({error}); the run did not start"


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
                              "first (README, Clusters, or `ray start --head`), or leave the address empty to "
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
        raise ConfigError(f"cannot reach the Ray head at {address} ({error}). Start it first (README, Clusters, "
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


def _outcome(ray, ref) -> object:
    """The result of a finished task, or its error as text: what it raised, or how its worker died for good."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:  # the task raised: report it, keep the others
        cause = error.cause if error.cause is not None else error
        return f"{type(cause).__name__}: {cause}"
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


def _run_on_ray(plan: SweepPlan, execution: Execution, progress: bool, desc: str,
                placements: list[dict]) -> list[pd.DataFrame]:
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
    resources = {"num_cpus": execution.cpus_per_run, "num_gpus": execution.gpus_per_run,
                 "max_retries": execution.max_retries, "retry_exceptions": False}
    work, fit_family = ray.remote(_work).options(**resources), ray.remote(_fit).options(**resources)
    done = [run.completed_steps() for run in runs]
    steps = bar(sum(run.total_steps for run in runs), f"{desc} steps (Ray)", enabled=progress,
                initial=sum(done), leave=True)
    frames: dict[int, pd.DataFrame] = {}
    failures: dict[str, str] = {}
    waiting = sorted(range(len(runs)), key=lambda index: -runs[index].remaining_work(done[index]))
    with _visibility_markers(runs) as markers:
        users = {run.fitted_once: str(markers[run.store.root]) for run in runs if run.fitted_once}
        features = {fit.family.name: fit_family.remote(fit, execution.run_threads, users[fit.family.name], events)
                    for fit in fits if fit.family.name in users}
        fitting = {ref: name for name, ref in features.items()}
        fit_errors: dict[str, str] = {}
        shared = {}  # the runs of a sweep share one SweepInputs: put it into the object store once
        pending: dict = {}
        try:
            while waiting or pending:
                for index in [index for index in waiting if runs[index].fitted_once in fit_errors]:
                    waiting.remove(index)
                    failures[runs[index].label] = _fit_failed(runs[index], fit_errors[runs[index].fitted_once])
                free = max(1, _capacity(ray, execution)) - len(pending) - len(fitting)
                for index in _next_runs(runs, waiting, set(fitting.values()), free):
                    run = runs[index]
                    inputs = shared.setdefault(id(run.inputs), ray.put(run.inputs))
                    ref = work.remote(run.with_inputs(None), inputs, features.get(run.fitted_once), index,
                                      execution.run_threads, str(markers[run.store.root]), events)
                    pending[ref] = index
                ready, _ = ray.wait([*pending, *fitting], num_returns=1, timeout=0.5)
                for event in ray.get(events.drain.remote()):
                    _show(event, runs, done, steps, progress, placements)
                for ref in ready:
                    name = fitting.pop(ref, None)
                    result = _outcome(ray, ref)
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


def _next_runs(runs: list[PlannedRun], waiting: list[int], fitting: set[str], free: int) -> list[int]:
    """Up to ``free`` runs taken from ``waiting`` (costliest first) whose family, if any, is not ``fitting`` still."""
    chosen = [index for index in waiting if runs[index].fitted_once not in fitting][:max(0, free)]
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
    """In a Ray worker: check that the results root is visible, then the device Ray gave and the placement."""
    import ray

    node = ray.util.get_node_ip_address()
    if not Path(marker).exists():
        raise ResultsRootNotShared(
            f"node {node} cannot see the results root {Path(marker).parent.parent} (the driver's marker "
            f"{Path(marker).name} is missing there). The results root must be on storage every node sees: set "
            "ALVAE_RESULTS_ROOT to a shared path (see README, Clusters).")
    gpu_ids = [str(gpu) for gpu in ray.get_gpu_ids()]
    # Ray restricts CUDA_VISIBLE_DEVICES to the GPUs it assigned; logical GPUs on a CPU machine run on the CPU.
    device = torch.device("cuda:0" if gpu_ids and torch.cuda.is_available() else "cpu")
    return device, {"executor": "ray", "node": node, "gpu_ids": gpu_ids, "pid": os.getpid()}


def _fit(fit: FamilyFit, threads: int | None, marker: str, events) -> torch.Tensor:
    """One family fitted once per pool, in a Ray worker: its (N, k) features of the pool, on the CPU."""
    device, placement = _placed(marker)
    events.add.remote(("fitting", fit.family.title, {**placement, "device": str(device)}))
    return fit.fit(device, threads, progress=False)


def _work(run: PlannedRun, inputs: SweepInputs, features: torch.Tensor | None, index: int, threads: int | None,
          marker: str, events) -> pd.DataFrame:
    """One run in a Ray worker: check the results root, pick the device Ray gave, run (or resume) it.

    ``features`` are the run's once-fitted family features (:attr:`PlannedRun.fitted_once`), if any.
    """
    device, placement = _placed(marker)
    events.add.remote(("started", index, {**placement, "device": str(device), "started": time.time()}))
    if features is not None:
        inputs = replace(inputs, family_features={run.fitted_once: features})
    rows = run.with_inputs(inputs).run(device, threads, progress=False, placement=placement,
                                       on_step=lambda completed: events.add.remote(("step", index, completed)))
    events.add.remote(("finished", index, {"pid": os.getpid(), "time": time.time()}))
    return rows
