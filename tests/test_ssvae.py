"""The semi-supervised VAE M2 (family ``ssvae``): its loss by hand, the multi-label rule, its features, end to end."""

import itertools
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from alvae_utils.experiment import loop
from alvae_utils.selection import features
from alvae_utils.data.datasets import MULTILABEL, Dataset, load_experiment_data
from alvae_utils.data.fixtures import write_medmnist_npz
from alvae_utils.selection.methods import Method
from alvae_utils.experiment.results import ResultStore
from alvae_utils.training.ssvae import (
    CLASSIFICATION_ALPHA, SSVAE, classification_weight, encode_ssvae, m2_loss, negative_elbo, train_ssvae,
)
from tiny import TINY, assert_as_if_uninterrupted, tiny_sweep

# A tiny M2 whose maps are written out, so its loss can be computed by hand:
# 2-pixel images, latent dimension 1, C classes (or binary labels).
A = [[1.0, -0.5, 0.4], [0.2, 0.8, -1.2]]  # q(y|x) logits = x·A + B
B = [0.1, -0.3, 0.6]
W = [0.7, -1.1, 0.5]  # μ = (x0 + x1)/2 + y·W;  log σ² = x0 − 1
U = [1.5, -0.4]  # decoder logits = z·U + y·V
V = [[0.3, -0.6], [-0.9, 0.5], [0.2, 0.1]]


class TinyM2(nn.Module):
    def __init__(self, classes, multilabel, bias=B):
        super().__init__()
        self.num_classes, self.multilabel, self.latent_dim = classes, multilabel, 1
        self.a, self.b = torch.tensor(A)[:, :classes], torch.tensor(bias)[:classes]
        self.w, self.u, self.v = torch.tensor(W)[:classes, None], torch.tensor([U]), torch.tensor(V)[:classes]

    def trunk(self, x):
        return x

    def classify(self, h):
        return h @ self.a + self.b

    def encode(self, h, y):
        return h.sum(1, keepdim=True) / 2 + y @ self.w, h[:, :1] - 1

    def decode(self, z, y):
        return z @ self.u + y @ self.v


def _hand_nelbo(x, y, eps, classes, multilabel):
    """L(x, y), the negative ELBO, in plain Python: Bernoulli NLL of the 2 pixels + KL to N(0, 1) − log p(y)."""
    mu = (x[0] + x[1]) / 2 + sum(yc * wc for yc, wc in zip(y, W, strict=False))
    logvar = x[0] - 1
    z = mu + eps * math.exp(logvar / 2)
    logits = [z * U[j] + sum(y[c] * V[c][j] for c in range(classes)) for j in range(2)]
    reconstruction = sum(math.log1p(math.exp(v)) - xj * v for v, xj in zip(logits, x, strict=True))
    kl = -0.5 * (1 + logvar - mu**2 - math.exp(logvar))
    return reconstruction + kl + (classes * math.log(2) if multilabel else math.log(classes))


def _hand_logits(x, classes):
    return [x[0] * A[0][c] + x[1] * A[1][c] + B[c] for c in range(classes)]


X_LABELED, X_UNLABELED = [0.2, 0.9], [0.8, 0.1]
BATCH = torch.tensor([X_UNLABELED, X_LABELED])  # the labeled image second: rows are reordered by the loss
LABELED = torch.tensor([False, True])
WEIGHT = 0.7


