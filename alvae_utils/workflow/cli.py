"""Command line: ``python -m alvae_utils run ...`` and ``python -m alvae_utils figures ...``.

Examples::

    python -m alvae_utils run --dataset mnist-sample --heuristic coreset --vae --seed 0 --profile quick
    python -m alvae_utils run --dataset mnist --heuristic coreset lossprediction --compare-vae --seed 0 1 2
    python -m alvae_utils figures --profile quick
    python -m alvae_utils figures --profile paper --executor ray --ray-address auto --gpus-per-run 0.25

Heuristics and feature families are read from their registries
(alvae_utils.selection.heuristics, alvae_utils.selection.features), so registered ones are accepted here too.
"""

from __future__ import annotations

import argparse
import sys

from dataclasses import fields

from ..config import ConfigError, flag_of, setting_type
from ..device import resolve_device
from ..selection.features import FAMILIES
from ..selection.heuristics import HEURISTICS, get_heuristic
from ..selection.methods import BALANCED, DEFAULT_ALPHA, Method, parse_alpha
from ..experiment.overrides import apply, parse_assignments
from ..experiment.profiles import PROFILES, Profile, get_profile


def _alpha(text: str) -> float | str:
    """``--alpha``: a number, or ``balanced`` (estimated at every selection); Method.validate checks the value."""
    try:
        return parse_alpha(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alvae_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="run Algorithm 1 for heuristics × seeds (resumes stored runs)",
        description="Run Algorithm 1 for every heuristic × seed and store the results under "
                    "results/<profile>/. Finished runs are skipped; interrupted ones resume.")
    run.add_argument("--profile", default="quick", choices=sorted(PROFILES),
                     help="settings profile (default: quick); see alvae_utils/experiment/profiles.py")
    run.add_argument("--dataset", required=True,
                     help="dataset name (mnist, mnist-sample, fashionmnist, chestmnist, other MedMNIST 2D). "
                          "A dataset the profile does not list uses the profile's first experiment's settings.")
    run.add_argument("--heuristic", nargs="+", metavar="H",
                     help=f"one or more registered heuristics: {', '.join(HEURISTICS)}, or full method labels "
                          "such as 'typiclust+vae(α=2)' (default: the profile's methods, or --set methods=...)")
    run.add_argument("--features", metavar="FAMILY",
                     help=f"append this feature family's features (Eq. 6 / LP+VAE); one of {', '.join(FAMILIES)}")
    run.add_argument("--compare", action="store_true",
                     help="with --features: run both the plain heuristic and its variant")
    run.add_argument("--vae", action="store_true", help="run the VAE-augmented variant (same as --features vae)")
    run.add_argument("--compare-vae", action="store_true",
                     help="run both the plain and the VAE variant (same as --features vae --compare)")
    run.add_argument("--alpha", type=_alpha, default=None,
                     help=f"α, the scale of the family's features in Eq. 6 (default {DEFAULT_ALPHA}), or {BALANCED}: "
                          "at every selection, the α that gives both feature blocks the same mean squared distance "
                          "between pool points (core-set, MedAL and BADGE; not loss prediction)")
    run.add_argument("--seed", nargs="+", type=int, default=None, metavar="S",
                     help="one or more seeds (default: the profile's seeds)")
    _add_set_option(run)
    run.add_argument("--pool-size", type=int, help="same as --set pool_size=N: images in the pool")
    run.add_argument("--eval-size", type=int, help="same as --set eval_size=N: images of the evaluation split")
    run.add_argument("--initial", type=int, help="same as --set initial_labels=N: ξ, the initial number of labels")
    run.add_argument("--budget", type=int, help="same as --set budget=N: β, labels added per step")
    run.add_argument("--max-labels", type=int, help="same as --set max_labels=N: η, the last label count")
    run.add_argument("--fine-tune", action="store_true",
                     help="same as --set train.fine_tune=true: fine-tune across steps instead of retraining")
    run.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None,
                     help="same as --set train.pretrained=true/false: ImageNet-pretrained ResNet-18")
    run.add_argument("--device", default=None,
                     help="torch device (default: cuda if available, else cpu); under Ray only the VAE's, as each "
                          "run uses the device Ray assigns")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_execution_options(run)

    figures = commands.add_parser("figures", help="execute the notebooks with papermill and write figures/")
    figures.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    figures.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                         help="run only these notebooks (e.g. 02_active_learning)")
    _add_set_option(figures)
    _add_execution_options(figures)
    results = commands.add_parser("results", help="list stored runs, or remove chosen ones",
                                  description="List the stored runs (configuration, overrides, steps done, "
                                              "damage) or remove chosen ones so that they are recomputed.")
    actions = results.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="one line per stored run")
    clean = actions.add_parser("clean", help="remove the chosen runs (all their files)")
    for action in (listing, clean):
        action.add_argument("--profile", help="only runs of this profile")
        action.add_argument("--dataset", help="only runs on this dataset")
        action.add_argument("--method", help="only runs of this method label, e.g. coreset+vae or "
                                             "'typiclust+vae(α=2)' (every start), or 'coreset (SimCLR start)' "
                                             "(notebook 06's SimCLR-start runs only)")
    clean.add_argument("--run", nargs="+", metavar="KEY", default=[], help="only these run keys")
    clean.add_argument("--unfinished", action="store_true", help="only runs not finished (incl. damaged)")
    clean.add_argument("--damaged", action="store_true", help="only damaged runs")
    commands.add_parser("validate-notebooks",
                        help="nbval: re-execute build/ci/*.ipynb from scratch and compare outputs")
    book = commands.add_parser("book", help="build the static site of the executed notebooks (build/book/)")
    book.add_argument("--profile", default="quick", choices=sorted(PROFILES),
                      help="whose executed notebooks (build/<profile>/) and results the book shows")
    return parser


