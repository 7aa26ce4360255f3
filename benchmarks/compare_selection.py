"""Time core-set (kcenter_greedy) and MedAL (medal_greedy) of several checkouts side by side, as ratios.

Each checkout (``--impl NAME=ROOT``, the first is the reference) runs in its own fresh subprocess with
ROOT first on ``sys.path``, so an old layout (``alvae_utils/selection.py``) and the current one
(``alvae_utils/selection/{kcenter,medal}.py``) can both be measured. The features are built once, as
``bench_selection.py`` builds them (N = 25,000, d = 544, |L| = β = 3,000, float32 by default), saved,
and read by every run. Runs alternate between the checkouts (A, B, A, B, ...) so that a change in the
machine's load hits all of them alike; the best wall and CPU seconds of the ``--repeats`` runs are
reported, with their ratio to the reference, the load average, and which checkouts picked the same
points in the same order.

    python benchmarks/compare_selection.py --impl old=/path/to/aea77ca --impl new=. --repeats 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

METHODS = ("kcenter_greedy", "medal_greedy")


def load_method(root: str, method: str):
    """``method`` from the checkout at ``root``: the package layout after or before the split of selection."""
    sys.path.insert(0, str(Path(root).resolve()))
    try:
        from alvae_utils.selection import kcenter, medal
        return {"kcenter_greedy": kcenter.kcenter_greedy, "medal_greedy": medal.medal_greedy}[method]
    except ImportError:
        from alvae_utils import selection
        return getattr(selection, method)


def run_worker(args: argparse.Namespace) -> None:
    """One timed call in this fresh process; prints a JSON line (seconds, CPU seconds), saves the picks."""
    torch.set_num_threads(args.threads)
    greedy = load_method(args.root, args.worker)
    data = np.load(args.problem)
    features, mask = torch.from_numpy(data["features"]), torch.from_numpy(data["mask"])
    started, cpu_started = time.perf_counter(), time.process_time()
    picks = greedy(features, mask, args.budget)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    np.save(args.picks_out, picks.numpy())
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", action="append", default=[], metavar="NAME=ROOT",
                        help="a checkout to time; the first is the reference of the ratios")
    parser.add_argument("--n", type=int, default=25_000)
    parser.add_argument("--d", type=int, default=544)
    parser.add_argument("--labeled", type=int, default=3_000)
    parser.add_argument("--budget", type=int, default=3_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--problem", help=argparse.SUPPRESS)
    parser.add_argument("--picks-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    if len(args.impl) < 2:
        parser.error("give at least two checkouts, --impl NAME=ROOT each")
    impls = dict(item.split("=", 1) for item in args.impl)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_selection import make_problem  # the features bench_selection.py measures

    features, mask = make_problem(args.n, args.d, args.labeled, args.seed, torch.device("cpu"))
    print(f"torch {torch.__version__}, {args.threads} threads, N={args.n:,} d={args.d} |L|={args.labeled:,} "
          f"budget={args.budget:,}, float32; load average before: {os.getloadavg()[0]:.2f}")
    best: dict[tuple[str, str], dict] = {}
    picks: dict[tuple[str, str], np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        problem = Path(tmp) / "problem.npz"
        np.savez(problem, features=features.numpy(), mask=mask.numpy())
        for method in args.only:
            for repeat in range(args.repeats):
                for name, root in impls.items():
                    out = Path(tmp) / f"{name}-{method}.npy"
                    command = [sys.executable, __file__, "--worker", method, "--root", root, "--problem", str(problem),
                               "--picks-out", str(out), "--budget", str(args.budget), "--threads", str(args.threads)]
                    run = json.loads(subprocess.run(command, check=True, capture_output=True, text=True)
                                     .stdout.strip().splitlines()[-1])
                    print(f"  {method:<15} {name:<8} run {repeat + 1}: {run['seconds']:6.2f} s wall, "
                          f"{run['cpu_seconds']:6.2f} s CPU, load average {os.getloadavg()[0]:.2f}", flush=True)
                    key = (method, name)
                    if key in best:
                        run = {"seconds": min(run["seconds"], best[key]["seconds"]),
                               "cpu_seconds": min(run["cpu_seconds"], best[key]["cpu_seconds"])}
                    best[key] = run
                    picks[key] = np.load(out)
    reference = next(iter(impls))
    print(f"\nbest of {args.repeats}; ratios to {reference}")
    print(f"{'method':<15} {'impl':<8} {'wall s':>7} {'CPU s':>7} {'× wall':>7} {'× CPU':>7}  same picks as")
    for method in args.only:
        ref = best[method, reference]
        for name in impls:
            run = best[method, name]
            same = [other for other in impls
                    if other != name and np.array_equal(picks[method, name], picks[method, other])]
            print(f"{method:<15} {name:<8} {run['seconds']:7.2f} {run['cpu_seconds']:7.2f} "
                  f"{run['seconds'] / ref['seconds']:7.2f} {run['cpu_seconds'] / ref['cpu_seconds']:7.2f}  "
                  f"{', '.join(same) or '-'}")


if __name__ == "__main__":
    main()