def test_the_multiclass_loss_matches_a_hand_computation_with_the_enumeration_over_y():
    classes = 2
    labels = torch.tensor([0, 1])  # the unlabeled image's label (0) must not be read
    noise = torch.tensor([[0.4], [-0.3], [1.1]])  # labeled row, then the unlabeled image with y = 0 and y = 1
    terms = m2_loss(TinyM2(classes, False), BATCH, labels, LABELED, WEIGHT, noise)

    labeled = _hand_nelbo(X_LABELED, [0, 1], 0.4, classes, False)
    logits = _hand_logits(X_LABELED, classes)
    classification = -(logits[1] - math.log(sum(math.exp(v) for v in logits)))
    logits = _hand_logits(X_UNLABELED, classes)
    q = [math.exp(v) / sum(math.exp(w) for w in logits) for v in logits]
    entropy = -sum(p * math.log(p) for p in q)
    unlabeled = (q[0] * _hand_nelbo(X_UNLABELED, [1, 0], -0.3, classes, False)
                 + q[1] * _hand_nelbo(X_UNLABELED, [0, 1], 1.1, classes, False) - entropy)

    assert terms.labeled.tolist() == pytest.approx([labeled], rel=1e-6)
    assert terms.classification.tolist() == pytest.approx([classification], rel=1e-6)
    assert terms.entropy.tolist() == pytest.approx([entropy], rel=1e-6)
    assert terms.unlabeled.tolist() == pytest.approx([unlabeled], rel=1e-6)
    assert float(terms.loss) == pytest.approx((labeled + WEIGHT * classification + unlabeled) / 2, rel=1e-6)


def test_the_multilabel_loss_matches_a_hand_computation_with_the_expected_label_vector():
    classes = 2
    labels = torch.tensor([[1, 1], [1, 0]])
    noise = torch.tensor([[0.4], [-0.3]])  # one row per image: multi-label labels are not enumerated
    terms = m2_loss(TinyM2(classes, True), BATCH, labels, LABELED, WEIGHT, noise)

    labeled = _hand_nelbo(X_LABELED, [1, 0], 0.4, classes, True)
    p = [1 / (1 + math.exp(-v)) for v in _hand_logits(X_LABELED, classes)]
    classification = -math.log(p[0]) - math.log(1 - p[1])
    q = [1 / (1 + math.exp(-v)) for v in _hand_logits(X_UNLABELED, classes)]
    entropy = -sum(r * math.log(r) + (1 - r) * math.log(1 - r) for r in q)
    unlabeled = _hand_nelbo(X_UNLABELED, q, -0.3, classes, True) - entropy

    assert terms.labeled.tolist() == pytest.approx([labeled], rel=1e-6)
    assert terms.classification.tolist() == pytest.approx([classification], rel=1e-6)
    assert terms.entropy.tolist() == pytest.approx([entropy], rel=1e-6)
    assert terms.unlabeled.tolist() == pytest.approx([unlabeled], rel=1e-6)
    assert float(terms.loss) == pytest.approx((labeled + WEIGHT * classification + unlabeled) / 2, rel=1e-6)


def _enumerated_unlabeled(model, x, eps):
    """The exact U(x) (Eq. 7) by enumerating all 2^C label vectors of a factorised q(y|x), with common noise."""
    classes = model.num_classes
    configurations = torch.tensor(list(itertools.product([0.0, 1.0], repeat=classes)))
    q = torch.sigmoid(model.classify(model.trunk(x)))[0]
    probabilities = (configurations * q + (1 - configurations) * (1 - q)).prod(1)
    rows = len(configurations)
    elbos = negative_elbo(model, x.expand(rows, -1), model.trunk(x).expand(rows, -1), configurations,
                          torch.full((rows, 1), eps))
    return float((probabilities * elbos).sum() + torch.special.xlogy(probabilities, probabilities).sum())


def test_the_multilabel_rule_is_exact_when_q_is_certain_and_its_entropy_is_always_exact():
    x, eps = torch.tensor([X_UNLABELED]), 0.25
    certain = TinyM2(3, True, bias=[30.0, -30.0, 30.0])  # q(y|x) ≈ 1 on y = (1, 0, 1)
    terms = m2_loss(certain, x, torch.zeros(1, 3), torch.tensor([False]), WEIGHT, torch.tensor([[eps]]))
    assert float(terms.unlabeled[0]) == pytest.approx(_enumerated_unlabeled(certain, x, eps), abs=1e-5)

    uncertain = TinyM2(3, True)
    terms = m2_loss(uncertain, x, torch.zeros(1, 3), torch.tensor([False]), WEIGHT, torch.tensor([[eps]]))
    configurations = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
    q = torch.sigmoid(uncertain.classify(x))[0]
    probabilities = (configurations * q + (1 - configurations) * (1 - q)).prod(1)
    assert float(terms.entropy[0]) == pytest.approx(float(-(probabilities * probabilities.log()).sum()), rel=1e-6)
    # Elsewhere the rule is an approximation (L is not linear in y), not the enumeration.
    assert float(terms.unlabeled[0]) != pytest.approx(_enumerated_unlabeled(uncertain, x, eps), abs=1e-3)


