"""Networks: shapes, pair loss (Eq. 3–4), LP+VAE at α = 0, VAE loss (Eq. 5), pretrained weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence
from torchvision.models import resnet18

from alvae_utils.models.resnet import (
    GREY_MEAN,
    GREY_STD,
    PRETRAINED_WEIGHTS,
    LossPredictionModule,
    PretrainedWeightsUnavailable,
    TaskModel,
    check_pretrained_weights_available,
    pair_ranking_loss,
    pretrained_weights_path,
)
from alvae_utils.models.vae import VAE, vae_loss


@pytest.mark.parametrize("num_outputs", [10, 14])
def test_task_model_shapes_on_28x28(num_outputs):
    out = TaskModel(num_outputs)(torch.rand(3, 1, 28, 28))
    assert out.logits.shape == (3, num_outputs)
    assert out.features.shape == (3, 512)
    # ImageNet stem on 28×28: 14 after conv1, 7 after max-pool, then 7/4/2/1.
    assert [tuple(s.shape[1:]) for s in out.stages] == [(64, 7, 7), (128, 4, 4), (256, 2, 2), (512, 1, 1)]


def test_task_model_rejects_uint8_images():
    with pytest.raises(ValueError, match="images_to_float"):
        TaskModel(10)(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


def _adaptive_layers(model: TaskModel, x: torch.Tensor):
    """TaskModel's layers as they were before the mean over H, W: with ResNet-18's adaptive average pooling."""
    net = model.net
    h = net.maxpool(net.relu(net.bn1(net.conv1((x - GREY_MEAN) / GREY_STD))))
    s1 = net.layer1(h)
    s2 = net.layer2(s1)
    s3 = net.layer3(s2)
    s4 = net.layer4(s3)
    features = torch.flatten(net.avgpool(s4), 1)
    return net.fc(features), features, (s1, s2, s3, s4)


def _adaptive_lp(module: LossPredictionModule, stages, extra):
    """LossPredictionModule's forward as it was, with adaptive average pooling (no bf16)."""
    pooled = (F.adaptive_avg_pool2d(s, 1).flatten(1) for s in stages)
    c = torch.cat([F.relu(fc(p)) for fc, p in zip(module.stage_fcs, pooled, strict=True)], dim=1)
    return (module.fc(c) + extra @ module.extra_weight.T).squeeze(1)


@pytest.mark.parametrize("speed", ["fp32", "channels_last", "bf16"])
def test_the_mean_over_h_w_gives_bit_identical_cpu_outputs_and_gradients_to_adaptive_pooling(speed):
    """The pooling is a mean over the spatial dimensions (deterministic on CUDA); stored CPU runs keep their numbers."""
    torch.manual_seed(0)
    model, lp = TaskModel(10), LossPredictionModule(extra_dim=3)
    if speed == "channels_last":
        model.set_speed(channels_last=True, bf16=False, cudnn_benchmark=False, compile=False)
    x, extra = torch.rand(6, 1, 28, 28), torch.randn(6, 3)
    with torch.no_grad():
        lp.extra_weight.normal_()
    results = []
    now = (model._layers, lambda stages: lp(stages, extra))
    before = (lambda images: _adaptive_layers(model, images), lambda stages: _adaptive_lp(lp, stages, extra))
    for layers, head in (now, before):
        model.zero_grad(set_to_none=True)
        lp.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=speed == "bf16"):
            logits, features, stages = layers(x)
            predicted = head(stages)
        (logits.float().square().sum() + predicted.float().sum()).backward()
        results.append([logits, features, predicted, *(p.grad for p in [*model.parameters(), *lp.parameters()])])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


