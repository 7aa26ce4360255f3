"""The semi-supervised VAE "M2" (Kingma, Rezende, Mohamed & Welling 2014): a class-conditional VAE refitted each step.

The paper's future work asks for a VAE that knows the labels. M2 is the generative
model p(y) p(z) p(x|y, z) with p(y) uniform and p(z) = N(0, I), and the inference
model q(y|x) q(z|x, y) (Kingma et al. 2014, Eqs. 2 and 4; equation numbers of
arXiv:1406.5298v2). It is trained on the whole pool at every Algorithm 1 step, with the
labels of L as they are then:

* a labeled image contributes L(x, y), the negative ELBO with y observed (Eq. 6), plus
  the classification term α·(−log q(y|x)) (Eq. 9; α: :data:`CLASSIFICATION_ALPHA`);
* an unlabeled image contributes U(x) = Σ_y q(y|x)·L(x, y) − H(q(y|x)), the negative
  of Eq. 7's bound, the sum enumerating every class.

Multi-label data (ChestMNIST: 14 binary labels, 2^14 label vectors) cannot be enumerated.
The rule here: q(y|x) factorises into independent Bernoullis, and the unlabeled
term puts the expected label vector ŷ = E_q[y] = σ(logits) into L(x, ·) in place of
the sum: U(x) ≈ L(x, ŷ) − Σ_c H(Bernoulli(ŷ_c)). This plug-in (mean-field)
approximation is exact when q(y|x) is certain, and in general is not a bound
(L is not linear in y). Its entropy term is exact. It costs one decoder pass per unlabeled image.

Architecture: the paper VAE's (:class:`alvae_utils.models.vae.VAE`) with y concatenated to
its linear layers. The four stride-2 convolutions form one trunk h(x) shared by
q(y|x) (a linear layer on h) and q(z|x, y). As in Kingma et al.'s Eq. 4, μ depends on (h, y)
(a linear layer on [h, y]) and σ on h alone. The decoder's first linear layer reads [z, y].
Kingma et al. give q(y|x) a network of its own. Sharing the trunk saves one encoder pass,
and in the measurement of :data:`CLASSIFICATION_ALPHA` (α/N = 10) a separate four-layer
classifier was no better: 0.26 accuracy on U against 0.24.

Selection features (deterministic, :func:`encode_ssvae`): the mean of z under
q(z|x) = Σ_y q(y|x) q(z|x, y), which is μ(x, ŷ) because μ is linear in y; latent_dim
wide, like the paper VAE's μ.

Cost: each epoch decodes |L| + C·|U| rows for C classes (|L| + |U| for multi-label),
so a multi-class fit costs about C times the paper VAE's decoder work per epoch, at
every step. We timed one epoch over 200 MNIST images with |L| = 20 on one CPU thread:
2.3 s, against 0.35 s for the paper VAE. The number of epochs is
``VAEConfig.refit_epochs`` (``vae.refit_epochs``), or ``epochs`` when that is unset;
the ``quick`` profile lowers it to fit a laptop (:mod:`alvae_utils.experiment.profiles`).
A fit depends only on (pool, labels of L, seed), with no warm start, so a resumed
run refits the same model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import VAEConfig
from ..data.datasets import MULTICLASS, MULTILABEL, Dataset
from ..device import default_device, images_to_float, map_batches, module_device, reproducible_cuda
from ..models.resnet import MIN_BATCH
from ..models.vae import _down, _same
from ..progress import track

CLASSIFICATION_ALPHA = 100.0
"""α/N of Eq. 9: each labeled image's −log q(y|x) is weighted by α·N/|L| (:func:`classification_weight`).

Eq. 9 sums the losses of the N images and adds α times the mean over L of −log q(y|x).
Here training minimises a per-image mean, so that weight falls to each labeled image as
α·N/|L|. Kingma et al. (§3.1.2) use α = 0.1·N, chosen for training on the full MNIST
set. A fit here lasts only ``VAEConfig.epochs_per_refit`` epochs (2–20 in the profiles). With so
few epochs and α = 0.1·N, the unlabeled term drives q(y|x) onto one class before the
labels can shape it: the classification loss on L rises while training. We measured
this on 300 images of the MNIST sample, with 30 labels, 4 epochs, latent_dim 8 and one
seed. The table gives q(y|x)'s accuracy on U for each α/N:

* 0.1: 0.12 (chance; the mean max q(y|x) is 0.99);
* 1: 0.11;
* 10: 0.24;
* 30: 0.40;
* 100: 0.51.

