"""The mixture-of-Gaussians prior VAE (family ``mixvae``): its KL estimator against known answers, and end to end."""

import math

import pytest
import torch

from alvae_utils.config import VAEConfig
from alvae_utils.device import numerics
from alvae_utils.data.datasets import load_experiment_data
from alvae_utils.selection.features import get_family
from alvae_utils.selection.methods import Method
from alvae_utils.training.mixture_prior import (
    MixturePrior,
    MixVAE,
    checkpoint_path,
    encode_mixvae,
    gaussian_log_density,
    get_or_train_mixvae,
    monte_carlo_kl,
    sample_posterior,
    train_mixvae,
)
from alvae_utils.models.vae import VAE
from alvae_utils.seeds import VAE as VAE_STREAM
from alvae_utils.seeds import derive_seed
from tiny import TINY, assert_as_if_uninterrupted, killed_and_resumed

def _prior(means, logvars, logits=None):
    """A MixturePrior in float64 with the given parameters (K, d), (K, d), (K,)."""
    means = torch.as_tensor(means, dtype=torch.float64)
    prior = MixturePrior(means.shape[1], means.shape[0]).double()
    with torch.no_grad():
        prior.means.copy_(means)
        prior.logvars.copy_(torch.as_tensor(logvars, dtype=torch.float64))
        prior.logits.copy_(torch.zeros(len(means)) if logits is None else torch.as_tensor(logits))
    return prior


def _gaussian_kl(mu, logvar, prior_mean, prior_logvar):
    """KL(N(μ, e^logvar) ‖ N(m, e^lv)), diagonal, closed form, summed over the last dimension."""
    return 0.5 * (prior_logvar - logvar + (logvar.exp() + (mu - prior_mean) ** 2) / prior_logvar.exp() - 1).sum(-1)


def _draws(mu, logvar, prior, samples, seed):
    """Per-sample terms log q(z) − log p(z), (samples, B), and the estimator's value on the same draws."""
    with torch.no_grad():
        z = sample_posterior(mu, logvar, samples, generator=torch.Generator().manual_seed(seed))
        terms = gaussian_log_density(z, mu, logvar) - prior.log_prob(z)
        return terms, monte_carlo_kl(mu, logvar, prior, z)


MU = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5], [0.3, 0.1, -0.7]], dtype=torch.float64)
LOGVAR = torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.5, 0.0], [-2.0, -0.3, 1.0]], dtype=torch.float64)


@pytest.mark.parametrize("prior", [
    _prior([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]),
    # The other two components carry no weight: the mixture is N(0, I).
    _prior([[0.0, 0.0, 0.0], [3.0, 1.0, 0.0], [-2.0, 0.0, 1.0]], torch.zeros(3, 3), [0.0, -math.inf, -math.inf]),
], ids=["one component", "others weightless"])
def test_with_a_component_fixed_at_the_standard_normal_the_estimate_is_the_closed_form_kl(prior):
    exact = (-0.5 * (1 + LOGVAR - MU**2 - LOGVAR.exp())).sum(1)
    terms, estimate = _draws(MU, LOGVAR, prior, samples=4000, seed=0)
    assert torch.allclose(estimate, terms.mean(0))
    standard_error = terms.std(0) / math.sqrt(len(terms))
    assert ((estimate - exact).abs() <= 4 * standard_error).all(), (estimate, exact, standard_error)
    # Where q is the prior, every draw gives exactly 0.
    assert estimate[0].abs() < 1e-12 and exact[0] == 0


def _mixture_kl_by_quadrature(mu, logvar, prior):
    """KL(q ‖ p) in one dimension by the trapezoid rule on a fine grid over ±12 σ of q."""
    sigma = math.exp(0.5 * logvar)
    grid = torch.linspace(mu - 12 * sigma, mu + 12 * sigma, 200_001, dtype=torch.float64).unsqueeze(1)
    with torch.no_grad():
        log_q = gaussian_log_density(grid, torch.tensor([mu], dtype=torch.float64),
                                     torch.tensor([logvar], dtype=torch.float64))
        return float(torch.trapezoid(log_q.exp() * (log_q - prior.log_prob(grid)), grid.squeeze(1)))


