"""Command line: ``python -m alvae_utils run ...`` and ``python -m alvae_utils figures ...``.

Examples::

    python -m alvae_utils run --dataset mnist-sample --heuristic coreset --vae --seed 0 --profile quick
    python -m alvae_utils run --dataset mnist --heuristic coreset lossprediction --compare-vae --seed 0 1 2
    python -m alvae_utils figures --profile quick

Heuristics and feature families are read from their registries
(alvae_utils.heuristics, alvae_utils.features), so registered ones are accepted here too.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from .config import ConfigError
from .features import FAMILIES
from .heuristics import HEURISTICS, get_heuristic
from .methods import DEFAULT_ALPHA, Method
from .profiles import PROFILES, get_profile


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alvae_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="run Algorithm 1 for heuristics × seeds (resumes stored runs)",
        description="Run Algorithm 1 for every heuristic × seed and store the results under "
                    "results/<profile>/. Finished runs are skipped; interrupted ones resume.")
    run.add_argument("--profile", default="quick", choices=sorted(PROFILES),
                     help="settings profile (default: quick); see alvae_utils/config.py")
    run.add_argument("--dataset", required=True,
                     help="dataset name (mnist, mnist-sample, fashionmnist, chestmnist, other MedMNIST 2D). "
                          "A dataset the profile does not list uses the profile's first experiment's settings.")
    run.add_argument("--heuristic", nargs="+", required=True, metavar="H",
                     help=f"one or more registered heuristics: {', '.join(HEURISTICS)}")
    run.add_argument("--features", metavar="FAMILY",
                     help=f"append this feature family's features (Eq. 6 / LP+VAE); one of {', '.join(FAMILIES)}")
    run.add_argument("--compare", action="store_true",
                     help="with --features: run both the plain heuristic and its variant")
    run.add_argument("--vae", action="store_true", help="run the VAE-augmented variant (same as --features vae)")
    run.add_argument("--compare-vae", action="store_true",
                     help="run both the plain and the VAE variant (same as --features vae --compare)")
    run.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                     help=f"α, the scale of the family's features in Eq. 6 (default {DEFAULT_ALPHA})")
    run.add_argument("--seed", nargs="+", type=int, default=None, metavar="S",
                     help="one or more seeds (default: the profile's seeds)")
    run.add_argument("--pool-size", type=int, help="override: images in the pool")
    run.add_argument("--eval-size", type=int, help="override: images of the evaluation split")
    run.add_argument("--initial", type=int, help="override: ξ, the initial number of labels")
    run.add_argument("--budget", type=int, help="override: β, labels added per step")
    run.add_argument("--max-labels", type=int, help="override: η, the last label count")
    run.add_argument("--fine-tune", action="store_true", help="fine-tune across steps instead of retraining")
    run.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                     help="ImageNet-pretrained ResNet-18 (default: the profile's choice)")
    run.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    figures = commands.add_parser("figures", help="execute the notebooks with papermill and write figures/")
    figures.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    figures.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                         help="run only these notebooks (e.g. 02_active_learning)")
    commands.add_parser("validate-notebooks",
                        help="nbval: re-execute build/ci/*.ipynb from scratch and compare outputs")
    return parser


def _experiment(args: argparse.Namespace):
    profile = get_profile(args.profile)
    if args.dataset in profile.datasets:
        experiment = profile.experiment(args.dataset)
    else:
        experiment = replace(profile.experiments[0], dataset=args.dataset)
    overrides = {"pool_size": args.pool_size, "eval_size": args.eval_size, "initial_labels": args.initial,
                 "budget": args.budget, "max_labels": args.max_labels}
    experiment = replace(experiment, **{k: v for k, v in overrides.items() if v is not None})
    train_changes = {}
    if args.fine_tune:
        train_changes["fine_tune"] = True
    if args.pretrained is not None:
        train_changes["pretrained"] = args.pretrained
    if train_changes:
        experiment = replace(experiment, train=replace(experiment.train, **train_changes))
    experiment.validate()
    return profile, experiment


def _methods(args: argparse.Namespace) -> list[Method]:
    """Methods from --heuristic, --features/--vae and --compare/--compare-vae (validated against the registries)."""
    family = args.features
    if args.vae or args.compare_vae:
        if family not in (None, "vae"):
            raise ConfigError(f"--vae and --features {family} ask for two families; give one.")
        family = "vae"
    compare = args.compare or args.compare_vae
    if compare and family is None:
        raise ConfigError("--compare needs --features FAMILY (the variant to compare with).")
    methods = []
    for heuristic in args.heuristic:
        if compare:
            methods.append(Method(heuristic))
            if get_heuristic(heuristic).extra_features is None:
                continue  # no variant to compare against
        method = Method(heuristic, family, args.alpha)
        method.validate()
        methods.append(method)
    return methods


def _summary(rows) -> str:
    table = rows.groupby(["method", "n_labels"])["accuracy"].agg(["mean", "count"]).unstack("n_labels")
    return table.round(4).to_string()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .data import DataCorruptedError, DataUnavailableError
    from .models import PretrainedWeightsUnavailable
    from .workflow import NotebookFailed, NothingToRun

    user_errors = (ConfigError, ValueError, DataUnavailableError, DataCorruptedError, PretrainedWeightsUnavailable,
                   NotebookFailed, NothingToRun)
    try:
        if args.command == "run":
            from .loop import run_sweep

            profile, experiment = _experiment(args)
            methods = _methods(args)
            rows = run_sweep(profile, experiment.dataset, methods, args.seed, experiment=experiment,
                             device=args.device, progress=not args.no_progress)
            print(_summary(rows))
        elif args.command == "figures":
            from .workflow import make_figures

            make_figures(args.profile, only=args.only)
        elif args.command == "validate-notebooks":
            from .workflow import validate_notebooks

            return validate_notebooks()
    except user_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