At 100 the unlabeled loss U(x) was 215 nats, against 194 at 0.1."""

_TRUNK = 256 * 2 * 2  # the paper VAE's flattened encoder output


def check_images(images: object, who: str) -> None:
    """Raise ValueError unless ``images`` is a uint8 or float tensor of shape (N, 1, 28, 28)."""
    if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        found = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{who} takes images (N, 1, 28, 28), uint8 or float in [0, 1]; got {found}.")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"{who} takes uint8 or float images, got {images.dtype}.")


class SSVAE(nn.Module):
    """M2 networks on 28×28 grey images: q(y|x), q(z|x, y) and p(x|y, z), for ``num_classes`` classes.

    ``multilabel``: y is a vector of ``num_classes`` independent binary labels
    (q(y|x) factorised Bernoulli, p(y) uniform on {0, 1}^C). Otherwise y is one class of
    ``num_classes`` (q(y|x) categorical, p(y) uniform). y enters the networks as a float vector (B, C):
    one-hot, 0/1, or probabilities.
    """

    def __init__(self, latent_dim: int, num_classes: int, multilabel: bool = False) -> None:
        super().__init__()
        if latent_dim < 1 or num_classes < 1:
            raise ValueError(f"latent_dim and num_classes must be ≥ 1, got {latent_dim} and {num_classes}.")
        self.latent_dim, self.num_classes, self.multilabel = latent_dim, num_classes, multilabel
        self.encoder = nn.Sequential(_down(1, 32), _down(32, 64), _down(64, 128), _down(128, 256), nn.Flatten())
        self.classifier = nn.Linear(_TRUNK, num_classes)
        self.fc_mu = nn.Linear(_TRUNK + num_classes, latent_dim)
        self.fc_logvar = nn.Linear(_TRUNK, latent_dim)
        self.decoder_input = nn.Linear(latent_dim + num_classes, 64 * 7 * 7)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(64, 16, kernel_size=4, stride=4), nn.BatchNorm2d(16), nn.ReLU(),
            _same(16, 16), _same(16, 16), _same(16, 16), nn.Conv2d(16, 1, 3, padding=1),
        )

    def trunk(self, x: Tensor) -> Tensor:
        """The shared encoder features h(x) (B, 1024) of float images (B, 1, 28, 28)."""
        return self.encoder(x)

    def classify(self, h: Tensor) -> Tensor:
        """Logits of q(y|x) (B, C): softmax for one class, sigmoid per label when multi-label."""
        return self.classifier(h)

    def encode(self, h: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x, y) = N(μ(h, y), diag σ²(h)): (μ, log σ²), each (B, latent_dim); μ is linear in y."""
        return self.fc_mu(torch.cat([h, y], dim=1)), self.fc_logvar(h)

    def decode(self, z: Tensor, y: Tensor) -> Tensor:
        """Bernoulli logits of p(x|y, z), (B, 1, 28, 28)."""
        h = F.relu(self.decoder_input(torch.cat([z, y], dim=1))).view(-1, 64, 7, 7)
        return self.decoder(h)

    def label_probabilities(self, h: Tensor) -> Tensor:
        """q(y|x) as a float vector (B, C): class probabilities, or per-label probabilities when multi-label."""
        logits = self.classify(h)
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)


def negative_elbo(model: SSVAE, x: Tensor, h: Tensor, y: Tensor, noise: Tensor | None = None) -> Tensor:
    """L(x, y) of Kingma et al. 2014, the negative of Eq. 6's bound, for each row, in nats: (R,).

    L(x, y) = −log p(x|y, z) + KL(q(z|x, y) ‖ N(0, I)) − log p(y). The reconstruction is
    a single-sample estimate, with z = μ + σ·``noise`` (standard normal (R, latent_dim);
    drawn when None) and a Bernoulli likelihood summed over pixels. The KL is in closed
    form. −log p(y) = log C for one of C classes, or C·log 2 for C binary labels, since p(y)
    is uniform (and so also when y holds probabilities). ``x`` (R, ...) are float images,
    ``h`` (R, 1024) their trunk features, ``y`` (R, C) float label vectors.
    """
    mu, logvar = model.encode(h, y)
    eps = torch.randn_like(mu) if noise is None else noise
    z = mu + eps * torch.exp(0.5 * logvar)
    reconstruction = F.binary_cross_entropy_with_logits(model.decode(z, y), x, reduction="none").flatten(1).sum(1)
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1)
    neg_log_prior = model.num_classes * math.log(2) if model.multilabel else math.log(model.num_classes)
    return reconstruction + kl + neg_log_prior


