"""What the last `make figures` of a profile took, from the `build/<profile>/timings.csv` it wrote.

Prints each notebook's wall-clock seconds (with its start and the load average around it, where recorded),
then the totals: all notebooks, those on the MNIST sample (or full MNIST) alone and those on each other
dataset, so that the cost of adding a dataset reads off one run.

    python benchmarks/figures_timings.py                 # build/quick/timings.csv
    python benchmarks/figures_timings.py --profile ci
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alvae_utils.workflow.book import read_timings  # noqa: E402


MNIST_ALONE = ("mnist", "mnist-sample", "(all datasets)")
"""What runs without any other dataset: MNIST (the embedded sample at `quick`, `mnist-sample` at `ci`), and the
notebooks that span datasets."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    args = parser.parse_args()
    try:
        rows = read_timings(args.profile)
    except ValueError as error:
        sys.exit(str(error))
    if not rows:
        sys.exit(f"no timings in build/{args.profile}/timings.csv (missing or empty): `make figures "
                 f"PROFILE={args.profile}` writes them.")
    by_dataset: dict[str, float] = defaultdict(float)
    print(f"{'notebook':<28} {'dataset':<14} {'seconds':>8}  started                  load before → after")
    for row in rows:
        seconds = float(row["seconds"])
        by_dataset[row["dataset"] or "(all datasets)"] += seconds
        print(f"{row['notebook']:<28} {row['dataset'] or '(all)':<14} {seconds:8.0f}  {row.get('started') or '—':<24} "
              f"{row.get('load_before') or '—'} → {row.get('load_after') or '—'}")
    total = sum(by_dataset.values())
    machines = sorted({row.get("machine") or "" for row in rows} - {""})
    print(f"\ntotal: {total:,.0f} s ({total / 60:.1f} min) for {len(rows)} notebook runs"
          + (f" on {'; '.join(machines)}" if machines else ""))
    for dataset, seconds in sorted(by_dataset.items()):
        print(f"  {dataset:<16} {seconds:8,.0f} s" + (f"  ({seconds / total:.0%})" if total else ""))
    mnist = sum(seconds for dataset, seconds in by_dataset.items() if dataset in MNIST_ALONE)
    print(f"on MNIST alone (with the notebooks that span datasets): {mnist:,.0f} s ({mnist / 60:.1f} min)")


if __name__ == "__main__":
    main()
