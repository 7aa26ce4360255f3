"""Driving the notebooks headless: ``make figures`` and the nbval check of ``make test``.

Each notebook runs with papermill once per dataset of the profile (or once in
all, for the ones that span datasets); executed copies go to
``build/<profile>/<notebook>[-<dataset>].ipynb`` and their wall-clock times to
``build/<profile>/timings.csv``. A dataset that cannot be obtained (ChestMNIST
offline, say) is skipped with a message that says how to provide it.

The ``ci`` profile runs in its own sandbox under ``build/ci/``: its own data
root (with a generated ChestMNIST-format file to exercise the multi-label path),
results and figures, so it never touches the user's ``data/``, ``results/`` or
``figures/``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fnmatch
import io
import os
import shutil
import subprocess
import itertools
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from ..config import ConfigError, config_hash
from ..data.datasets import DataUnavailableError, ImbalanceNotApplicable, load_experiment_data
from ..execution.settings import Execution
from ..analysis.figures import WRITTEN_VARIABLE, figure_heuristics
from ..data.fixtures import write_medmnist_npz
from ..device import machine_description
from ..models.resnet import PretrainedWeightsUnavailable, check_pretrained_weights_available
from .book import TIMINGS_FILE, read_timings, update_readme, write_numbers
from .notebooks import NOTEBOOKS, notebook_profile
from ..experiment.overrides import apply
from ..paths import REPO_ROOT, build_dir, figures_dir, gallery_dir, unwritable
from ..experiment.profiles import Profile, get_profile
from ..progress import SWITCH_VARIABLE, follow
from ..experiment.tsne_experiment import tsne_pool

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "alvae"
CELL_BAR = {"unit": "cell", "leave": False, "bar_format": "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} cells "
                                                          "[{elapsed} so far]"}
"""papermill's bar of a notebook's cells, without an ETA: one cell can take most of a notebook's time,
so a rate per cell predicts nothing."""


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names the cell and the executed copy to open."""


class NothingToRun(RuntimeError):
    """No selected notebook can run; the message says which files to place where."""


def kernel_problem() -> str | None:
    """Why the notebooks' Jupyter kernel cannot be started, with the fix; None when it can."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        return (f"no Jupyter kernel named {KERNEL_NAME!r} is registered, and the notebooks run on it. Fix: "
                f"`make setup`, or `{sys.executable} -m ipykernel install --sys-prefix --name {KERNEL_NAME} "
                f'--display-name "Python (alvae)"` in the environment that has alvae installed.')
    interpreter = spec.argv[0] if spec.argv else ""
    if interpreter not in ("python", "python3", "{python}") and not shutil.which(interpreter):
        return (f"the Jupyter kernel {KERNEL_NAME!r} ({spec.resource_dir}) starts {interpreter}, which does not "
                "exist. Fix: `make setup` (it registers the kernel again).")
    return None


def ci_sandbox(results: str = "results", figures: str = "figures") -> dict[str, str]:
    """Environment of the ``ci`` profile, with its generated ChestMNIST file in place."""
    base = build_dir() / "ci"
    env = {
        "ALVAE_DATA_ROOT": str(base / "data"),
        "ALVAE_RESULTS_ROOT": str(base / results),
        "ALVAE_FIGURES_DIR": str(base / figures),
        "ALVAE_OFFLINE": "1",
    }
    npz = base / "data" / "chestmnist.npz"
    if not npz.exists():
        # Sized for the ci profile's AL pool (200) + evaluation (100) and its t-SNE pool (300).
        write_medmnist_npz(npz, n_train=600, n_val=200, n_test=200, flag="chestmnist", seed=0)
    return env


def _used_overrides(profile: Profile, notebook: str) -> dict[str, object]:
    """The profile's overrides that ``notebook`` uses (lists as lists, as a notebook parameter takes them)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in profile.overrides
            if any(fnmatch.fnmatchcase(key, pattern) for pattern in NOTEBOOKS[notebook].settings)}


def _notebook_profile(profile: Profile, notebook: str) -> Profile:
    """The profile ``notebook`` runs under ``make figures`` for ``profile`` (see :func:`notebook_profile`)."""
    return notebook_profile(notebook, profile.name, _used_overrides(profile, notebook))


