"""Seeds: every random choice of a run draws from its own named stream, derived from the run's seed.

A stream's name is part of the derived seed, so a misspelt name would silently change the
numbers without changing the run key. Callers therefore name streams by the constants
below (a misspelt constant is a NameError), never by string literals.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

INITIAL_LABELS = "initial-labels"  # ξ initial labels (Algorithm 1, step 1), from the run seed alone
MODEL = "model"  # initial weights of T (and P), per (seed, step)
TRAIN = "train"  # batch order while training T, per (seed, step)
SELECT = "select"  # random selection, per (seed, step)
VAE = "vae"  # the VAE's weights and batch order, per pool seed
SIMCLR = "simclr"  # the SimCLR encoder's weights and batch order, per pool seed
SIMCLR_VIEWS = "simclr-views"  # SimCLR's augmented views, per fit seed
FEATURES = "features"  # a feature family refitted at every step, per (family, seed, step)
ALPHA = "alpha"  # the pool pairs that estimate a balanced α (Eq. 6), per (seed, step)
TSNE_SAMPLE = "tsne-sample"  # the unlabeled sample of the Figs. 5–6 snapshot


def derive_seed(*parts: object) -> int:
    """A seed in [0, 2**31) from ``parts`` (a stream constant first, then e.g. seed and step).

    Stable across processes and machines: SHA-256 of ``repr(parts)``, since
    Python's ``hash`` is salted per process.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**31


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
