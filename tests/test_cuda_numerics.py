"""CUDA numerics, checked without a GPU: what alvae sets, and what keys and the resume check see.

No line here runs a CUDA kernel: torch's flags can be set on any build, and the GPU's
description (``torch.cuda.get_device_properties``) is mocked. ``benchmarks/gpu_check.py``
checks the numbers themselves on a GPU.
"""

import os
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from alvae_utils.config import ConfigError, ExperimentConfig, TrainConfig, VAEConfig
from alvae_utils.device import (
    DETERMINISTIC_CUBLAS_WORKSPACE, numerics, physical_gpu, pinned_threads, reproducible_cuda, tf32_precision,
)
from alvae_utils.experiment.loop import _check_same_numerics
from alvae_utils.experiment.overrides import apply, parse_assignments
from alvae_utils.experiment.profiles import get_profile
from alvae_utils.experiment.results import COLUMNS, ResultStore, RunState, run_key, run_provenance
from alvae_utils.selection.methods import Method
from alvae_utils.training import mixture_prior, vae
from alvae_utils.data.datasets import load_experiment_data

CUDA = torch.device("cuda:0")
GPUS = {"NVIDIA A100-SXM4-80GB": (8, 0), "NVIDIA H100 80GB HBM3": (9, 0)}


@pytest.fixture
def gpu(monkeypatch):
    """``gpu(name)`` makes torch describe cuda:0 as that GPU, with CUDA 13.0 and cuDNN 9.24 (nothing runs on it)."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 92400)

    def use(name):
        major, minor = GPUS[name]
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda device=None: SimpleNamespace(name=name, major=major, minor=minor))

    return use


def _flags():
    backends = torch.backends
    return (torch.are_deterministic_algorithms_enabled(), backends.cudnn.deterministic,
            backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision)


def test_on_cuda_alvae_computes_in_deterministic_ieee_fp32_and_tf32_only_when_asked():
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (DETERMINISTIC_CUBLAS_WORKSPACE, ":16:8"), \
        "set when alvae is imported, before any cuBLAS handle exists"
    before = _flags()
    assert before[2] == "tf32", "torch 2.14's default for fp32 convolutions, which alvae overrides on CUDA"
    with reproducible_cuda(CUDA):
        assert _flags() == (True, True, "ieee", "ieee")
        with reproducible_cuda(CUDA):  # nested: the loop around training, inference inside it
            pass
        assert _flags() == (True, True, "ieee", "ieee")
        with tf32_precision(True, CUDA):  # train.tf32
            assert _flags() == (True, True, "tf32", "tf32")
        with tf32_precision(False, CUDA):
            assert _flags() == (True, True, "ieee", "ieee")
    assert _flags() == before, "restored as it was"
    with reproducible_cuda(torch.device("cpu")), tf32_precision(True, torch.device("cpu")):
        assert _flags() == before, "the CPU keeps its kernels, and so its numbers"


def test_numerics_name_the_gpu_model_and_software_on_cuda_and_stay_as_they_were_on_the_cpu(gpu, tmp_path):
    assert numerics(torch.device("cpu")) == {"device": "cpu", "torch_threads": torch.get_num_threads()}
    gpu("NVIDIA H100 80GB HBM3")
    h100 = numerics(CUDA)
    assert h100 == {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "capability": "9.0", "cuda": "13.0",
                    "cudnn": 92400, "torch": torch.__version__}
    assert run_provenance(CUDA)["numerics"] == h100, "every run's state records them"
    gpu("NVIDIA A100-SXM4-80GB")
    a100 = numerics(CUDA)
    pool = load_experiment_data("mnist-sample", 16, 1, seed=0)[0]
    with pinned_threads(1):
        cpu = numerics(torch.device("cpu"))
    for checkpoint_path in (vae.checkpoint_path, mixture_prior.checkpoint_path):
        paths = {checkpoint_path(pool, VAEConfig(), 0, values, tmp_path) for values in (h100, a100, cpu)}
        assert len(paths) == 3, "a VAE fitted on one GPU model (or the CPU) is not reused on another"


def test_a_run_started_on_one_gpu_model_is_resumed_only_on_that_model(gpu, tmp_path):
    config = ExperimentConfig("mnist-sample", 100, 50, 10, 10, 30)
    gpu("NVIDIA A100-SXM4-80GB")
    record = ResultStore("t", root=tmp_path).record(config, Method("random"), 0, "d",
                                                    provenance=run_provenance(CUDA))
    row = {column: 0 for column in COLUMNS} | {"step": 0, "run_key": record.key, "alpha": float("nan")}
    record.commit_step(pd.DataFrame([row], columns=list(COLUMNS)), RunState(1, list(range(20)), 0.0, False))
    _check_same_numerics(record, CUDA)  # the same GPU model and software: resumes
    gpu("NVIDIA H100 80GB HBM3")
    with pytest.raises(ConfigError, match=r"started with NVIDIA A100-SXM4-80GB \(compute capability 8.0\) with CUDA "
                                          r"13.0, cuDNN 92400 and torch .*, now NVIDIA H100 80GB HBM3 \(compute "
                                          r"capability 9.0\).*Resume it as it was started \(on that GPU model"):
        _check_same_numerics(record, CUDA)
    with pytest.raises(ConfigError, match="started with device cuda:0, now cpu"):
        _check_same_numerics(record, torch.device("cpu"))


def test_tf32_is_a_speed_setting_off_by_default_and_in_the_keys_only_when_on():
    experiment = get_profile("ci").experiment("mnist-sample")
    assert experiment.train.tf32 is False and "tf32" not in experiment.key_fields()["train"]
    on = apply(get_profile("ci"), parse_assignments(["train.tf32=true"])).experiment("mnist-sample")
    assert on.train == TrainConfig(**{**vars(experiment.train), "tf32": True})
    assert on.key_fields()["train"]["tf32"] is True and on.key() != experiment.key()
    assert run_key(on, Method("random"), 0, "d") != run_key(experiment, Method("random"), 0, "d")


def test_the_physical_gpu_behind_a_cuda_device_is_its_entry_in_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert physical_gpu(torch.device("cuda:1")) == "5" and physical_gpu(torch.device("cuda:0")) == "3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f2c1a7e,GPU-0b9d3e44")  # nodes may name GPUs by UUID
    assert physical_gpu(torch.device("cuda:1")) == "GPU-0b9d3e44"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert physical_gpu(torch.device("cuda:1")) == "1", "every GPU visible: the index is the node's"
    assert physical_gpu(torch.device("cpu")) is None