def _add_set_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                         help="override any setting of the profile by dotted key, e.g. train.initial_epochs=3 "
                              "budget=500 vae.epochs=5 methods=coreset,coreset+vae seeds=0,1 "
                              "(keys, types and ranges: alvae_utils/experiment/overrides.py; a wrong key lists "
                              "the valid ones)")


def _add_execution_options(command: argparse.ArgumentParser) -> None:
    """One option per field of :class:`~alvae_utils.execution.settings.Execution`: its type, default and help.

    The executor's choices are the registered executors. Values are checked once, by
    ``Execution.resolved`` when the sweep starts (before any work).
    """
    from ..execution import EXECUTORS, Execution

    group = command.add_argument_group("execution", "how runs execute (docs/parallel.md); a run's "
                                                    "numbers do not depend on it, given the same threads per run")
    for field in fields(Execution):
        kind = setting_type(Execution, field.name)
        extra = {"choices": ("", *EXECUTORS)} if field.name == "executor" else {"metavar": field.name.upper()}
        group.add_argument(flag_of(Execution, field.name), dest=f"execution_{field.name}", type=kind,
                           default=field.default, help=f"{field.metadata['help']} (default: {field.default!r})",
                           **extra)


def _execution(args: argparse.Namespace):
    """The Execution the options describe (validated when the sweep starts, against the profile)."""
    from ..execution import Execution

    return Execution(**{field.name: getattr(args, f"execution_{field.name}") for field in fields(Execution)})


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """--set assignments plus the short options for some of them (--budget, ...), checked; a short option given
    with its own --set key (--seed with seeds=, too) is refused, naming both."""
    assignments = list(args.set)
    given = {assignment.partition("=")[0].strip() for assignment in assignments}
    shorthand = {("--pool-size", "pool_size"): getattr(args, "pool_size", None),
                 ("--eval-size", "eval_size"): getattr(args, "eval_size", None),
                 ("--initial", "initial_labels"): getattr(args, "initial", None),
                 ("--budget", "budget"): getattr(args, "budget", None),
                 ("--max-labels", "max_labels"): getattr(args, "max_labels", None),
                 ("--pretrained", "train.pretrained"): getattr(args, "pretrained", None),
                 ("--fine-tune", "train.fine_tune"): True if getattr(args, "fine_tune", False) else None}
    chooses_seeds = {("--seed", "seeds"): getattr(args, "seed", None)}  # passed to run_sweep as they are
    for (flag, key), value in {**shorthand, **chooses_seeds}.items():
        if value is not None and key in given:
            raise ConfigError(f"{flag} and --set {key}=... both set {key}; give one of them.")
    assignments += [f"{key}={value}" for (_, key), value in shorthand.items() if value is not None]
    return parse_assignments(assignments)


