"""Notebook 06's study, computed: which task-agnostic information helps task-based active learning?

The study (:class:`~alvae_utils.experiment.profiles.StudyConfig`) runs, on the same pools, seeds and
label grid, random, the uncertainty baselines, task-aware heuristics plain and with each family's
features appended, task-agnostic heuristics on each family alone, and some heuristics again with the
task model's backbone from the SimCLR encoder (``train.init=simclr``). This module joins those runs
(:func:`study_rows`), names each method's kind (:func:`method_kinds`), ranks the methods by AUBC
(:func:`ranking`), tests the study's comparisons once each with Holm across all of them and the
difference each test could detect (:func:`study_tests`), and words the verdicts from those numbers
(:func:`verdicts`). Plots are :mod:`alvae_utils.analysis.study_plots`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from ..experiment.profiles import StudyConfig, simclr_start, study_alpha
from ..selection.methods import Method
from .aubc import aubc_summary, paired_aubc_tests, run_aubc
from .stats import require_columns

START = "SimCLR start"
"""What a method label says when its task model's backbone started from the SimCLR encoder."""

RANDOM, UNCERTAINTY, AWARE, APPENDED, AGNOSTIC, STARTED = (
    "random", "uncertainty", "task-aware", "task-aware + task-agnostic", "task-agnostic only", "built on SimCLR")
KINDS: tuple[str, ...] = (RANDOM, UNCERTAINTY, AWARE, APPENDED, AGNOSTIC, STARTED)
"""The kinds of method the study compares, in the order the notebook lists them."""

QUESTIONS: dict[str, str] = {
    "appended": "Does any task-agnostic information significantly improve a task-aware heuristic?",
    "families": "Does the self-supervised family do better than the VAEs?",
    "random": "Does any method beat random?",
    "start": "Which helps more: task-agnostic information appended for selection, or a task model built on it?",
}
"""The study's questions, keyed by the comparisons that answer them (:func:`comparisons`)."""

SELF_SUPERVISED = "simclr"
"""The family whose encoder starts the task model in the study's SimCLR-start runs."""


def start_label(method: str) -> str:
    """``"coreset (SimCLR start)"``: the label of ``method`` run with ``train.init=simclr``."""
    return f"{method} ({START})"


def study_rows(scratch: pd.DataFrame, started: pd.DataFrame) -> pd.DataFrame:
    """The study's runs as one table: the scratch-start rows, and the SimCLR-start rows relabelled
    (:func:`start_label`).

    Both are tidy results tables (:func:`alvae_utils.experiment.results.load_results`) of one dataset,
    the rows of the study's two sweeps (:func:`~alvae_utils.execution.run_sweep`), whose configurations
    differ only in ``train.init`` (and, for runs that read SimCLR, in its settings, which their
    ``config_key`` includes). Their ``config_key`` column is replaced by the first scratch row's, so that
    all are summarised and paired as one group (same pools, seeds and label grid); ``start`` says
    ``"scratch"`` or ``"simclr"``. Raises ValueError when the tables mix datasets or data sources, or
    when their label grids differ.
    """
    for name, table in (("scratch", scratch), ("SimCLR-start", started)):
        require_columns(table, ("dataset", "data_description", "method", "seed", "n_labels", "config_key"),
                        "run_sweep")
        for column in ("dataset", "data_description"):
            if table[column].nunique() > 1:
                raise ValueError(f"the {name} rows mix {column}s {sorted(map(str, table[column].unique()))}; pass "
                                 "the rows of one dataset's study sweeps (run_sweep's rows).")
    if len(scratch) and len(started):
        if scratch["dataset"].iloc[0] != started["dataset"].iloc[0]:
            raise ValueError(f"the scratch rows are of {scratch['dataset'].iloc[0]!r}, the SimCLR-start rows of "
                             f"{started['dataset'].iloc[0]!r}: join one dataset's runs.")
        grids = [sorted(int(n) for n in table["n_labels"].unique()) for table in (scratch, started)]
        if grids[0] != grids[1]:
            raise ValueError(f"the scratch and SimCLR-start runs have different label grids ({grids[0]} and "
                             f"{grids[1]}): they are not runs of one study.")
    joined = pd.concat([scratch.assign(start="scratch"),
                        started.assign(method=started["method"].map(start_label), start="simclr")], ignore_index=True)
    return joined.assign(config_key=scratch["config_key"].iloc[0]) if len(scratch) else joined


