"""Executors: serial and Ray give the same rows; Ray packs runs on GPUs, survives killed workers, stops on Ctrl-C.

The Ray tests share one local session (``ray_cluster``, in conftest.py): 4 logical CPUs and
2 logical GPUs on this CPU machine. Logical GPUs are only labels for Ray's scheduler; the
runs themselves run on the CPU, and record the GPU ids they were given.
"""

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from alvae_utils.execution import ray_executor
from alvae_utils.experiment import loop, planning
from alvae_utils.config import ConfigError, TrainConfig
from alvae_utils.execution import Execution, SweepFailed
from alvae_utils.execution.ray_executor import _check_reachable
from alvae_utils.execution.sweep import run_sweep
from alvae_utils.selection.features import FAMILIES, FeatureFamily, register_family
from alvae_utils.selection.heuristics import HEURISTICS, Heuristic, register_heuristic
from alvae_utils.selection.ranking import random_select
from alvae_utils.selection.methods import Method
from alvae_utils.experiment.profiles import get_profile

TIMINGS = ["train_seconds", "select_seconds", "eval_seconds"]
CI = get_profile("ci").experiment("mnist-sample")
# Slower steps than ci's (more epochs), so that a worker can be caught between two of them.
SLOW = replace(CI, max_labels=60, train=TrainConfig(initial_epochs=6, epoch_increment=0, batch_size=10))
SERIAL_1_THREAD = Execution("serial", threads=1)


def _sweep(root, monkeypatch, methods, seeds, execution_, experiment=CI):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(root))
    return run_sweep("ci", experiment.dataset, [Method.parse(m) for m in methods], seeds, experiment=experiment,
                     progress=False, execution=execution_)


def _states(root):
    return {path: json.loads(path.read_text()) for path in root.rglob("*.state.json")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- settings: no Ray needed ---------------------------------------------------------------------

@pytest.mark.parametrize("settings, message", [
    ({"executor": "dask"}, "unknown executor 'dask'; choose serial or ray"),
    ({"executor": "ray", "cpus_per_run": 0.0}, "execution.cpus_per_run must be > 0"),
    ({"executor": "ray", "gpus_per_run": -0.5}, "execution.gpus_per_run must be ≥ 0"),
    ({"executor": "ray", "gpus_per_run": 1.5}, "gpus_per_run=1.5: a run computes on one device"),
    ({"executor": "ray", "gpus_per_run": 2.0}, r"gpus_per_run=2: a run computes on one device, cuda:0 of the GPUs "
                                               r"Ray gives it, so every further GPU would sit idle. Use 1, or a"),
    ({"executor": "ray", "threads": -1}, "execution.threads must be ≥ 0"),
    ({"executor": "serial", "gpus_per_run": 0.5}, "are Ray's settings; give executor='ray'"),
    ({"executor": "serial", "address": "auto"}, "are Ray's settings; give executor='ray'"),
    ({"executor": "serial", "max_retries": 1}, "are Ray's settings; give executor='ray'"),
])
def test_bad_execution_settings_are_refused_with_the_fix(settings, message):
    with pytest.raises(ConfigError, match=message):
        Execution(**settings).validate()


def test_ray_client_addresses_need_grpcio_and_a_port(monkeypatch):
    Execution("ray", address="ray://head:10001").validate()  # grpcio comes with alvae's requirements
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "grpc" else real(name, *args))
    with pytest.raises(ConfigError, match=r"Ray Client \(ray://\) needs grpcio.*pip install 'ray\[client\]'"):
        Execution("ray", address="ray://head:10001").validate()
    with pytest.raises(ConfigError, match=r"'ray://head' is not 'auto', host:port .* or ray://host:port"):
        _check_reachable("ray://head")
    with pytest.raises(ConfigError, match="cannot reach the Ray head at ray://127.0.0.1:1 "):
        _check_reachable("ray://127.0.0.1:1", timeout=2)


