"""Projected wall time of ``make figures PROFILE=paper`` from measured throughputs, and a check against a real run.

**Workload**, read from ``alvae_utils.experiment.profiles.get_profile("paper")`` (``--profile``: another
profile, e.g. ``ci`` for ``gpu_check.py --tiny``'s smoke run), per dataset:

* every (method, seed) run of Algorithm 1. At step s a fresh T (and P, for loss prediction) is
  built and trained on |L_s| × ``epochs_for_step(s)`` images, then the evaluation set is inferred
  and scored. Before every step but the last, the heuristics that need T's outputs infer the whole
  pool (T_f for core-set, P's predicted loss for loss prediction), and core-set runs
  ``kcenter_greedy`` at (pool, |L_s|, β);
* the VAE, trained once per pool on every pool image for ``vae.epochs`` epochs, then the pool encoded
  (notebook 01 trains it; the ``+vae`` runs reuse the cached one);
* once, the t-SNE experiment of Figs. 5–6: T trained on ξ_tsne labels for ``tsne.epochs``, a VAE on
  the t-SNE pool, two t-SNE embeddings;
* a fixed overhead per notebook execution (kernel start, imports, plots): ``--notebook-overhead``.

**Cost** = images / measured img/s + measured seconds, from the JSON files that
``bench_training.py`` writes (``benchmarks/throughput/throughput-*.json``, one per device and thread
count): training img/s at the run's batch with or without P, each fresh model's construction and
first-batch set-up, inference img/s, metric seconds per sample, VAE img/s, ``kcenter_greedy``
seconds interpolated in |L|, and the t-SNE seconds; by default the median timed window's rates
(``--rate``). **Ray packing**: the runs of a dataset enter k slots in sweep order, as Ray's queue
takes them; while m runs are active the device delivers P_m times the serial img/s in all, shared
equally, P_m being the measured aggregate img/s of m runs at once over that of one serial run.

**GPU**: where no GPU was measured, ``--gpu`` adds an H100/H200 *projection* from FLOPs counted here
(``torch.utils.flop_counter``), kernel and operator counts, and stated assumptions. It is not a
measurement.

**Check** (``--check``): runs the paper profile's shapes for two steps (pool 25,000, ξ = β = 3,000,
one epoch per step, η = 6,000) on Fashion-MNIST (Debian's ``dataset-fashion-mnist``), from scratch
(ImageNet weights cannot be downloaded here), into a temporary results root; prints the measured
seconds per phase and the peak resident memory next to two projections of the same two steps: from
the throughput file, and from rates re-measured with the benchmark's code just before and after each
run (on a shared machine the load moves in between). Exits with status 1 when a run's total is off
the second by more than ``--tolerance`` (25%).

    python benchmarks/project_paper_runtime.py                   # every measured device
    python benchmarks/project_paper_runtime.py --gpu --check     # plus the GPU projection and the check
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package
sys.path.insert(0, str(ROOT / "benchmarks"))

from alvae_utils.config import ExperimentConfig, TrainConfig  # noqa: E402
from alvae_utils.data.datasets import (  # noqa: E402
    MULTICLASS, DataUnavailableError, evaluation_split, load_experiment_data, split_sizes,
)
from alvae_utils.data.medmnist_2d import medmnist_task  # noqa: E402
from alvae_utils.selection.methods import Method  # noqa: E402
from alvae_utils.workflow.notebooks import NOTEBOOKS  # noqa: E402
from alvae_utils.experiment.profiles import PROFILES, Profile, get_profile  # noqa: E402

RESULTS = ROOT / "benchmarks" / "throughput"  # written by bench_training.py
PAPER_SECONDS = {("mnist", "coreset"): 5_113, ("mnist", "lossprediction"): 4_955,
                 ("chestmnist", "coreset"): 7_085, ("chestmnist", "lossprediction"): 7_209}
"""Godwin et al. (2022), Experiments: 'With four NVIDIA 2080 GPUs, the total runtime ...' (24,362 s in all).

Each figure (1–4) compares one heuristic with its VAE variant over 5 runs, so each number covers
10 runs: 40 in all, without the random baseline, the t-SNE experiment or ChestMNIST's η (not given)."""
PAPER_METHODS = ("coreset", "coreset+vae", "lossprediction", "lossprediction+vae")
GOAL_SECONDS = 30 * 60
FRESH_MODEL_GPU_SETUP_S = 0.05
"""Assumed first-batch overhead of a fresh model on a warm GPU process (CUDA context and cuDNN handles exist)."""
SELECTION_INPUTS = {"features", "logits", "predicted_loss"}  # what makes a heuristic infer the pool


