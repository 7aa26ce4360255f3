"""One writer per run: two processes on one results root do the work once; clean refuses a held run;
stale locks (old heartbeat, dead pid here, a retried task's own) are taken over with a warning."""

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from alvae_utils.config import ExperimentConfig
from alvae_utils.device import pinned_threads
from alvae_utils.experiment import locks
from alvae_utils.experiment.locks import STALE_AFTER_SECONDS, LockLost, RunHeld, RunLock, holding, read_holder
from alvae_utils.experiment.planning import plan_sweep
from alvae_utils.experiment.catalog import list_runs, remove_runs
from alvae_utils.experiment.results import COLUMNS, ResultStore, RunState
from alvae_utils.selection.features import FAMILIES, FeatureFamily, register_family
from alvae_utils.selection.methods import Method
from alvae_utils.workflow import cli

from tiny import TINY

REPO = Path(__file__).resolve().parent.parent
CONFIG = ExperimentConfig("mnist-sample", 100, 50, 10, 10, 30)


def _plant(path: Path, host: str, pid: int, owner: str | None = None, age: float = 0.0) -> None:
    """A lock as another process left it: its host, pid and owner, its heartbeat ``age`` seconds old."""
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "theirs", "owner": owner}))
    then = time.time() - age
    os.utime(path, (then, then))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_lock_is_created_once_names_its_holder_and_is_released(tmp_path):
    first, second = RunLock(tmp_path / "k.lock"), RunLock(tmp_path / "k.lock")
    assert first.try_acquire() is None
    holder = second.try_acquire()
    assert (holder.host, holder.pid, holder.token) == (socket.gethostname(), os.getpid(), first.token)
    assert holder.describe().startswith(f"pid {os.getpid()} on {socket.gethostname()} (heartbeat ")
    first.release()
    assert not (tmp_path / "k.lock").exists() and second.try_acquire() is None


def test_a_waiting_process_names_the_holder_then_gets_the_lock_when_it_is_released(tmp_path):
    held, seen = RunLock(tmp_path / "k.lock"), []
    held.try_acquire()
    releaser = threading.Timer(0.5, held.release)
    releaser.start()
    started = time.monotonic()
    with holding(RunLock(tmp_path / "k.lock"), on_wait=seen.append) as lock:
        waited = time.monotonic() - started
        assert read_holder(lock.path).token == lock.token
    releaser.join()
    assert waited >= 0.5 and [holder.token for holder in seen] == [held.token]
    assert not lock.path.exists()


def test_the_heartbeat_is_refreshed_while_the_lock_is_held(tmp_path):
    with holding(RunLock(tmp_path / "k.lock"), heartbeat=0.05) as lock:
        os.utime(lock.path, (0, 0))
        time.sleep(0.5)
        assert read_holder(lock.path).age() < 1


def test_a_lock_with_an_old_heartbeat_is_taken_over_with_a_warning(tmp_path):
    path = tmp_path / "k.lock"
    _plant(path, "node-b", 4242, age=STALE_AFTER_SECONDS - 30)
    assert RunLock(path).try_acquire().pid == 4242, "a fresh heartbeat from another host: its holder is live"
    _plant(path, "node-b", 4242, age=STALE_AFTER_SECONDS + 30)
    lock = RunLock(path)
    with pytest.warns(UserWarning, match=r"taking over the lock of pid 4242 on node-b \(heartbeat 21\d s ago\): its "
                                         r"heartbeat is 21\d s old, more than the limit of 180 s"):
        assert lock.try_acquire() is None
    assert read_holder(path).token == lock.token
    assert [p.name for p in tmp_path.iterdir()] == ["k.lock"], "nothing left aside"


def test_a_lock_of_a_dead_process_on_this_host_is_stale_at_once(tmp_path):
    path, pid = tmp_path / "k.lock", _dead_pid()
    _plant(path, socket.gethostname(), pid)
    with pytest.warns(UserWarning, match=f"writer pid {pid} on this host is gone"):
        assert RunLock(path).try_acquire() is None


def test_results_list_calls_a_lock_whose_writer_is_gone_stale_and_the_next_run_takes_over(tmp_path, monkeypatch,
                                                                                            capsys):
    """A writer SIGKILLed on this host leaves its lock behind: `results list` showed the run as live ("in progress,
    written by pid …") although nothing writes it (issue 23, kind 5)."""
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    record = _stored_run(tmp_path)
    pid = _dead_pid()
    _plant(record.directory / f"{record.key}.lock", socket.gethostname(), pid)
    expected = f"unfinished, stale lock: writer pid {pid} on this host is gone; the next run takes it over"
    assert list_runs()["status"].tolist() == [expected]
    assert cli.main(["results", "list"]) == 0
    assert f"writer pid {pid} on this host is gone" in capsys.readouterr().out
    _plant(record.directory / f"{record.key}.lock", "node-b", 4242, age=STALE_AFTER_SECONDS + 60)
    assert list_runs()["status"].item().startswith("unfinished, stale lock: its heartbeat is 2")
    _plant(record.directory / f"{record.key}.lock", socket.gethostname(), pid)
    with pytest.warns(UserWarning, match=f"writer pid {pid} on this host is gone"):
        assert record.lock().try_acquire() is None, "the next writer takes it over"
    assert list_runs()["status"].item().startswith(f"in progress, written by pid {os.getpid()} on ")


