"""How good are the ``simclr`` family's features for a given training budget, and what does the budget cost?

Issue 27 asks for a label-free fit's quality measured with the labels it never saw: the leave-one-out k-NN
accuracy over the pool (k = 20, cosine similarity on L2-normalised features,
:func:`alvae_utils.analysis.representation.knn_accuracy`). The published expectation is that contrastive
features beat a VAE's on it; at a profile's default budget (SimCLR takes the VAE's epochs and batch: 10
epochs of 128 at ``quick``, i.e. 8 Adam steps an epoch on a 1,000-image pool) they may not. This script
finds out why, before notebook 06's study relies on them.

It fits SimCLR (:func:`alvae_utils.training.simclr.train_simclr`, the package's own fit, views and loss) on
the pool of the ``quick`` profile's notebooks 05/06 (MNIST, offline the embedded 5k sample; 1,000 images
drawn with the pool seed, as :func:`alvae_utils.data.datasets.load_experiment_data` draws them) for every
(temperature τ, learning rate, batch) of a small grid, and reports for each listed epoch count: the fit's
seconds (wall and process CPU), its last epoch's NT-Xent and the k-NN accuracy of its encoder's features h.

One fit per (τ, lr, batch) serves every epoch count: Adam runs at a constant rate with no schedule, so the
first e epochs of a longer fit *are* the e-epoch fit (same weights, batch order and views, all drawn from
the same seeded streams). The encoder is probed in eval mode between epochs (no RNG is touched, BatchNorm's
statistics are not updated), and the probes' time is left out of the fit seconds.

Rows for reference, on the same pool: the raw pixels, an untrained (randomly initialised, as the fit starts)
encoder: the floor that training must beat; and the profile's VAE μ and mixture-prior VAE μ (``mixvae``),
each fitted with the profile's VAE setting (10 epochs of 128), seeded as their families seed them.

    PYTHONPATH=. ALVAE_OFFLINE=1 python benchmarks/simclr_quality.py                  # τ 0.5, 0.2; 10, 30 epochs
    PYTHONPATH=. python benchmarks/simclr_quality.py --epochs 10,30,60 --temperatures 0.5,0.2,0.1 --lrs 1e-3,3e-3
    PYTHONPATH=. python benchmarks/simclr_quality.py --batches 256 --no-references     # one more slice of the grid

The fits run on the CPU with ``--threads`` torch threads (default 1, so a shared machine's other work is
neither starved nor starves it); the machine's load average is printed with the table, since a busy machine
stretches the wall seconds (the CPU seconds less so). Results and conclusions: benchmarks/README.md,
"SimCLR representation quality (issue 27)".
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

import alvae_utils.training.simclr as simclr_training  # noqa: E402
from alvae_utils.analysis.representation import K_NEIGHBOURS, knn_accuracy  # noqa: E402
from alvae_utils.config import SimCLRConfig  # noqa: E402
from alvae_utils.data.datasets import Dataset, load_experiment_data  # noqa: E402
from alvae_utils.device import images_to_float  # noqa: E402
from alvae_utils.experiment.profiles import get_profile  # noqa: E402
from alvae_utils.models.resnet import MIN_BATCH  # noqa: E402
from alvae_utils.models.simclr import SimCLRNet  # noqa: E402
from alvae_utils.seeds import SIMCLR, VAE, derive_seed  # noqa: E402
from alvae_utils.training.mixture_prior import encode_mixvae, train_mixvae  # noqa: E402
from alvae_utils.training.simclr import encode_simclr, train_simclr  # noqa: E402
from alvae_utils.training.vae import encode_mu, train_vae  # noqa: E402

COLUMNS = ("representation", "τ", "lr", "batch", "epochs", "steps", "fit wall s", "fit CPU s", "NT-Xent", "k-NN acc")


def floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",") if value]


def ints(text: str) -> list[int]:
    return [int(value) for value in text.split(",") if value]


def steps_per_epoch(n: int, batch: int) -> int:
    """Adam steps in one epoch of ``fit_epochs``: the full batches, and a last one unless it is below MIN_BATCH."""
    return n // batch + (1 if n % batch >= MIN_BATCH else 0)


@contextmanager
def probed_fits(probe: Callable[[torch.nn.Module, int], None], images: int, batch: int) -> Iterator[None]:
    """While open, :func:`train_simclr`'s ``fit_epochs`` calls ``probe(net, epoch)`` after every epoch.

    Its ``loss_terms`` is wrapped: before the first batch of epoch e + 1 (so after epoch e's last Adam step)
    the probe runs, and the network is put back in training mode. The last epoch's probe follows the fit.
    """
    fit_epochs = simclr_training.fit_epochs
    per_epoch = steps_per_epoch(images, batch)

    def fit_with_probes(model, images, config, generator, loss_terms, *args, **kwargs):
        calls = 0

        def terms(x):
            nonlocal calls
            if calls and calls % per_epoch == 0:
                probe(model, calls // per_epoch)
                model.train()
            calls += 1
            return loss_terms(x)

        history = fit_epochs(model, images, config, generator, terms, *args, **kwargs)
        probe(model, config.epochs)
        return history

    simclr_training.fit_epochs = fit_with_probes
    try:
        yield
    finally:
        simclr_training.fit_epochs = fit_epochs


def simclr_rows(pool: Dataset, config: SimCLRConfig, seed: int, epochs: list[int]) -> list[dict]:
    """One row per epoch count in ``epochs``: the k-NN accuracy of one fit of ``config`` probed at that epoch."""
    rows: dict[int, dict] = {}
    clock = {"probes_wall": 0.0, "probes_cpu": 0.0}
    started_wall, started_cpu = time.perf_counter(), time.process_time()

    def probe(net: torch.nn.Module, epoch: int) -> None:
        if epoch not in epochs:
            return
        wall, cpu = time.perf_counter(), time.process_time()
        accuracy = knn_accuracy(encode_simclr(net, pool.images), pool.labels)
        rows[epoch] = {"representation": "simclr", "τ": config.temperature, "lr": config.lr,
                       "batch": config.batch_size, "epochs": epoch,
                       "steps": epoch * steps_per_epoch(len(pool), config.batch_size),
                       "fit wall s": wall - started_wall - clock["probes_wall"],
                       "fit CPU s": cpu - started_cpu - clock["probes_cpu"], "k-NN acc": accuracy}
        clock["probes_wall"] += time.perf_counter() - wall
        clock["probes_cpu"] += time.process_time() - cpu

    with probed_fits(probe, len(pool), config.batch_size):
        _, history = train_simclr(pool.images, replace(config, epochs=max(epochs)), seed=seed, device="cpu",
                                  progress=False)
    for epoch, row in rows.items():
        row["NT-Xent"] = history[epoch - 1]["loss"]
    return [rows[epoch] for epoch in sorted(rows)]


def reference_rows(pool: Dataset, vae_config, pool_seed: int, mixvae: bool) -> list[dict]:
    """Pixels, the untrained encoder, the VAE μ and (``mixvae``) the mixture-prior VAE μ, on the pool."""
    rows = [{"representation": "pixels", "k-NN acc": knn_accuracy(images_to_float(pool.images).flatten(1),
                                                                   pool.labels)}]
    with torch.random.fork_rng():  # the weights train_simclr starts from, as it draws them
        torch.manual_seed(derive_seed(SIMCLR, pool_seed))
        untrained = SimCLRNet()
    rows.append({"representation": "simclr, untrained", "epochs": 0,
                 "k-NN acc": knn_accuracy(encode_simclr(untrained, pool.images), pool.labels)})
    fits = [("vae μ", train_vae, encode_mu)] + ([("mixvae μ", train_mixvae, encode_mixvae)] if mixvae else [])
    for name, train, encode in fits:
        wall, cpu = time.perf_counter(), time.process_time()
        model, history = train(pool.images, vae_config, seed=derive_seed(VAE, pool_seed), device="cpu", progress=False)
        rows.append({"representation": name, "lr": vae_config.lr, "batch": vae_config.batch_size,
                     "epochs": vae_config.epochs, "steps": vae_config.epochs * steps_per_epoch(len(pool),
                                                                                              vae_config.batch_size),
                     "fit wall s": time.perf_counter() - wall, "fit CPU s": time.process_time() - cpu,
                     "k-NN acc": knn_accuracy(encode(model, pool.images), pool.labels)})
    return rows


def markdown(rows: list[dict]) -> str:
    formats = {"fit wall s": "{:.1f}", "fit CPU s": "{:.1f}", "NT-Xent": "{:.3f}", "k-NN acc": "{:.3f}",
               "τ": "{:g}", "lr": "{:g}"}

    def cell(row: dict, column: str) -> str:
        value = row.get(column)
        return "–" if value is None else formats.get(column, "{}").format(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row, column) for column in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick", help="whose notebook-05/06 experiment (pool, VAE) to use")
    parser.add_argument("--pool", type=int, default=None, help="pool size (default: the profile's, 1,000 at quick)")
    parser.add_argument("--epochs", type=ints, default=[10, 30], help="epoch counts to probe, one fit to the largest")
    parser.add_argument("--temperatures", type=floats, default=[0.5, 0.2], help="NT-Xent τ values")
    parser.add_argument("--lrs", type=floats, default=[1e-3], help="Adam learning rates")
    parser.add_argument("--batches", type=ints, default=[128], help="batch sizes (images; two views each)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=None, help="pool seed (default: the profile's); fits derive theirs")
    parser.add_argument("--no-references", action="store_true", help="skip pixels, untrained, VAE and MixVAE rows")
    parser.add_argument("--no-mixvae", action="store_true", help="skip the MixVAE reference fit")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    experiment = get_profile(args.profile).beyond.experiments[0]
    pool_seed = experiment.pool_seed if args.seed is None else args.seed
    pool, _ = load_experiment_data(experiment.dataset, args.pool or experiment.pool_size, eval_size=1,
                                   seed=pool_seed)
    base = experiment.simclr.resolved(experiment.vae)
    print(f"# SimCLR representation quality: {pool.description}, pool {len(pool)} (seed {pool_seed}), "
          f"k = {K_NEIGHBOURS}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average at start "
          f"{', '.join(f'{load:.2f}' for load in os.getloadavg())}", flush=True)

    rows = [] if args.no_references else reference_rows(pool, experiment.vae, pool_seed, not args.no_mixvae)
    for row in rows:
        print(markdown([row]).splitlines()[-1], flush=True)
    for temperature, lr, batch in itertools.product(args.temperatures, args.lrs, args.batches):
        config = replace(base, temperature=temperature, lr=lr, batch_size=batch)
        fitted = simclr_rows(pool, config, derive_seed(SIMCLR, pool_seed), sorted(set(args.epochs)))
        for row in fitted:
            print(markdown([row]).splitlines()[-1], flush=True)
        rows += fitted

    print(f"\nLoad average at the end {', '.join(f'{load:.2f}' for load in os.getloadavg())}; "
          f"torch threads {torch.get_num_threads()}. Fit seconds leave out the k-NN probes.\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