def method_kinds(study: StudyConfig, labels: Iterable[str] | None = None) -> dict[str, str]:
    """``{label: kind}`` (:data:`KINDS`) for every method of ``study``, or of those among ``labels``.

    A label that the study does not define (a ``methods`` override) gets its kind from its form: a
    family appended to a heuristic that also selects without one is task-aware + task-agnostic.
    """
    kinds = {Method("random").label: RANDOM}
    kinds |= {Method(h).label: UNCERTAINTY for h in study.uncertainty}
    kinds |= {Method(h).label: AWARE for h in study.aware}
    kinds |= {Method(h, f, study_alpha(h)).label: APPENDED for h in study.aware for f in study.families}
    kinds |= {Method(h, f).label: AGNOSTIC for h in study.agnostic for f in study.families}
    kinds |= {start_label(m.label): STARTED for m in study.start_methods}
    if labels is None:
        return kinds
    found = {}
    for label in labels:
        if label in kinds:
            found[label] = kinds[label]
        elif label.endswith(f" ({START})"):
            found[label] = STARTED
        else:
            method = Method.read(label)
            found[label] = AGNOSTIC if method.heuristic in study.agnostic else APPENDED if method.features else AWARE
    return found


def comparisons(study: StudyConfig, labels: Iterable[str]) -> dict[tuple[str, str], str]:
    """The study's comparisons among ``labels``, ``{(baseline, treatment): question}`` (keys of :data:`QUESTIONS`).

    * ``appended``: each task-aware heuristic against it with each family appended;
    * ``families``: for each heuristic with families, the self-supervised family against each other family;
    * ``start``: each SimCLR-start method against the same method from scratch, and against the
      heuristic with SimCLR features appended (the two ways of using the representation);
    * ``random``: every other method against random.

    A pair is tested once, under the first question that asks it (in the order above).
    """
    present = list(dict.fromkeys(labels))
    have = set(present)
    pairs: dict[tuple[str, str], str] = {}

    def ask(baseline: str, treatment: str, question: str) -> None:
        if baseline in have and treatment in have and baseline != treatment:
            pairs.setdefault((baseline, treatment), question)

    for heuristic in study.aware:
        for family in study.families:
            ask(heuristic, Method(heuristic, family, study_alpha(heuristic)).label, "appended")
    for heuristic in (*study.aware, *study.agnostic):
        alpha = study_alpha(heuristic) if heuristic in study.aware else Method(heuristic).alpha
        ours = Method(heuristic, SELF_SUPERVISED, alpha).label
        for family in study.families:
            if family != SELF_SUPERVISED:
                ask(Method(heuristic, family, alpha).label, ours, "families")
    for method in study.start_methods:
        ask(method.label, start_label(method.label), "start")
        if method.heuristic in study.aware:
            ask(Method(method.heuristic, SELF_SUPERVISED, study_alpha(method.heuristic)).label,
                start_label(method.label), "start")
    for label in present:
        ask("random", label, "random")
    return pairs


def ranking(rows: pd.DataFrame, kinds: Mapping[str, str], metric: str = "accuracy",
            level: float = 0.95) -> pd.DataFrame:
    """Every method's AUBC of ``metric`` (mean over seeds, ``level`` t-interval), best first, with its kind.

    Columns: those of :func:`~alvae_utils.analysis.aubc.aubc_summary` and ``kind``; sorted by dataset,
    then mean AUBC descending. AUBC is in the metric's units (a fraction for accuracy).
    """
    summary = aubc_summary(run_aubc(rows, metric), level)
    summary["kind"] = summary["method"].map(lambda label: kinds.get(label, ""))
    summary["metric"] = metric
    return summary.sort_values(["dataset", "mean"], ascending=[True, False], kind="stable").reset_index(drop=True)