def dataset_task(name: str) -> str:
    """multi-class for the MNIST family, else the MedMNIST task of ``name``."""
    return MULTICLASS if name in ("mnist", "fashionmnist", "mnist-sample") else medmnist_task(name)


@dataclass(frozen=True)
class Throughput:
    """One device's measured rates under one speed setting (a ``bench_training.py`` JSON file)."""

    name: str
    settings: str
    threads: int
    train: dict[tuple[int, bool], float]  # (batch, with P) → img/s
    build: dict[tuple[int, bool], float]  # seconds to construct a fresh T (+P)
    setup: dict[tuple[int, bool], float]  # a fresh model's first batches beyond their steady time (s)
    infer: dict[bool, float]  # with P → img/s at batch 1,024
    metric_seconds_per_sample: dict[str, float]  # task → s
    vae_train: float  # img/s
    vae_encode: float  # img/s
    kcenter: tuple[tuple[int, int, int, float], ...]  # (N, |L|, β, seconds), d = 544
    tsne: tuple[int, float]  # (points, seconds) of one embedding
    packing: dict[int, float]  # k → img/s of k runs at once / img/s of one run with all threads (batch 64)
    projected: bool = False  # True: built from assumptions, not measured

    @classmethod
    def from_json(cls, stored: dict, settings: str, statistic: str = "median") -> Throughput | None:
        """The rates under ``settings``; None when the file lacks training or inference rows for it.

        ``statistic``: "median" (the typical timed window: what a run meets on that machine) or
        "best" (the least disturbed window).
        """
        key = "img_per_s_median" if statistic == "median" else "img_per_s"
        train = {(r["batch"], r["lp"]): r for r in stored.get("training", []) if r["settings"] == settings}
        infer = {r["lp"]: r[key] for r in stored.get("features", []) if r["settings"] == settings}
        if not train or set(infer) != {False, True} or not {lp for _, lp in train} >= {False, True}:
            return None
        vae = {r["part"]: r[key] for r in stored["vae"]}
        packing = {r["k"]: r["ratio_to_serial"] for r in stored.get("ray", [])
                   if r["batch"] == 64 and r["settings"] == settings}
        metrics = stored["metrics"]
        return cls(
            name=stored["hardware"]["name"], settings=settings, threads=stored["hardware"]["threads"],
            train={case: r[key] for case, r in train.items()},
            build={case: r["build_s"] for case, r in train.items()},
            setup={case: r["setup_next_model_s"] for case, r in train.items()},
            infer=infer,
            metric_seconds_per_sample={task: s / metrics["samples"] for task, s in metrics["seconds"].items()},
            vae_train=vae["train"], vae_encode=vae["encode_mu"],
            kcenter=tuple((r["n"], r["labeled"], r["budget"], r["seconds"]) for r in stored["selection"]),
            tsne=(stored["tsne"]["points"], stored["tsne"]["seconds"]), packing=packing)

    def kcenter_seconds(self, n: int, labeled: int, budget: int) -> float:
        """kcenter_greedy seconds: linear in |L| between measured points of the nearest measured N, scaled by N and β.

        Its two costs, the initial distances (N·|L|·d) and the β picks (N·d each), are both linear in N.
        """
        nearest = min({row[0] for row in self.kcenter}, key=lambda m: abs(m - n))
        points = sorted((row[1], row[3] / row[2]) for row in self.kcenter if row[0] == nearest)
        if labeled <= points[0][0]:
            per_pick = points[0][1]
        elif labeled >= points[-1][0]:
            per_pick = points[-1][1]
        else:
            (l0, s0), (l1, s1) = next((a, b) for a, b in zip(points, points[1:], strict=False)
                                       if a[0] <= labeled <= b[0])
            per_pick = s0 + (s1 - s0) * (labeled - l0) / (l1 - l0)
        return per_pick * budget * n / nearest