def test_pretrained_offline_names_file_folder_and_url(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("ALVAE_OFFLINE", "1")
    filename = "resnet18-f37072fd.pth"
    assert pretrained_weights_path() == tmp_path / "hub" / "checkpoints" / filename
    for attempt in (check_pretrained_weights_available, lambda: TaskModel(10, pretrained=True)):
        with pytest.raises(PretrainedWeightsUnavailable) as info:
            attempt()
        message = str(info.value)
        assert filename in message
        assert PRETRAINED_WEIGHTS.url in message
        assert str(tmp_path / "hub" / "checkpoints") in message
        assert "TORCH_HOME" in message
        assert info.value.__cause__ is None
    assert not (tmp_path / "hub" / "checkpoints" / filename).exists()


def test_pretrained_grey_model_equals_rgb_model_on_replicated_grey(monkeypatch, tmp_path):
    """Summed conv1 on one channel == the RGB network on the grey image copied to R, G, B."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("ALVAE_OFFLINE", "1")
    torch.manual_seed(0)
    rgb = resnet18(weights=None)  # stands in for the ImageNet file: same keys and shapes
    path = pretrained_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(rgb.state_dict(), path)
    check_pretrained_weights_available()  # cached file: no error even offline

    grey = TaskModel(14, pretrained=True).eval()
    rgb.eval()
    assert torch.equal(grey.net.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(grey.net.layer3[0].conv1.weight, rgb.layer3[0].conv1.weight)
    assert grey.net.fc.weight.shape == (14, 512)

    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        z = ((x - GREY_MEAN) / GREY_STD).expand(-1, 3, -1, -1)
        z = rgb.maxpool(rgb.relu(rgb.bn1(rgb.conv1(z))))
        expected = rgb.avgpool(rgb.layer4(rgb.layer3(rgb.layer2(rgb.layer1(z))))).flatten(1)
        torch.testing.assert_close(grey(x).features, expected, rtol=1e-4, atol=1e-5)


def test_pair_ranking_loss_hand_computed_with_tie():
    predicted = torch.tensor([0.5, 2.0, -1.0, 1.0, 0.0, 3.0])
    target = torch.tensor([3.0, 1.0, 1.0, 2.0, 1.0, 0.5], requires_grad=True)
    # Pairs (i, 5−i); loss = max(0, −I·(p̃1 − p̃2) + 1):
    #   (0,5): 3.0 > 0.5 → I=+1; p̃ diff 0.5−3.0 = −2.5; −(+1)(−2.5)+1 = 3.5
    #   (1,4): 1.0 = 1.0 tie → I=−1; p̃ diff 2.0−0.0 = 2.0; −(−1)(2.0)+1 = 3.0
    #   (2,3): 1.0 < 2.0 → I=−1; p̃ diff −1.0−1.0 = −2.0; −(−1)(−2.0)+1 = −1 → 0
    #   mean = (3.5 + 3.0 + 0) / 3 = 6.5 / 3
    loss = pair_ranking_loss(predicted, target, margin=1.0)
    assert loss.item() == pytest.approx(6.5 / 3)
    assert not loss.requires_grad  # the target losses are detached


@pytest.mark.parametrize("batch", [1, 5])
def test_pair_ranking_loss_rejects_odd_batches(batch):
    with pytest.raises(ValueError, match="even"):
        pair_ranking_loss(torch.zeros(batch), torch.zeros(batch))


def _stages(batch: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(batch, c, s, s) for c, s in [(64, 7), (128, 4), (256, 2), (512, 1)])


def test_lp_module_with_zero_extra_features_is_bit_identical_to_plain():
    torch.manual_seed(3)
    plain = LossPredictionModule()
    torch.manual_seed(3)
    augmented = LossPredictionModule(extra_dim=5)
    assert torch.equal(augmented.extra_weight, torch.zeros(1, 5))
    stages = _stages(8)
    zeros = torch.zeros(8, 5)
    assert torch.equal(plain(stages), augmented(stages, zeros))

    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (plain, augmented)]
    for _ in range(3):
        stages, target = _stages(8), torch.rand(8)
        for module, optimizer, extra in [(plain, optimizers[0], None), (augmented, optimizers[1], zeros)]:
            optimizer.zero_grad()
            pair_ranking_loss(module(stages, extra), target).backward()
            optimizer.step()
    for name, value in plain.state_dict().items():
        assert torch.equal(value, augmented.state_dict()[name]), name
    assert torch.equal(augmented.extra_weight, torch.zeros(1, 5))


def test_lp_module_learns_from_nonzero_extra_features():
    module = LossPredictionModule(extra_dim=3)
    extra = torch.randn(4, 3)
    pair_ranking_loss(module(_stages(4), extra), torch.tensor([1.0, 2.0, 3.0, 4.0])).backward()
    assert module.extra_weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="extra_dim=3"):
        module(_stages(4))
    with pytest.raises(ValueError, match="extra_dim=0"):
        LossPredictionModule()(_stages(4), extra)


def test_vae_shapes_and_modes():
    vae = VAE(latent_dim=8)
    x = torch.rand(5, 1, 28, 28)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (5, 8)
    assert vae.decode(mu).shape == (5, 1, 28, 28)
    vae.eval()
    recon, mu_eval, _ = vae(x)
    assert torch.equal(recon, vae.decode(mu_eval))  # eval mode decodes μ
    vae.train()
    torch.manual_seed(0)
    first = vae(x)[0]
    second = vae(x)[0]
    assert not torch.equal(first, second)  # training mode samples z


def test_vae_loss_is_summed_bce_plus_kl_to_standard_normal():
    torch.manual_seed(0)
    logits = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    mu = torch.randn(4, 6, dtype=torch.float64)
    logvar = torch.randn(4, 6, dtype=torch.float64)
    loss, reconstruction, kl = vae_loss(logits, x, mu, logvar)

    p = torch.sigmoid(logits)
    nll = -(x * torch.log(p) + (1 - x) * torch.log(1 - p))  # Bernoulli NLL per pixel
    expected_reconstruction = nll.sum() / 4  # summed over 784 pixels, mean over the batch
    expected_kl = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum() / 4
    torch.testing.assert_close(reconstruction, expected_reconstruction)
    torch.testing.assert_close(kl, expected_kl)
    torch.testing.assert_close(loss, expected_reconstruction + expected_kl)
