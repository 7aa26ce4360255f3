"""Throughput of alvae's networks on one device, and what each speed setting of TrainConfig buys.

Measures, in images per second (img/s):

* ``training``  — :func:`alvae_utils.training.task_model.train_task_model` (ResNet-18 T, with and without the
  loss-prediction module P) at the profile's batch (``--profile``, default ``paper``: 64) and the quick
  profile's batch 16, for
  each speed setting (``channels_last``, ``bf16``, ``cudnn_benchmark``, ``compile``, ``tf32``) and useful
  combinations. ``fp32`` is the default: IEEE fp32, and deterministic on CUDA
  (:func:`alvae_utils.device.reproducible_cuda`), so ``tf32`` and ``cudnn_benchmark`` measure what
  giving that up buys. Also the set-up time a fresh model pays on its first batches (oneDNN/cuDNN
  primitive creation, and torch.compile's compilation, reported apart).
* ``features``  — :func:`alvae_utils.training.task_model.predict` at batch 1,024 (the selection step's pool
  features, and the same forward pass as evaluation); and the seconds of
  :func:`alvae_utils.training.metrics.classification_metrics` (accuracy, AUC) on 10,000 samples.
* ``vae``       — :func:`alvae_utils.training.vae.train_vae` (one epoch of the profile's VAE: batch 128 at
  ``paper``) and :func:`encode_mu`.
* ``simclr``    — :func:`alvae_utils.training.simclr.train_simclr` (one epoch of the profile's SimCLR fit, each
  image giving two views: img/s counts pool images, not views) and :func:`encode_simclr`.
* ``selection`` — :func:`alvae_utils.selection.kcenter.kcenter_greedy` (core-set, Eq. 1) on 544-d features
  at the profile's pools (25,000 and 30,000 at ``paper``) for every labeled-set size of its curve (β = 3,000).
* ``tsne``      — :func:`alvae_utils.experiment.tsne.embed` on as many points as the profile's t-SNE
  experiment embeds (Figs. 5–6; 2,556 at ``paper``), 544-d; seconds.
* ``ray``       — k runs at once on the device under Ray: k remote tasks, with ``num_cpus=1`` and one
  torch thread each on the CPU, or ``num_gpus=1/k`` on CUDA, train until a common deadline. Reports
  the aggregate img/s over the window in which all k were training, against a serial run (``--threads``
  threads; on CUDA one run alone) measured the same way just before.

Images are random uint8 (N, 1, 28, 28) with random labels: throughput does not depend on content.
Every case warms up first; then the cases of a part take turns, ``--rounds`` timed windows of about
``--seconds`` each, so that a busy spell of a shared machine hits them alike. The best window (the
least disturbed) and the median are reported, with ratios to fp32 from the best. The numbers are
printed as Markdown tables and written as JSON (``benchmarks/throughput/throughput-<device>.json``,
``<device>`` naming the CPU, cores and threads, or the GPU; merged with what an earlier run of other
parts wrote there), which ``project_paper_runtime.py`` reads. A smaller ``--profile`` (``ci``) is a smoke
run, as ``gpu_check.py --tiny`` makes: the projection scales its selection and t-SNE seconds linearly.

    python benchmarks/bench_training.py                          # everything, cuda if available
    python benchmarks/bench_training.py --only training,features --settings fp32,bf16
    python benchmarks/bench_training.py --device cpu --threads 2 --no-compile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_selection import make_problem  # noqa: E402

from alvae_utils.config import SimCLRConfig, TrainConfig, VAEConfig  # noqa: E402
from alvae_utils.data.datasets import MULTICLASS, MULTILABEL  # noqa: E402
from alvae_utils.device import INFERENCE_BATCH, synchronized_clock  # noqa: E402
from alvae_utils.training.metrics import classification_metrics  # noqa: E402
from alvae_utils.experiment.profiles import PROFILES, Profile, get_profile  # noqa: E402
from alvae_utils.selection.kcenter import kcenter_greedy  # noqa: E402
from alvae_utils.training.task_model import build_task_model, predict, train_task_model  # noqa: E402
from alvae_utils.experiment.tsne import embed  # noqa: E402
from alvae_utils.training.simclr import encode_simclr, train_simclr  # noqa: E402
from alvae_utils.training.vae import encode_mu, train_vae  # noqa: E402

PARTS = ("training", "features", "vae", "simclr", "selection", "tsne", "ray")
SETTINGS: dict[str, dict[str, bool]] = {
    "fp32": {},
    "channels_last": {"channels_last": True},
    "bf16": {"bf16": True},
    "bf16+channels_last": {"bf16": True, "channels_last": True},
    "cudnn_benchmark": {"cudnn_benchmark": True},
    "cudnn_benchmark+bf16+channels_last": {"cudnn_benchmark": True, "bf16": True, "channels_last": True},
    "compile": {"compile": True},
    "compile+bf16+channels_last": {"compile": True, "bf16": True, "channels_last": True},
    "tf32": {"tf32": True},
    "tf32+channels_last": {"tf32": True, "channels_last": True},
}
"""Speed settings measured, by label; ``fp32`` is the default (all off)."""
LP_SETTINGS = ("fp32", "bf16+channels_last", "cudnn_benchmark+bf16+channels_last", "tf32")
"""With the loss-prediction module only these are measured: P adds little, and the ratios carry over."""
SMALL_BATCH = 16  # the quick profile's: measured beside the profile's own batch, where overheads dominate
NUM_CLASSES = 10
RESULTS = ROOT / "benchmarks" / "throughput"  # not "results": .gitignore ignores every results/ folder
Column = tuple[str, str, Callable[[dict], str]]  # a table column: header, alignment (":" = right), cell function


def synthetic(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images (n, 1, 28, 28) and labels (n,) in [0, 10), seeded."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, NUM_CLASSES, (n,), generator=generator)


def applicable(label: str, device: torch.device, compile_allowed: bool) -> bool:
    """Whether a setting is measured here: cuDNN's and TF32 only on CUDA (no-ops elsewhere), compile unless
    --no-compile."""
    speed = SETTINGS[label]
    cuda_only = speed.get("cudnn_benchmark") or speed.get("tf32")
    return (device.type == "cuda" or not cuda_only) and (compile_allowed or not speed.get("compile"))


@dataclass
class Case:
    """One measured configuration: its JSON row, and a function that runs one timed window → (images, seconds)."""

    row: dict
    window: Callable[[], tuple[int, float]]


def interleave(cases: list[Case], rounds: int, what: str) -> list[dict]:
    """Run every case's window ``rounds`` times, round-robin, so slow spells of a shared machine hit all alike.

    Each row gets ``img_per_s`` (the best window: the least disturbed) and ``img_per_s_median``.
    """
    rates: list[list[float]] = [[] for _ in cases]
    for round_ in range(rounds):
        for case, case_rates in zip(cases, rates, strict=True):
            images, seconds = case.window()
            case_rates.append(images / seconds)
        print(f"  {what}: round {round_ + 1}/{rounds} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    for case, case_rates in zip(cases, rates, strict=True):
        case.row.update(img_per_s=max(case_rates), img_per_s_median=statistics.median(case_rates), windows=rounds)
    return [case.row for case in cases]


def training_case(device: torch.device, batch: int, lp: bool, label: str, seconds: float) -> Case:
    """A train_task_model case; measures the set-up seconds of a fresh model (and of a second one) on the way.

    Set-up = time of a fresh model's first 4 batches minus their steady time: primitive creation,
    plus compilation under ``compile``. Every AL step builds a fresh model, so a run pays it at
    every step; the second model shows what torch.compile's caches leave to pay.
    """
    config = TrainConfig(batch_size=batch, **SETTINGS[label])
    warm = 4 * batch
    images, labels = synthetic(warm)

    def run(model, lp_module, n: int) -> float:  # train_task_model's seconds end once the device has finished
        return train_task_model(model, images[:n], labels[:n], MULTICLASS, 1, config, seed=1, lp_module=lp_module,
                                progress=False).seconds

    def fresh(seed: int) -> tuple:
        return build_task_model(NUM_CLASSES, config, seed, device, with_loss_prediction=lp)

    start = synchronized_clock(device)
    modules = fresh(0)
    build = synchronized_clock(device) - start
    first = run(*modules, warm)
    steady = min(run(*modules, warm) for _ in range(2))
    second = run(*fresh(1), warm)
    n = max(warm, round(seconds * warm / steady / batch) * batch)
    images, labels = synthetic(n)
    row = {"batch": batch, "lp": lp, "settings": label, "images_per_window": n, "build_s": build,
           "setup_s": max(0.0, first - steady), "setup_next_model_s": max(0.0, second - steady)}
    print(f"  train batch {batch} {'LP' if lp else '  '} {label}: set-up {row['setup_s']:.1f} s "
          f"(next model {row['setup_next_model_s']:.1f} s), ~{warm / steady:.0f} img/s", flush=True)
    return Case(row, lambda: (n, run(*modules, n)))


def features_case(device: torch.device, lp: bool, label: str, seconds: float) -> Case:
    """A predict case (batch 1,024); measures a fresh model's set-up on its first batch."""
    config = TrainConfig(**SETTINGS[label])
    model, lp_module = build_task_model(NUM_CLASSES, config, 0, device, with_loss_prediction=lp)
    images, _ = synthetic(INFERENCE_BATCH)

    def run(batch_images: torch.Tensor) -> float:
        start = synchronized_clock(device)
        predict(model, batch_images, lp_module)
        return synchronized_clock(device) - start

    first = run(images)
    steady = min(run(images) for _ in range(2))
    n = max(INFERENCE_BATCH, round(seconds / steady) * INFERENCE_BATCH)
    images, _ = synthetic(n)
    row = {"lp": lp, "settings": label, "images_per_window": n, "setup_s": max(0.0, first - steady)}
    return Case(row, lambda: (n, run(images)))


