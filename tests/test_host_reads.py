"""No host reads in hot loops: training reads its sums once per epoch, never once per batch.

On a GPU every read of a device value by the host (``.item()``, a boolean mask's data-dependent
shape) waits for all queued kernels. On this CPU-only machine the same reads are visible as the
aten operators that perform them, counted through a ``TorchDispatchMode``; ``gpu_check.py``
counts the real synchronisations on a GPU with ``torch.cuda.set_sync_debug_mode``.
"""

import sys
from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from alvae_utils.config import TrainConfig
from alvae_utils.data.datasets import MULTICLASS, MULTILABEL, load_dataset, load_experiment_data
from alvae_utils.data.fixtures import write_medmnist_npz
from alvae_utils.device import pinned_threads
from alvae_utils.training import ssvae
from alvae_utils.training.task_model import build_task_model, train_task_model
from tiny import TINY

HOST_READS = {torch.ops.aten._local_scalar_dense, torch.ops.aten.item, torch.ops.aten.nonzero,
              torch.ops.aten.masked_select, torch.ops.aten.is_nonzero, torch.ops.aten.equal}
"""aten operators whose result the host must wait for: a scalar read, or an output whose size depends on the data."""


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: every operator passes through Python here, and two threads on a busy machine wait for
    each other at each of them (30x slower at load 10 on 2 cores)."""
    with pinned_threads(1):
        yield


class HostReads(TorchDispatchMode):
    """Counts host reads (:data:`HOST_READS`) apart from those of torch.optim's step counters.

    Adam keeps its step counter as a CPU tensor on every device (``capturable=False``) and reads
    it at every step; reading a CPU tensor never waits for a GPU, so those reads are not syncs.
    """

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in HOST_READS and not _from_optimizer():
            self.reads += 1
        return func(*args, **(kwargs or {}))


def _from_optimizer() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if "/torch/optim/" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _reads(function) -> int:
    with HostReads() as counter:
        function()
    return counter.reads


def test_train_task_model_reads_its_loss_and_accuracy_once_per_epoch_not_per_batch():
    sample = load_dataset("mnist-sample", "train")
    images, labels = sample.images[:12], sample.labels[:12]
    config = TrainConfig(batch_size=4, lr=0.01)  # 3 batches per epoch
    for task, targets, outputs in ((MULTICLASS, labels, 10), (MULTILABEL, (labels[:, None] == torch.arange(4)), 4)):
        model, lp_module = build_task_model(outputs, config, 0, "cpu", with_loss_prediction=True, extra_dim=2)
        with HostReads() as counter:
            train_task_model(model, images, targets.long(), task, 2, config, 1, lp_module=lp_module,
                             extra_features=torch.randn(12, 2), progress=False)
        assert counter.reads <= 2, f"{task}: {counter.reads} host reads in 2 epochs of 3 batches"


def test_an_ssvae_epoch_reads_its_sums_once_not_per_batch(tmp_path):
    write_medmnist_npz(tmp_path / "chestmnist.npz", n_train=100, n_val=40, n_test=40, flag="chestmnist", seed=0)
    multiclass = load_experiment_data("mnist-sample", 8, 1, seed=0)[0]
    multilabel = load_experiment_data("chestmnist", 8, 1, seed=0, root=tmp_path, download=False)[0]
    labeled = torch.tensor([1, 2, 6])
    for pool in (multiclass, multilabel):
        with HostReads() as checks:  # the call checks L and its labels once, before training
            ssvae._check_labeled(pool, labeled)
        with HostReads() as counter:
            ssvae.train_ssvae(pool, labeled, replace(TINY.vae, batch_size=2, epochs=2), seed=0, device="cpu",
                              progress=False)
        epochs = counter.reads - checks.reads
        assert epochs <= 2, f"{pool.task}: {epochs} host reads in 2 epochs of 4 batches (and {checks.reads} checks)"