@dataclass
class M2Loss:
    """The terms of Kingma et al.'s J^α (Eq. 9) on one batch, per image, in nats."""

    loss: Tensor  # scalar: (Σ_L [L(x, y) + w·(−log q(y|x))] + Σ_U U(x)) / batch size, what training minimises
    labeled: Tensor  # (n_L,): L(x, y), labeled images in batch order (Eq. 6)
    classification: Tensor  # (n_L,): −log q(y|x) of the observed y
    unlabeled: Tensor  # (n_U,): U(x), entropy included (Eq. 7; the multi-label rule: module docstring)
    entropy: Tensor  # (n_U,): H(q(y|x))


def m2_loss(model: SSVAE, x: Tensor, labels: Tensor, labeled: Tensor, weight: float,
            noise: Tensor | None = None) -> M2Loss:
    """M2's objective on a batch of float images ``x`` (B, 1, 28, 28), some labeled.

    ``labeled`` (B,) bool marks the images of L. ``labels`` holds their labels: (B,) class
    indices, or (B, C) 0/1 when ``model.multilabel``. The rows of unlabeled images are
    not read. ``weight`` multiplies each labeled image's −log q(y|x) (:func:`classification_weight`).

    Unlabeled images: for one class, the enumeration over y. Each image is paired with
    the one-hot vector of every class, so the ELBO rows are the labeled images in batch
    order, then the unlabeled images in batch order, each with its C classes in class
    order. When multi-label, each unlabeled image gets one row with ŷ = σ(logits).
    ``noise`` (rows, latent_dim) fixes the reparametrisation noise in that row order,
    for exact checks; it is drawn when None. Raises ValueError for mismatched shapes.

    The mask is turned into row positions here, which reads it on the host; a training
    loop calls :func:`m2_loss_grouped` with positions it computed where the batch order is drawn.
    """
    if labeled.dtype != torch.bool or labeled.shape != (x.shape[0],) or labels.shape[0] != x.shape[0]:
        raise ValueError(f"m2_loss: labeled must be bool (B,) and labels have B rows for {x.shape[0]} images; "
                         f"got labeled {labeled.dtype} {tuple(labeled.shape)}, labels {tuple(labels.shape)}.")
    rows = torch.cat([labeled.nonzero().squeeze(1), (~labeled).nonzero().squeeze(1)])
    return m2_loss_grouped(model, x, labels, rows, int(labeled.sum()), weight, noise)


def m2_loss_grouped(model: SSVAE, x: Tensor, labels: Tensor, rows: Tensor, n_labeled: int, weight: float,
                    noise: Tensor | None = None) -> M2Loss:
    """:func:`m2_loss` with the batch's labeled images given by position: the same terms, with no host read.

    ``rows`` (B,) int64, on ``x``'s device, holds the positions in the batch of its labeled
    images, then of its unlabeled ones, each group in batch order; the first ``n_labeled`` are
    the labeled ones. Gathering rows by position gives exactly the rows (and gradients) of a
    boolean mask, without the mask's data-dependent shape, which would make the host wait
    for the device at every batch. Raises ValueError for mismatched shapes.
    """
    batch = x.shape[0]
    if rows.shape != (batch,) or rows.dtype != torch.int64 or labels.shape[0] != batch \
            or not 0 <= n_labeled <= batch:
        raise ValueError(f"m2_loss: rows must be int64 (B,), labels have B rows and 0 ≤ n_labeled ≤ B for {batch} "
                         f"images; got rows {rows.dtype} {tuple(rows.shape)}, labels {tuple(labels.shape)}, "
                         f"n_labeled {n_labeled}.")
    on_l, on_u = rows[:n_labeled], rows[n_labeled:]
    n_unlabeled = batch - n_labeled
    h = model.trunk(x)
    logits = model.classify(h)
    logits_l, logits_u = logits[on_l], logits[on_u]
    labels_l = labels[on_l]
    classes = model.num_classes
    if model.multilabel:
        y_l = labels_l.to(h.dtype)
        classification = F.binary_cross_entropy_with_logits(logits_l, y_l, reduction="none").sum(1)
        q_u = torch.sigmoid(logits_u)
        # H(Bernoulli(p)) = BCE(logit, p) with p = σ(logit), summed over the independent labels.
        entropy = F.binary_cross_entropy_with_logits(logits_u, q_u, reduction="none").sum(1)
        x_u, h_u, y_u = x[on_u], h[on_u], q_u
    else:
        one_hot = torch.eye(classes, dtype=h.dtype, device=h.device)
        # Rows of the identity, not F.one_hot, which checks the labels' range on the host (labels are checked
        # once per fit, before training).
        y_l = one_hot[labels_l]
        classification = F.cross_entropy(logits_l, labels_l, reduction="none")
        log_q_u = torch.log_softmax(logits_u, dim=1)
        q_u = log_q_u.exp()
        entropy = -(q_u * log_q_u).sum(1)
        x_u, h_u = x[on_u].repeat_interleave(classes, 0), h[on_u].repeat_interleave(classes, 0)
        y_u = one_hot.repeat(n_unlabeled, 1)
    elbo = negative_elbo(model, torch.cat([x[on_l], x_u]), torch.cat([h[on_l], h_u]), torch.cat([y_l, y_u]), noise)
    elbo_l, elbo_u = elbo[:n_labeled], elbo[n_labeled:]
    expected = elbo_u if model.multilabel else (q_u * elbo_u.view(-1, classes)).sum(1)
    unlabeled = expected - entropy
    loss = (elbo_l.sum() + weight * classification.sum() + unlabeled.sum()) / batch
    return M2Loss(loss, elbo_l, classification, unlabeled, entropy)