def measure_metrics(n: int = 10_000) -> dict[str, float]:
    """Seconds of classification_metrics (accuracy, AUC) on ``n`` samples: 10 classes, and 14 labels (ChestMNIST)."""
    generator = torch.Generator().manual_seed(0)
    seconds = {}
    for task, labels in ((MULTICLASS, torch.randint(0, 10, (n,), generator=generator)),
                         (MULTILABEL, torch.randint(0, 2, (n, 14), generator=generator))):
        logits = torch.randn(n, 10 if task == MULTICLASS else 14, generator=generator)
        start = time.perf_counter()
        classification_metrics(logits, labels, task)
        seconds[task] = time.perf_counter() - start
    return {"samples": n, "seconds": seconds}


def batches(profile: Profile) -> tuple[int, ...]:
    """The training batches measured: the profile's, then :data:`SMALL_BATCH` (paper: 64 and 16)."""
    return tuple(dict.fromkeys([*(experiment.train.batch_size for experiment in profile.experiments), SMALL_BATCH]))


def fit_cases(device: torch.device, seconds: float, config: VAEConfig | SimCLRConfig, train: Callable,
              encode: Callable, encode_part: str) -> list[Case]:
    """Training (one epoch of ``config`` by ``train(images, config, seed=, device=, progress=)``) and encoding
    (``encode(model, images)``) cases of a model fitted once per pool, on as many images as fill a window."""
    config = replace(config, epochs=1)
    probe = 8 * config.batch_size
    images, _ = synthetic(probe)
    train(images, config, seed=0, device=device, progress=False)  # warm-up
    start = synchronized_clock(device)
    model, _ = train(images, config, seed=0, device=device, progress=False)
    probe_seconds = synchronized_clock(device) - start
    n = max(probe, round(seconds * probe / probe_seconds / config.batch_size) * config.batch_size)
    images, _ = synthetic(n)

    def train_window() -> tuple[int, float]:
        start = synchronized_clock(device)
        train(images, config, seed=0, device=device, progress=False)
        return n, synchronized_clock(device) - start

    def encode_window() -> tuple[int, float]:
        start = synchronized_clock(device)
        encode(model, images)
        return n, synchronized_clock(device) - start

    encode_window()  # warm-up
    return [Case({"part": "train", "batch": config.batch_size, "images_per_window": n}, train_window),
            Case({"part": encode_part, "batch": INFERENCE_BATCH, "images_per_window": n}, encode_window)]