def study_tests(rows: pd.DataFrame, pairs: Mapping[tuple[str, str], str], metric: str = "accuracy",
                alpha_level: float = 0.05, power: float = 0.8, level: float = 0.95) -> pd.DataFrame:
    """The study's comparisons, one paired test of AUBC each, with Holm across all of them and their power.

    :func:`~alvae_utils.analysis.aubc.paired_aubc_tests` of ``pairs`` (:func:`comparisons`) with
    ``power``, plus ``question`` (the key of :data:`QUESTIONS` each pair answers). **Holm family:** every
    comparison in ``pairs`` on the rows' dataset and ``metric``; pass one dataset's rows.
    Raises ValueError when ``rows`` hold several datasets.
    """
    if rows["dataset"].nunique() > 1:
        raise ValueError(f"study_tests takes one dataset's rows (its Holm family), got "
                         f"{sorted(map(str, rows['dataset'].unique()))}.")
    tests = paired_aubc_tests(rows, metric, pairs=list(pairs), alpha_level=alpha_level, level=level, power=power)
    tests.insert(0, "question", [pairs[(b, t)] for b, t in zip(tests["baseline"], tests["treatment"], strict=True)])
    return tests


def best_of_kind(ranked: pd.DataFrame) -> list[str]:
    """The best method (highest mean AUBC) of each kind but random, in :data:`KINDS` order, then random."""
    best = [ranked.loc[ranked["kind"] == kind, "method"].iloc[0] for kind in KINDS[1:]
            if (ranked["kind"] == kind).any()]
    return best + (["random"] if (ranked["method"] == "random").any() else [])


def _pp(value: float) -> str:
    return f"{100 * value:+.2f} pp"


def _row_text(row: pd.Series) -> str:
    interval = (f" (95% CI {_pp(row.ci_low)} to {_pp(row.ci_high)})" if np.isfinite(row.ci_low)
                and row.ci_low != row.ci_high else "")
    p_value = f", p_holm = {row.p_holm:.3g}" if np.isfinite(row.p_holm) else f" ({row.note})"
    return f"{row.treatment} vs {row.baseline}: {_pp(row.mean_diff)}{interval}{p_value}"


def _power_text(rows: pd.DataFrame, power: float) -> str:
    tested = rows[rows["detectable_diff"].notna()]
    if tested.empty:
        return " None of these comparisons has the two or more varying pairs a t-test needs."
    low, high = 100 * tested["detectable_diff"].min(), 100 * tested["detectable_diff"].max()
    span = f"{low:.2f} pp" if np.isclose(low, high) else f"{low:.2f}–{high:.2f} pp"
    pairs = sorted(set(tested["n_pairs"].astype(int)))
    return (f" With {'/'.join(map(str, pairs))} paired seeds these tests detect a true AUBC difference of "
            f"{span} with {power:.0%} power (unadjusted level): smaller effects could not have been seen.")


