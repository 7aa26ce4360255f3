"""Data: the datasets and their registry (:mod:`.datasets`), one module per source that registers its
datasets (:mod:`.idx`, :mod:`.mnist_sample`, :mod:`.medmnist_2d`), and generated MedMNIST-format test
files (:mod:`.fixtures`)."""

# The built-in datasets register themselves, in this order: mnist, fashionmnist, mnist-sample, MedMNIST 2D.
from . import idx  # noqa: F401
from . import mnist_sample  # noqa: F401, I001
from . import medmnist_2d  # noqa: F401