def measure_selection(device: torch.device, repeats: int, profile: Profile, d: int = 544) -> list[dict]:
    """kcenter_greedy seconds (best of ``repeats``) at the profile's pools, labeled-set sizes and budgets."""
    rows = []
    for experiment in profile.experiments:
        n, budget = experiment.pool_size, experiment.budget
        for labeled in experiment.label_counts()[:-1]:  # the last count is never followed by a selection
            features, mask = make_problem(n, d, labeled, seed=0, device=device)
            times = []
            for _ in range(repeats):
                start = synchronized_clock(device)
                kcenter_greedy(features, mask, budget)
                times.append(synchronized_clock(device) - start)
            rows.append({"n": n, "d": d, "labeled": labeled, "budget": budget, "seconds": min(times)})
            print(f"  kcenter_greedy N={n:,} |L|={labeled:,} β={budget:,}: {min(times):.2f} s", flush=True)
    return rows


def measure_tsne(profile: Profile, d: int = 544) -> dict:
    """Seconds of one openTSNE embedding of the profile's t-SNE point count (labeled + sampled unlabeled)."""
    tsne = profile.tsne
    n = tsne.initial_labels + round(tsne.unlabeled_fraction * (tsne.pool_size - tsne.initial_labels))
    features = torch.relu(torch.randn(n, d, generator=torch.Generator().manual_seed(0))).double().numpy()
    start = time.perf_counter()
    embed(features, seed=0, perplexity=tsne.perplexity)
    seconds = time.perf_counter() - start
    print(f"  t-SNE of {n:,} points: {seconds:.1f} s", flush=True)
    return {"points": n, "d": d, "seconds": seconds}