def run_phases(config: ExperimentConfig, method: Method, eval_size: int, task: str, rates: Throughput
               ) -> dict[str, float]:
    """Projected seconds of one Algorithm 1 run, by phase (the store's train/select/eval columns, plus build)."""
    spec, batch = method.heuristic_entry, config.train.batch_size
    lp = spec.trains_loss_module
    if (batch, lp) not in rates.train:
        raise KeyError(f"{rates.name}: no training rate at batch {batch} {'with' if lp else 'without'} P; "
                       "measure it with bench_training.py.")
    counts = config.label_counts()
    trained = sum(n * config.train.epochs_for_step(step) for step, n in enumerate(counts))
    select = 0.0
    for n in counts[:-1]:
        if SELECTION_INPUTS & set(spec.needs):
            select += config.pool_size / rates.infer[lp]
        if method.heuristic in ("coreset", "medal"):  # MedAL's greedy costs at most core-set's (benchmarks/README)
            select += rates.kcenter_seconds(config.pool_size, n, config.budget)
    return {"train": trained / rates.train[(batch, lp)] + len(counts) * rates.setup[(batch, lp)],
            "select": select,
            "eval": len(counts) * eval_size * (1 / rates.infer[False] + rates.metric_seconds_per_sample[task]),
            "build": len(counts) * rates.build[(batch, lp)]}


def packed_makespan(durations: list[float], k: int, packing: dict[int, float]) -> float:
    """Wall time of runs taken in order by k slots (Ray's FIFO queue) on a device they share.

    ``durations`` are serial seconds. While m runs are active the device delivers ``packing[m]``
    times the serial rate in all, shared equally, so the last runs speed up as the others finish.
    """
    queue, active, elapsed = list(durations), [], 0.0
    while queue or active:
        while queue and len(active) < k:
            active.append(queue.pop(0))
        speed = packing[len(active)] / len(active)  # serial seconds done per second, per active run
        step = min(active) / speed
        elapsed += step
        active = [left - step * speed for left in active if left - step * speed > 1e-9]
    return elapsed


PHASES = ("train", "select", "eval", "build")


@dataclass
class Projection:
    """Seconds of one make-figures run on one device, by part; serial or with k runs at once."""

    runs: dict[str, list[dict[str, float]]]  # dataset → the phases of each run, in sweep order
    vae: dict[str, float]  # dataset → VAE training + encoding
    tsne: float
    notebooks: float

    def parts(self) -> dict[str, float]:
        """Serial seconds of each phase of the runs, and of the VAEs, the t-SNE experiment and the notebooks."""
        phases = {phase: sum(run[phase] for runs in self.runs.values() for run in runs) for phase in PHASES}
        return {**phases, "VAE": sum(self.vae.values()), "t-SNE": self.tsne, "notebooks": self.notebooks}

    def total(self, rates: Throughput, k: int | None = None) -> float:
        """Serial (``k`` None), or with up to ``k`` runs of a dataset at once under Ray."""
        durations = {dataset: [sum(run.values()) for run in runs] for dataset, runs in self.runs.items()}
        if k is None:
            sweeps = sum(map(sum, durations.values()))
        else:
            sweeps = sum(packed_makespan(runs, k, rates.packing) for runs in durations.values())
        return sweeps + sum(self.vae.values()) + self.tsne + self.notebooks


def eval_size_of(experiment: ExperimentConfig) -> int:
    """Images the run evaluates on: eval_size, or the whole evaluation split."""
    return experiment.eval_size or split_sizes(experiment.dataset)[evaluation_split(experiment.dataset)]


def project(profile: Profile, rates: Throughput, methods: tuple[Method, ...], notebook_overhead: float,
            with_tsne: bool = True) -> Projection:
    """The projection of ``profile``'s sweeps over ``methods`` (all seeds), its VAEs and (optionally) t-SNE."""
    runs, vae = {}, {}
    for experiment in profile.experiments:
        eval_size, task = eval_size_of(experiment), dataset_task(experiment.dataset)
        runs[experiment.dataset] = [run_phases(experiment, method, eval_size, task, rates)
                                    for method in methods for _ in profile.seeds]
        if any(method.family is not None for method in methods):
            pool = experiment.pool_size
            vae[experiment.dataset] = pool * experiment.vae.epochs / rates.vae_train + pool / rates.vae_encode
    tsne = tsne_seconds(profile, rates) if with_tsne else 0.0
    executions = sum(len(profile.experiments) if notebook.per_dataset else 1 for notebook in NOTEBOOKS.values())
    return Projection(runs, vae, tsne, executions * notebook_overhead)


def tsne_seconds(profile: Profile, rates: Throughput) -> float:
    """The t-SNE experiment: T on ξ_tsne labels, inference of the embedded points, its VAE, two embeddings."""
    tsne = profile.tsne
    batch = profile.experiments[0].train.batch_size
    points = tsne.initial_labels + round(tsne.unlabeled_fraction * (tsne.pool_size - tsne.initial_labels))
    vae = profile.experiment(tsne.dataset).vae if tsne.dataset in profile.datasets else profile.experiments[0].vae
    measured_points, embed_seconds = rates.tsne
    return (tsne.initial_labels * tsne.epochs / rates.train[(batch, False)] + rates.setup[(batch, False)]
            + rates.build[(batch, False)] + points / rates.infer[False]
            + tsne.pool_size * vae.epochs / rates.vae_train + points / rates.vae_encode
            + 2 * embed_seconds * points / measured_points)