@pytest.mark.parametrize("multilabel", [False, True], ids=["multi-class", "multi-label"])
def test_the_features_are_the_mean_of_z_under_the_marginal_posterior(multilabel):
    torch.manual_seed(0)
    model = SSVAE(latent_dim=4, num_classes=3, multilabel=multilabel).eval()
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    got = encode_ssvae(model, images)
    with torch.no_grad():
        h = model.trunk(images.float() / 255)
        logits = model.classify(h)
        if multilabel:
            ys = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
            q = torch.sigmoid(logits)
            weights = [(y * q + (1 - y) * (1 - q)).prod(1) for y in ys]
        else:
            ys, weights = torch.eye(3), list(torch.softmax(logits, 1).T)
        expected = sum(w[:, None] * model.encode(h, y.expand(5, -1))[0] for w, y in zip(weights, ys, strict=True))
    assert got.shape == (5, 4)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(got, encode_ssvae(model, images)), "deterministic"


def test_the_classification_weight_spreads_alpha_over_the_labeled_images():
    # Eq. 9's α times the mean over L, in an objective averaged over the N images: α·N/|L| per labeled image.
    assert classification_weight(3000, 100) == pytest.approx(CLASSIFICATION_ALPHA * 30)
    assert classification_weight(200, 10) == pytest.approx(CLASSIFICATION_ALPHA * 20)


@pytest.fixture(scope="module")
def pool():
    return load_experiment_data(TINY.dataset, TINY.pool_size, TINY.eval_size, seed=0)[0]


def test_a_fit_depends_only_on_the_pool_the_labels_and_the_seed(pool):
    labeled = torch.arange(4)
    state = torch.get_rng_state()
    first, history = train_ssvae(pool, labeled, TINY.vae, seed=5, device="cpu", progress=False)
    assert torch.equal(torch.get_rng_state(), state), "training leaves the caller's RNG as it was"
    assert [row["epoch"] for row in history] == [1] and all(math.isfinite(v) for v in history[0].values())
    again, _ = train_ssvae(pool, labeled, TINY.vae, seed=5, device="cpu", progress=False)
    other, _ = train_ssvae(pool, labeled, TINY.vae, seed=6, device="cpu", progress=False)
    assert torch.equal(encode_ssvae(first, pool.images), encode_ssvae(again, pool.images))
    assert not torch.equal(encode_ssvae(first, pool.images), encode_ssvae(other, pool.images))


def test_refit_epochs_sets_the_ssvae_epochs_and_leaves_the_cached_vaes_keys_alone(pool, tmp_path):
    from alvae_utils.training import mixture_prior, vae

    _, history = train_ssvae(pool, torch.arange(4), replace(TINY.vae, epochs=5, refit_epochs=2), seed=0,
                             device="cpu", progress=False)
    assert [row["epoch"] for row in history] == [1, 2]
    _, history = train_ssvae(pool, torch.arange(4), replace(TINY.vae, epochs=2, refit_epochs=None), seed=0,
                             device="cpu", progress=False)
    assert len(history) == 2, "unset: the VAE's epochs"
    # The paper VAE and the MoG-prior VAE are fitted once per pool: the refit setting is not theirs.
    cpu = {"device": "cpu", "torch_threads": 1}
    for path in (vae.checkpoint_path, mixture_prior.checkpoint_path):
        assert path(pool, replace(TINY.vae, refit_epochs=7), 0, cpu, tmp_path) == path(pool, TINY.vae, 0, cpu, tmp_path)
        assert path(pool, replace(TINY.vae, epochs=7), 0, cpu, tmp_path) != path(pool, TINY.vae, 0, cpu, tmp_path)