def test_the_takeover_warning_is_shown_as_its_message_alone(tmp_path):
    """Python's default format adds the warning's source line, an internal line of alvae (issue 23, kind 5); every
    warning of alvae's (AlvaeWarning) is shown as its message alone, and other warnings as Python shows them."""
    import warnings

    from alvae_utils.progress import AlvaeWarning

    path, pid = tmp_path / "k.lock", _dead_pid()
    _plant(path, socket.gethostname(), pid)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        RunLock(path).try_acquire()
    (warning,) = caught
    assert warning.category is AlvaeWarning and issubclass(AlvaeWarning, UserWarning)
    shown = warnings.formatwarning(warning.message, warning.category, warning.filename, warning.lineno)
    assert shown == (f"AlvaeWarning: k.lock: taking over the lock of pid {pid} on {socket.gethostname()} "
                     f"(heartbeat 0 s ago): writer pid {pid} on this host is gone.\n")
    other = warnings.formatwarning("plain", UserWarning, __file__, 1)
    assert other.startswith(f"{__file__}:1: UserWarning: plain"), "other warnings keep Python's format"
    script = ("import warnings, alvae_utils.experiment.locks\n"
              "from alvae_utils.progress import AlvaeWarning\nwarnings.warn('only this', AlvaeWarning)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parents[1])
    assert result.stderr == "AlvaeWarning: only this\n"


def test_a_retried_task_takes_over_its_own_attempts_lock_and_no_other(tmp_path):
    """Ray retries a task with the arguments of its first attempt, so the retry carries the same owner; the killed
    attempt ran on another node, whose pid cannot be checked from here, and its heartbeat is still fresh."""
    path = tmp_path / "k.lock"
    _plant(path, "node-b", 4242, owner="sweep-3")
    assert RunLock(path, owner="sweep-4").try_acquire().pid == 4242
    assert RunLock(path).try_acquire().pid == 4242
    with pytest.warns(UserWarning, match="an earlier attempt of the same work"):
        assert RunLock(path, owner="sweep-3").try_acquire() is None


def test_a_retried_run_takes_over_the_lock_its_killed_attempt_left(tmp_path, monkeypatch):
    """What a Ray retry does (ray_executor._work passes the task's owner): the run goes ahead at once."""
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    (run,) = plan_sweep("ci", TINY.dataset, [Method("random")], [0], experiment=TINY).runs
    record = run._record()
    record.directory.mkdir(parents=True)
    _plant(record.directory / f"{record.key}.lock", "node-b", 4242, owner="sweep-0")
    with pytest.warns(UserWarning, match="an earlier attempt of the same work"):
        rows = run.run(torch.device("cpu"), 1, progress=False, lock_owner="sweep-0")
    assert rows["step"].tolist() == [0, 1] and not list(tmp_path.rglob("*.lock"))


def test_a_writer_whose_lock_was_taken_over_stops_before_writing(tmp_path):
    path = tmp_path / "k.lock"
    stalled = RunLock(path)
    stalled.try_acquire()
    os.utime(path, (0, 0))  # suspended far past the limit
    with pytest.warns(UserWarning, match="taking over"):
        RunLock(path).try_acquire()
    with pytest.raises(LockLost, match=r"k.lock: this process's lock was taken over by pid \d+ on .*; it stops here"):
        stalled.refresh()
    stalled.release()
    assert path.exists(), "the new holder's lock stays"


def _stored_run(root: Path, steps: int = 1):
    """An unfinished run of profile ``t`` under ``root``: its rows and state, committed."""
    record = ResultStore("t", root=root).record(CONFIG, Method("coreset"), 0, "d")
    row = {column: 0 for column in COLUMNS} | dict(
        profile="t", dataset=CONFIG.dataset, data_description="d", method="coreset", heuristic="coreset",
        use_vae=False, alpha=math.nan, alpha_used=math.nan, config_key=CONFIG.key(), run_key=record.key)
    rows = pd.DataFrame([row | {"step": step, "n_labels": 10 * (step + 1)} for step in range(steps)])
    record.commit_step(rows, RunState(steps, list(range(10 * (steps + 1))), 0.0, False))
    return record


def test_clean_refuses_a_held_run_naming_its_holder_and_removes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    record = _stored_run(tmp_path)
    writer = record.lock()
    writer.try_acquire()
    files = record.files()
    (status,) = list_runs()["status"]
    assert status.startswith(f"in progress, written by pid {os.getpid()} on {socket.gethostname()} (heartbeat ")
    assert cli.main(["results", "clean", "--unfinished"]) == 2
    error = capsys.readouterr().err
    assert f"1 of the chosen runs are being written: {record.key} by pid {os.getpid()} on " in error
    assert "Nothing was removed" in error and "older than 180 s is stale" in error
    assert record.files() == files and read_holder(writer.path).token == writer.token
    with pytest.raises(RunHeld):
        remove_runs([record.key])

    writer.release()
    assert cli.main(["results", "clean", "--unfinished"]) == 0
    assert "removed 1 run(s), 2 file(s)." in capsys.readouterr().out
    assert sorted(tmp_path.rglob("*")) == [tmp_path / "t", tmp_path / "t" / CONFIG.dataset]


def test_clean_takes_over_a_stale_lock_with_a_warning(tmp_path):
    record = _stored_run(tmp_path)
    _plant(record.directory / f"{record.key}.lock", "node-b", 4242, age=STALE_AFTER_SECONDS + 60)
    with pytest.warns(UserWarning, match="taking over the lock of pid 4242 on node-b"):
        removed = remove_runs([record.key], root=tmp_path)
    assert sorted(path.name for path in removed) == [f"{record.key}.csv", f"{record.key}.state.json"]
    assert record.files() == []


WORKER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from alvae_utils.experiment import loop
from alvae_utils.execution import Execution, run_sweep
from alvae_utils.selection.features import FAMILIES, FeatureFamily, register_family
from alvae_utils.selection.methods import Method
from tiny import TINY

trained, real = [], loop.train_task_model
def counted(*args, **kwargs):
    trained.append(1)
    time.sleep(0.5)  # long enough that the other process reaches the run while this one writes it
    return real(*args, **kwargs)
loop.train_task_model = counted

here = Path({here!r})
(here / f"ready-{{sys.argv[1]}}").touch()
while len(list(here.glob("ready-*"))) < 2:  # both start together
    time.sleep(0.01)
rows = run_sweep("ci", TINY.dataset, methods=[Method("random")], seeds=[0, 1], experiment=TINY, progress=False,
                 execution=Execution("serial", threads=1), device="cpu")
rows.to_csv(here / f"rows-{{sys.argv[1]}}.csv", index=False)
(here / f"trained-{{sys.argv[1]}}").write_text(str(len(trained)))
"""


def test_two_processes_running_one_sweep_into_one_root_do_the_work_once(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(REPO / "tests"), here=str(tmp_path)))
    env = {key: value for key, value in os.environ.items() if key != "ALVAE_PROGRESS"}
    env.update(ALVAE_RESULTS_ROOT=str(tmp_path / "results"), PYTHONPATH=str(REPO))
    workers = [subprocess.Popen([sys.executable, str(script), name], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for name in "ab"]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    trained = [int((tmp_path / f"trained-{name}").read_text()) for name in "ab"]
    assert sorted(trained) == [0, 4], "2 runs × 2 steps, all trained by one process; the other waited and loaded them"
    writer, waiter = (0, 1) if trained[0] else (1, 0)
    assert (f"[alvae] mnist-sample random seed 0: waiting for pid {workers[writer].pid} on {socket.gethostname()} "
            "(heartbeat ") in outputs[waiter][1]
    # The waiter returns the writer's rows, timings included: every run, as stored once.
    a, b = (pd.read_csv(tmp_path / f"rows-{name}.csv") for name in "ab")
    assert len(a) == 4
    pd.testing.assert_frame_equal(a, b)
    assert not list((tmp_path / "results").rglob("*.lock"))


def test_a_family_fit_waits_for_the_process_that_fits_it_and_a_retry_takes_over_its_attempts_lock(
        tmp_path, monkeypatch, capsys):
    """Two sweeps into one root fit a family once: the second waits, then loads the cache (here: counts)."""
    fitted = []
    register_family(FeatureFamily(name="once", title="Once", fit=lambda context: fitted.append(1),
                                  encode=lambda fitted_, images: images.flatten(1)[:, :4].float()))
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    monkeypatch.setenv("ALVAE_PROGRESS", "1")
    try:
        (fit,) = plan_sweep("ci", TINY.dataset, [Method("coreset", "once")], [0], experiment=TINY).fits()
        cpu = torch.device("cpu")
        with pinned_threads(1):
            path = fit.lock(cpu).path
        with pinned_threads(2):
            assert fit.lock(cpu).path != path, "another thread count is another fit (another cache)"
        other = RunLock(path)
        other.try_acquire()
        releaser = threading.Timer(0.5, other.release)
        releaser.start()
        features = fit.fit(cpu, threads=1)
        releaser.join()
        assert fitted == [1] and features.shape == (TINY.pool_size, 4)
        assert f"[alvae] fitting the Once of mnist-sample: waiting for pid {os.getpid()} on " in capsys.readouterr().err

        _plant(path, "node-b", 4242, owner="sweep-fit-once")  # a killed attempt on another node
        with pytest.warns(UserWarning, match="an earlier attempt of the same work"):
            fit.fit(cpu, threads=1, lock_owner="sweep-fit-once")
        assert not path.exists()
    finally:
        FAMILIES.pop("once")


def test_the_stale_limit_is_the_documented_one():
    readme = (REPO / "docs" / "results.md").read_text()
    assert f"{locks.STALE_AFTER_SECONDS:g} s" in readme and f"every {locks.HEARTBEAT_SECONDS:g} s" in readme