def _ray_worker(device_type: str, batch: int, label: str, threads: int, run_until: float
                ) -> list[tuple[float, float, int]]:
    """One Ray task: warm a fresh model up, then train chunks of 8 batches until ``run_until`` (wall clock).

    Returns the (start, end, images) of every chunk after the warm-up.
    """
    torch.set_num_threads(threads)
    device = torch.device(device_type)
    config = TrainConfig(batch_size=batch, **SETTINGS[label])
    images, labels = synthetic(8 * batch)
    model, _ = build_task_model(NUM_CLASSES, config, 0, device)
    train_task_model(model, images, labels, MULTICLASS, 1, config, 1, progress=False)
    chunks = []
    while time.time() < run_until:
        start = time.time()
        train_task_model(model, images, labels, MULTICLASS, 1, config, 1, progress=False)  # returns once finished
        chunks.append((start, time.time(), len(images)))
    return chunks


def _concurrent(ray, device: torch.device, batch: int, label: str, k: int, cpus_each: int, seconds: float
                ) -> tuple[float, list[float], float]:
    """k Ray tasks training at once until a common deadline: (aggregate img/s, per-task img/s, window seconds).

    The window counted is the one in which all k were past start-up and warm-up; only chunks
    wholly inside it count.
    """
    resources = {"num_cpus": cpus_each} if device.type == "cpu" else {"num_cpus": cpus_each, "num_gpus": 1 / k}
    task = ray.remote(**resources)(_ray_worker)
    # 30 s for the workers to start, import torch and warm up before the timed window.
    runs = ray.get([task.remote(device.type, batch, label, cpus_each, time.time() + 30 + seconds) for _ in range(k)])
    if any(not chunks for chunks in runs):
        raise RuntimeError("a Ray task did not finish its warm-up within 30 s; the machine is too busy.")
    window_start = max(chunks[0][0] for chunks in runs)
    window_end = min(chunks[-1][1] for chunks in runs)
    window = window_end - window_start
    counted = [sum(n for start, end, n in chunks if start >= window_start and end <= window_end) for chunks in runs]
    if window <= 0 or min(counted) == 0:
        raise RuntimeError(f"the {k} Ray tasks never trained at the same time; raise --seconds.")
    return sum(counted) / window, [n / window for n in counted], window


def measure_ray(device: torch.device, cases: list[tuple[int, str]], ks: list[int], seconds: float,
                threads: int) -> list[dict]:
    """Aggregate img/s of k concurrent training runs under Ray, for each (batch, setting) case and k.

    Side by side with each case's k runs, the serial reference is measured the same way: one
    Ray task with ``threads`` threads on the CPU (on CUDA, one task alone on the GPU: k = 1).
    """
    import ray

    cpus = os.cpu_count() or 1
    ray.init(num_cpus=max(cpus, max(ks)), num_gpus=1 if device.type == "cuda" else 0, include_dashboard=False,
             log_to_driver=False)
    rows = []
    try:
        for batch, label in cases:
            serial = _concurrent(ray, device, batch, label, 1, threads if device.type == "cpu" else 1, seconds)[0]
            print(f"  Ray batch {batch} {label}: serial reference {serial:.0f} img/s", flush=True)
            for k in ks:
                aggregate, per_run, window = _concurrent(ray, device, batch, label, k, 1, seconds)
                rows.append({"batch": batch, "settings": label, "k": k, "aggregate_img_per_s": aggregate,
                             "serial_img_per_s": serial, "ratio_to_serial": aggregate / serial, "window_s": window,
                             "per_run_img_per_s": per_run, "threads_per_run": 1})
                print(f"  Ray batch {batch} {label} k={k}: {aggregate:.0f} img/s in all "
                      f"(×{aggregate / serial:.2f} of serial) over {window:.1f} s", flush=True)
    finally:
        ray.shutdown()
    return rows