def _jobs(profile: Profile, available: Mapping[str, list[str]], notebooks: list[str],
          execution: Execution | None = None) -> list[tuple[str, dict]]:
    """(notebook, parameters) in run order: the per-dataset notebooks once for each of their available datasets.

    Each notebook gets the profile's overrides that it uses (none: no ``overrides`` parameter),
    and a notebook that runs sweeps the execution settings that differ from their defaults.
    """
    execution = execution or Execution()
    chosen = {f.name: getattr(execution, f.name) for f in fields(Execution)
              if getattr(execution, f.name) != f.default}
    jobs = []
    for notebook in notebooks:
        used = _used_overrides(profile, notebook)
        common = {"profile": profile.name, **({"overrides": used} if used else {}),
                  **(chosen if NOTEBOOKS[notebook].runs_sweeps else {})}
        if NOTEBOOKS[notebook].per_dataset:
            jobs += [(notebook, {**common, "dataset": dataset}) for dataset in available.get(notebook, [])]
        else:
            jobs.append((notebook, common))
    return jobs


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """Silence the fallback warnings of a check; the plan printed afterwards says what will be used."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _available_datasets(profile: Profile, checked: dict[tuple, str | Exception]
                        ) -> tuple[dict[str, str], dict[str, str]]:
    """Datasets of the profile whose files can be had (with the data each will use), and why the others cannot
    (their files cannot be had, or a long-tailed pool was asked of multi-label data).

    ``checked`` remembers each (dataset, sizes, seed) already tried, so notebooks sharing data load it once.
    """
    available, skipped = {}, {}
    for experiment in profile.experiments:
        identity = (experiment.dataset, experiment.pool_size, experiment.eval_size, experiment.pool_seed,
                    experiment.pool_imbalance)
        if identity not in checked:
            try:
                with _quietly():
                    pool, _ = load_experiment_data(*identity[:3], seed=experiment.pool_seed,
                                                   imbalance=experiment.pool_imbalance)
                checked[identity] = pool.description
            except (DataUnavailableError, ImbalanceNotApplicable) as error:
                checked[identity] = error
        if isinstance(checked[identity], Exception):
            skipped[experiment.dataset] = str(checked[identity])
        else:
            available[experiment.dataset] = checked[identity]
    return available, skipped


@dataclass
class Plan:
    """What ``make figures`` will run, on which data, and what it skips (with what to provide)."""

    jobs: list[tuple[str, dict]]
    data: dict[str, str]  # dataset (or "04_tsne") -> the data it will use
    skipped: dict[str, str]  # dataset or notebook -> why it cannot run


def _plan(profile: Profile, only: list[str] | None, execution: Execution | None = None) -> Plan:
    """Check everything the selected notebooks need before any of them runs.

    Raises NothingToRun when the ImageNet weights a pretrained profile needs
    are missing, or when no notebook is left to run.
    """
    unknown = sorted(set(only or ()) - set(NOTEBOOKS))
    if unknown:
        raise ValueError(f"unknown notebook(s) {', '.join(unknown)}; choose from {', '.join(NOTEBOOKS)}.")
    notebooks = [notebook for notebook in NOTEBOOKS if not only or notebook in only]
    unused = [key for key, _ in profile.overrides
              if not any(fnmatch.fnmatchcase(key, pattern) for notebook in notebooks
                         for pattern in NOTEBOOKS[notebook].settings)]
    if unused:
        raise ConfigError(f"no selected notebook uses the setting(s) {', '.join(unused)}; "
                          f"selected: {', '.join(notebooks)}.")
    problems = [problem for problem in (kernel_problem(),) if problem]
    if any(e.train.pretrained for e in profile.experiments) \
            and any(NOTEBOOKS[notebook].trains_task_model for notebook in notebooks):
        try:
            check_pretrained_weights_available()
        except PretrainedWeightsUnavailable as error:
            problems.append(str(error))
    data, skipped, available, checked = {}, {}, {}, {}
    for notebook in notebooks:
        if NOTEBOOKS[notebook].per_dataset:
            found, missing = _available_datasets(_notebook_profile(profile, notebook), checked)
            available[notebook] = list(found)
            data.update(found)
            skipped.update(missing)
    # A dataset one notebook lacks may be one another has found (05's sample vs 02's MNIST, say).
    skipped = {dataset: reason for dataset, reason in skipped.items() if dataset not in data}
    # A notebook that analyses what a per-dataset notebook stores has nothing to analyse without its data.
    notebooks = [notebook for notebook in notebooks if available.get(NOTEBOOKS[notebook].reads_results_of, True)]
    if "04_tsne" in notebooks:
        try:
            with _quietly():
                pool, fell_back = tsne_pool(profile)
            data["04_tsne"] = pool.description + (f" ({profile.tsne.dataset} unavailable)" if fell_back else "")
        except DataUnavailableError as error:
            notebooks.remove("04_tsne")
            skipped["04_tsne (Figs. 5-6)"] = str(error)
    jobs = _jobs(profile, available, notebooks, execution)
    if problems or not jobs:
        reasons = problems + [f"{name}: {reason}" for name, reason in skipped.items()]
        raise NothingToRun(f"profile {profile.name!r} cannot run; nothing was started.\n\n" + "\n\n".join(reasons))
    return Plan(jobs, data, skipped)


def make_figures(profile_name: str, only: list[str] | None = None,
                 overrides: Mapping[str, object] | None = None, execution: Execution | None = None) -> list[Path]:
    """Execute the notebooks for ``profile_name``; print and return the figures written.

    Everything the run needs (data files, and ImageNet weights for a pretrained
    profile) is checked first. A dataset that cannot be had is skipped, with
    what to provide; if nothing can run, NothingToRun says what is missing.
    ``overrides`` (:mod:`alvae_utils.experiment.overrides`) reach each notebook that uses them, and
    ``execution`` (:mod:`alvae_utils.execution`) each notebook that runs sweeps.

    Figures go to the committed gallery (``figures/``) for a profile run as it is,
    and to ``build/<profile>-<key>/figures/`` with overrides, so a tweaked run never
    replaces the gallery; ``$ALVAE_FIGURES_DIR``, when set, wins. Executed notebooks
    go to ``build/<profile>/`` (``build/<profile>-<key>/`` with overrides).
    """
    import papermill  # heavy; only needed here

    profile = apply(get_profile(profile_name), overrides or {})
    execution = (execution or Execution()).resolved(profile)
    if profile.name == "ci":
        os.environ.update(ci_sandbox())
    tag = profile.name + (f"-{config_hash(profile.overrides)[:8]}" if profile.overrides else "")
    out_dir = build_dir() / tag
    if "ALVAE_FIGURES_DIR" not in os.environ:
        os.environ["ALVAE_FIGURES_DIR"] = str(out_dir / "figures" if profile.overrides else gallery_dir())
    for folder, variable in ((figures_dir(), "ALVAE_FIGURES_DIR"), (out_dir, None)):
        error = unwritable(folder)  # before any notebook computes: otherwise its first figure would fail late
        if error is not None:
            raise ConfigError(f"make figures cannot write to {folder} ({type(error).__name__}: {error}); make the "
                              "folder writable" + (f", or set ${variable} to one that is." if variable else "."))
    plan = _plan(profile, only, execution)
    print(f"[alvae] profile {profile.label}, runs: {execution.executor}"
          + (f" at {execution.address}" if execution.address else "") + ", data:", flush=True)
    for name, source in plan.data.items():
        print(f"  {name}: {source}")
    for name in plan.skipped:
        print(f"  {name}: skipped (why, and what to provide, at the end)")
    out_dir.mkdir(parents=True, exist_ok=True)
    timings, machine = _previous_timings(tag), machine_description()
    # The kernels append each figure file they write here: the closing list is what this run wrote.
    manifest = out_dir / "figures-written.txt"
    manifest.write_text("", encoding="utf-8")
    os.environ[WRITTEN_VARIABLE] = str(manifest)
    for notebook, parameters in plan.jobs:
        suffix = f"-{parameters['dataset']}" if "dataset" in parameters else ""
        output = out_dir / f"{notebook}{suffix}.ipynb"
        print(f"[alvae] {notebook}{suffix} (profile {profile.name}) -> {_shown(output)}", flush=True)
        tic, started, load_before = time.perf_counter(), _utc_now(), _load()
        try:
            with follow(out_dir / "progress.log"):  # runs and steps finished inside the kernel, as they finish
                papermill.execute_notebook(NOTEBOOK_DIR / f"{notebook}.ipynb", output, parameters=parameters,
                                           kernel_name=KERNEL_NAME, cwd=str(NOTEBOOK_DIR),
                                           progress_bar=CELL_BAR)
        except papermill.PapermillExecutionError as error:
            raise NotebookFailed(
                f"{notebook}{suffix} failed in cell {error.exec_count}: {error.ename}: {error.evalue}\n"
                f"  the executed copy with the full traceback is {_shown(output)}"
            ) from None
        seconds = time.perf_counter() - tic
        timings[notebook, parameters.get("dataset", "")] = {
            "notebook": notebook, "dataset": parameters.get("dataset", ""), "seconds": round(seconds, 1),
            "started": started, "load_before": load_before, "load_after": _load(), "machine": machine}
        _write_timings(out_dir / TIMINGS_FILE, timings)  # after every notebook: a run that fails later keeps these
        print(f"[alvae]   done in {seconds:.0f} s", flush=True)
    written = list(dict.fromkeys(Path(line) for line in manifest.read_text(encoding="utf-8").splitlines()))
    # The headline numbers of the stored results, for the README's generated block and the book.
    record = write_numbers(profile.name, figures_dir())
    if figures_dir() == gallery_dir():
        update_readme(REPO_ROOT / "README.md", record)

    print(f"\n[alvae] profile {profile.label}: {len(written)} figure files written to {figures_dir()}")
    for path in written:
        print(f"  {path.name}")
    for name, reason in plan.skipped.items():
        print(f"\n[alvae] skipped {name}: {reason}")
    return written


def _shown(path: Path) -> Path:
    """``path`` relative to the repository when it is inside it (shorter to read), else as it is."""
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def figure_files(profile: Profile, notebook: str, dataset: str | None = None) -> list[Path]:
    """The figure files that ``notebook`` writes for ``profile`` (and ``dataset``), as found in the figures folder.

    Expands the notebook's patterns (:data:`alvae_utils.workflow.notebooks.NOTEBOOKS`) with
    the dataset, the heuristics that have figures and the feature families of the
    profile's methods.
    """
    labels = [method.label for method in profile.methods]
    fields = {"dataset": [dataset or ""], "heuristic": figure_heuristics(labels),
              "family": list(dict.fromkeys(m.features for m in profile.methods if m.features))}
    found: list[Path] = []
    for pattern in NOTEBOOKS[notebook].figures:
        names = [name for name in fields if f"{{{name}}}" in pattern]
        for values in itertools.product(*(fields[name] for name in names)):
            expanded = pattern.format(**dict(zip(names, values, strict=True)))
            found += sorted(set(figures_dir().glob(expanded)) - set(found))
    return found


TIMING_COLUMNS = ("notebook", "dataset", "seconds", "started", "load_before", "load_after", "machine")
"""``timings.csv``: wall-clock seconds of each executed notebook, when it started (UTC), the 1-minute load
average before and after it (other work on the machine slows a run), and the machine it ran on."""


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _load() -> float | str:
    """The 1-minute load average, or '' where the platform has none."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else ""