def hours(seconds: float) -> str:
    return f"{seconds:,.0f} s ({seconds / 3600:.1f} h)" if seconds >= 3600 else f"{seconds:,.0f} s"


def workload_table(profile: Profile) -> None:
    """Images trained and inferred per run, per dataset and method family."""
    print(f"Workload of the {profile.name} profile (per run of Algorithm 1):\n")
    print("| dataset | method | runs | images trained | pool images inferred | eval images inferred | "
          "core-set selections |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for experiment in profile.experiments:
        counts = experiment.label_counts()
        trained = sum(n * experiment.train.epochs_for_step(s) for s, n in enumerate(counts))
        for method in profile.methods:
            pool = experiment.pool_size * (len(counts) - 1) * bool(SELECTION_INPUTS & set(method.heuristic_entry.needs))
            selections = (len(counts) - 1) * (method.heuristic == "coreset")
            print(f"| {experiment.dataset} | {method.label} | {len(profile.seeds)} | {trained:,} | {pool:,} | "
                  f"{eval_size_of(experiment) * len(counts):,} | {selections} |")
    total = sum(len(profile.methods) * len(profile.seeds)
                * sum(n * e.train.epochs_for_step(s) for s, n in enumerate(e.label_counts()))
                for e in profile.experiments)
    tsne_vae = profile.experiment(profile.tsne.dataset).vae
    vae = sum(e.pool_size * e.vae.epochs for e in profile.experiments) + profile.tsne.pool_size * tsne_vae.epochs
    print(f"\nIn all: {total:,} training images in {len(profile.methods) * len(profile.seeds) * 2} runs; "
          f"VAE training {vae:,} images (two experiment pools and the t-SNE pool).")


def projection_table(profile: Profile, all_rates: list[Throughput], notebook_overhead: float) -> None:
    """Projected wall time per device and setting, serial and per Ray k, beside the paper's 24,362 s; then parts."""
    paper_methods = tuple(Method.parse(label) for label in PAPER_METHODS)
    print(f"\nProjected wall time of `make figures PROFILE={profile.name}`:\n")
    print("| device | setting | mode | all 50 runs + VAEs + t-SNE + notebooks | the paper's 40 runs + VAEs |")
    print("|---|---|---|---:|---:|")
    for rates in all_rates:
        full = project(profile, rates, profile.methods, notebook_overhead)
        subset = project(profile, rates, paper_methods, 0.0, with_tsne=False)
        label = rates.name + (" (projection)" if rates.projected else "")
        serial = "one run at a time" + ("" if rates.projected else f", {rates.threads} thread(s)")
        print(f"| {label} | {rates.settings} | {serial} | {hours(full.total(rates))} | {hours(subset.total(rates))} |")
        shown = [k for k in sorted(rates.packing) if all(m in rates.packing for m in range(1, k + 1))]
        for k in shown if not rates.projected else [k for k in shown if k & (k - 1) == 0]:
            print(f"| {label} | {rates.settings} | Ray, {k} at once (×{rates.packing[k]:.2f} of serial img/s) | "
                  f"{hours(full.total(rates, k))} | {hours(subset.total(rates, k))} |")
    if profile.name == "paper":
        print(f"| 4× RTX 2080 (the paper) | fp32 | 4 GPUs | – | {hours(sum(PAPER_SECONDS.values()))} |")

    print("\nWhere the serial time goes (seconds):\n")
    names = list(project(profile, all_rates[0], profile.methods, notebook_overhead).parts())
    print("| device | setting | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for rates in all_rates:
        parts = project(profile, rates, profile.methods, notebook_overhead).parts()
        print(f"| {rates.name} | {rates.settings} | " + " | ".join(f"{parts[name]:,.0f}" for name in names) + " |")


def load_rates(paths: list[Path], statistic: str) -> list[Throughput]:
    """Every speed setting with full training and inference rows, from each JSON file."""
    found = []
    for path in paths:
        stored = json.loads(path.read_text())
        labels = dict.fromkeys(r["settings"] for r in stored.get("training", []))
        found += [rates for label in labels if (rates := Throughput.from_json(stored, label, statistic)) is not None]
    return found


# --- GPU projection -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepCount:
    """What one step costs, counted on the CPU: FLOPs (2 per multiply-add), aten operators, and the computing ones."""

    batch: int
    flops: float  # whole step
    operators: int  # each costs host time in eager mode (dispatch, launch)
    kernels: int  # operators that are not views: at least one GPU kernel each

    def seconds(self, effective_tflops: float, host_us: float, kernel_us: float) -> tuple[float, float]:
        """(wall seconds of one step, GPU-busy seconds of it): host and GPU overlap, the slower one sets the pace."""
        gpu = max(self.kernels * kernel_us * 1e-6, self.flops / (effective_tflops * 1e12))
        return max(self.operators * host_us * 1e-6, gpu), gpu


def count_step(step, batch: int) -> StepCount:
    """Count one call of ``step`` (after a first, warm-up call)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.operators = self.kernels = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.operators += 1
            self.kernels += not func.is_view
            return func(*args, **(kwargs or {}))

    step()
    flops = FlopCounterMode(display=False)
    with flops:
        step()
    with Count() as count:
        step()
    return StepCount(batch, flops.get_total_flops(), count.operators, count.kernels)


def count_training(lp: bool, batch: int = 64) -> StepCount:
    """One training step of T (+P) as train_task_model runs it, with SGD's multi-tensor path as on CUDA."""
    from alvae_utils.models.resnet import pair_ranking_loss
    from alvae_utils.training.task_model import build_task_model

    model, lp_module = build_task_model(10, TrainConfig(batch_size=batch), 0, "cpu", with_loss_prediction=lp)
    parameters = [p for m in (model, lp_module) if m is not None for p in m.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=1e-3, momentum=0.9, foreach=True)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def step() -> None:
        out = model(x)
        losses = torch.nn.functional.cross_entropy(out.logits, y, reduction="none")
        loss = losses.mean()
        if lp_module is not None:
            loss = loss + pair_ranking_loss(lp_module(out.stages), losses)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # train_task_model reads the loss every batch: one host synchronisation

    return count_step(step, batch)


def gpu_counts() -> dict[str, StepCount]:
    """Training steps of T and T+P (batch 64), T's inference (batch 1,024), and the VAE's training step
    (batch 128, Adam's multi-tensor path) and encoding (batch 1,024), counted on the CPU."""
    from alvae_utils.models.vae import VAE, vae_loss
    from alvae_utils.models.resnet import TaskModel

    counts = {"train": count_training(False), "train+P": count_training(True)}
    big = torch.rand(1024, 1, 28, 28)
    model = TaskModel(10).eval()
    with torch.no_grad():
        counts["infer"] = count_step(lambda: model(big), 1024)
    vae = VAE()
    adam = torch.optim.Adam(vae.parameters(), lr=1e-3, weight_decay=5e-3, foreach=True)
    x = torch.rand(128, 1, 28, 28)

    def vae_step() -> None:
        recon, mu, logvar = vae(x)
        loss = vae_loss(recon, x, mu, logvar)[0]
        adam.zero_grad(set_to_none=True)
        loss.backward()
        adam.step()

    counts["vae"] = count_step(vae_step, 128)
    vae.eval()
    with torch.no_grad():
        counts["encode"] = count_step(lambda: vae.encode(big), 1024)
    return counts


def gpu_rates(cpu: Throughput, counts: dict[str, StepCount], effective_tflops: float, host_us: float,
              kernel_us: float, cores: int, mps: bool = False) -> Throughput:
    """H100/H200 rates from ``counts`` and assumptions (``--gpu`` in main): a projection, not a measurement.

    A step takes max(host, GPU): host = operators × ``host_us`` (eager dispatch and launch); GPU =
    max(kernels × ``kernel_us``, FLOPs / ``effective_tflops``). k runs are k processes: without MPS
    the GPU time-slices between them, so together they reach min(k × one run, batch / GPU time)
    img/s; with MPS their kernels overlap and only the FLOPs bound them. k ≤ ``cores`` host cores.
    kcenter_greedy: its distance GEMMs at ``effective_tflops`` plus one host synchronisation (50 µs)
    per pick. Construction, metrics and t-SNE run on the host: as measured on ``cpu``; a fresh model's
    first batches cost :data:`FRESH_MODEL_GPU_SETUP_S`.
    """
    def rate(key: str) -> tuple[float, float]:
        count = counts[key]
        wall, gpu = count.seconds(effective_tflops, host_us, kernel_us)
        return count.batch / wall, count.batch / (count.flops / (effective_tflops * 1e12) if mps else gpu)

    train = {(64, lp): rate("train+P" if lp else "train")[0] for lp in (False, True)}
    one, cap = rate("train")
    flops_s = effective_tflops * 1e12
    kcenter = tuple((n, labeled, budget, 2 * n * (labeled + budget) * 544 / flops_s + budget * 50e-6)
                    for n, labeled, budget, _ in cpu.kcenter)
    # A fresh model's first batches: cuDNN picks its kernels by heuristics, without timing (cudnn_benchmark off).
    return replace(cpu, name="H100/H200", settings="fp32 (IEEE, deterministic)", threads=1, train=train,
                   setup={key: FRESH_MODEL_GPU_SETUP_S for key in train},
                   infer={False: rate("infer")[0], True: rate("infer")[0]}, vae_train=rate("vae")[0],
                   vae_encode=rate("encode")[0], kcenter=kcenter,
                   packing={k: min(k * one, cap) / one for k in range(1, cores + 1)}, projected=True)


def best_packed(profile: Profile, rates: Throughput, notebook_overhead: float) -> tuple[float, int]:
    """(seconds, k) of the fastest k."""
    projection = project(profile, rates, profile.methods, notebook_overhead)
    return min((projection.total(rates, k), k) for k in rates.packing)


def gpu_table(profile: Profile, cpu: Throughput, counts: dict[str, StepCount], args: argparse.Namespace,
              notebook_overhead: float) -> Throughput:
    """Print the counts, the assumptions and a sensitivity table; return the rates under the main assumptions."""
    print("\nCounted on the CPU (one step): " + "; ".join(
        f"{key} (batch {c.batch}): {c.flops / c.batch / 1e6:.0f} MFLOP/img, {c.operators} operators, "
        f"{c.kernels} not views" for key, c in counts.items()))
    print(f"\nH100/H200 PROJECTION (not a measurement) of make figures PROFILE=paper, fp32 default, "
          f"{args.gpu_tflops:g} effective TFLOP/s, best k ≤ {args.gpu_cores} runs at once on one GPU:\n")
    hosts = (5.0, 10.0, 20.0)
    print("| GPU sharing, shortest kernel | " + " | ".join(f"host {h:g} µs/operator" for h in hosts) + " |")
    print("|---|" + "---:|" * len(hosts))
    for kernel_us, mps in ((3.0, False), (5.0, False), (10.0, False), (5.0, True)):
        cells = []
        for host in hosts:
            rates = gpu_rates(cpu, counts, args.gpu_tflops, host, kernel_us, args.gpu_cores, mps)
            seconds, k = best_packed(profile, rates, notebook_overhead)
            cells.append(f"{seconds / 60:.0f} min (k={k})")
        sharing = "MPS (FLOP-bound)" if mps else "time-sliced"
        print(f"| {sharing}, {kernel_us:g} µs | " + " | ".join(cells) + " |")
    rates = gpu_rates(cpu, counts, args.gpu_tflops, args.gpu_host_us, args.gpu_kernel_us, args.gpu_cores)
    parts = project(profile, rates, profile.methods, notebook_overhead).parts()
    images = sum(len(profile.methods) * len(profile.seeds) * sum(n * e.train.epochs_for_step(step)
                                                                    for step, n in enumerate(e.label_counts()))
                 for e in profile.experiments)
    rest = sum(parts.values()) - parts["train"]
    print(f"\nTo finish in {GOAL_SECONDS // 60} min, the {images / 1e6:.0f} M training images must go through at "
          f"≥ {images / (GOAL_SECONDS - rest):,.0f} img/s in all (everything else, serial: {rest:,.0f} s). "
          f"One eager run reaches {rates.train[(64, False)]:,.0f} img/s here "
          f"({args.gpu_host_us:g} µs/operator, {args.gpu_kernel_us:g} µs kernels); time-sliced runs at most "
          f"{rates.packing[max(rates.packing)] * rates.train[(64, False)]:,.0f} img/s together.")
    return rates


# --- the two-step check -------------------------------------------------------------------------------------

def proc_status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_memory() -> float:
    """Reset the kernel's resident-set high-water mark (VmHWM) to the current VmRSS; return that, in MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return proc_status_mib("VmRSS")


def calibrate(stored: dict, config: ExperimentConfig, threads: int, statistic: str) -> Throughput:
    """The rates a two-step run of ``config`` uses (fp32), measured now with bench_training.py's code.

    Training with and without P, inference with and without P (2 rounds of 2-s windows each),
    the metrics, and kcenter_greedy at (pool, ξ, β) on 512-d features (plain core-set); the rest
    (VAE, t-SNE) as in ``stored``.
    """
    import bench_training as bench
    from alvae_utils.selection.kcenter import kcenter_greedy

    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    batch = config.train.batch_size
    fresh = {**stored, "metrics": bench.measure_metrics()}
    fresh["training"] = bench.interleave([bench.training_case(cpu, batch, lp, "fp32", 2.0) for lp in (False, True)],
                                         2, "calibration, training")
    fresh["features"] = bench.interleave([bench.features_case(cpu, lp, "fp32", 2.0) for lp in (False, True)], 2,
                                         "calibration, inference")
    features, mask = bench.make_problem(config.pool_size, 512, config.initial_labels, seed=0, device=cpu)
    start = time.perf_counter()
    kcenter_greedy(features, mask, config.budget)
    fresh["selection"] = [{"n": config.pool_size, "d": 512, "labeled": config.initial_labels,
                           "budget": config.budget, "seconds": time.perf_counter() - start}]
    rates = Throughput.from_json(fresh, "fp32", statistic)
    assert rates is not None  # both LP cases were just measured
    return rates


def check_projection(config: ExperimentConfig, method: Method, eval_size: int, task: str, rates: Throughput
                     ) -> dict[str, float]:
    """Projected seconds of one run as the store records them (train, select, eval) plus the rest of its wall time
    ("other": model construction, and the VAE for a +vae method)."""
    phases = run_phases(config, method, eval_size, task, rates)
    vae = (config.pool_size * config.vae.epochs / rates.vae_train + config.pool_size / rates.vae_encode
           if method.family is not None else 0.0)
    other = phases.pop("build") + vae
    return {**phases, "other": other}


def two_step_check(stored: dict, statistic: str, method_labels: list[str], tolerance: float) -> bool:
    """Run the paper's shapes for two steps on Fashion-MNIST and compare each run with its projection.

    Two projections: from ``stored`` (the throughput file, measured earlier), and from rates
    measured just before and just after each run with the benchmark's own code (their mean).
    On a shared machine the load moves between the two, so the verdict (every run's total
    within ``tolerance``) uses the second: it tests what the model counts, at the load the
    run met. Returns the verdict; True when Fashion-MNIST is not installed (skipped).
    """
    from alvae_utils.selection.features import FeatureContext, pool_features
    from alvae_utils.experiment.loop import run_algorithm1
    from alvae_utils.experiment.results import ResultStore

    stored_rates = Throughput.from_json(stored, "fp32", statistic)
    base = get_profile("paper").experiment("mnist")
    config = replace(base, dataset="fashionmnist", max_labels=2 * base.initial_labels,
                     train=replace(base.train, initial_epochs=1, epoch_increment=0, pretrained=False))
    config.validate()
    try:
        pool, evaluation = load_experiment_data(config.dataset, config.pool_size, config.eval_size,
                                                seed=config.pool_seed, download=False)
    except DataUnavailableError as error:
        print(f"\nCheck skipped: Fashion-MNIST is not available ({error}). Install Debian's dataset-fashion-mnist.")
        return True
    threads = stored["hardware"]["threads"]
    device = torch.device("cpu")
    print(f"\nCheck: {config.dataset}, pool {config.pool_size:,}, ξ = β = {config.budget:,}, "
          f"η = {config.max_labels:,}, 1 epoch per step, batch {config.train.batch_size}, "
          f"from scratch (no ImageNet weights offline), {len(evaluation):,} evaluation images, "
          f"{threads} thread(s), CPU, {statistic} rates. Load average before: {os.getloadavg()[0]:.2f}.")
    task = dataset_task(config.dataset)
    table, ok = [], True
    before_mib = reset_peak_memory()
    previous_root = os.environ.get("ALVAE_RESULTS_ROOT")
    with tempfile.TemporaryDirectory() as root:
        os.environ["ALVAE_RESULTS_ROOT"] = root  # the VAE cache, too, goes to the temporary root
        store = ResultStore("paper-check", root=Path(root))
        for label in method_labels:
            method = Method.parse(label)
            around = [calibrate(stored, config, threads, statistic)]
            torch.set_num_threads(threads)
            start = time.perf_counter()
            family = None
            if method.family is not None:
                family = pool_features(method.family, FeatureContext(pool, config.vae, config.pool_seed, device,
                                                                     progress=False))
            rows = run_algorithm1(config, method, 0, pool, evaluation, store, family_features=family, device=device,
                                  progress=False)
            wall = time.perf_counter() - start
            around.append(calibrate(stored, config, threads, statistic))
            measured = {phase: float(rows[f"{phase}_seconds"].sum()) for phase in ("train", "select", "eval")}
            measured["other"] = wall - sum(measured.values())
            from_file = check_projection(config, method, len(evaluation), task, stored_rates)
            now = [check_projection(config, method, len(evaluation), task, rates) for rates in around]
            from_around = {phase: (now[0][phase] + now[1][phase]) / 2 for phase in now[0]}
            for phase in measured:
                table.append((label, phase, measured[phase], from_file[phase], from_around[phase]))
            totals = (wall, sum(from_file.values()), sum(from_around.values()))
            table.append((label, "**total**", *totals))
            ok &= abs(totals[2] / wall - 1) <= tolerance
    if previous_root is None:
        del os.environ["ALVAE_RESULTS_ROOT"]
    else:
        os.environ["ALVAE_RESULTS_ROOT"] = previous_root
    peak_mib = proc_status_mib("VmHWM")
    print("\n| method | phase | measured (s) | projected, file rates (s) | ratio | projected, rates around the run (s) "
          "| ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, phase, measured_s, file_s, around_s in table:
        print(f"| {label} | {phase} | {measured_s:.1f} | {file_s:.1f} | {file_s / measured_s:.2f} | {around_s:.1f} | "
              f"{around_s / measured_s:.2f} |")
    print(f"\n'other' is model construction, the VAE (for +vae), the data fingerprint and the result store. Peak "
          f"resident memory during the check: {peak_mib:,.0f} MiB ({peak_mib - before_mib:,.0f} MiB above the "
          f"{before_mib:,.0f} MiB resident before it, data loaded). Load average after: {os.getloadavg()[0]:.2f}.")
    print(f"Projection from the rates around each run {'within' if ok else 'NOT within'} {tolerance:.0%} of the "
          "measured total for every run.")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("throughput", nargs="*", type=Path,
                        help="bench_training.py JSON files (default: benchmarks/throughput/throughput-*.json)")
    parser.add_argument("--rate", choices=("median", "best"), default="median",
                        help="which timed window's img/s to project with: the median (what a run meets on a "
                             "shared machine) or the best (the least disturbed)")
    parser.add_argument("--notebook-overhead", type=float, default=10.0,
                        help="seconds per notebook execution beyond its compute (kernel, imports, plots)")
    parser.add_argument("--gpu", action="store_true", help="add the H100/H200 projection (assumptions below)")
    parser.add_argument("--gpu-tflops", type=float, default=50.0,
                        help="effective TFLOP/s of these small convolutions on the GPU (assumption)")
    parser.add_argument("--gpu-host-us", type=float, default=10.0,
                        help="host µs per aten operator in eager mode, dispatch and launch (assumption)")
    parser.add_argument("--gpu-kernel-us", type=float, default=5.0, help="shortest GPU kernel, µs (assumption)")
    parser.add_argument("--gpu-cores", type=int, default=16, help="host cores, the most runs at once per GPU")
    parser.add_argument("--check", action="store_true", help="run the two-step check on Fashion-MNIST")
    parser.add_argument("--check-methods", default="coreset,lossprediction",
                        help="methods of the check (a +vae method trains the VAE: 20 epochs of 25,000 images)")
    parser.add_argument("--tolerance", type=float, default=0.25)
    parser.add_argument("--profile", default="paper", choices=list(PROFILES),
                        help="the profile projected (default paper; the throughput files must hold its batch size)")
    args = parser.parse_args(argv)

    paths = args.throughput or sorted(RESULTS.glob("throughput-*.json"))
    if not paths:
        parser.error("no throughput files; run benchmarks/bench_training.py first.")
    all_rates = load_rates(paths, args.rate)
    profile = get_profile(args.profile)
    workload_table(profile)
    if args.gpu:
        host = next(rates for rates in all_rates if rates.settings == "fp32")
        all_rates.append(gpu_table(profile, host, gpu_counts(), args, args.notebook_overhead))
    projection_table(profile, all_rates, args.notebook_overhead)
    if args.check:
        cpu_files = [json.loads(path.read_text()) for path in paths]
        stored = next((s for s in cpu_files if s["hardware"]["device"] == "cpu"
                       and Throughput.from_json(s, "fp32", args.rate) is not None), None)
        if stored is None:
            parser.error("the check needs fp32 measurements of this machine's CPU.")
        return 0 if two_step_check(stored, args.rate, args.check_methods.split(","), args.tolerance) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