def cpu_model() -> str:
    """lscpu's model name (falls back to platform.processor())."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        match = re.search(r"^Model name:\s*(.+)$", out, re.MULTILINE)
        if match:
            return match.group(1).strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return platform.processor() or "unknown CPU"


def hardware(device: torch.device, threads: int) -> dict:
    """What the numbers ran on: device name, cores, threads, torch version, load average."""
    info = {"device": device.type, "cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load_average_start": os.getloadavg()[0]}
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    info["avx512_bf16"] = "avx512_bf16" in flags
    info["name"] = (torch.cuda.get_device_name(device) if device.type == "cuda"
                    else f"{info['cpu']} ({info['cores']} cores)")
    return info


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def default_output(device: torch.device, info: dict) -> Path:
    name = info["name"] if device.type == "cuda" else f"cpu-{info['cpu']}-{info['cores']}cores-{info['threads']}threads"
    return RESULTS / f"throughput-{slug(name)}.json"


def table(rows: list[dict], columns: list[Column]) -> str:
    """A Markdown table of ``rows``: (header, alignment ':' or '', cell function) per column."""
    lines = ["| " + " | ".join(header for header, _, _ in columns) + " |",
             "|" + "|".join("---:" if align else "---" for _, align, _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row) for _, _, cell in columns) + " |" for row in rows]
    return "\n".join(lines)


def ratio_to_fp32(rows: list[dict], keys: tuple[str, ...]) -> None:
    """Add ``ratio_to_fp32``: img/s over the fp32 row with the same ``keys`` (batch, LP)."""
    base = {tuple(r[k] for k in keys): r["img_per_s"] for r in rows if r["settings"] == "fp32"}
    for row in rows:
        reference = base.get(tuple(row[k] for k in keys))
        row["ratio_to_fp32"] = row["img_per_s"] / reference if reference else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds of one timed window (after warm-up)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed windows per case, round-robin over the cases; best and median are reported")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {','.join(PARTS)}")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="speed settings to measure (labels)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes of compilation on CPU)")
    parser.add_argument("--ray-k", default=None, help="k values under Ray (default: 1..cores on CPU, 1,2,4,8 on CUDA)")
    parser.add_argument("--profile", default="paper", choices=list(PROFILES),
                        help="the profile whose batch, VAE, pools and t-SNE size are measured (default paper, what "
                             "project_paper_runtime.py projects; ci: a quick smoke run)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default benchmarks/throughput/throughput-<device>.json)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    labels = [label.strip() for label in args.settings.split(",") if label.strip()]
    unknown = sorted(set(parts) - set(PARTS)) + sorted(set(labels) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown part or setting {unknown}; parts: {', '.join(PARTS)}; settings: {', '.join(SETTINGS)}")
    labels = [label for label in labels if applicable(label, device, not args.no_compile)]
    info = hardware(device, args.threads)
    info["profile"] = args.profile
    profile = get_profile(args.profile)
    output = args.output or default_output(device, info)
    stored = json.loads(output.read_text()) if output.exists() else {}
    stored["hardware"] = info
    print(f"{info['name']}, torch {info['torch']}, {args.threads} threads, "
          f"load average {info['load_average_start']:.2f}")

    combinations = [(lp, label) for lp in (False, True) for label in labels if not lp or label in LP_SETTINGS]
    if "training" in parts:
        cases = [training_case(device, batch, lp, label, args.seconds) for batch in batches(profile)
                 for lp, label in combinations]
        stored["training"] = interleave(cases, args.rounds, "training")
        ratio_to_fp32(stored["training"], ("batch", "lp"))
    if "features" in parts:
        cases = [features_case(device, lp, label, args.seconds) for lp, label in combinations]
        stored["features"] = interleave(cases, args.rounds, "features")
        ratio_to_fp32(stored["features"], ("lp",))
        stored["metrics"] = measure_metrics()
    if "vae" in parts:
        cases = fit_cases(device, args.seconds, profile.experiments[0].vae, train_vae, encode_mu, "encode_mu")
        stored["vae"] = interleave(cases, args.rounds, "VAE")
    if "simclr" in parts:
        experiment = profile.experiments[0]
        cases = fit_cases(device, args.seconds, experiment.simclr.resolved(experiment.vae), train_simclr,
                          encode_simclr, "encode_simclr")
        stored["simclr"] = interleave(cases, args.rounds, "SimCLR")
    if "selection" in parts:
        stored["selection"] = measure_selection(device, repeats=2, profile=profile)
    if "tsne" in parts:
        stored["tsne"] = measure_tsne(profile)
    if "ray" in parts:
        ks = ([int(k) for k in args.ray_k.split(",")] if args.ray_k
              else list(range(1, (os.cpu_count() or 1) + 1)) if device.type == "cpu" else [1, 2, 4, 8])
        sizes = batches(profile)
        cases = [(batch, "fp32") for batch in sizes] + ([(sizes[0], "bf16+channels_last")]
                                                        if "bf16+channels_last" in labels else [])
        stored["ray"] = measure_ray(device, cases, ks, args.seconds * args.rounds, args.threads)
    stored["hardware"]["load_average_end"] = os.getloadavg()[0]

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(stored, indent=1) + "\n")
    report(stored)
    print(f"\nwritten to {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")


RATES: list[Column] = [("img/s (best)", ":", lambda r: f"{r['img_per_s']:.0f}"),
                       ("img/s (median)", ":", lambda r: f"{r['img_per_s_median']:.0f}")]
RATIO: Column = ("× fp32", ":", lambda r: "" if r.get("ratio_to_fp32") is None else f"{r['ratio_to_fp32']:.2f}")
LP: Column = ("LP module", "", lambda r: "yes" if r["lp"] else "no")
SETTING: Column = ("setting", "", lambda r: r["settings"])


def report(stored: dict) -> None:
    """Print the stored measurements as Markdown tables."""
    info = stored["hardware"]
    print(f"\n{info['name']}; torch {info['torch']}; {info['threads']} threads; "
          f"load average {info['load_average_start']:.2f} → {info.get('load_average_end', float('nan')):.2f}")
    if stored.get("training"):
        print("\nTask-model training (train_task_model):\n")
        print(table(stored["training"], [
            ("batch", ":", lambda r: str(r["batch"])), LP, SETTING, *RATES, RATIO,
            ("set-up, first model (s)", ":", lambda r: f"{r['setup_s']:.1f}"),
            ("set-up, next model (s)", ":", lambda r: f"{r['setup_next_model_s']:.1f}")]))
    if stored.get("features"):
        print("\nFeature extraction (predict, batch 1,024):\n")
        print(table(stored["features"], [LP, SETTING, *RATES, RATIO,
                                          ("set-up (s)", ":", lambda r: f"{r['setup_s']:.1f}")]))
    if stored.get("metrics"):
        metrics = stored["metrics"]
        print(f"\nclassification_metrics on {metrics['samples']:,} samples: "
              + ", ".join(f"{task} {seconds:.2f} s" for task, seconds in metrics["seconds"].items()))
    for part, title in (("vae", "VAE (fp32)"), ("simclr", "SimCLR (fp32; train: pool images, two views each)")):
        if stored.get(part):
            print(f"\n{title}:\n")
            print(table(stored[part], [("part", "", lambda r: r["part"]), ("batch", ":", lambda r: str(r["batch"])),
                                       *RATES]))
    if stored.get("selection"):
        print("\nkcenter_greedy (core-set), d = 544, best of 2:\n")
        print(table(stored["selection"], [
            ("N", ":", lambda r: f"{r['n']:,}"), ("|L|", ":", lambda r: f"{r['labeled']:,}"),
            ("β", ":", lambda r: f"{r['budget']:,}"), ("seconds", ":", lambda r: f"{r['seconds']:.2f}")]))
    if stored.get("tsne"):
        print(f"\nt-SNE (openTSNE, n_jobs=1) of {stored['tsne']['points']:,} points: {stored['tsne']['seconds']:.1f} s")
    if stored.get("ray"):
        print("\nk concurrent training runs under Ray (one thread each on CPU):\n")
        print(table(stored["ray"], [
            ("batch", ":", lambda r: str(r["batch"])), SETTING, ("k", ":", lambda r: str(r["k"])),
            ("aggregate img/s", ":", lambda r: f"{r['aggregate_img_per_s']:.0f}"),
            ("serial img/s (--threads, just before)", ":", lambda r: f"{r['serial_img_per_s']:.0f}"),
            ("× serial", ":", lambda r: f"{r['ratio_to_serial']:.2f}"),
            ("per run img/s", "", lambda r: ", ".join(f"{x:.0f}" for x in r["per_run_img_per_s"])),
            ("window (s)", ":", lambda r: f"{r['window_s']:.1f}")]))


if __name__ == "__main__":
    main()
