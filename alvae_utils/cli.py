"""Command line: ``python -m alvae_utils run ...`` and ``python -m alvae_utils figures ...``.

Examples::

    python -m alvae_utils run --dataset mnist-sample --heuristic coreset --vae --seed 0 --profile quick
    python -m alvae_utils run --dataset mnist --heuristic coreset lossprediction --compare-vae --seed 0 1 2
    python -m alvae_utils figures --profile quick
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from .config import DEFAULT_ALPHA, HEURISTICS, PROFILES, ConfigError, Method, get_profile


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
                     help=f"one or more of: {', '.join(HEURISTICS)}")
    vae = run.add_mutually_exclusive_group()
    vae.add_argument("--vae", action="store_true", help="run the VAE-augmented variant (Eq. 6 / LP+VAE)")
    vae.add_argument("--compare-vae", action="store_true", help="run both the plain and the VAE variant")
    run.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                     help=f"α, the scale of the VAE features in Eq. 6 (default {DEFAULT_ALPHA})")
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
    variants = [False, True] if args.compare_vae else [args.vae]
    methods = []
    for heuristic in args.heuristic:
        for use_vae in variants:
            if use_vae and heuristic in ("random", "entropy") and args.compare_vae:
                continue  # no VAE variant to compare against
            method = Method(heuristic, use_vae, args.alpha)
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