def _experiment(args: argparse.Namespace):
    """The profile with the overrides applied, and the experiment of ``--dataset`` (adapted to its splits
    when the profile does not list it; what was adapted is printed)."""
    profile = apply(get_profile(args.profile), _overrides(args))
    experiment, notes = profile.experiment_for(args.dataset)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return profile, experiment


def _methods(args: argparse.Namespace, profile: Profile) -> list[Method]:
    """Methods from --heuristic, --features/--vae and --compare/--compare-vae (validated against the registries).

    --heuristic takes heuristic names, which the other options turn into methods, and full method labels
    (``typiclust+vae(α=2)``, read as ``--set methods=...`` reads them), which those options may not change.

    Without --heuristic: the profile's methods (after ``--set methods=...``).
    """
    if not args.heuristic:
        if args.features or args.vae or args.compare or args.compare_vae or args.alpha is not None:
            raise ConfigError("--features, --vae, --compare and --alpha need --heuristic; or choose methods with "
                              "--set methods=coreset,coreset+vae.")
        return list(profile.methods)
    if any(key == "methods" for key, _ in profile.overrides):
        raise ConfigError("--heuristic and --set methods=... both choose the methods; give one of them.")
    labels = [entry for entry in args.heuristic if _is_label(entry)]
    if labels and args.alpha is not None:
        raise ConfigError(f"--heuristic {labels[0]} is a method label, which names its own family and α, and --alpha "
                          "sets α too; write α into the label, e.g. --heuristic 'coreset+vae(α=2)'.")
    if labels and (args.compare or args.compare_vae):
        raise ConfigError(f"--compare runs the plain heuristic next to its --features variant; with method labels, "
                          f"list the methods to compare instead, e.g. --heuristic coreset {labels[0]}.")
    if args.alpha is not None and not (args.features or args.vae or args.compare_vae):
        raise ConfigError("--alpha scales a feature family's features; give --features FAMILY (or --vae) too.")
    alpha = DEFAULT_ALPHA if args.alpha is None else args.alpha
    family = args.features
    if family is not None and _is_label(family):
        raise ConfigError(f"--features takes a family name ({', '.join(FAMILIES)}), got {family!r}; give α with "
                          "--alpha, or a full method label with --heuristic, e.g. --heuristic 'coreset+vae(α=2)'.")
    if args.vae or args.compare_vae:
        if family not in (None, "vae"):
            raise ConfigError(f"--vae and --features {family} ask for two families; give one.")
        family = "vae"
    compare = args.compare or args.compare_vae
    if compare and family is None:
        raise ConfigError("--compare needs --features FAMILY (the variant to compare with).")
    if labels and (family is not None or args.alpha is not None):
        given = "--alpha" if family is None else "--vae" if args.vae or args.compare_vae else "--features"
        raise ConfigError(f"--heuristic {labels[0]} is a method label, which names its own family and α, and {given} "
                          "sets them too; give the labels alone, or heuristic names with " + given + ".")
    methods = []
    for heuristic in args.heuristic:
        if _is_label(heuristic):
            methods.append(Method.parse(heuristic))
            continue
        if compare:
            methods.append(Method(heuristic))
            if get_heuristic(heuristic).extra_features is None:
                continue  # no variant to compare against
        method = Method(heuristic, family, alpha)
        method.validate()
        methods.append(method)
    return methods


def _is_label(entry: str) -> bool:
    """Whether ``--heuristic`` was given a method label (``coreset+vae``, ``typiclust+vae(α=2)``), not a name."""
    return any(mark in entry for mark in "+()")


def _study_label(label: str) -> tuple[str, bool]:
    """(the method label, whether it names notebook 06's SimCLR-start runs): ``"coreset (SimCLR start)"``, as
    notebook 06 names them (:func:`~alvae_utils.analysis.study.start_label`), is ``coreset`` started from
    SimCLR (``train.init=simclr``)."""
    from ..analysis.study import start_label

    suffix = start_label("")
    return (label[:-len(suffix)].strip(), True) if label.endswith(suffix) else (label, False)


def _summary(rows) -> str:
    table = rows.groupby(["method", "n_labels"])["accuracy"].agg(["mean", "count"]).unstack("n_labels")
    return table.round(4).to_string()


