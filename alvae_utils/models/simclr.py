"""SimCLR's network and loss (Chen et al., 2020, "A Simple Framework for Contrastive Learning of Visual
Representations", Eq. 1): an encoder f, a projection head g, and the NT-Xent loss over two views.

The encoder is the task model's own ResNet-18 (:class:`~alvae_utils.models.resnet.TaskModel`, ImageNet stem,
one grey channel), so its weights can initialise a task model (``train.init=simclr``): the features are
f's 512 pooled outputs h (the ``simclr`` family's features), not the head's z, which Chen et al. (§4.2) found
to lose information the contrastive task does not need.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import TaskModel

FEATURE_DIM = 512
"""Size of h, the encoder's pooled output: the family's features."""


class SimCLRNet(nn.Module):
    """f (a :class:`TaskModel`, whose classification head ``net.fc`` is never trained) and g (Linear-ReLU-Linear).

    Takes float images (B, 1, 28, 28) in [0, 1]; :meth:`forward` returns z = g(h) (B, projection_dim).
    """

    def __init__(self, projection_dim: int = 128) -> None:
        super().__init__()
        self.projection_dim = projection_dim
        self.encoder = TaskModel(num_outputs=1)  # fc is a placeholder: a task model brings its own head
        self.head = nn.Sequential(nn.Linear(FEATURE_DIM, FEATURE_DIM), nn.ReLU(),
                                  nn.Linear(FEATURE_DIM, projection_dim))

    def features(self, x: Tensor) -> Tensor:
        """h = f(x): (B, 512), the encoder's globally pooled layer4 output (T_f of a task model)."""
        return self.encoder(x).features

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def backbone_state(self) -> dict[str, Tensor]:
        """f's weights and BatchNorm statistics as a :class:`TaskModel` names them, without its head ``net.fc``."""
        return {name: value for name, value in self.encoder.state_dict().items() if not name.startswith("net.fc.")}


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """The NT-Xent loss of Chen et al. (2020, Eq. 1), averaged over the 2B anchors.

    ``z1``, ``z2``: (B, d) projections of two views of the same B images (row i of each is a positive pair).
    With u = the 2B rows, L2-normalised, and s_ij = u_i·u_j / τ, anchor i's loss is
    −log(exp(s_ip) / Σ_{k≠i} exp(s_ik)), p its positive: every other view in the batch is a negative and the
    self-pair k = i is excluded. Raises ValueError for B < 2, unequal shapes or τ ≤ 0.
    """
    if z1.ndim != 2 or z1.shape != z2.shape or z1.shape[0] < 2:
        raise ValueError(f"nt_xent needs two (B, d) projections of equal shape with B ≥ 2, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}.")
    if not temperature > 0:
        raise ValueError(f"the temperature τ must be > 0, got {temperature}.")
    batch = z1.shape[0]
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    self_pairs = torch.eye(2 * batch, dtype=torch.bool, device=z1.device)
    similarity = (u @ u.T / temperature).masked_fill(self_pairs, float("-inf"))  # k ≠ i
    positives = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(z1.device)
    return F.cross_entropy(similarity, positives)
