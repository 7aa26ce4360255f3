"""Training: the task model and loss-prediction module (:mod:`.task_model`), their metrics (:mod:`.metrics`),
the paper's VAE (:mod:`.vae`), the semi-supervised M2 VAE (:mod:`.ssvae`) and the mixture-prior VAE
(:mod:`.mixture_prior`)."""