def test_threads_per_run_follow_the_cpus_under_ray_and_torch_under_serial():
    assert Execution("ray", cpus_per_run=2).run_threads == 2
    assert Execution("ray", cpus_per_run=0.5).run_threads == 1
    assert Execution("ray", cpus_per_run=2, threads=1).run_threads == 1
    assert Execution("serial").run_threads is None and Execution("serial", threads=3).run_threads == 3
    assert Execution().resolved(get_profile("ci")).executor == get_profile("ci").executor


def test_a_run_resumed_with_another_thread_count_is_refused(tmp_path, monkeypatch, spy):
    calls = spy(loop, "train_task_model", interrupt_at=2)  # stored step 0, then "killed"
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path, monkeypatch, ["random"], [0], SERIAL_1_THREAD)
    calls["restore"]()
    with pytest.raises(SweepFailed, match=r"started with 1 torch thread\(s\), now 2.*--threads 1"):
        _sweep(tmp_path, monkeypatch, ["random"], [0], Execution("serial", threads=2))
    rows = _sweep(tmp_path, monkeypatch, ["random"], [0], SERIAL_1_THREAD)  # as it was started: resumes
    assert rows["step"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("executor, damaged", [("serial", 0), ("ray", 1)])
def test_a_failing_run_is_reported_after_the_others_finish(executor, damaged, tmp_path, monkeypatch, request):
    if executor == "ray":
        request.getfixturevalue("ray_cluster")
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    runs = planning.plan_sweep("ci", CI.dataset, [Method("random")], [0, 1], experiment=CI).runs
    state = runs[damaged]._record().state_path
    state.parent.mkdir(parents=True)
    state.write_text("{not json")
    with pytest.raises(SweepFailed, match=rf"(?s)1 run\(s\) failed \(1 finished.*random seed {damaged}: StoreDamaged"):
        _sweep(tmp_path, monkeypatch, ["random"], [0, 1], SERIAL_1_THREAD if executor == "serial" else Execution("ray"))
    assert runs[1 - damaged].completed_steps() == runs[1 - damaged].total_steps


def test_capacity_counts_the_runs_each_live_node_holds_at_once():
    class Cluster:
        @staticmethod
        def nodes():
            return [{"Alive": True, "Resources": {"CPU": 4.0, "GPU": 2.0}},
                    {"Alive": True, "Resources": {"CPU": 3.0}},
                    {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]

    assert ray_executor._capacity(Cluster, Execution("ray", cpus_per_run=1)) == 4 + 3
    assert ray_executor._capacity(Cluster, Execution("ray", cpus_per_run=1.5)) == 2 + 2
    assert ray_executor._capacity(Cluster, Execution("ray", cpus_per_run=0.5, gpus_per_run=0.3)) == 6, \
        "3 runs per GPU on the first node (8 by its CPUs); none on the node without GPUs"
    assert ray_executor._capacity(Cluster, Execution("ray", cpus_per_run=8)) == 0


def test_runs_are_handed_out_costliest_first_once_their_family_is_fitted(tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    plan = planning.plan_sweep("ci", CI.dataset, [Method("random"), Method("coreset"), Method.parse("coreset+vae")],
                           [0, 1], experiment=CI)
    runs = list(plan.runs)
    waiting = sorted(range(len(runs)), key=lambda index: -runs[index].remaining_work())
    labels = lambda indices: [runs[index].method.label for index in indices]  # noqa: E731
    assert labels(waiting) == ["coreset", "coreset", "coreset+vae", "coreset+vae", "random", "random"]
    assert labels(ray_executor._next_runs(runs, waiting, {"vae"}, 3)) == ["coreset", "coreset", "random"], \
        "runs waiting for the VAE hold no slot"
    assert labels(ray_executor._next_runs(runs, waiting, set(), 1)) == ["coreset+vae"], "then they go first"
    assert labels(ray_executor._next_runs(runs, waiting, set(), 5)) == ["coreset+vae", "random"]
    assert waiting == [] and ray_executor._next_runs(runs, waiting, set(), 2) == []


# --- Ray (one shared local session) --------------------------------------------------------------

def test_serial_and_ray_give_identical_rows(tmp_path, monkeypatch, ray_cluster):
    methods, seeds = ["random", "coreset+vae", "lossprediction+vae"], [0, 1]
    serial = _sweep(tmp_path / "serial", monkeypatch, methods, seeds, SERIAL_1_THREAD)
    on_ray = _sweep(tmp_path / "ray", monkeypatch, methods, seeds, Execution("ray", cpus_per_run=1))

    assert len(serial) == len(methods) * len(seeds) * len(CI.label_counts())
    pd.testing.assert_frame_equal(serial.drop(columns=TIMINGS), on_ray.drop(columns=TIMINGS), check_exact=True)
    produced = [state["produced_by"] for state in _states(tmp_path / "ray").values()]
    assert {(p["executor"], p["torch_threads"], p["device"]) for p in produced} == {("ray", 1, "cpu")}
    assert {p["run"] for p in on_ray.attrs["placements"]} == {f"mnist-sample {m} seed {s}" for m in methods
                                                              for s in seeds}


def test_ray_packs_runs_on_gpus_by_fraction_each_in_a_worker_of_its_own_on_the_gpu_it_records(
        tmp_path, monkeypatch, ray_cluster):
    seeds = list(range(6))  # 4 at once on the 2 logical GPUs, then 2 more, which a reused worker would take
    rows = _sweep(tmp_path, monkeypatch, ["random"], seeds, Execution("ray", cpus_per_run=1, gpus_per_run=0.5))

    placements = rows.attrs["placements"]
    assert len(placements) == len(seeds)
    assert all(len(p["gpu_ids"]) == 1 and p["device"] == "cpu" for p in placements)  # logical GPUs: CPU runs
    assert {p["gpu_ids"][0] for p in placements} == {"0", "1"}
    for gpu in ("0", "1"):
        spans = [(p["started"], p["finished"]) for p in placements if p["gpu_ids"] == [gpu]]
        overlap = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
        assert 1 <= overlap <= 2, f"GPU {gpu}: {overlap} runs at once with 0.5 GPU each"
    # A GPU task never runs in a worker that ran another one: CUDA would keep that task's GPU as cuda:0.
    assert len({p["pid"] for p in placements}) == len(seeds), "a worker ran two GPU runs"
    # The GPU behind each run's cuda:0 (CUDA_VISIBLE_DEVICES in its worker) is the one Ray assigned it.
    assert all(p["gpu"] == p["gpu_ids"][0] for p in placements)
    recorded = {(tuple(s["produced_by"]["gpu_ids"]), s["produced_by"]["gpu"]) for s in _states(tmp_path).values()}
    assert recorded == {(("0",), "0"), (("1",), "1")}  # each run's state records the GPU it ran on


def test_gpu_tasks_are_single_use_retry_out_of_memory_and_carry_cublas_setting():
    declared = []

    class Ray:  # records how a task is declared: ray.remote(...)(function).options(...)
        @staticmethod
        def remote(**decoration):
            def declare(function):
                return SimpleNamespace(options=lambda **options: declared.append((function, decoration, options)))
            return declare

    for gpus in (0.5, 1.0, 0.0):
        for function in (ray_executor._work, ray_executor._fit):
            ray_executor._task(Ray, function, Execution("ray", cpus_per_run=2, gpus_per_run=gpus, max_retries=2))
    workspace = os.environ["CUBLAS_WORKSPACE_CONFIG"]  # alvae sets :4096:8 unless the environment has a value
    for _, decoration, options in declared:
        assert decoration == {"max_calls": 1 if options["num_gpus"] else 0}, "runs and fits alike"
        assert options == {"num_cpus": 2.0, "num_gpus": options["num_gpus"], "max_retries": 2,
                           "retry_exceptions": [torch.OutOfMemoryError],
                           "runtime_env": {"env_vars": {"CUBLAS_WORKSPACE_CONFIG": workspace}}}
    assert [function for function, _, _ in declared] == [ray_executor._work, ray_executor._fit] * 3


def test_out_of_gpu_memory_is_retried_and_resumes_from_the_last_stored_step(tmp_path, monkeypatch, ray_cluster):
    log, marker = tmp_path / "selections.log", tmp_path / "oom-once"

    def select(inputs, mask, budget):
        labeled = int(mask.sum())
        with log.open("a") as file:
            file.write(f"{os.getpid()} {labeled}\n")
        if labeled == 20 and not marker.exists():  # the second selection, once: step 0 is stored
            marker.touch()
            raise torch.OutOfMemoryError("CUDA out of memory (simulated: the GPU's other runs hold it)")
        return random_select(mask, budget, inputs.generator)

    register_heuristic(Heuristic(name="oomonce", select=select, needs=("generator",), title="OOM once", colour="k"))
    try:
        rows = _sweep(tmp_path / "ray", monkeypatch, ["oomonce"], [0],
                      Execution("ray", cpus_per_run=1, gpus_per_run=0.5, max_retries=1))
        reference = _sweep(tmp_path / "serial", monkeypatch, ["oomonce"], [0], SERIAL_1_THREAD)
    finally:
        HEURISTICS.pop("oomonce")
    calls = [line.split() for line in log.read_text().splitlines()]
    assert [labeled for _, labeled in calls] == ["10", "20", "20", "10", "20"], \
        "out of memory at the second selection, retried in another worker from the stored step 1 (no selection " \
        "at 10 labels again); then the serial reference"
    assert len({pid for pid, _ in calls[:3]}) == 2 and len(rows.attrs["placements"]) == 2
    pd.testing.assert_frame_equal(rows.drop(columns=TIMINGS), reference.drop(columns=TIMINGS), check_exact=True)


@pytest.mark.parametrize("share, advice", [
    (0.5, r"With gpus_per_run=0.5, 2 runs share a GPU: give each run a larger GPU fraction, e.g. gpus_per_run=1,"),
    (0.25, r"With gpus_per_run=0.25, 4 runs share a GPU: give each run a larger GPU fraction, e.g. gpus_per_run=0.5"),
    (1.0, r"The run had its GPU to itself: it needs a GPU with more memory"),
])
def test_out_of_gpu_memory_after_the_retries_says_what_to_change(share, advice):
    ray = pytest.importorskip("ray")
    error = ray.exceptions.RayTaskError("_work", "Traceback ...", torch.OutOfMemoryError("CUDA out of memory"))

    def get(ref):
        raise error

    outcome = ray_executor._outcome(SimpleNamespace(get=get, exceptions=ray.exceptions), None,
                                    Execution("ray", gpus_per_run=share, max_retries=2))
    assert outcome.startswith("OutOfMemoryError: CUDA out of memory [out of GPU memory after 2 retries "
                              "(max_retries), each resumed from the last stored step. ")
    assert re.search(advice, outcome)


def test_a_killed_worker_is_retried_and_resumes_from_its_last_step(tmp_path, monkeypatch, ray_cluster):
    reference = _sweep(tmp_path / "serial", monkeypatch, ["coreset"], [0], SERIAL_1_THREAD, experiment=SLOW)
    root = tmp_path / "ray"
    killed = {}

    def kill_after_first_step():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            for state in _states(root).values():
                if 1 <= state["completed_steps"] < len(SLOW.label_counts()):
                    killed.update(pid=state["produced_by"]["pid"], steps=state["completed_steps"])
                    os.kill(killed["pid"], signal.SIGKILL)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_after_first_step)
    killer.start()
    rows = _sweep(root, monkeypatch, ["coreset"], [0], Execution("ray"), experiment=SLOW)
    killer.join()

    assert killed, "the run finished before a worker could be killed"
    attempts = rows.attrs["placements"]
    assert [p["pid"] for p in attempts][0] == killed["pid"] and len(attempts) == 2
    pd.testing.assert_frame_equal(reference.drop(columns=TIMINGS), rows.drop(columns=TIMINGS), check_exact=True)


def test_ctrl_c_stops_the_workers_and_keeps_their_steps(tmp_path, monkeypatch, ray_cluster):
    real_show = ray_executor._show

    def interrupt_at_first_step(event, *args):
        real_show(event, *args)
        if event[0] == "step":
            raise KeyboardInterrupt

    monkeypatch.setattr(ray_executor, "_show", interrupt_at_first_step)
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path, monkeypatch, ["coreset"], [0, 1], Execution("ray"), experiment=SLOW)
    pids = {state["produced_by"]["pid"] for state in _states(tmp_path).values()}
    deadline = time.time() + 30
    while any(_alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert pids and not any(_alive(pid) for pid in pids), "a worker outlived Ctrl-C"
    assert max(state["completed_steps"] for state in _states(tmp_path).values()) >= 1

    monkeypatch.setattr(ray_executor, "_show", real_show)
    rows = _sweep(tmp_path, monkeypatch, ["coreset"], [0, 1], Execution("ray"), experiment=SLOW)
    assert rows.groupby("seed")["step"].apply(list).tolist() == [list(range(len(SLOW.label_counts())))] * 2


def test_ray_fits_a_family_once_in_a_task_while_the_other_runs_go_ahead(tmp_path, monkeypatch, ray_cluster):
    log, results = tmp_path / "fits.log", tmp_path / "results"

    def fit(context):
        # Waits for a plain run's first stored step: that happens only if the plain runs need not wait for the fit.
        deadline = time.time() + 120
        while not any(results.rglob("*.state.json")) and time.time() < deadline:
            time.sleep(0.2)
        with log.open("a") as file:
            file.write(f"{torch.get_num_threads()} {context.cache_root == results} "
                       f"{any(results.rglob('*.state.json'))}\n")

    register_family(FeatureFamily(name="waiting", title="Waiting", fit=fit,
                                  encode=lambda fitted, images: images.flatten(1)[:, :4].float()))
    try:
        rows = _sweep(results, monkeypatch, ["random", "coreset+waiting"], [0, 1], Execution("ray", cpus_per_run=1))
    finally:
        FAMILIES.pop("waiting")
    assert log.read_text().splitlines() == ["1 True True"], \
        "fitted once, pinned to the run's thread count, into the sweep's results root, while random runs ran"
    assert set(rows["method"]) == {"random", "coreset+waiting"} and rows["step"].max() == 2


def test_the_vae_is_fitted_and_cached_per_thread_count_so_a_shared_root_gives_the_same_rows(tmp_path, monkeypatch):
    one_thread = _sweep(tmp_path / "alone", monkeypatch, ["coreset+vae"], [1], SERIAL_1_THREAD)
    _sweep(tmp_path / "shared", monkeypatch, ["coreset+vae"], [0], Execution("serial", threads=2))
    shared = _sweep(tmp_path / "shared", monkeypatch, ["coreset+vae"], [0, 1], SERIAL_1_THREAD)
    assert len(list((tmp_path / "shared" / "vae").glob("*.pt"))) == 2, "one VAE per thread count"
    pd.testing.assert_frame_equal(one_thread.drop(columns=TIMINGS).reset_index(drop=True),
                                  shared[shared["seed"] == 1].drop(columns=TIMINGS).reset_index(drop=True))


def test_serial_fits_a_family_pinned_to_the_runs_thread_count(tmp_path, monkeypatch):
    threads = []
    register_family(FeatureFamily(name="counting", title="Counting",
                                  fit=lambda context: threads.append(torch.get_num_threads()),
                                  encode=lambda fitted, images: images.flatten(1)[:, :4].float()))
    try:
        _sweep(tmp_path, monkeypatch, ["coreset+counting", "lossprediction+counting"], [0], SERIAL_1_THREAD)
    finally:
        FAMILIES.pop("counting")
    assert threads == [1], "one fit for both runs, at the runs' 1 thread (torch has 2 here)"


def test_a_worker_that_cannot_see_the_results_root_fails_before_training(tmp_path, monkeypatch, ray_cluster):
    @contextmanager
    def unseen(runs):
        yield {run.store.root: run.store.root / ".alvae-visible-elsewhere" for run in runs}

    monkeypatch.setattr(ray_executor, "_visibility_markers", unseen)
    monkeypatch.setattr(loop, "train_task_model", lambda *a, **k: pytest.fail("trained without a results root"))
    with pytest.raises(SweepFailed, match="(?s)2 run.*coreset\\+vae seed 0: fitting the VAE it uses failed "
                                         "\\(ResultsRootNotShared: node .* cannot see the results root .*storage "
                                         "every node sees.*random seed 0: ResultsRootNotShared"):
        _sweep(tmp_path, monkeypatch, ["random", "coreset+vae"], [0], Execution("ray"))
    assert not _states(tmp_path)
    assert not (tmp_path / "vae").exists(), "the VAE's task failed before fitting it"


def test_an_address_where_no_head_answers_fails_fast_before_any_work(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(planning, "load_experiment_data", lambda *a, **k: pytest.fail("loaded data before the check"))
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=f"cannot reach the Ray head at 127.0.0.1:{port}"):
        _sweep(tmp_path, monkeypatch, ["random"], [0], Execution("ray", address=f"127.0.0.1:{port}"))
    assert time.perf_counter() - started < 10


def test_a_run_no_node_can_hold_is_refused_instead_of_waiting_forever(tmp_path, monkeypatch, ray_cluster):
    with pytest.raises(ConfigError, match="asks for 5 CPUs and 0 GPUs, but no node of the Ray cluster has that"):
        _sweep(tmp_path, monkeypatch, ["random"], [0], Execution("ray", cpus_per_run=5))
    rows = _sweep(tmp_path, monkeypatch, ["random"], [0], Execution("ray"))
    # Finished runs are loaded here, not sent to Ray: the impossible request no longer matters.
    again = _sweep(tmp_path, monkeypatch, ["random"], [0], Execution("ray", cpus_per_run=5))
    pd.testing.assert_frame_equal(rows, again)
    assert again.attrs["placements"] == []


def test_ray_refuses_a_device_it_does_not_assign(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="device 'cpu' with gpus_per_run=0.5: under Ray the runs and the VAE use "
                                          "the device Ray assigns"):
        run_sweep("ci", CI.dataset, [Method("random")], [0], experiment=CI, device="cpu", progress=False,
                  execution=Execution("ray", gpus_per_run=0.5))


@contextmanager
def _ray_head(tmp_path, env):
    """A Ray head on 127.0.0.1 in its own process group (``ray start --block``), stopped by that group's id only.

    Yields (the head's host:port, its Ray Client address ray://host:port).
    """
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    port, client_port = ports
    temp = tempfile.mkdtemp(prefix="alvae-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 characters
    log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", f"--ray-client-server-port={client_port}", "--num-cpus=2", "--include-dashboard=false",
         f"--temp-dir={temp}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}"
    finally:
        for signal_, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            with suppress(ProcessLookupError):
                os.killpg(head.pid, signal_)
            with suppress(subprocess.TimeoutExpired):
                head.wait(grace)
                break
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_sweep_attaches_to_a_running_cluster_from_another_process(tmp_path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "ALVAE_RESULTS_ROOT": str(tmp_path / "results"),
           "ALVAE_OFFLINE": "1"}
    def sweep(address, heuristics, seed):
        command = [sys.executable, "-m", "alvae_utils", "run", "--profile", "ci", "--dataset", "mnist-sample",
                   "--heuristic", *heuristics, "--seed", seed, "--executor", "ray", "--ray-address", address,
                   "--no-progress"]
        deadline, driver = time.time() + 120, None
        while driver is None or (driver.returncode and "cannot attach" in driver.stderr and time.time() < deadline):
            driver = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)  # head may lag
        assert driver.returncode == 0, driver.stderr[-3000:]

    with _ray_head(tmp_path, env) as (address, client_address):
        sweep(address, ["random", "coreset"], "0")  # a driver on a node of the cluster
        sweep(client_address, ["random"], "1")  # Ray Client: a driver off the cluster
    states = _states(tmp_path / "results")
    assert len(states) == 3 and all(s["finished"] and s["produced_by"]["executor"] == "ray" for s in states.values())
    assert {s["produced_by"]["node"] for s in states.values()} == {"127.0.0.1"}