def grouped_batches(n: int, batch_size: int, generator: torch.Generator, labeled: Tensor, device: torch.device
                    ) -> Iterator[tuple[Tensor, Tensor, int]]:
    """One epoch's batches of the pool in :func:`~alvae_utils.device.epoch_batches`' seeded order (the same draw),
    each with its labeled and unlabeled rows grouped for :func:`m2_loss_grouped`.

    ``labeled`` (n,) bool on the CPU marks the images of L. Yields, per batch, its pool indices
    (B,) and its ``rows`` (B,), both on ``device``, and how many of its images are labeled.
    Everything is computed on the CPU, where the order is drawn, and moved to ``device`` in one
    copy per epoch, so that no batch makes the host wait for the device.
    """
    order = torch.randperm(n, generator=generator)
    batch_of = torch.arange(n) // batch_size
    is_labeled = labeled[order]
    # A stable sort by (batch, unlabeled) keeps each batch's labeled rows, then its unlabeled ones, in batch order.
    grouped = torch.argsort(batch_of * 2 + (~is_labeled).long(), stable=True)
    rows = grouped - batch_of * batch_size
    counts = torch.zeros(-(-n // batch_size), dtype=torch.int64).index_add_(0, batch_of, is_labeled.long()).tolist()
    for (index, batch_rows), n_labeled in zip(torch.stack([order, rows]).to(device).split(batch_size, dim=1), counts,
                                              strict=True):
        yield index, batch_rows, n_labeled


def classification_weight(pool_size: int, labeled: int) -> float:
    """Weight of each labeled image's −log q(y|x): α·N/|L| for α/N = :data:`CLASSIFICATION_ALPHA` (Eq. 9)."""
    return CLASSIFICATION_ALPHA * pool_size / labeled


def _check_labeled(pool: Dataset, labeled: object) -> Tensor:
    """``labeled`` as int64 pool indices on the CPU, after checking them and the labels they select."""
    if not isinstance(labeled, Tensor) or labeled.dim() != 1 or labeled.is_floating_point() or len(labeled) == 0:
        raise ValueError("ssvae needs the pool indices of L (FeatureContext.labeled) as a non-empty 1-D integer "
                         "tensor, got "
                         f"{tuple(labeled.shape) if isinstance(labeled, Tensor) else type(labeled).__name__}.")
    labeled = labeled.to("cpu", torch.int64)
    if len(labeled.unique()) != len(labeled) or int(labeled.min()) < 0 or int(labeled.max()) >= len(pool):
        raise ValueError(f"ssvae: the indices of L must be distinct and within the pool of {len(pool)} images.")
    if pool.task not in (MULTICLASS, MULTILABEL):
        raise ValueError(f"ssvae: unknown task {pool.task!r}; use {MULTICLASS!r} or {MULTILABEL!r}.")
    labels, classes = pool.labels[labeled], pool.num_outputs
    if pool.task == MULTILABEL:
        if labels.shape != (len(labeled), classes) or not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError(f"ssvae: multi-label labels must be 0/1 of shape (N, {classes}).")
    elif labels.dim() != 1 or int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise ValueError(f"ssvae: multi-class labels must be class indices 0 … {classes - 1}, one per image.")
    return labeled


def train_ssvae(pool: Dataset, labeled: Tensor, config: VAEConfig, seed: int,
                device: torch.device | str | None = None, progress: bool = True) -> tuple[SSVAE, list[dict]]:
    """Train M2 on every pool image, with the labels of the pool indices ``labeled`` (|L|,), minimising J^α (Eq. 9).

    Adam with ``config``'s learning rate and weight decay, ``config.epochs_per_refit`` epochs of
    ``config.batch_size`` images in a seeded order over the whole pool, so labeled images
    come in their share of each batch. Initial weights, batch order and noise come from
    ``seed`` alone. The caller's global torch RNG is left as it was. History rows:
    ``{"epoch", "loss", "labeled", "classification", "unlabeled"}``, epoch means per image
    (the last three over the images of their kind), in nats. Returns M2 in eval mode on ``device``.

    Raises ValueError for malformed images, indices or labels, an empty L, a missing seed,
    fewer than two images or a batch below two, or epochs < 1.
    """
    check_images(pool.images, "ssvae")
    labeled = _check_labeled(pool, labeled)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"ssvae needs an integer seed (the loop derives one per run seed and step), got {seed!r}.")
    if len(pool) < MIN_BATCH or config.batch_size < MIN_BATCH:
        raise ValueError(f"BatchNorm needs at least {MIN_BATCH} images per batch: got {len(pool)} images "
                         f"and batch_size={config.batch_size}.")
    epochs = config.epochs_per_refit
    if epochs < 1:
        raise ValueError(f"VAE epochs must be ≥ 1, got {epochs} (vae.refit_epochs, else vae.epochs).")
    device = torch.device(device) if device is not None else default_device()
    images, labels = pool.images.to(device), pool.labels.to(device)
    mask = torch.zeros(len(pool), dtype=torch.bool)  # on the CPU, where each epoch's order is drawn
    mask[labeled] = True
    weight = classification_weight(len(pool), len(labeled))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), reproducible_cuda(device):
        torch.manual_seed(seed)
        model = SSVAE(config.latent_dim, pool.num_outputs, multilabel=pool.task == MULTILABEL).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(seed)
        history: list[dict] = []
        model.train()
        for epoch in track(range(1, epochs + 1), desc="SSVAE epochs", enabled=progress):
            sums = torch.zeros(4, device=device)  # summed on the device, read once per epoch
            seen = seen_labeled = 0
            for index, rows, n_labeled in grouped_batches(len(pool), config.batch_size, generator, mask, device):
                if len(index) < MIN_BATCH:
                    continue
                terms = m2_loss_grouped(model, images_to_float(images[index]), labels[index], rows, n_labeled,
                                        weight)
                optimizer.zero_grad(set_to_none=True)
                terms.loss.backward()
                optimizer.step()
                sums += torch.stack([terms.loss * len(index), terms.labeled.sum(), terms.classification.sum(),
                                     terms.unlabeled.sum()]).detach()
                seen, seen_labeled = seen + len(index), seen_labeled + n_labeled
            counts = torch.tensor([seen, seen_labeled, seen_labeled, seen - seen_labeled], dtype=sums.dtype,
                                  device=device)
            means = (sums / counts.clamp(min=1)).tolist()
            history.append(dict(zip(("epoch", "loss", "labeled", "classification", "unlabeled"), [epoch, *means],
                                     strict=True)))
    return model.eval(), history


def encode_ssvae(model: SSVAE, images: Tensor) -> Tensor:
    """The selection features: E[z | x] under q(z|x) = Σ_y q(y|x) q(z|x, y), (N, latent_dim), deterministic.

    μ of q(z|x, y) is linear in y, so this mean is μ(x, ŷ) with ŷ = E_q[y], the class
    (or per-label) probabilities of q(y|x). For the same reason it holds exactly under the
    factorised multi-label q. It is the same width and kind as the paper VAE's μ. Since
    y is given to the decoder, z carries what the labels do not (the "style" of Kingma
    et al.). q(y|x) is not appended: it duplicates what the task model's logits already give.
    Runs in eval mode; returns a tensor on the images' device. Raises ValueError for
    images that are not (N, 1, 28, 28) or a model that is not an :class:`SSVAE`.
    """
    if not isinstance(model, SSVAE):
        raise ValueError(f"encode_ssvae takes the SSVAE that fit_ssvae returns, got {type(model).__name__}.")
    check_images(images, "ssvae")
    model.eval()

    def features(x: Tensor) -> Tensor:
        h = model.trunk(x)
        return model.encode(h, model.label_probabilities(h))[0]

    (mu,) = map_batches(features, images, device=module_device(model))
    return mu