CASES = {
    "standard normal": (MU[1], LOGVAR[1], _prior([[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]),
                        lambda mu, lv: float(_gaussian_kl(mu, lv, torch.zeros(3), torch.zeros(3)))),
    "other Gaussian": (MU[2], LOGVAR[2], _prior([[1.0, -1.0, 2.0]], [[0.5, -1.0, 0.2]]),
                       lambda mu, lv: float(_gaussian_kl(mu, lv, torch.tensor([1.0, -1.0, 2.0]),
                                                         torch.tensor([0.5, -1.0, 0.2], dtype=torch.float64)))),
    "three-component mixture (1-D)": (torch.tensor([0.4], dtype=torch.float64),
                                      torch.tensor([-0.5], dtype=torch.float64),
                                      _prior([[-2.0], [0.0], [1.5]], [[-1.0], [0.5], [-0.5]], [0.2, -0.4, 0.7]),
                                      lambda mu, lv: None),
}


@pytest.mark.parametrize("case", CASES)
def test_the_kl_estimator_is_unbiased_where_the_answer_is_known(case):
    mu, logvar, prior, closed_form = CASES[case]
    exact = closed_form(mu, logvar)
    if exact is None:  # a genuine mixture: no closed form, so numerical integration
        exact = _mixture_kl_by_quadrature(float(mu), float(logvar), prior)
    # 20,000 independent single-sample estimates (S = 1, as in training): their mean is within 4 SE.
    copies = 20_000
    _, single = _draws(mu.expand(copies, -1), logvar.expand(copies, -1), prior, samples=1, seed=1)
    standard_error = single.std() / math.sqrt(copies)
    assert abs(single.mean() - exact) < 4 * standard_error, (float(single.mean()), exact, float(standard_error))
    # S samples per estimate: still unbiased, and the variance falls as 1/S.
    _, pooled = _draws(mu.expand(2_000, -1), logvar.expand(2_000, -1), prior, samples=10, seed=2)
    assert abs(pooled.mean() - exact) < 4 * pooled.std() / math.sqrt(2_000)
    assert 0.07 < float(pooled.var() / single.var()) < 0.14


def test_the_mixture_density_is_the_weighted_sum_of_its_components():
    prior = _prior([[-2.0, 0.0], [1.0, 1.0]], [[0.0, -1.0], [0.5, 0.5]], [0.3, -0.2])
    z = torch.tensor([[0.1, 0.2], [-1.5, 3.0]], dtype=torch.float64)
    weights = torch.softmax(torch.tensor([0.3, -0.2], dtype=torch.float64), 0)
    density = sum(w * gaussian_log_density(z, m, lv).exp()
                  for w, m, lv in zip(weights, prior.means.detach(), prior.logvars.detach(), strict=True))
    assert torch.allclose(prior.log_prob(z), density.log())
    # Broadcasting: (S, B, d) → (S, B).
    assert prior.log_prob(z.expand(4, 2, 2)).shape == (4, 2)


def test_the_mixvae_starts_as_the_paper_vae_and_differs_only_by_its_prior():
    torch.manual_seed(3)
    paper = VAE(4)
    torch.manual_seed(3)
    mixture = MixVAE(4, components=5)
    for (name, a), b in zip(paper.state_dict().items(), mixture.vae.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert mixture.prior.means.shape == (5, 4)


@pytest.fixture(scope="module")
def pool():
    return load_experiment_data(TINY.dataset, TINY.pool_size, TINY.eval_size, seed=0)[0]


def test_training_is_deterministic_cached_and_keyed_on_what_determines_it(pool, tmp_path, monkeypatch):
    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    state = torch.get_rng_state()
    model, history, trained = get_or_train_mixvae(pool, TINY.vae, 0, device="cpu", progress=False)
    assert torch.equal(torch.get_rng_state(), state), "training leaves the caller's RNG as it was"
    cpu = numerics(torch.device("cpu"))
    assert trained and checkpoint_path(pool, TINY.vae, 0, cpu).exists()
    assert [row["epoch"] for row in history] == [1] and all(math.isfinite(v) for v in history[0].values())
    features = encode_mixvae(model, pool.images)
    assert features.shape == (len(pool), 4) and torch.equal(features, encode_mixvae(model, pool.images))

    # Seeded as the paper VAE is, from the pool seed.
    again, _ = train_mixvae(pool.images, TINY.vae, seed=derive_seed(VAE_STREAM, 0), device="cpu", progress=False)
    assert torch.equal(encode_mixvae(again, pool.images), features), "same seed, same model"
    loaded, _, trained = get_or_train_mixvae(pool, TINY.vae, 0, device="cpu", progress=False)
    assert not trained and torch.equal(encode_mixvae(loaded, pool.images), features)

    key = checkpoint_path(pool, TINY.vae, 0, cpu)
    assert checkpoint_path(pool, VAEConfig(latent_dim=4, epochs=2, batch_size=16), 0, cpu) != key
    assert checkpoint_path(pool, TINY.vae, 1, cpu) != key
    assert checkpoint_path(pool.subset(torch.arange(15)), TINY.vae, 0, cpu) != key
    assert checkpoint_path(pool, TINY.vae, 0, {"device": "cpu", "torch_threads": 99}) != key
    assert key.parent.name == "mixvae"


def test_bad_inputs_are_refused_with_clear_errors(pool):
    with pytest.raises(ValueError, match=r"mixvae takes images \(N, 1, 28, 28\).*got \(16, 28, 28\)"):
        train_mixvae(pool.images[:, 0], TINY.vae, 0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="at least 2 images per batch"):
        train_mixvae(pool.images[:1], TINY.vae, 0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="encode_mixvae takes the MixVAE"):
        encode_mixvae(VAE(4), pool.images)
    with pytest.raises(ValueError, match=r"z must be \(S, B, d\)"):
        monte_carlo_kl(torch.zeros(2, 3), torch.zeros(2, 3), MixturePrior(3, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="samples must be ≥ 1"):
        sample_posterior(torch.zeros(2, 3), torch.zeros(2, 3), 0)


def test_every_mixvae_method_runs_end_to_end_and_resumes_after_a_kill(tmp_path, monkeypatch, spy):
    methods = [Method.parse(label) for label in ("coreset+mixvae", "medal+mixvae", "lossprediction+mixvae")]
    assert get_family("mixvae").refit_each_step is False

    # Killed in the second run's second step, after the first run finished; the rerun loads the cached model.
    resumed = killed_and_resumed(monkeypatch, spy, tmp_path / "crashed", methods, "mixvae", interrupt_at=4)
    assert resumed["n_labels"].tolist() == [4, 8] * 3

    # The interrupted run equals an uninterrupted one, whose sweep fitted the model afresh.
    assert_as_if_uninterrupted(monkeypatch, tmp_path / "reference", resumed, methods[1])


def test_a_damaged_cached_vae_is_refitted_with_a_warning(pool, tmp_path, monkeypatch):
    from alvae_utils.training import vae

    monkeypatch.setenv("ALVAE_RESULTS_ROOT", str(tmp_path))
    config = VAEConfig(latent_dim=4, epochs=1, batch_size=8)
    for fit, path in ((vae.get_or_train_vae, vae.checkpoint_path), (get_or_train_mixvae, checkpoint_path)):
        first, _, trained = fit(pool, config, 0, device="cpu", progress=False)
        assert trained
        cached = path(pool, config, 0, numerics(torch.device("cpu")))
        cached.write_bytes(cached.read_bytes()[:1000])  # truncated, as by a crash or a full disk
        with pytest.warns(UserWarning, match="cannot be read .* removed and fitted again"):
            again, _, trained = fit(pool, config, 0, device="cpu", progress=False)
        assert trained and all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                                 again.state_dict().values(), strict=True))
