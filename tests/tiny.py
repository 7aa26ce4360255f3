"""The smallest experiment that runs Algorithm 1 end to end, shared by the tests of the new feature families."""

from alvae_utils.config import ExperimentConfig, TrainConfig, VAEConfig
from alvae_utils.execution import Execution, run_sweep

TINY = ExperimentConfig(
    dataset="mnist-sample", pool_size=16, eval_size=10, initial_labels=4, budget=4, max_labels=8,
    train=TrainConfig(initial_epochs=1, epoch_increment=0, batch_size=4),
    vae=VAEConfig(latent_dim=4, epochs=1, batch_size=8),
)


def numbers(rows):
    """A run's rows without its timings, which differ between any two runs."""
    return rows.drop(columns=[column for column in rows if column.endswith("_seconds")]).reset_index(drop=True)


def tiny_sweep(monkeypatch, root, methods):
    """The TINY experiment's sweep of ``methods`` (seed 0), serial on the CPU, stored under ``root``."""
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(root))
    return run_sweep("ci", TINY.dataset, methods=methods, seeds=[0], experiment=TINY, progress=False,
                     execution=Execution("serial"), device="cpu")
