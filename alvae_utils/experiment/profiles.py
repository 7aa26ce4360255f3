"""Profiles: the one source of truth for every setting a figure run uses.

A *profile* bundles, per dataset, the experiment settings (pool size, ξ, β, η,
training schedule, VAE), the seeds, the methods compared and the t-SNE
experiment of Figs. 5–6, the sweep of notebook 05 (:class:`BeyondConfig`: the
paper's open questions) and the study of notebook 06 (:class:`StudyConfig`: which task-agnostic
information helps).

* ``paper`` — the settings pinned by Godwin et al. (2022), meant for a GPU.
* ``quick`` — the same pipeline scaled down so ``make figures`` finishes on a
  laptop CPU (MNIST from the embedded 5,000-digit sample when offline).
* ``ci``    — the smallest profile that still exercises every code path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..config import (
    ConfigError, ExperimentConfig, SimCLRConfig, TSNEConfig, TrainConfig, VAEConfig, describe_overrides,
)
from ..data.datasets import DATASETS, evaluation_split, split_sizes
from ..selection.heuristics import LOSS_MODULE, get_heuristic
from ..selection.methods import BALANCED, DEFAULT_ALPHA, Method


@dataclass(frozen=True)
class BeyondConfig:
    """Notebook 05's sweep: the paper's open questions (α of Eq. 6, a class-conditional VAE, a multimodal prior).

    Its methods (:attr:`methods`) are random, each heuristic plain, ``<heuristic>+vae(α=a)``
    for each heuristic of ``alpha_heuristics`` and each α of ``alphas`` except 0, and
    ``<heuristic>+<family>`` (α = :data:`~alvae_utils.selection.methods.DEFAULT_ALPHA`) for each
    heuristic of ``family_heuristics`` and each family of ``families``. α = 0 appends a
    block of zeros, which leaves every distance and so every pick of the plain heuristic
    unchanged (``tests/test_alpha.py`` checks it run against run), so the plain runs are
    the α = 0 point and are not run twice.
    """

    experiments: tuple[ExperimentConfig, ...]  # one per dataset notebook 05 runs on
    seeds: tuple[int, ...]
    alphas: tuple[float | str, ...] = (0.0, 0.25, 1.0, 4.0, 16.0, BALANCED)
    alpha_heuristics: tuple[str, ...] = ("coreset", "medal")  # distance-based: α = balanced is defined for them
    families: tuple[str, ...] = ("ssvae", "mixvae")  # the paper's future work (training.ssvae, .mixture_prior)
    family_heuristics: tuple[str, ...] = ("coreset", "medal", "lossprediction")
    tails_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # one snapshot per seed for the "picks in the tails" statistic

    @property
    def methods(self) -> tuple[Method, ...]:
        heuristics = dict.fromkeys((*self.alpha_heuristics, *self.family_heuristics))
        sweep = [Method(h, "vae", alpha) for h in self.alpha_heuristics for alpha in self.alphas if alpha != 0]
        variants = [Method(h, family) for h in self.family_heuristics for family in self.families]
        methods = (Method("random"), *(Method(h) for h in heuristics), *sweep, *variants)
        for method in methods:
            method.validate()
        return methods


def study_alpha(heuristic: str) -> float | str:
    """α = balanced where it is defined; loss prediction's module learns the block's scale, so it keeps the default."""
    return DEFAULT_ALPHA if get_heuristic(heuristic).extra_features == LOSS_MODULE else BALANCED


@dataclass(frozen=True)
class StudyConfig:
    """Notebook 06's study: does task-agnostic information help task-based active learning, and which?

    On the same pools, seeds and label grid it runs (:attr:`methods`): random; the uncertainty
    baselines; each task-aware heuristic plain and with each family's features appended (α = balanced,
    or the default for loss prediction, :func:`study_alpha`); each task-agnostic heuristic on each
    family's representation alone; and (:attr:`start_methods`) the heuristics of ``start`` again with
    the task model's backbone initialised from the pool's SimCLR encoder (``train.init=simclr``): the
    second way to use task-agnostic information (Lüth et al., NeurIPS 2023).
    """

    experiments: tuple[ExperimentConfig, ...]  # one per dataset notebook 06 runs on
    seeds: tuple[int, ...]
    aware: tuple[str, ...] = ("coreset", "badge")  # task-aware heuristics, plain and with each family appended
    families: tuple[str, ...] = ("vae", "simclr")  # the task-agnostic representations compared
    agnostic: tuple[str, ...] = ("typiclust",)  # heuristics that select from a family's representation alone
    uncertainty: tuple[str, ...] = ("margin", "bald")
    start: tuple[str, ...] = ("random", "coreset")  # run again with T's backbone from the SimCLR encoder
    quality_families: tuple[str, ...] = ("simclr", "vae", "mixvae")  # k-NN quality of each label-free fit

    @property
    def methods(self) -> tuple[Method, ...]:
        """The methods of the scratch-start sweep, validated; random first."""
        methods = (Method("random"), *(Method(h) for h in self.uncertainty), *(Method(h) for h in self.aware),
                   *(Method(h, f, study_alpha(h)) for h in self.aware for f in self.families),
                   *(Method(h, f) for h in self.agnostic for f in self.families))
        for method in methods:
            method.validate()
        return methods

    def validate(self) -> None:
        """ConfigError for a study that cannot answer its questions: no experiment, fewer than 2 distinct seeds (its
        tests pair runs by seed), or a heuristic in two roles (its plain runs would be asked for twice)."""
        seeds = list(self.seeds)
        if not self.experiments or len(seeds) < 2 or len(set(seeds)) != len(seeds):
            raise ConfigError(f"a study needs at least one experiment and 2 or more distinct seeds; got "
                              f"{len(self.experiments)} experiment(s) and seeds {seeds}.")
        roles = [*self.aware, *self.agnostic, *self.uncertainty]
        twice = sorted({h for h in roles if roles.count(h) > 1} | ({"random"} & set(roles)))
        if twice:
            raise ConfigError(f"heuristic(s) {', '.join(twice)} appear in more than one role of the study (aware, "
                              "agnostic, uncertainty; random is always run): give each one role.")

    @property
    def start_methods(self) -> tuple[Method, ...]:
        """The methods run again with ``train.init=simclr``, validated."""
        methods = tuple(Method(h) for h in self.start)
        for method in methods:
            method.validate()
        return methods


def simclr_start(experiment: ExperimentConfig) -> ExperimentConfig:
    """``experiment`` with the task model's backbone initialised from the pool's SimCLR encoder at every step
    (instead of from scratch, or from ImageNet's weights where ``train.pretrained`` chose them)."""
    return replace(experiment, train=replace(experiment.train, init="simclr", pretrained=False))


@dataclass(frozen=True)
class Profile:
    """A named set of experiments; the only place settings are chosen."""

    name: str
    experiments: tuple[ExperimentConfig, ...]
    seeds: tuple[int, ...]
    methods: tuple[Method, ...]
    tsne: TSNEConfig
    vae_figure_dataset: str = "mnist"
    executor: str = "serial"  # how sweeps run unless told otherwise (alvae_utils.execution; benchmarks/README)
    beyond: BeyondConfig | None = None  # notebook 05's sweep; None: the profile has none
    study: StudyConfig | None = None  # notebook 06's study; None: the profile has none
    overrides: tuple[tuple[str, object], ...] = ()  # (key, value) applied by alvae_utils.experiment.overrides, sorted

    @property
    def label(self) -> str:
        """The name, plus the overrides when there are any: ``"quick [budget=200, train.initial_epochs=3]"``."""
        return f"{self.name} [{describe_overrides(self.overrides)}]" if self.overrides else self.name

    @property
    def stored_overrides(self) -> dict[str, object]:
        """The overrides that change what an Algorithm 1 run computes, as the results store records them: not
        the choice of methods and seeds (which picks runs, each stored under its own key) nor ``tsne.*``."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in self.overrides
                if key not in ("methods", "seeds") and not key.startswith("tsne.")}

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(e.dataset for e in self.experiments)

    def experiment(self, dataset: str) -> ExperimentConfig:
        """The experiment of ``dataset``; ConfigError naming the profile's datasets otherwise."""
        for experiment in self.experiments:
            if experiment.dataset == dataset:
                return experiment
        raise ConfigError(
            f"profile {self.name!r} has no experiment for dataset {dataset!r}; "
            f"it defines {', '.join(self.datasets)}."
        )

    def experiment_for(self, dataset: str) -> tuple[ExperimentConfig, list[str]]:
        """The experiment of ``dataset``, also for a dataset the profile does not list; and what was adapted.

        Another dataset takes the settings of the profile's first experiment, fitted to
        its published splits: an evaluation size above the evaluation split becomes the
        whole split, and a pool above the training split becomes the whole training
        split. The returned notes say so; the run key records the sizes used.
        Raises ConfigError (unknown dataset, or sizes that still cannot form a run).
        """
        if dataset in self.datasets:
            return self.experiment(dataset), []
        if dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}.")
        experiment, notes = replace(self.experiments[0], dataset=dataset), []
        sizes, eval_split = split_sizes(dataset), evaluation_split(dataset)
        if experiment.eval_size is not None and experiment.eval_size > sizes[eval_split]:
            notes.append(f"{dataset}'s {eval_split} split has {sizes[eval_split]} images, fewer than the profile's "
                         f"eval_size={experiment.eval_size}: evaluating on the whole split.")
            experiment = replace(experiment, eval_size=None)
        if experiment.pool_size > sizes["train"]:
            notes.append(f"{dataset}'s train split has {sizes['train']} images, fewer than the profile's "
                         f"pool_size={experiment.pool_size}: the pool is the whole train split.")
            experiment = replace(experiment, pool_size=sizes["train"])
        experiment.validate()
        return experiment, notes

    def beyond_sweep(self) -> Profile:
        """Notebook 05's sweep as a profile of its own: its experiments, seeds and methods, this profile's name.

        Its runs are stored with this profile's other runs (their keys differ by
        experiment and method). Overrides are not carried over: apply them to the
        result (:func:`alvae_utils.experiment.overrides.apply`). Raises ConfigError when the
        profile defines no such sweep.
        """
        return self._sweep("beyond", "sweep for notebook 05")

    def study_sweep(self) -> Profile:
        """Notebook 06's scratch-start sweep as a profile of its own: the study's experiments, seeds and methods.

        Like :meth:`beyond_sweep`: stored with this profile's other runs, overrides not carried over.
        The SimCLR-start runs are :meth:`study_start_sweep` of the result. Raises ConfigError when
        the profile defines no study.
        """
        return self._sweep("study", "study for notebook 06")

    def _sweep(self, setting: str, what: str) -> Profile:
        """The profile of a notebook's own sweep (``setting``: a config with experiments, seeds and methods),
        overrides not carried over; ConfigError naming the profiles that define one when this one does not."""
        config = getattr(self, setting)
        if config is None:
            raise ConfigError(f"profile {self.name!r} defines no {what} (Profile.{setting}); use one that does: "
                              f"{', '.join(n for n, p in PROFILES.items() if getattr(p, setting))}.")
        return replace(self, experiments=config.experiments, seeds=config.seeds, methods=config.methods,
                       overrides=())

    def study_start_sweep(self) -> Profile:
        """The study's SimCLR-start runs: this profile's experiments with ``train.init=simclr``
        (:func:`simclr_start`), the study's ``start`` methods, this profile's seeds and overrides.
        Call it on :meth:`study_sweep`'s profile, overrides applied, so that both sweeps share them."""
        if self.study is None:
            raise ConfigError(f"profile {self.name!r} defines no study for notebook 06 (Profile.study).")
        if len(self.seeds) < 2:
            raise ConfigError(f"the study pairs runs by seed, and its tests need at least 2 seeds; got seeds "
                              f"{list(self.seeds)}. Give seeds=0,1 or more.")
        scratch = [e.dataset for e in self.experiments if e.train.init != "scratch"]
        if scratch:
            raise ConfigError(f"the study's first sweep starts the task model from scratch (its second, from SimCLR), "
                              f"but train.init is {self.experiments[0].train.init!r} for {', '.join(scratch)}; leave "
                              "train.init at scratch: the SimCLR-start runs are the study's own.")
        return replace(self, experiments=tuple(simclr_start(e) for e in self.experiments),
                       methods=self.study.start_methods)

    def validate(self) -> None:
        """Raise ConfigError if any experiment or method of the profile cannot run."""
        for experiment in self.experiments:
            experiment.validate()
        for method in self.methods:
            method.validate()
        self.tsne.validate()
        if self.beyond is not None:
            for experiment in self.beyond.experiments:
                experiment.validate()
            self.beyond.methods  # noqa: B018 (validates every method)
        if self.study is not None:
            self.study.validate()
            for experiment in self.study.experiments:
                experiment.validate()
                simclr_start(experiment).validate()
            self.study.methods, self.study.start_methods  # noqa: B018 (validates every method)


