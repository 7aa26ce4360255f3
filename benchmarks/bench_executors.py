"""Serial vs Ray on one machine: notebook 02's sweep, timed side by side in one process.

Three executions of the same sweep, each from empty results (the VAE is fitted in each, with
the runs' thread count):

* ``serial, 2 threads`` — alvae before the Ray executor: one run after another, torch on both cores;
* ``serial, 1 thread`` — one run after another, torch pinned to 1 thread;
* ``ray, 1 CPU per run`` — Ray starts here and runs as many runs at once as there are cores,
  each pinned to 1 thread; the VAE is fitted by one of those tasks, and only the runs that use
  it wait for it. Its start-up is timed separately and included in the wall time; the script
  prints when each run started and finished.

A run's numbers depend on its thread count, not on the executor: the script checks that
``serial, 1 thread`` and ``ray`` give identical rows (timing columns aside) and reports how far
2-thread rows are from them. Usage::

    python benchmarks/bench_executors.py                       # quick profile, mnist, all methods and seeds
    python benchmarks/bench_executors.py --methods random coreset --seeds 0 1
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local Ray on 127.0.0.1 only

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from alvae_utils.execution.settings import Execution  # noqa: E402
from alvae_utils.execution.sweep import run_sweep  # noqa: E402
from alvae_utils.execution.ray_executor import ray_session
from alvae_utils.selection.methods import Method  # noqa: E402
from alvae_utils.experiment.profiles import get_profile  # noqa: E402

TIMINGS = ["train_seconds", "select_seconds", "eval_seconds"]


def _timed_sweep(root: Path, args: argparse.Namespace, execution: Execution) -> tuple[pd.DataFrame, float]:
    os.environ["ALVAE_RESULTS_ROOT"] = str(root)
    methods = [Method.parse(label) for label in args.methods] if args.methods else None
    started = time.perf_counter()
    rows = run_sweep(args.profile, args.dataset, methods, args.seeds, device="cpu", progress=False,
                     execution=execution)
    return rows, time.perf_counter() - started


def _print_timeline(placements: list[dict], started: float) -> None:
    """When each run started and finished, in seconds from the sweep's start, and on which worker process."""
    print("\n  run | worker pid | started (s) | finished (s)")
    for placement in sorted(placements, key=lambda placement: placement["started"]):
        print(f"  {placement['run']} | {placement['pid']} | {placement['started'] - started:.1f} | "
              f"{placement['finished'] - started:.1f}")
    print("  (the VAE is fitted by its own task, from the start; runs that use it start after it)\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--methods", nargs="+", help="method labels (default: the profile's)")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the profile's)")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    profile = get_profile(args.profile)
    runs = len(args.methods or profile.methods) * len(args.seeds or profile.seeds)
    print(f"{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}; "
          f"profile {args.profile}, {args.dataset}, {runs} runs, from empty results\n")
    results = {}
    with tempfile.TemporaryDirectory(prefix="alvae-bench-") as tmp:
        for name, execution in (("serial, 2 threads", Execution("serial", threads=2)),
                                ("serial, 1 thread", Execution("serial", threads=1))):
            results[name] = _timed_sweep(Path(tmp) / name.replace(", ", "-").replace(" ", ""), args, execution)
            print(f"  {name}: {results[name][1]:.1f} s", flush=True)
        ray_execution = Execution("ray", cpus_per_run=1)
        started = time.perf_counter()
        with ray_session(ray_execution):  # started here, so the sweep's time is its own
            ray_start = time.perf_counter() - started
            sweep_started = time.time()
            rows, seconds = _timed_sweep(Path(tmp) / "ray", args, ray_execution)
        results[f"ray, 1 CPU per run ({cores} workers)"] = (rows, seconds + ray_start)
        print(f"  ray: start-up {ray_start:.1f} s + sweep {seconds:.1f} s", flush=True)
        _print_timeline(rows.attrs["placements"], sweep_started)

    baseline = results["serial, 2 threads"][1]
    print("\n| execution | wall time (s) | speed-up vs serial, 2 threads |\n|---|---:|---:|")
    for name, (_, seconds) in results.items():
        print(f"| {name} | {seconds:.1f} | {baseline / seconds:.2f}× |")

    one_thread = results["serial, 1 thread"][0].drop(columns=TIMINGS)
    on_ray = rows.drop(columns=TIMINGS)
    same = one_thread.equals(on_ray)
    two = results["serial, 2 threads"][0]
    gap = (two["accuracy"] - results["serial, 1 thread"][0]["accuracy"]).abs().max()
    print(f"\nrows of 'serial, 1 thread' and 'ray' identical (timings aside): {same}")
    print(f"largest accuracy difference between 2-thread and 1-thread rows: {gap:.4f}")
    if not same:
        raise SystemExit("serial and Ray rows differ at the same thread count: a determinism bug")


if __name__ == "__main__":
    main()
