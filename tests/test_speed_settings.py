"""Speed settings of TrainConfig: each one trains, the defaults change nothing, bf16 really runs in bfloat16."""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo
import torch._inductor.cpp_builder

from alvae_utils.models import resnet
from alvae_utils.config import ConfigError, TrainConfig
from alvae_utils.data.datasets import MULTICLASS, load_dataset
from alvae_utils.training.metrics import evaluate
from alvae_utils.experiment.overrides import apply, parse_assignments
from alvae_utils.experiment.profiles import get_profile
from alvae_utils.training.task_model import build_task_model, check_speed_settings, predict, train_task_model

OFF = {"channels_last": False, "bf16": False, "cudnn_benchmark": False, "compile": False, "tf32": False}


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    sample = load_dataset("mnist-sample", "train")
    return sample.images[:32], sample.labels[:32]


@pytest.fixture(scope="module")
def fp32(digits):
    """The default (fp32) run that the others are compared with."""
    return _train(digits)


def _train(digits, lp: bool = True, **speed):
    """A tiny T (+P, with 4 extra features) trained for one epoch of two batches of 16."""
    images, labels = digits
    config = TrainConfig(lr=0.01, batch_size=16, **speed)
    extra = torch.linspace(-1, 1, 32 * 4).reshape(32, 4) if lp else None
    model, lp_module = build_task_model(10, config, 5, "cpu", with_loss_prediction=lp, extra_dim=4 if lp else 0)
    result = train_task_model(model, images, labels, MULTICLASS, 1, config, 5, lp_module=lp_module,
                              extra_features=extra, progress=False)
    return model, lp_module, result, extra


def _weights(*modules: torch.nn.Module | None) -> list[torch.Tensor]:
    return [v for m in modules if m is not None for v in m.state_dict().values()]


def _assert_bit_identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_defaults_are_fp32_and_the_same_as_every_setting_explicitly_off(digits, fp32):
    assert {name: getattr(TrainConfig(), name) for name in OFF} == OFF
    model, lp_module, result, _ = fp32
    off_model, off_lp, off_result, _ = _train(digits, **OFF)
    _assert_bit_identical(_weights(model, lp_module), _weights(off_model, off_lp))
    assert result.losses == off_result.losses
    # With the settings off, forward() is exactly the bare layers: no autocast, no cast, no compiled graph.
    x = digits[0][:8].float() / 255
    model.eval()
    with torch.no_grad():
        logits, features, _ = model._layers(x)
        out = model(x)
    assert torch.equal(out.logits, logits) and torch.equal(out.features, features)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_cudnn_benchmark_is_accepted_and_a_no_op_on_the_cpu(digits, fp32):
    model, lp_module, result, _ = fp32
    bench_model, bench_lp, bench_result, _ = _train(digits, cudnn_benchmark=True)
    _assert_bit_identical(_weights(model, lp_module), _weights(bench_model, bench_lp))
    assert result.losses == bench_result.losses


def test_tf32_is_accepted_and_a_no_op_on_the_cpu(digits, fp32):
    model, lp_module, result, _ = fp32
    tf32_model, tf32_lp, tf32_result, _ = _train(digits, tf32=True)
    assert tf32_model.tf32 and tf32_lp.tf32, "T and P carry it, so inference runs as training did"
    _assert_bit_identical(_weights(model, lp_module), _weights(tf32_model, tf32_lp))
    assert result.losses == tf32_result.losses


def test_bf16_runs_t_and_p_in_bfloat16_and_keeps_weights_outputs_and_losses_float32(digits, fp32):
    seen: dict[str, set[torch.dtype]] = {"conv1": set(), "layer4": set(), "lp.fc": set()}

    def recorder(name):
        return lambda module, inputs, output: seen[name].add(output.dtype)

    model, lp_module, result, extra = _train(digits, bf16=True)
    hooks = [model.net.conv1.register_forward_hook(recorder("conv1")),
             model.net.layer4.register_forward_hook(recorder("layer4")),
             lp_module.fc.register_forward_hook(recorder("lp.fc"))]
    images, labels = digits
    train_task_model(model, images, labels, MULTICLASS, 1, TrainConfig(lr=0.01, batch_size=16, bf16=True), 6,
                     lp_module=lp_module, extra_features=extra, progress=False)
    assert seen == {"conv1": {torch.bfloat16}, "layer4": {torch.bfloat16}, "lp.fc": {torch.bfloat16}}
    out = predict(model, images, lp_module, extra_features=extra)  # inference runs the same way
    for hook in hooks:
        hook.remove()
    assert seen["conv1"] == {torch.bfloat16}
    assert (out.logits.dtype, out.features.dtype, out.predicted_loss.dtype) == (torch.float32,) * 3
    assert {p.dtype for p in _weights(model, lp_module) if p.is_floating_point()} == {torch.float32}
    assert all(math.isfinite(loss) for loss in result.losses)
    # Rounded to 8 bits of mantissa, the numbers differ from fp32 (which is why bf16 is part of the run key).
    assert result.losses != fp32[2].losses