def _previous_timings(tag: str) -> dict[tuple[str, str], dict]:
    """The rows of the folder's ``timings.csv`` by (notebook, dataset), so that a run of some notebooks (``--only``)
    replaces their rows and keeps the others; none when there is no readable file."""
    try:
        rows = read_timings(tag)
    except ValueError:
        return {}  # a damaged file is replaced, not merged
    return {(row["notebook"], row.get("dataset") or ""): row for row in rows}


def _write_timings(path: Path, rows: dict[tuple[str, str], dict]) -> None:
    """``rows`` to ``path`` (atomically), in the notebooks' order."""
    order = {name: i for i, name in enumerate(NOTEBOOKS)}
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(TIMING_COLUMNS), extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(row for _, row in sorted(rows.items(), key=lambda item: (order.get(item[0][0], 99), item[0])))
    partial.replace(path)


def validate_notebooks() -> int:
    """nbval: re-execute ``build/ci/*.ipynb`` from empty results and compare with the stored outputs.

    The fresh results root turns caching off, so every number is recomputed:
    a pass shows that a seeded rerun reproduces the executed notebooks.
    """
    problem = kernel_problem()
    if problem:
        raise NothingToRun(problem)
    executed = sorted((build_dir() / "ci").glob("*.ipynb"))
    if not executed:
        raise FileNotFoundError("no executed notebooks in build/ci/; run `make notebooks-ci` (papermill pass) first.")
    # No progress bars: nbval reads a cell's messages only once it ends, and a long cell's widget
    # traffic would overflow the kernel's queue. Bars are not compared anyway (conftest.py).
    env = {**os.environ, **ci_sandbox(results="results-nbval", figures="figures-nbval"), SWITCH_VARIABLE: "0"}
    for name in ("ALVAE_RESULTS_ROOT", "ALVAE_FIGURES_DIR"):
        shutil.rmtree(env[name], ignore_errors=True)
    command = [sys.executable, "-m", "pytest", "--nbval", "--nbval-kernel-name", KERNEL_NAME,
               "--nbval-sanitize-with", str(REPO_ROOT / ".ci" / "nbval-sanitize.cfg"),
               "-p", "no:cacheprovider", *map(str, executed)]
    return subprocess.call(command, cwd=REPO_ROOT, env=env)
