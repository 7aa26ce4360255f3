"""Time and peak memory of core-set (Eq. 1), MedAL (Eq. 2) and the reference heuristics' selection at the paper's scale.

The reference heuristics (margin, BALD, BADGE, TypiClust) read the same features: the first 512 columns
are T_f (h), the last 32 the family block (v: BADGE's ``+vae`` block at α = 1, TypiClust's representation),
and the logits are h·W + b of a seeded 10-class head. BALD's step includes its T = 20 Monte Carlo passes
of the head; BADGE's gradient embedding is 5,120-d (+32), never materialised.

Defaults: N = 25,000 pool points, d = 544 (512 ResNet-18 + 32 VAE features, Eq. 6),
3,000 labeled, budget 3,000, float32. Features are random but shaped like real
ones: ReLU'd Gaussians for the ResNet block (post-ReLU pooled activations),
Gaussians for the VAE block (means μ under an N(0, I) prior).

Compared with the full-distance-matrix k-center that common AL toolkits use
(the whole N × N matrix, min over its labeled columns, one column per pick).
Everything is then rerun on the same features in float64, where both k-centers
must pick exactly the same points. Each float32 run is compared with its float64
run: kcenter_greedy and medal_greedy decide near ties with exact distances, so
they must agree completely; the full-matrix baseline parts at a near tie.

Every measurement runs in a fresh subprocess, so one run's allocations cannot
hide another's peak. Peak memory on CPU: the process's resident-set high-water
mark (VmHWM in /proc/self/status) is reset (``echo 5 > /proc/self/clear_refs``)
after the features are built; the number reported is VmHWM after the call minus
VmRSS before it. On CUDA: ``torch.cuda.max_memory_allocated`` over the call.

Realistic features (``--features fashion``): ResNet-18 features (512) and VAE
means (32) of Fashion-MNIST training images, from a task model and a VAE trained
briefly here, tiled to N rows with small Gaussian noise (``--noise`` times each
column's std). Tiling makes clusters of near-duplicates, which use up the lazy
candidates within a few picks: the hard case for kcenter_greedy's refreshes.
``--million`` measures both feature kinds at N = 1,000,000 and reports each peak
as a ratio to the input's size.

    python benchmarks/bench_selection.py                       # paper scale, cuda if available
    python benchmarks/bench_selection.py --device cpu --threads 2 --repeats 2
    python benchmarks/bench_selection.py --million             # N = 1,000,000, random and Fashion-MNIST
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from alvae_utils.config import TrainConfig, VAEConfig  # noqa: E402
from alvae_utils.data.datasets import DataUnavailableError, load_dataset  # noqa: E402
from alvae_utils.selection.badge import badge_select  # noqa: E402
from alvae_utils.selection.bald import bald_scores, mc_dropout_probabilities  # noqa: E402
from alvae_utils.selection.kcenter import kcenter_greedy  # noqa: E402
from alvae_utils.selection.margin import margin_scores  # noqa: E402
from alvae_utils.selection.ranking import top_k_select  # noqa: E402
from alvae_utils.selection.typiclust import typiclust_select  # noqa: E402
from alvae_utils.selection.medal import medal_greedy  # noqa: E402
from alvae_utils.training.task_model import build_task_model, predict, train_task_model  # noqa: E402
from alvae_utils.training.vae import encode_mu, train_vae  # noqa: E402

VAE_DIM = 32
TASK_LABELS = 3_000  # the task model is trained on this many of the base images, like ξ = 3,000 initial labels
TASK_EPOCHS = 2
VAE_EPOCHS = 1


def make_problem(n: int, d: int, n_labeled: int, seed: int, device: torch.device,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded features (N, d) and a labeled mask with ``n_labeled`` random points.

    The values are drawn in float32; float64 is the same numbers widened."""
    generator = torch.Generator().manual_seed(seed)
    vae_dim = min(VAE_DIM, d)
    task = torch.relu(torch.randn(n, d - vae_dim, generator=generator))
    vae = torch.randn(n, vae_dim, generator=generator)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:n_labeled]] = True
    return torch.cat([task, vae], dim=1).to(device, dtype), mask.to(device)