def _methods(*labels: str) -> tuple[Method, ...]:
    return tuple(Method.parse(label) for label in labels)


PAPER_METHODS = _methods("random", "coreset", "coreset+vae", "lossprediction", "lossprediction+vae")
REFERENCE_METHODS = _methods("entropy", "margin", "bald", "badge", "badge+vae", "typiclust+vae")
"""The field's reference heuristics (docs/heuristics.md), run by the ``paper`` profile next to the paper's."""

_PAPER = ExperimentConfig(
    dataset="mnist", pool_size=25_000, eval_size=None, initial_labels=3_000, budget=3_000, max_labels=21_000,
    train=TrainConfig(initial_epochs=10, epoch_increment=5, pretrained=True),
    vae=VAEConfig(latent_dim=32, epochs=20),
)
# Batch 16, not 64: with 100-400 labels a batch of 64 gives 2-7 SGD steps an epoch, too few for
# BatchNorm's running statistics to settle, and eval-mode accuracy then stays near chance whatever
# was labeled. With 16, training accuracy passes 99% from the first labeling step on, as in the paper.
_QUICK = ExperimentConfig(
    # 3,000 + 1,000 fit in the 5,000-digit sample, so this runs offline.
    dataset="mnist", pool_size=3_000, eval_size=1_000, initial_labels=100, budget=100, max_labels=400,
    train=TrainConfig(batch_size=16, initial_epochs=4, epoch_increment=1),
    vae=VAEConfig(latent_dim=32, epochs=10),
)
# SimCLR (the simclr family, train.init=simclr) is left at SimCLRConfig's defaults except in quick's study: its
# epochs and batch are then the VAE's, the profile's one label-free fit of the pool (ci: 8 epochs of 32 on 200
# images; paper: 20 of 128 on 25,000, 3,900 Adam steps). Setting simclr=SimCLRConfig(...) gives it its own
# budget, which enters the keys of the runs that read it only (results.run_key).
_CI = ExperimentConfig(
    dataset="mnist-sample", pool_size=200, eval_size=100, initial_labels=10, budget=10, max_labels=30,
    train=TrainConfig(initial_epochs=1, epoch_increment=1, batch_size=10),
    vae=VAEConfig(latent_dim=8, epochs=8, batch_size=32),
)

