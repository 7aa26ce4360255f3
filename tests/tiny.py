"""The smallest experiment that runs Algorithm 1 end to end, shared by the tests of the new feature families."""

import pandas as pd
import pytest

from alvae_utils.config import ExperimentConfig, TrainConfig, VAEConfig
from alvae_utils.execution import Execution, run_sweep
from alvae_utils.experiment import loop

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


def killed_and_resumed(monkeypatch, spy, root, methods, family, interrupt_at):
    """:func:`tiny_sweep` of ``methods`` under ``root``, killed at the ``interrupt_at``-th task-model training, then
    rerun; the rerun's rows. Checks that ``family``'s model was fitted once, then loaded, and that every run finished.
    """
    train = spy(loop, "train_task_model", interrupt_at=interrupt_at)
    with pytest.raises(KeyboardInterrupt):
        tiny_sweep(monkeypatch, root, methods)
    train["restore"]()
    resumed = tiny_sweep(monkeypatch, root, methods)
    assert len(list((root / family).glob("*.pt"))) == 1, "fitted once, then loaded"
    assert resumed["method"].tolist() == [m.label for m in methods for _ in range(2)]
    return resumed


def assert_as_if_uninterrupted(monkeypatch, root, resumed, method):
    """``method``'s rows of ``resumed`` equal those of an uninterrupted :func:`tiny_sweep` of it alone, stored under
    ``root``."""
    reference = tiny_sweep(monkeypatch, root, [method])
    pd.testing.assert_frame_equal(numbers(resumed[resumed["method"] == method.label]), numbers(reference),
                                  check_dtype=False)
