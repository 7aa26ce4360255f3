"""alvae: task-agnostic VAE features in task-based active learning (Godwin et al., SciPy 2022)."""

__version__ = "0.1.0"