def test_bad_inputs_are_refused_with_clear_errors(pool):
    def fit(labeled, seed=0, data=pool):
        return train_ssvae(data, labeled, TINY.vae, seed, device="cpu", progress=False)

    with pytest.raises(ValueError, match=r"indices of L \(FeatureContext.labeled\) as a non-empty.*got NoneType"):
        fit(None)
    with pytest.raises(ValueError, match="non-empty"):
        fit(torch.tensor([], dtype=torch.int64))
    with pytest.raises(ValueError, match="distinct and within the pool of 16"):
        fit(torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="distinct and within the pool of 16"):
        fit(torch.tensor([0, 16]))
    with pytest.raises(ValueError, match="integer seed"):
        fit(torch.arange(4), seed=None)
    with pytest.raises(ValueError, match=r"class indices 0 … 9"):
        fit(torch.arange(4), data=replace(pool, labels=pool.labels + 10))
    with pytest.raises(ValueError, match=r"takes images \(N, 1, 28, 28\)"):
        fit(torch.arange(4), data=replace(pool, images=pool.images[:, 0]))
    chest = Dataset("chestmnist", pool.images, torch.full((16, 3), 2), MULTILABEL, ("a", "b", "c"))
    with pytest.raises(ValueError, match=r"0/1 of shape \(N, 3\)"):
        fit(torch.arange(4), data=chest)
    with pytest.raises(ValueError, match="encode_ssvae takes the SSVAE"):
        encode_ssvae(nn.Linear(1, 1), pool.images)


def test_every_ssvae_method_runs_end_to_end_and_resumes_after_a_kill(tmp_path, monkeypatch, spy):
    methods = [Method.parse(label) for label in ("coreset+ssvae", "medal+ssvae", "lossprediction+ssvae")]

    fits = spy(features, "train_ssvae")
    # Killed in the third run's second step, after its refit: there the refitted features feed the loss module.
    train = spy(loop, "train_task_model", interrupt_at=6)
    with pytest.raises(KeyboardInterrupt):
        tiny_sweep(monkeypatch, tmp_path / "crashed", methods)
    train["restore"]()
    # Refitted before every selection (core-set, MedAL: not at the last step, which selects nothing), and at
    # every step of loss prediction, whose module trains on the features.
    assert fits["n"] == 1 + 1 + 2
    resumed = tiny_sweep(monkeypatch, tmp_path / "crashed", methods)
    assert fits["n"] == 5, "the resumed step refits; finished runs are loaded"
    assert resumed["method"].tolist() == [m.label for m in methods for _ in range(2)]
    assert resumed["n_labels"].tolist() == [4, 8] * 3

    assert_as_if_uninterrupted(monkeypatch, tmp_path / "reference", resumed, methods[2])


def test_the_multilabel_path_runs_end_to_end_on_chestmnist_format_data(tmp_path, spy):
    write_medmnist_npz(tmp_path / "chestmnist.npz", n_train=100, n_val=40, n_test=40, flag="chestmnist", seed=0)
    config = replace(TINY, dataset="chestmnist")
    pool, evaluation = load_experiment_data("chestmnist", config.pool_size, config.eval_size, seed=0, root=tmp_path,
                                            download=False)
    assert pool.task == MULTILABEL and pool.labels.shape == (16, 14)
    fits = spy(features, "train_ssvae")
    rows = loop.run_algorithm1(config, Method.parse("coreset+ssvae"), 0, pool, evaluation,
                               ResultStore("t", root=tmp_path / "results"), device=torch.device("cpu"), progress=False)
    assert rows["n_labels"].tolist() == [4, 8] and fits["n"] == 1, "fitted for the one selection, not at the end"