def _results(args: argparse.Namespace) -> int:
    """``results list`` and ``results clean``: the store's runs, filtered by the options."""
    from ..analysis.study import SELF_SUPERVISED, start_label
    from ..experiment.catalog import list_runs, remove_runs
    from .notebooks import sweep_of

    runs = list_runs(sweep_of=sweep_of)
    for column in ("profile", "dataset", "method"):
        wanted = getattr(args, column)
        if not wanted:
            continue
        # Notebook 06's labels: a SimCLR-start run is "coreset (SimCLR start)"; a plain label matches every start.
        labels = runs["method"].where(runs["start"] != SELF_SUPERVISED, runs["method"] + start_label(""))
        if column == "method":
            wanted, started = _study_label(wanted.strip())
            try:  # spelt as `run` spells it: coreset+vae(α=1e17) is the stored coreset+vae(α=1e+17)
                wanted = Method.read(wanted).label
            except ConfigError:
                pass  # not a label: it matches no run, and the error below says so
            chosen = (runs["method"] == wanted) & ((runs["start"] == SELF_SUPERVISED) if started else True)
            wanted = start_label(wanted) if started else wanted
        else:
            chosen = runs[column] == wanted
        if not chosen.any():
            stored = sorted(set(labels if column == "method" else runs[column]) - {""})
            hint = (f"; a plain method label matches every start, '<method>{start_label('')}' only notebook 06's "
                    "SimCLR-start runs" if column == "method" else "")
            raise ConfigError(f"no stored run has {column} {wanted!r}; stored: {', '.join(stored) or 'none'} "
                              f"(see `results list`{hint}).")
        runs = runs[chosen]
    if args.action == "list":
        print(runs.to_string(index=False) if len(runs) else "no stored runs.")
        return 0
    if not (args.profile or args.dataset or args.method or args.run or args.unfinished or args.damaged):
        raise ConfigError("results clean needs a choice of runs: --profile, --dataset, --method, --run KEY, "
                          "--unfinished or --damaged (see `results list`).")
    if args.run:
        unknown = sorted(set(args.run) - set(runs["key"]))
        if unknown:
            raise ConfigError(f"no stored run has the key(s) {', '.join(unknown)}; see `results list`.")
        runs = runs[runs["key"].isin(args.run)]
    if args.damaged:
        runs = runs[runs["status"].str.startswith("damaged")]
    if args.unfinished:
        runs = runs[runs["status"] != "finished"]
    if runs.empty:
        print("no stored run matches all the options given; nothing removed.")
        return 0
    removed = remove_runs(runs["key"])
    print(f"removed {len(runs)} run(s), {len(removed)} file(s).")
    return 0


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # labels such as coreset+vae(α=0.5) print in any locale
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    from ..data.datasets import DataCorruptedError, DataUnavailableError
    from ..models.resnet import PretrainedWeightsUnavailable
    from ..paths import NoSpaceLeft
    from .notebooks import NothingToAnalyse
    from ..experiment.locks import RunHeld
    from ..experiment.results import StoreDamaged
    from ..execution import SweepFailed
    from .book import BookUnavailable
    from .papermill import NotebookFailed, NothingToRun

    user_errors = (ConfigError, ValueError, DataUnavailableError, DataCorruptedError, PretrainedWeightsUnavailable,
                   StoreDamaged, RunHeld, NotebookFailed, NothingToRun, NothingToAnalyse, SweepFailed,
                   NoSpaceLeft, BookUnavailable)
    try:
        if args.command == "run":
            from ..execution.sweep import run_sweep

            profile, experiment = _experiment(args)
            methods = _methods(args, profile)
            execution = _execution(args)  # validated once, by run_sweep, before any work
            resolve_device(args.device)  # a wrong device fails here, before data or models are loaded
            rows = run_sweep(profile, experiment.dataset, methods, args.seed, experiment=experiment,
                             device=args.device, progress=not args.no_progress, execution=execution)
            print(_summary(rows))
        elif args.command == "figures":
            from .papermill import make_figures

            make_figures(args.profile, only=args.only, overrides=_overrides(args), execution=_execution(args))
        elif args.command == "results":
            return _results(args)
        elif args.command == "validate-notebooks":
            from .papermill import validate_notebooks

            return validate_notebooks()
        elif args.command == "book":
            from .book import build_book

            build_book(args.profile)
    except user_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: every completed step is stored; rerun the same command to resume.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
