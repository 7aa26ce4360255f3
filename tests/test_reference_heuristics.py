"""Margin, BALD, BADGE and TypiClust against scikit-activeml and brute-force references; their registry inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skactiveml.pool import batch_bald, uncertainty_scores
from skactiveml.pool._typi_clust import _typicality

from alvae_utils.config import ConfigError, ExperimentConfig, TrainConfig, VAEConfig
from alvae_utils.data.datasets import load_experiment_data
from alvae_utils.experiment.results import ResultStore, data_fingerprint
from alvae_utils.experiment import loop
from alvae_utils.models.resnet import TaskModel
from alvae_utils.selection.alpha import balanced_alpha
from alvae_utils.selection.badge import badge_balanced_alpha, badge_select, gradient_factors
from alvae_utils.selection.bald import mc_dropout_probabilities, bald_scores
from alvae_utils.selection.heuristics import HEURISTICS, select
from alvae_utils.selection.margin import margin_scores
from alvae_utils.selection.methods import Method
from alvae_utils.selection.typiclust import MIN_CLUSTER_SIZE, cluster_pool, typicality, typiclust_select

MC, ML = "multi-class", "multi-label"
LOOP = ExperimentConfig(
    "mnist-sample", pool_size=120, eval_size=60, initial_labels=10, budget=10, max_labels=30,
    train=TrainConfig(initial_epochs=1, epoch_increment=1, batch_size=10), vae=VAEConfig(latent_dim=4, epochs=1),
)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mask(n: int, labeled: int, seed: int = 0) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=_generator(seed))[:labeled]] = True
    return mask


# ---- margin ----------------------------------------------------------------------------------------------------

def test_margin_matches_scikit_activeml_scores_and_picks():
    logits = torch.randn(200, 7, generator=_generator(1), dtype=torch.float64)
    probas = torch.softmax(logits, 1).numpy()
    theirs = uncertainty_scores(probas, method="margin_sampling")  # 1 − (p_(1) − p_(2)): highest first
    np.testing.assert_allclose(1 - margin_scores(logits, MC).numpy(), theirs, rtol=0, atol=1e-12)
    mask = _mask(200, 30)
    picks = select("margin", mask, 25, logits=logits, task=MC)
    unlabeled = np.flatnonzero(~mask.numpy())
    expected = unlabeled[np.argsort(-theirs[unlabeled], kind="stable")[:25]]
    assert picks.tolist() == expected.tolist()


def test_multilabel_margin_is_the_mean_distance_of_each_label_from_one_half():
    logits = torch.randn(40, 14, generator=_generator(2), dtype=torch.float64)
    p = torch.sigmoid(logits).numpy()
    brute = np.array([np.mean([abs(p[i, c] - 0.5) for c in range(14)]) for i in range(40)])
    np.testing.assert_allclose(margin_scores(logits, ML).numpy(), brute, atol=1e-12)
    # One label: the binary margin |p − (1 − p)| halved, so the same ranking as two-class margin sampling.
    one = logits[:, :1]
    two_class = uncertainty_scores(np.hstack([1 - torch.sigmoid(one).numpy(), torch.sigmoid(one).numpy()]),
                                   method="margin_sampling")
    np.testing.assert_allclose(1 - 2 * margin_scores(one, ML).numpy(), two_class, atol=1e-12)


# ---- BALD ------------------------------------------------------------------------------------------------------

def _mc(seed: int, t: int = 8, n: int = 60, c: int = 5) -> torch.Tensor:
    return torch.softmax(torch.randn(t, n, c, generator=_generator(seed), dtype=torch.float64) * 2, dim=2)


def brute_bald(p: np.ndarray) -> np.ndarray:
    """H[mean_t p_t] − mean_t H[p_t] per point, in plain loops."""
    def entropy(q):
        return -sum(x * np.log(x) for x in q if x > 0)
    t, n, _ = p.shape
    return np.array([entropy(p[:, i].mean(0)) - np.mean([entropy(p[s, i]) for s in range(t)]) for i in range(n)])


def test_bald_matches_brute_force_and_scikit_activeml_batch_of_one():
    p = _mc(3)
    ours = bald_scores(p, MC).double().numpy()
    np.testing.assert_allclose(ours, brute_bald(p.numpy()), atol=1e-6)
    # batch_bald clips probabilities at 1e-7 before the logs: equal within that.
    theirs = batch_bald(p.numpy().copy(), batch_size=1)[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.argmax(ours) == np.argmax(theirs)


def test_bald_is_zero_when_every_pass_agrees_and_top_beta_picks():
    p = _mc(4)
    same = p[:1].expand(6, -1, -1)
    assert bald_scores(same, MC).abs().max() < 1e-6
    mask = _mask(60, 10)
    scores = bald_scores(p, MC)
    picks = select("bald", mask, 5, mc_probabilities=p, task=MC)
    unlabeled = (~mask).nonzero().squeeze(1)
    assert picks.tolist() == unlabeled[torch.sort(scores[unlabeled], descending=True, stable=True).indices[:5]].tolist()


def test_multilabel_bald_is_the_sum_of_per_label_mutual_informations():
    p = torch.sigmoid(torch.randn(10, 30, 4, generator=_generator(5), dtype=torch.float64) * 2)
    per_label = [batch_bald(torch.stack([1 - p[..., c], p[..., c]], 2).numpy().copy(), batch_size=1)[0]
                 for c in range(4)]
    np.testing.assert_allclose(bald_scores(p, ML).double().numpy(), np.sum(per_label, 0), atol=1e-5)


def test_mc_dropout_samples_only_the_last_layer_and_is_seeded():
    h = torch.randn(50, 16, generator=_generator(6))
    head = torch.nn.Linear(16, 3)
    no_dropout = mc_dropout_probabilities(h, head.weight, head.bias, MC, rate=0.0, samples=4)
    expected = torch.softmax(head(h), 1).detach()
    assert all(torch.allclose(no_dropout[t], expected, atol=1e-6) for t in range(4))
    first = mc_dropout_probabilities(h, head.weight, head.bias, MC, 0.5, 20, _generator(7))
    again = mc_dropout_probabilities(h, head.weight, head.bias, MC, 0.5, 20, _generator(7))
    assert torch.equal(first, again) and not torch.equal(first[0], first[1])
    # Inverted dropout keeps the expected pre-activation: the mean logit over many masks tends to W·h + b.
    keep = torch.rand((4000, 16), generator=_generator(8)) >= 0.5
    mean_input = (h[0] * keep / 0.5).mean(0)
    assert torch.allclose(mean_input, h[0], atol=0.15)
    with pytest.raises(ValueError, match="dropout rate"):
        mc_dropout_probabilities(h, head.weight, head.bias, MC, rate=1.0)


def test_dropout_exists_only_in_balds_task_model():
    torch.manual_seed(0)
    plain = TaskModel(10)
    torch.manual_seed(0)
    with_dropout = TaskModel(10, dropout=0.5)
    assert plain.dropout is None
    assert plain.state_dict().keys() == with_dropout.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), with_dropout.state_dict().values(),
                                                 strict=True))
    x = torch.rand(4, 1, 28, 28)
    plain.eval(), with_dropout.eval()
    assert torch.equal(plain(x).logits, with_dropout(x).logits), "eval mode: dropout is off"
    assert {name for name, h in HEURISTICS.items() if h.mc_dropout} == {"bald"}


# ---- BADGE -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", [MC, ML])
def test_gradient_factors_give_the_last_layers_loss_gradient_at_the_predicted_label(task):
    h = torch.randn(6, 8, generator=_generator(9), dtype=torch.float64)
    head = torch.nn.Linear(8, 5).double()
    logits = head(h)
    a = gradient_factors(logits.detach(), task)
    for i in range(6):
        head.zero_grad()
        z = head(h[i:i + 1])
        if task == MC:
            loss = torch.nn.functional.cross_entropy(z, z.argmax(1))
        else:  # the sum of the binary cross-entropies at the predicted labels
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, (z > 0).double(), reduction="sum")
        loss.backward()
        assert torch.allclose(head.weight.grad, torch.outer(a[i], h[i]), atol=1e-10)


def _badge_problem(seed: int, n: int = 80, c: int = 4, d: int = 6, k: int = 3):
    g = _generator(seed)
    return (torch.randn(n, c, generator=g) * 2, torch.randn(n, d, generator=g), torch.randn(n, k, generator=g),
            _mask(n, 15, seed))


@pytest.mark.parametrize("with_family", [False, True])
@pytest.mark.parametrize("task", [MC, ML])
def test_badge_samples_from_the_brute_force_d2_distribution(task, with_family):
    logits, h, v, mask = _badge_problem(10)
    family = 0.7 * v if with_family else None
    a = gradient_factors(logits, task)
    embedding = torch.einsum("nc,nd->ncd", a.double(), h.double()).reshape(len(h), -1)  # materialised: N × C·d
    if with_family:
        embedding = torch.cat([embedding, family.double()], 1)
    unlabeled = (~mask).nonzero().squeeze(1)
    g = embedding[unlabeled]
    recorded: list[torch.Tensor] = []

    def draw(weights, generator):  # records the D² weights, then picks one of the three heaviest to go on
        recorded.append(weights / weights.sum())
        return int(torch.argsort(weights, descending=True)[len(recorded) % 3])

    picks = badge_select(logits, h, task, mask, 12, _generator(0), family, draw=draw)
    positions = [int((unlabeled == p).nonzero()) for p in picks]
    assert positions[0] == int(torch.argmax(g.square().sum(1))), "first pick: the largest gradient norm"
    for i, weights in enumerate(recorded, start=1):
        d2 = torch.cdist(g, g[positions[:i]]).square().min(1).values
        np.testing.assert_allclose(weights.numpy(), (d2 / d2.sum()).numpy(), atol=1e-9)
    assert len(set(picks.tolist())) == 12 and not mask[picks].any()


def test_badge_is_reproducible_from_the_selection_generator():
    logits, h, v, mask = _badge_problem(11)
    first = badge_select(logits, h, MC, mask, 20, _generator(5), v)
    assert torch.equal(first, badge_select(logits, h, MC, mask, 20, _generator(5), v))
    assert not torch.equal(first, badge_select(logits, h, MC, mask, 20, _generator(6), v))


def test_badge_draws_with_the_d2_probabilities():
    """The default draw, over many seeds, against the D² probabilities of the second pick (chi-square, p > 0.001)."""
    from scipy.stats import chisquare
    logits, h, _, mask = _badge_problem(12, n=25)
    recorded = []
    badge_select(logits, h, MC, mask, 2, _generator(0), draw=lambda w, g: recorded.append(w) or 0)
    unlabeled = (~mask).nonzero().squeeze(1)
    counts = np.zeros(len(unlabeled))
    for seed in range(3000):
        second = int(badge_select(logits, h, MC, mask, 2, _generator(seed))[1])
        counts[int((unlabeled == second).nonzero())] += 1
    expected = (recorded[0] / recorded[0].sum()).numpy() * 3000
    keep = expected > 0
    assert counts[~keep].sum() == 0, "a point at D² = 0 (the first pick) is never drawn"
    assert chisquare(counts[keep], expected[keep] * counts.sum() / expected[keep].sum()).pvalue > 1e-3


def test_badge_balanced_alpha_matches_the_materialised_embedding():
    logits, h, v, _ = _badge_problem(13, n=300)
    a = gradient_factors(logits, MC)
    embedding = torch.einsum("nc,nd->ncd", a, h).reshape(len(h), -1)
    expected = balanced_alpha(embedding, v, _generator(3))
    assert badge_balanced_alpha(logits, h, MC, v, _generator(3)) == pytest.approx(expected, rel=1e-5)


# ---- TypiClust -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 5, 20])
def test_typicality_matches_scikit_activeml_with_the_same_k(k):
    x = torch.randn(40, 3, generator=_generator(14), dtype=torch.float64)
    theirs = _typicality(x.numpy(), np.arange(40), k)  # 1 / ((Σ_{k+1 incl. self} d + 1e-7) / k)
    np.testing.assert_allclose(typicality(x, k).numpy(), theirs, rtol=1e-6)


def brute_typiclust(features: torch.Tensor, mask: torch.Tensor, budget: int, cluster_of: torch.Tensor) -> list[int]:
    """The paper's selection given the clusters, from scratch: per pick, a fresh typicality with numpy loops."""
    x = features.double().numpy()
    clusters = int(cluster_of.max()) + 1
    sizes = [int((cluster_of == c).sum()) for c in range(clusters)]
    counts = [int((cluster_of[mask] == c).sum()) for c in range(clusters)]
    order = sorted(range(clusters), key=lambda c: (sizes[c] <= MIN_CLUSTER_SIZE, counts[c], -sizes[c], c))
    taken = set(mask.nonzero().squeeze(1).tolist())
    picks = []
    while len(picks) < budget:
        for c in order:
            members = [i for i in range(len(x)) if int(cluster_of[i]) == c and i not in taken]
            if not members:
                continue
            k = max(1, min(20, len(members) // 2, len(members) - 1))
            scores = []
            for i in members:
                dist = sorted(np.sqrt(((x[j] - x[i]) ** 2).sum()) for j in members if j != i)
                scores.append(1 / np.mean(dist[:k]) if dist else 1.0)
            best = members[int(np.argmax(scores))]
            picks.append(best)
            taken.add(best)
            if len(picks) == budget:
                break
    return picks


@pytest.mark.parametrize("labeled, budget", [(10, 12), (3, 40)])
def test_typiclust_matches_a_brute_force_reference_given_the_clusters(labeled, budget):
    features = torch.randn(150, 4, generator=_generator(15))
    mask = _mask(150, labeled, 15)
    picks = typiclust_select(features, mask, budget, _generator(4))
    seed = int(torch.randint(2**31 - 1, (), generator=_generator(4)))  # what typiclust_select draws first
    cluster_of = cluster_pool(features, min(labeled + budget, 150), seed)
    assert picks.tolist() == brute_typiclust(features, mask, budget, cluster_of)
    assert torch.equal(picks, typiclust_select(features, mask, budget, _generator(4)))


def test_typiclust_takes_the_typical_point_of_the_largest_uncovered_cluster_first():
    g = _generator(16)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    sizes = [40, 25, 15]
    features = torch.cat([centre + torch.randn(size, 2, generator=g)
                          for centre, size in zip(centres, sizes, strict=True)])
    features[3] = centres[0]  # the most typical point of the largest cluster
    mask = torch.zeros(80, dtype=torch.bool)
    mask[40] = True  # the middle cluster is covered
    # |L| + β = 3 clusters: the largest uncovered (40), then the other uncovered (15), then the covered one.
    picks = typiclust_select(features, mask, 2, _generator(0)).tolist()
    assert picks[0] == 3 and 65 <= picks[1] < 80


def test_typiclust_needs_a_family_and_takes_no_alpha():
    with pytest.raises(ConfigError, match="needs one: write typiclust\\+FAMILY with FAMILY one of vae, ssvae"):
        Method.parse("typiclust")
    with pytest.raises(ConfigError, match="takes no α"):
        Method.parse("typiclust+vae(α=2)")
    with pytest.raises(ConfigError, match="takes no α"):
        Method.parse("typiclust+vae(α=balanced)")
    for label in ("margin+vae", "bald+vae"):
        with pytest.raises(ConfigError, match="has no VAE variant"):
            Method.parse(label)
    assert Method.parse("badge+vae(α=balanced)").label == "badge+vae(α=balanced)"


# ---- registry inputs and the loop ------------------------------------------------------------------------------

def test_each_heuristic_declares_what_it_needs():
    needs = {name: set(HEURISTICS[name].needs) for name in ("margin", "bald", "badge", "typiclust")}
    assert needs["margin"] == {"logits", "task"}
    assert needs["bald"] == {"mc_probabilities", "task"}
    assert needs["badge"] == {"features", "logits", "task", "generator", "family_features"}
    assert needs["typiclust"] == {"family_features", "generator"}
    assert Method("bald").key_fields() == {"heuristic": "bald", "use_vae": False, "alpha": None,
                                           "mc_dropout": 0.5, "mc_samples": 20}
    assert Method("coreset").key_fields() == {"heuristic": "coreset", "use_vae": False, "alpha": None}


class _Recorder:
    def __init__(self, monkeypatch):
        self.predicted = self.sampled = 0
        real_predict, real_mc = loop.predict, loop.mc_dropout_probabilities

        def predict(*args, **kwargs):
            self.predicted += 1
            return real_predict(*args, **kwargs)

        def mc(*args, **kwargs):
            self.sampled += 1
            return real_mc(*args, **kwargs)
        monkeypatch.setattr(loop, "predict", predict)
        monkeypatch.setattr(loop, "mc_dropout_probabilities", mc)


@pytest.mark.parametrize("label, predicted, sampled", [
    ("typiclust+vae", 0, 0), ("margin", 2, 0), ("bald", 2, 2), ("badge+vae(α=balanced)", 2, 0)])
def test_the_loop_computes_only_what_the_heuristic_asks_for(tmp_path, monkeypatch, label, predicted, sampled):
    pool, evaluation = load_experiment_data(LOOP.dataset, LOOP.pool_size, LOOP.eval_size, seed=0)
    recorder = _Recorder(monkeypatch)
    method = Method.parse(label)
    family = torch.randn(LOOP.pool_size, 4, generator=_generator(0)) if method.features else None
    store = ResultStore("test", root=tmp_path)
    rows = loop.run_algorithm1(LOOP, method, 0, pool, evaluation, store, family_features=family,
                               device=torch.device("cpu"), progress=False)
    state = store.record(LOOP, method, 0, pool.description, data_fingerprint(pool, evaluation)).load()[1]
    assert (recorder.predicted, recorder.sampled) == (predicted, sampled)
    assert state.finished and len(set(state.labeled)) == 30
    alphas = rows["alpha_used"].tolist()
    if label in ("margin", "bald"):
        assert all(np.isnan(alphas))
    elif label.startswith("typiclust"):  # its label's α, the default, which scales nothing (it has one block)
        assert alphas == [1.0] * 3
    else:  # a balanced α estimated at each selection (steps 0 and 1), none after the last step
        assert alphas[0] > 0 and alphas[1] > 0 and np.isnan(alphas[2])


@pytest.mark.parametrize("label", ["bald", "typiclust+vae"])
def test_a_killed_run_resumes_to_the_same_picks(tmp_path, monkeypatch, label):
    """BALD's Monte Carlo masks and TypiClust's k-means are seeded from (seed, step), so a resumed run picks alike."""
    pool, evaluation = load_experiment_data(LOOP.dataset, LOOP.pool_size, LOOP.eval_size, seed=0)
    method = Method.parse(label)
    family = torch.randn(LOOP.pool_size, 4, generator=_generator(0)) if method.features else None

    def run(root):
        store = ResultStore("test", root=root)
        loop.run_algorithm1(LOOP, method, 0, pool, evaluation, store, family_features=family,
                            device=torch.device("cpu"), progress=False)
        return store.record(LOOP, method, 0, pool.description, data_fingerprint(pool, evaluation)).load()

    reference_rows, reference = run(tmp_path / "whole")
    real_train, calls = loop.train_task_model, []

    def crash_on_the_third_training(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill during step 2")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(loop, "train_task_model", crash_on_the_third_training)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    monkeypatch.setattr(loop, "train_task_model", real_train)
    rows, state = run(tmp_path / "killed")
    assert state.labeled == reference.labeled and state.finished
    assert rows["accuracy"].tolist() == reference_rows["accuracy"].tolist()


@pytest.mark.parametrize("label", ["margin", "bald", "badge", "badge+vae(α=balanced)", "typiclust+vae"])
def test_multilabel_selection_step_through_the_loop(label):
    """ChestMNIST's path: 14 sigmoid outputs, BALD's dropout model, BADGE's block and TypiClust's family."""
    from alvae_utils.training.task_model import build_task_model

    method = Method.parse(label)
    images = torch.randint(0, 256, (60, 1, 28, 28), dtype=torch.uint8, generator=_generator(17))
    model, _ = build_task_model(14, TrainConfig(), seed=0, device="cpu", dropout=method.heuristic_entry.mc_dropout)
    family = torch.randn(60, 4, generator=_generator(18)) if method.features else None
    labeled = torch.arange(10)
    picks, alpha = loop._select_step(method, 8, labeled, images, ML, model, None, family, None, _generator(1),
                                     _generator(2))
    again, _ = loop._select_step(method, 8, labeled, images, ML, model, None, family, None, _generator(1),
                                 _generator(2))
    assert torch.equal(picks, again) and len(set(picks.tolist())) == 8 and int(picks.min()) >= 10
    assert (alpha > 0) if label.startswith("badge+") else np.isnan(alpha)


def test_the_versus_random_figure_draws_every_heuristic(tmp_path):
    import pandas as pd

    from alvae_utils.analysis import aubc, figures

    methods = ("random", "margin", "bald", "badge", "badge+vae", "typiclust+vae")
    rows = pd.DataFrame([{"profile": "test", "dataset": "mnist", "data_description": "synthetic", "config_key": "k",
                          "method": method, "seed": seed, "step": step, "n_labels": n,
                          "accuracy": 0.3 + 0.1 * step + 0.01 * index + 0.001 * seed, "auc": np.nan}
                         for index, method in enumerate(methods) for seed in range(3)
                         for step, n in enumerate((10, 20, 30))])
    versus = figures.versus_random_methods(rows["method"])
    assert versus == ["badge", "bald", "margin", "typiclust+vae", "random"]
    curves = aubc.learning_curves(rows, "mnist", versus, "accuracy")
    _, files = figures.draw("versus_random", curves, stem={"dataset": "mnist", "metric": ""}, title="t",
                            profile="test", directory=tmp_path)
    assert sorted(path.name for path in files) == ["al_mnist_vs_random.pdf", "al_mnist_vs_random.png"]