def test_channels_last_converts_the_convolutions_and_trains(digits, fp32):
    model, lp_module, result, _ = _train(digits, channels_last=True)
    assert model.net.layer2[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    maps = []
    hook = model.net.layer1.register_forward_hook(lambda module, inputs, output: maps.append(output))
    evaluate(model, *digits, MULTICLASS)
    hook.remove()
    assert maps[0].is_contiguous(memory_format=torch.channels_last) and not maps[0].is_contiguous()
    # Same arithmetic in another order: the losses agree closely, not necessarily bit for bit.
    assert result.losses == pytest.approx(fp32[2].losses, rel=1e-4)
    model.set_speed(channels_last=False, bf16=False, cudnn_benchmark=False, compile=False)
    assert model.net.layer2[0].conv1.weight.is_contiguous()


def test_compile_trains_through_the_compiled_forward(digits, monkeypatch):
    # The "eager" backend exercises dynamo's capture without inductor's minute of C++ code generation;
    # bench_training.py measures the real compiler.
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    monkeypatch.setattr(resnet, "COMPILE_BACKEND", counting_backend)
    torch._dynamo.reset()
    model, _, result, _ = _train(digits, lp=False, compile=True)
    assert graphs, "the compiled forward was not used"
    assert all(math.isfinite(loss) for loss in result.losses)
    # Eager execution of the captured graph is the same arithmetic as the plain forward.
    assert result.losses == _train(digits, lp=False)[2].losses
    model.set_speed(channels_last=False, bf16=False, cudnn_benchmark=False, compile=False)
    assert model._compiled is None
    torch._dynamo.reset()


def test_speed_settings_are_dotted_overrides_and_change_the_run_key():
    profile = get_profile("ci")
    changed = apply(profile, parse_assignments(["train.bf16=true", "train.channels_last=yes"]))
    train = changed.experiments[0].train
    assert (train.bf16, train.channels_last, train.compile, train.cudnn_benchmark) == (True, True, False, False)
    assert changed.experiments[0].key() != profile.experiments[0].key()
    with pytest.raises(ConfigError, match="train.compile must be bool"):
        parse_assignments(["train.compile=fast"])


@pytest.mark.parametrize("gpu, capability, refused", [
    ("NVIDIA GeForce RTX 2080", (7, 5), True),  # the paper's GPU
    ("Tesla V100-SXM2-16GB", (7, 0), True),
    ("Tesla T4", (7, 5), True),
    ("NVIDIA A100-SXM4-80GB", (8, 0), False),
    ("NVIDIA H100 80GB HBM3", (9, 0), False),
])
def test_bf16_is_refused_by_the_runs_gpu_capability_not_by_is_bf16_supported(monkeypatch, gpu, capability, refused):
    asked = []
    # What torch 2.14's default answers on V100 and T4 (emulation counts): the guard must not rely on it.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu)
    if refused:
        with pytest.raises(ConfigError, match=f"{gpu} \\(cuda:1\\) has {capability[0]}.{capability[1]}, where "
                                              "bfloat16 is only emulated. Use train.bf16=false"):
            check_speed_settings(TrainConfig(bf16=True), "cuda:1")
    else:
        check_speed_settings(TrainConfig(bf16=True), "cuda:1")
    assert asked == [torch.device("cuda:1")], "the capability of the run's own GPU"
    check_speed_settings(TrainConfig(), "cuda:1")  # fp32 runs on any GPU


def test_settings_this_device_cannot_run_are_refused_before_any_work(monkeypatch):
    check_speed_settings(TrainConfig(bf16=True, cudnn_benchmark=True, channels_last=True), "cpu")

    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    with pytest.raises(ConfigError, match="does not support this Python"):
        build_task_model(10, TrainConfig(compile=True), 0, "cpu")
    monkeypatch.undo()

    def no_compiler():
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch._inductor.cpp_builder, "get_cpp_compiler", no_compiler)
    with pytest.raises(ConfigError, match="needs a C\\+\\+ compiler"):
        check_speed_settings(TrainConfig(compile=True), "cpu")