# Notebook 05 at quick: core-set's variants on a smaller pool and a shorter curve than 02's, 3 epochs for the
# semi-supervised VAE's refits (an epoch decodes every unlabeled image once per class: 20× the paper VAE's
# cost) and one tails snapshot, so that the notebook runs in about 15 minutes on a 2-core laptop from empty
# results (docs/beyond.md).
_QUICK_BEYOND = replace(_QUICK, pool_size=1_000, eval_size=500, max_labels=300,
                        vae=replace(_QUICK.vae, refit_epochs=3))
_CI_BEYOND = replace(_CI, vae=replace(_CI.vae, refit_epochs=1))
# Notebook 06 at quick: notebook 05's pool, grid and seeds (so random, core-set and core-set+vae(α=balanced) are
# its runs, reused) plus a fourth seed, sized to run in at most 25 minutes on a 2-core laptop from empty results
# (docs/study.md says what the trade costs in power). SimCLR gets 30 epochs at τ = 0.2: at the VAE's 10 epochs of
# 128 (80 Adam steps on 1,000 images) its k-NN quality is still at the untrained encoder's, below the VAE's; at
# 30 it is above (benchmarks/README.md, "SimCLR representation quality"), for about 100 CPU-seconds more.
_QUICK_STUDY = replace(_QUICK_BEYOND, simclr=SimCLRConfig(epochs=30, temperature=0.2))
_PAPER_STUDY = StudyConfig(experiments=(_PAPER, replace(_PAPER, dataset="chestmnist", pool_size=30_000)),
                           seeds=(0, 1, 2, 3, 4), aware=("coreset", "badge", "medal", "lossprediction"),
                           families=("vae", "simclr", "ssvae", "mixvae"))

PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper",
        # The paper does not give ChestMNIST's last label count; we use MNIST's.
        experiments=(_PAPER, replace(_PAPER, dataset="chestmnist", pool_size=30_000)),
        seeds=(0, 1, 2, 3, 4),
        methods=PAPER_METHODS + REFERENCE_METHODS,
        tsne=TSNEConfig(epochs=10),
        beyond=BeyondConfig(experiments=(_PAPER, replace(_PAPER, dataset="chestmnist", pool_size=30_000)),
                            seeds=(0, 1, 2, 3, 4)),
        study=_PAPER_STUDY,
    ),
    "quick": Profile(
        name="quick",
        experiments=(_QUICK, replace(_QUICK, dataset="chestmnist")),
        seeds=(0, 1, 2),
        methods=PAPER_METHODS,
        tsne=TSNEConfig(pool_size=1_400, initial_labels=200, unlabeled_fraction=0.5, budget=50, epochs=4),
        # Serial: Ray gained only 1.13× on 2 cores (326 s against 369 s for notebook 02's sweep), and a CPU
        # default would keep a GPU machine's runs off its GPU (benchmarks/README.md#executors).
        # Fashion-MNIST (Debian's dataset-fashion-mnist) when installed; skipped, with what to install, otherwise.
        beyond=BeyondConfig(experiments=(_QUICK_BEYOND, replace(_QUICK_BEYOND, dataset="fashionmnist")),
                            seeds=(0, 1, 2), alpha_heuristics=("coreset",), family_heuristics=("coreset",),
                            tails_seeds=(0,)),
        study=StudyConfig(experiments=(_QUICK_STUDY, replace(_QUICK_STUDY, dataset="fashionmnist")),
                          seeds=(0, 1, 2, 3)),
    ),
    "ci": Profile(
        name="ci",
        experiments=(_CI, replace(_CI, dataset="chestmnist")),
        seeds=(0, 1, 2),
        methods=_methods(
            "random", "entropy", "coreset", "coreset+vae", "medal", "medal+vae",
            "lossprediction", "lossprediction+vae", "margin", "bald", "badge+vae", "typiclust+vae",
        ),
        tsne=TSNEConfig(
            dataset="chestmnist", pool_size=300, initial_labels=40, unlabeled_fraction=0.5, budget=10, epochs=1,
            perplexity=10.0,
        ),
        vae_figure_dataset="mnist-sample",
        beyond=BeyondConfig(experiments=(_CI_BEYOND,), seeds=(0, 1), alphas=(0.0, 4.0, BALANCED), tails_seeds=(0, 1)),
        study=StudyConfig(experiments=(_CI_BEYOND,), seeds=(0, 1)),
    ),
}


def get_profile(name: str) -> Profile:
    """Look up a profile by name, with an error that lists the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}.") from None