def fashion_base_features(n_images: int, seed: int, device: str) -> tuple[np.ndarray, str]:
    """(n_images, 544) float32 features of Fashion-MNIST training images, and a line saying how they were made.

    A ResNet-18 task model (untrained start, no ImageNet weights) trained for TASK_EPOCHS
    epochs on TASK_LABELS of the images gives the 512 T_f features; a VAE trained for
    VAE_EPOCHS epochs on all of them gives the 32 means μ (Eq. 6 with α = 1).
    Raises DataUnavailableError when Fashion-MNIST is not installed (nothing is downloaded).
    """
    data = load_dataset("fashionmnist", "train", download=False)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data.images), generator=generator)[:n_images]
    images, labels = data.images[index], data.labels[index]
    started = time.perf_counter()
    config = TrainConfig()
    model, _ = build_task_model(10, config, seed, device)
    trained = train_task_model(model, images[:TASK_LABELS], labels[:TASK_LABELS], "multi-class", TASK_EPOCHS,
                               config, seed, progress=False)
    task = predict(model, images)
    accuracy = float((task.logits.argmax(1) == labels)[TASK_LABELS:].float().mean())
    vae, history = train_vae(images, VAEConfig(latent_dim=VAE_DIM, epochs=VAE_EPOCHS), seed, device, progress=False)
    features = torch.cat([task.features, encode_mu(vae, images)], dim=1).cpu()
    note = (f"{n_images:,} training images of {data.description}: ResNet-18 trained {TASK_EPOCHS} "
            f"epochs on {TASK_LABELS:,} of them (train accuracy {trained.train_accuracy:.3f}, {accuracy:.3f} on "
            f"the rest) + VAE μ after {VAE_EPOCHS} epoch (negative ELBO {history[-1]['loss']:.1f} nats), "
            f"made in {time.perf_counter() - started:.0f} s")
    return features.numpy(), note


