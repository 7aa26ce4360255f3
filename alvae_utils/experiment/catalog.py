"""What the store holds, for people: the stored sets, one line per run, and removing chosen runs.

:mod:`.results` reads and writes runs; this module lists them (``results list``) and removes them
(``results clean``), never a run that a live process is writing (:mod:`.locks`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from ..config import describe_overrides
from ..paths import results_root
from ..selection.methods import Method
from .locks import STALE_AFTER_SECONDS, RunHeld, RunLock, read_holder
from .results import RunRecord, StoreDamaged, step_count


def stored_sets(root: Path | None = None, keep: Callable[[dict], bool] | None = None) -> list[dict[str, object]]:
    """The sets of stored runs: one entry per (profile, overrides), with its runs, seeds and methods, sorted.

    Each entry is ``{"profile": name, "overrides": {key: value}, "runs": n, "seeds": [...],
    "methods": [...]}``; runs stored before overrides existed count as having none. With
    ``keep``, only the runs whose state header it accepts count (a set left with none is omitted).
    """
    sets: dict[tuple[str, str], dict[str, set]] = {}
    for path in sorted((root or results_root()).glob("*/*/*.state.json")):
        header = RunRecord(path.parent, path.name.removesuffix(".state.json"), {}).read_state()  # names damage
        if keep is not None and not keep(header):
            continue
        identity = (header["profile"], json.dumps(header.get("overrides", {}), sort_keys=True))
        found = sets.setdefault(identity, {"keys": set(), "seeds": set(), "methods": set()})
        found["keys"].add(path.name)
        found["seeds"].add(int(header["seed"]))
        found["methods"].add(Method.from_key_fields(header["method"]).label)
    return [{"profile": profile, "overrides": json.loads(overrides), "runs": len(found["keys"]),
             "seeds": sorted(found["seeds"]), "methods": sorted(found["methods"])}
            for (profile, overrides), found in sorted(sets.items())]


def list_runs(root: Path | None = None, sweep_of: Callable[[dict], str] | None = None) -> pd.DataFrame:
    """One row per stored run, sorted by profile, dataset, sweep, method, start and seed.

    Columns: profile, dataset, sweep (``sweep_of(state header)``, e.g. the notebook whose sweep
    made the run; empty without ``sweep_of``), method, start (the task model's ``train.init``: scratch,
    imagenet or simclr, which tells notebook 06's two runs of a method apart), seed, pool, η
    (``max_labels``), overrides, steps done of total, status, key. ``status`` is ``finished``,
    ``in progress`` or ``damaged: …`` (a state that cannot be read, or rows that disagree with it; such a
    run resumes from its last valid step); a run whose lock is held says by whom (``in progress, written by
    pid 4242 on node-3 …``), and one whose lock is stale (:meth:`~alvae_utils.experiment.locks.Holder.stale`)
    says so (``unfinished, stale lock: writer pid 4242 on this host is gone; the next run takes it over``).
    """
    entries = []
    for state_path in sorted((root or results_root()).glob("*/*/*.state.json")):
        key = state_path.name.removesuffix(".state.json")
        entry = {"profile": state_path.parent.parent.name, "dataset": state_path.parent.name, "sweep": "",
                 "method": "", "start": "", "seed": None, "pool": None, "η": None, "overrides": "", "steps": "",
                 "status": "", "key": key}
        try:
            header = json.loads(state_path.read_text(encoding="utf-8"))
            record = RunRecord(state_path.parent, key, header)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                rows, state = record.load()
            experiment = header["experiment"]
            label = Method.from_key_fields(header["method"]).label
            entry.update(method=label, start=str(experiment.get("train", {}).get("init", "")), seed=header["seed"],
                         steps=f"{state.completed_steps}/{step_count(experiment)}",
                         sweep=sweep_of(header) if sweep_of else "", pool=experiment["pool_size"],
                         η=experiment["max_labels"], overrides=describe_overrides(header.get("overrides", {})),
                         status=("damaged: " + str(caught[0].message) if caught
                                 else "finished" if state.finished else "in progress"))
        except (OSError, ValueError, KeyError, TypeError, StoreDamaged) as error:
            entry["status"] = (f"damaged: {state_path.name} cannot be read ({type(error).__name__}: {error}); remove "
                               f"the run with `python -m alvae_utils results clean --run {key}` and run it again")
        holder = read_holder(state_path.parent / f"{key}.lock")
        if holder is not None:
            stale = holder.stale()
            if stale and entry["status"] == "in progress":
                entry["status"] = "unfinished"  # nobody writes it
            entry["status"] += (f", stale lock: {stale}; the next run takes it over" if stale
                                else f", written by {holder.describe()}")
        entries.append(entry)
    runs = pd.DataFrame(entries, columns=["profile", "dataset", "sweep", "method", "start", "seed", "pool", "η",
                                          "overrides", "steps", "status", "key"])
    runs = runs.astype({"seed": "Int64", "pool": "Int64", "η": "Int64"})  # a damaged run's blanks keep them integers
    return runs.sort_values(["profile", "dataset", "sweep", "method", "start", "seed", "key"], na_position="first",
                            kind="stable").reset_index(drop=True)


def _run_files(root: Path, keys: set[str]) -> list[Path]:
    """Every file below ``root``/<profile>/<dataset>/ of the runs with these keys (leftover ".<key>.….tmp" too)."""
    return [path for path in sorted(root.glob("*/*/*"))
            if path.is_file() and path.name.lstrip(".").split(".", 1)[0] in keys]


def remove_runs(keys: Iterable[str], root: Path | None = None) -> list[Path]:
    """Delete every file of the runs with these keys (rows, state, carried models); returns the files removed.

    Removing is writing: each run's lock is taken first (a stale one is taken over, with a warning).
    Raises RunHeld, naming the holders, when a live process writes any of them; then nothing is removed.
    """
    root, wanted = root or results_root(), set(keys)
    runs = sorted({(path.parent, path.name.lstrip(".").split(".", 1)[0]) for path in _run_files(root, wanted)})
    taken: list[RunLock] = []
    try:
        held = []
        for directory, key in runs:
            lock = RunLock(directory / f"{key}.lock")
            holder = lock.try_acquire()
            if holder is None:
                taken.append(lock)
            else:
                held.append(f"{key} by {holder.describe()}")
        if held:
            raise RunHeld(f"{len(held)} of the chosen runs are being written: {'; '.join(held)}. Nothing was "
                          "removed. Wait until they finish (or stop their process), then clean again; a lock whose "
                          f"heartbeat is older than {STALE_AFTER_SECONDS:g} s is stale and no longer blocks.")
        ours = {lock.path for lock in taken}  # released below
        removed = [path for path in _run_files(root, wanted) if path not in ours]  # as they are, now that none writes
        for path in removed:
            path.unlink(missing_ok=True)
        return removed
    finally:
        for lock in taken:
            lock.release()