def verdicts(tests: pd.DataFrame, ranked: pd.DataFrame, alpha_level: float = 0.05,
             power: float = 0.8) -> dict[str, str]:
    """One answer per question of :data:`QUESTIONS`, worded from :func:`study_tests` and :func:`ranking`.

    "Significant" is ``p_holm < alpha_level`` (Holm across every comparison of ``tests``). A question
    without a significant comparison says so, gives the largest observed difference, and the difference
    its tests could detect with ``power`` (what the study could not have seen).
    """
    answers = {}
    for key, question in QUESTIONS.items():
        rows = tests[tests["question"] == key]
        if rows.empty:
            answers[question] = "Not asked: this run has none of the methods it compares."
            continue
        significant = rows[rows["significant"]]
        lines = [f"{'better' if row.mean_diff > 0 else 'worse'}: {_row_text(row)}" for row in significant.itertuples()]
        if lines:
            answer = f"{len(significant)} of {len(rows)} comparisons significant after Holm — " + "; ".join(lines)
        elif rows["p_ttest"].isna().all():
            answer = (f"No test was possible in {len(rows)} comparison{'s' if len(rows) != 1 else ''}: "
                      f"{'; '.join(sorted(set(rows['note'].astype(str)) - {''}))}. Nothing can be concluded.")
        else:
            top = rows.loc[rows["mean_diff"].abs().idxmax()] if rows["mean_diff"].notna().any() else None
            largest = f" The largest difference: {_row_text(top)}." if top is not None else ""
            answer = (f"No significant difference in {len(rows)} comparison{'s' if len(rows) != 1 else ''} "
                      f"(Holm, level {alpha_level:g}).{largest}")
            answer += _power_text(rows, power)
        if key == "start":
            answer += _start_gains(tests)
        answers[question] = answer
    finite = ranked[ranked["mean"].notna()]
    if len(finite):
        best = finite.iloc[0]
        seeds = f"{int(best.n_runs)} seed{'s' if int(best.n_runs) != 1 else ''}"
        answers["Highest mean AUBC"] = (f"{best.method} ({best.kind}): {best['mean']:.4f} over {seeds}, "
                                        f"{int(best.first_labels)}–{int(best.last_labels)} labels.")
    return answers


def _start_gains(tests: pd.DataFrame) -> str:
    """Each SimCLR-start heuristic's gain over its plain self, next to the gain of appending SimCLR features."""
    texts = []
    for row in tests[(tests["question"] == "start") & (tests["treatment"] == tests["baseline"].map(start_label))
                     ].itertuples():
        appended = tests[(tests["baseline"] == row.baseline) & tests["treatment"].str.startswith(
            f"{row.baseline}+{SELF_SUPERVISED}")]
        if not np.isfinite(row.mean_diff):
            continue
        text = f"{row.baseline}: built on SimCLR {_pp(row.mean_diff)}"
        if len(appended) and np.isfinite(appended["mean_diff"].iloc[0]):
            text += f", SimCLR appended {_pp(appended['mean_diff'].iloc[0])}"
        texts.append(text)
    return f" Gains over the same heuristic from scratch — {'; '.join(texts)}." if texts else ""


def stored_study(rows: pd.DataFrame, config: StudyConfig) -> list[pd.DataFrame]:
    """The study's runs among one profile's stored ``rows``: one :func:`study_rows` table per experiment of
    ``config`` that has any, holding only the study's methods (notebook 05's runs of the same experiment
    share its configuration key, and its other methods are no part of the study)."""
    found = []
    scratch_labels = {m.label for m in config.methods}
    start_labels = {m.label for m in config.start_methods}
    for experiment in config.experiments:
        started_experiment = simclr_start(experiment)
        scratch = rows[rows["config_key"].isin({experiment.key(), experiment.key(simclr=True)})
                       & rows["method"].isin(scratch_labels)]
        started = rows[rows["config_key"].isin({started_experiment.key(), started_experiment.key(simclr=True)})
                       & rows["method"].isin(start_labels)]
        if len(scratch):
            found.append(study_rows(scratch, started))
    return found


def study_only_keys(config: StudyConfig) -> set[str]:
    """Configuration keys that only the study's runs have: those of its runs that read SimCLR settings of their own,
    and of its SimCLR-start runs. Its other runs share their key with notebook 05's (and are 05's, where both ran)."""
    keys = set()
    for experiment in config.experiments:
        started = simclr_start(experiment)
        keys |= {experiment.key(simclr=True), started.key(), started.key(simclr=True)} - {experiment.key()}
    return keys