def tile_with_noise(base: torch.Tensor, n: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """Row i of the result is base[i mod len(base)] + noise · std · ε (std per column, ε ~ N(0, 1)).

    The noise is drawn block by block, so building the features needs no second N × d tensor."""
    features = base[torch.arange(n) % len(base)]
    scale = noise * base.std(0)
    for block in features.split(65_536):
        block.add_(torch.randn(block.shape, generator=generator).mul_(scale))
    return features


def full_matrix_kcenter(features: torch.Tensor, labeled_mask: torch.Tensor, budget: int) -> torch.Tensor:
    """Greedy k-center as common toolkits write it: the whole N × N squared-distance matrix
    (built in place, clamped at 0), min over its labeled columns (an N × |L| copy), then
    after each pick the minimum with that pick's column. Same picks as Eq. 1, O(N²) memory."""
    norms = (features * features).sum(1)
    dist = features @ features.T
    dist.mul_(-2.0).add_(norms[:, None]).add_(norms[None, :]).clamp_(min=0.0)
    min_dist = dist[:, labeled_mask].min(1).values
    min_dist[labeled_mask] = float("-inf")
    picks = torch.empty(budget, dtype=torch.long, device=features.device)
    for i in range(budget):
        pick = torch.argmax(min_dist).view(1)
        picks[i:i + 1] = pick
        torch.minimum(min_dist, dist.index_select(1, pick).squeeze(1), out=min_dist)
        min_dist.index_fill_(0, pick, float("-inf"))
    return picks


CLASSES = 10


def head(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h = the first 512 columns, a seeded 10-class head's weight W (10, 512) and bias b), on x's device."""
    h = x[:, :x.shape[1] - VAE_DIM]
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(CLASSES, h.shape[1], generator=generator) / h.shape[1] ** 0.5
    return h, weight.to(x.device, x.dtype), torch.zeros(CLASSES, device=x.device, dtype=x.dtype)


def margin_step(x: torch.Tensor, mask: torch.Tensor, budget: int) -> torch.Tensor:
    h, weight, bias = head(x)
    return top_k_select(-margin_scores(torch.addmm(bias, h, weight.T), "multi-class"), mask, budget)


def bald_step(x: torch.Tensor, mask: torch.Tensor, budget: int) -> torch.Tensor:
    h, weight, bias = head(x)
    probabilities = mc_dropout_probabilities(h, weight, bias, "multi-class", generator=torch.Generator().manual_seed(2))
    return top_k_select(bald_scores(probabilities, "multi-class"), mask, budget)


def badge_step(x: torch.Tensor, mask: torch.Tensor, budget: int) -> torch.Tensor:
    h, weight, bias = head(x)
    return badge_select(torch.addmm(bias, h, weight.T), h, "multi-class", mask, budget,
                        torch.Generator().manual_seed(2), family=x[:, -VAE_DIM:])


METHODS = {
    "kcenter_greedy": lambda x, mask, budget, chunk: kcenter_greedy(x, mask, budget, chunk_size=chunk),
    "medal_greedy": lambda x, mask, budget, chunk: medal_greedy(x, mask, budget),
    "full_matrix_kcenter": lambda x, mask, budget, chunk: full_matrix_kcenter(x, mask, budget),
    "margin": lambda x, mask, budget, chunk: margin_step(x, mask, budget),
    "bald": lambda x, mask, budget, chunk: bald_step(x, mask, budget),
    "badge": lambda x, mask, budget, chunk: badge_step(x, mask, budget),
    "typiclust": lambda x, mask, budget, chunk: typiclust_select(x[:, -VAE_DIM:], mask, budget,
                                                                torch.Generator().manual_seed(2)),
}
REFERENCE = ("margin", "bald", "badge", "typiclust")
"""The field's reference heuristics, measured in float32 (``--only`` picks a subset of all methods)."""


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def run_worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line, saves the picks."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.worker_features == "random":
        features, mask = make_problem(args.n, args.d, args.labeled, args.seed, device, dtype)
    else:
        generator = torch.Generator().manual_seed(args.seed)
        features = tile_with_noise(torch.from_numpy(np.load(args.base_features)), args.n, args.noise, generator)
        mask = torch.zeros(args.n, dtype=torch.bool)
        mask[torch.randperm(args.n, generator=generator)[:args.labeled]] = True
        features, mask = features.to(device, dtype), mask.to(device)
    method = METHODS[args.worker]
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _proc_status_kib("VmRSS") * 1024
    started, cpu_started = time.perf_counter(), time.process_time()
    picks = method(features, mask, args.budget, args.chunk_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = _proc_status_kib("VmHWM") * 1024 - before
    np.save(args.picks_out, picks.cpu().numpy())
    print(json.dumps({"method": args.worker, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_bytes": peak,
                      "input_bytes": features.nbytes}))


def full_matrix_fits(args: argparse.Namespace, item_bytes: int) -> bool:
    """The baseline needs N² numbers plus an N × |L| copy; run it only if that fits in half of what is free."""
    need = item_bytes * (args.n * args.n + args.n * args.labeled)
    if args.device.startswith("cuda"):
        free = torch.cuda.mem_get_info(torch.device(args.device))[0]
    else:
        free = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemAvailable:"))
    if need > free / 2:
        print(f"skipping full_matrix_kcenter ({item_bytes * 8}-bit): it needs {need / 2**30:.1f} GiB, "
              f"{free / 2**30:.1f} GiB free")
        return False
    return True


def first_difference(a: np.ndarray, b: np.ndarray) -> str:
    differ = np.flatnonzero(a != b)
    if len(differ) == 0:
        return "none (identical)"
    return f"pick {differ[0]} (0-based); {len(np.intersect1d(a, b)):,} of {len(a):,} points in common"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=25_000, help="pool size N")
    parser.add_argument("--d", type=int, default=512 + VAE_DIM,
                        help="feature width of random features (last 32 = VAE block)")
    parser.add_argument("--labeled", type=int, default=3_000, help="|L| before selection")
    parser.add_argument("--budget", type=int, default=3_000, help="β, points to select")
    parser.add_argument("--chunk-size", type=int, default=2048, help="kcenter_greedy's block size")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in each run")
    parser.add_argument("--repeats", type=int, default=1,
                        help="fresh float32 runs per method; the fastest time and the largest peak are reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true", help="skip full_matrix_kcenter")
    parser.add_argument("--no-float64", action="store_true", help="skip the float64 agreement check")
    parser.add_argument("--features", nargs="+", choices=["random", "fashion"],
                        help="feature kinds (default: random; with --million: both)")
    parser.add_argument("--base-images", type=int, default=10_000,
                        help="Fashion-MNIST images behind --features fashion, tiled to N")
    parser.add_argument("--noise", type=float, default=0.05, help="tiling noise, in units of each column's std")
    parser.add_argument("--million", action="store_true",
                        help="N = 1,000,000 with random and Fashion-MNIST features, float32 only, no baseline")
    parser.add_argument("--only", nargs="+", choices=sorted(METHODS), help="measure only these methods")
    parser.add_argument("--worker", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-features", choices=["random", "fashion"], default="random", help=argparse.SUPPRESS)
    parser.add_argument("--base-features", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--picks-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    if args.million:
        args.n, args.no_baseline, args.no_float64 = 1_000_000, True, True
    kinds = args.features or (["random", "fashion"] if args.million else ["random"])
    if "fashion" in kinds and args.base_images <= TASK_LABELS:
        parser.error(f"--base-images must exceed the {TASK_LABELS:,} images the task model is trained on")

    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(f"device: {args.device} ({name}), torch {torch.__version__}, threads {args.threads}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"N={args.n:,} |L|={args.labeled:,} budget={args.budget:,}, seed {args.seed}, features: {', '.join(kinds)}")
    runs = [("kcenter_greedy", "float32", args.repeats), ("medal_greedy", "float32", args.repeats),
            *((method, "float32", args.repeats) for method in REFERENCE)]
    with_baseline = not args.no_baseline and (not args.only or "full_matrix_kcenter" in args.only) \
        and full_matrix_fits(args, 4)
    if with_baseline:
        runs.append(("full_matrix_kcenter", "float32", args.repeats))
    if not args.no_float64:
        runs += [("kcenter_greedy", "float64", 1), ("medal_greedy", "float64", 1)]
        if with_baseline and full_matrix_fits(args, 8):
            runs.append(("full_matrix_kcenter", "float64", 1))

    if args.only:
        runs = [run for run in runs if run[0] in args.only]
    best: dict[tuple[str, str, str], dict] = {}
    picks: dict[tuple[str, str, str], np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base_features = Path(tmp) / "fashion.npy"
        if "fashion" in kinds:
            try:
                base, note = fashion_base_features(args.base_images, args.seed, args.device)
            except DataUnavailableError as error:
                print(f"skipping the Fashion-MNIST features, the data are not installed: {error}")
                kinds.remove("fashion")
            else:
                np.save(base_features, base)
                print(f"fashion: {note}; tiled to N={args.n:,} with noise {args.noise} × column std "
                      f"(d = {base.shape[1]})")
        for kind in kinds:
            for method, dtype, repeats in runs:
                for repeat in range(repeats):
                    out = Path(tmp) / f"{kind}-{method}-{dtype}-{repeat}.npy"
                    command = [sys.executable, __file__, "--worker", method, "--dtype", dtype, "--picks-out", str(out),
                               "--worker-features", kind, "--base-features", str(base_features),
                               "--noise", str(args.noise), "--device", args.device, "--n", str(args.n),
                               "--d", str(args.d), "--labeled", str(args.labeled), "--budget", str(args.budget),
                               "--chunk-size", str(args.chunk_size), "--threads", str(args.threads),
                               "--seed", str(args.seed)]
                    run = json.loads(subprocess.run(command, check=True, capture_output=True, text=True)
                                     .stdout.strip().splitlines()[-1])
                    print(f"  {kind:<7} {method:<20} {dtype} run {repeat + 1}: {run['seconds']:7.2f} s "
                          f"(CPU {run['cpu_seconds']:7.1f} s), peak +{run['peak_bytes'] / 2**20:8.1f} MiB "
                          f"= {run['peak_bytes'] / run['input_bytes']:.3f} × the {run['input_bytes'] / 2**30:.2f} GiB "
                          f"input, load average {os.getloadavg()[0]:.2f}", flush=True)
                    key = (kind, method, dtype)
                    if key in best:
                        run = {**run, "seconds": min(run["seconds"], best[key]["seconds"]),
                               "cpu_seconds": min(run["cpu_seconds"], best[key]["cpu_seconds"]),
                               "peak_bytes": max(run["peak_bytes"], best[key]["peak_bytes"])}
                    best[key] = run
                    result = np.load(out)
                    if key in picks and not np.array_equal(picks[key], result):
                        raise RuntimeError(f"{method} ({kind}, {dtype}) picked differently on a rerun")
                    picks[key] = result

    print(f"\n{'features':<9} {'method':<20} {'dtype':<8} {'best s':>8} {'CPU s':>8} {'peak MiB':>9} {'× input':>8}")
    for (kind, method, dtype), run in best.items():
        print(f"{kind:<9} {method:<20} {dtype:<8} {run['seconds']:8.2f} {run['cpu_seconds']:8.1f} "
              f"{run['peak_bytes'] / 2**20:9.1f} {run['peak_bytes'] / run['input_bytes']:8.3f}")
    print()
    for kind in kinds:
        for dtype in ("float32", "float64"):
            if (kind, "full_matrix_kcenter", dtype) in picks:
                difference = first_difference(picks[kind, "kcenter_greedy", dtype],
                                              picks[kind, "full_matrix_kcenter", dtype])
                print(f"{kind}: kcenter_greedy vs full_matrix_kcenter, {dtype}: first difference {difference}")
        for method in METHODS:
            if (kind, method, "float64") in picks:
                print(f"{kind}: {method} float32 vs float64: first difference "
                      f"{first_difference(picks[kind, method, 'float32'], picks[kind, method, 'float64'])}")

if __name__ == "__main__":
    main()
