"""The headline numbers of a profile's stored results, computed once for the README, the book and a check.

:func:`headline_numbers` turns the tidy results table (:mod:`alvae_utils.experiment.results`) into a
plain, JSON-ready record: per dataset and data source, the label grid and seeds, each method's AUBC
of accuracy with its t-interval, and each heuristic-versus-variant AUBC test with Holm across the
record. ``make figures`` writes it to ``figures/numbers.json``; :func:`summary_markdown` renders it
as the text that the README and the book's landing page show, so that no result number there is
typed by hand (the showyourwork idea: the text is generated from the numbers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..experiment.profiles import StudyConfig
from . import study as study_analysis
from .aubc import RUN_GROUP, aubc_summary, paired_aubc_tests, run_aubc
from .stats import require_columns

NUMBERS_VERSION = 2
"""Version of the record's layout; a reader refuses another."""


def _number(value: object, digits: int = 4) -> float | None:
    """A JSON-safe rounded float (None for NaN): the record compares equal after a round trip."""
    value = float(value)
    return None if math.isnan(value) else round(value, digits)


def _complete_runs(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple, list[str]]]:
    """``rows`` without the runs whose label grid is shorter than their group's (interrupted runs,
    which AUBC cannot compare), and per group the runs left out, as "method seed s"."""
    group = [c for c in RUN_GROUP if c in rows.columns]
    run = [*group, "method", "seed"]
    steps = rows.groupby(run, dropna=False)["n_labels"].nunique()
    short = steps[steps < steps.groupby(level=list(range(len(group))), dropna=False).transform("max")]
    left_out: dict[tuple, list[str]] = {}
    for identity in short.index:
        left_out.setdefault(tuple(identity[:len(group)]), []).append(f"{identity[-2]} seed {identity[-1]}")
    keep = ~rows.set_index(run).index.isin(short.index)
    return rows[keep], left_out


def headline_numbers(rows: pd.DataFrame, profile: str, metric: str = "accuracy", alpha_level: float = 0.05,
                     level: float = 0.95, study: StudyConfig | None = None, power: float = 0.8) -> dict[str, object]:
    """The record of ``rows`` (one profile's stored results): dict with ``version``, ``profile``,
    ``metric``, ``alpha_level``, ``level`` and ``datasets``, a list with one entry per (dataset,
    data source, configuration):

    - ``dataset``, ``data_description``, ``first_labels``, ``last_labels``, ``n_steps``, ``seeds``
      (sorted seed numbers), ``runs`` and ``left_out`` (interrupted runs, "method seed s", whose
      shorter label grid AUBC cannot compare: resume them to count them);
    - ``methods``: per method (sorted by mean AUBC, best first) ``method``, ``n_runs``, ``aubc``
      (mean AUBC of ``metric`` over seeds, in the metric's units, 0–1), ``ci_low``/``ci_high``
      (the ``level`` t-interval; None with one run) and ``final`` (mean ``metric`` at the last
      label count);
    - ``tests``: each heuristic against each of its feature-family variants present
      (:func:`~alvae_utils.analysis.aubc.paired_aubc_tests`), with ``mean_diff`` and its interval,
      ``n_pairs``, ``p_ttest``, ``p_holm`` (Holm across every test of the record) and ``significant``;

    and ``study``, notebook 06's verdicts per dataset whose study runs are stored (with ``study``, the
    profile's :class:`~alvae_utils.experiment.profiles.StudyConfig`): ``dataset``, ``data_description``,
    ``seeds``, ``runs`` and ``verdicts`` ({question: answer}, :func:`alvae_utils.analysis.study.verdicts`,
    Holm across that dataset's study comparisons, detectable differences at ``power``).

    Values are rounded to 4 decimals. Raises ValueError when ``rows`` lacks a results column or
    ``metric``, or holds rows of several profiles (their runs answer different questions).
    """
    require_columns(rows, ("profile", "dataset", "data_description", "method", "seed", "n_labels", metric))
    profiles = sorted(set(rows["profile"]))
    if len(profiles) > 1:
        raise ValueError(f"headline_numbers summarises one profile's results, got {profiles}; "
                         "select one with rows[rows['profile'] == name].")
    record: dict[str, object] = {"version": NUMBERS_VERSION, "profile": profile, "metric": metric,
                                 "alpha_level": alpha_level, "level": level, "datasets": [], "study": []}
    if rows.empty:
        return record
    rows, left_out = _complete_runs(rows)
    if study is not None:
        record["study"] = _study_record(rows, study, metric, alpha_level, power, level)
        # The study's own runs (SimCLR settings of their own, SimCLR start) are summarised with the study, not as
        # groups of their own without the plain heuristics they are compared with.
        rows = rows[~rows["config_key"].isin(study_analysis.study_only_keys(study))]
        if rows.empty:
            return record
    summary = aubc_summary(run_aubc(rows, metric), level)
    tests = paired_aubc_tests(rows, metric, alpha_level=alpha_level, level=level)
    group = [c for c in ("dataset", "data_description", "config_key") if c in summary.columns]
    last = rows[rows["n_labels"] == rows.groupby([*group, "method"])["n_labels"].transform("max")]
    final = last.groupby([*group, "method"])[metric].mean()
    for identity, methods in summary.groupby(group, sort=True, dropna=False):
        key = dict(zip(group, identity, strict=True))
        selected = np.logical_and.reduce([rows[c] == v for c, v in key.items()])
        seeds = sorted(int(s) for s in rows.loc[selected, "seed"].unique())
        first = methods.iloc[0]
        entry = {"dataset": key["dataset"], "data_description": key["data_description"],
                 "first_labels": int(first["first_labels"]), "last_labels": int(first["last_labels"]),
                 "n_steps": int(first["n_steps"]), "seeds": seeds,
                 "runs": int(rows.loc[selected].groupby(["method", "seed"]).ngroups),
                 "left_out": left_out.get(tuple(key.values()), []), "methods": [], "tests": []}
        for row in methods.sort_values(["mean", "method"], ascending=[False, True]).itertuples():
            entry["methods"].append({"method": row.method, "n_runs": int(row.n_runs), "aubc": _number(row.mean),
                                     "ci_low": _number(row.ci_low), "ci_high": _number(row.ci_high),
                                     "final": _number(final[(*identity, row.method)])})
        in_group = np.logical_and.reduce([tests[c] == v for c, v in key.items()]) if len(tests) else []
        for row in tests[in_group].itertuples() if len(tests) else ():
            entry["tests"].append({"baseline": row.baseline, "treatment": row.treatment, "n_pairs": int(row.n_pairs),
                                   "mean_diff": _number(row.mean_diff), "ci_low": _number(row.ci_low),
                                   "ci_high": _number(row.ci_high), "p_ttest": _number(row.p_ttest),
                                   "p_holm": _number(row.p_holm), "significant": bool(row.significant)})
        record["datasets"].append(entry)
    return record


def _study_record(rows: pd.DataFrame, study: StudyConfig, metric: str, alpha_level: float, power: float,
                  level: float) -> list[dict[str, object]]:
    """The ``study`` part of :func:`headline_numbers`: notebook 06's verdicts per dataset with stored study runs."""
    entries = []
    for table in study_analysis.stored_study(rows, study):
        kinds = study_analysis.method_kinds(study, table["method"].unique())
        ranked = study_analysis.ranking(table, kinds, metric, level)
        tests = study_analysis.study_tests(table, study_analysis.comparisons(study, table["method"].unique()),
                                           metric, alpha_level, power, level)
        entries.append({"dataset": str(table["dataset"].iloc[0]),
                        "data_description": str(table["data_description"].iloc[0]),
                        "seeds": sorted(int(s) for s in table["seed"].unique()),
                        "runs": int(table.groupby(["method", "seed"]).ngroups),
                        "methods": [{"method": row.method, "kind": row.kind, "n_runs": int(row.n_runs),
                                     "aubc": _number(row.mean), "ci_low": _number(row.ci_low),
                                     "ci_high": _number(row.ci_high)} for row in ranked.itertuples()],
                        "verdicts": study_analysis.verdicts(tests, ranked, alpha_level, power)})
    return entries


def _pp(value: float | None, signed: bool = False) -> str:
    """An accuracy (0–1) in percent, or a difference in percentage points: '—' when unknown."""
    if value is None:
        return "—"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _interval(low: float | None, high: float | None, signed: bool = False) -> str:
    return "" if low is None or high is None else f" [{_pp(low, signed)}, {_pp(high, signed)}]"


def summary_markdown(record: Mapping[str, object], tables: bool = True) -> str:
    """Markdown of a :func:`headline_numbers` record: per dataset, the AUBC table and the test verdicts, and the
    study's ranking and verdicts. Without ``tables`` (the README's short form) the AUBC tables are left out; the
    book's landing page has them.

    Every number comes from ``record``; raises ValueError for a record of another layout version.
    """
    if record.get("version") != NUMBERS_VERSION:
        raise ValueError(f"numbers record of version {record.get('version')!r}, expected {NUMBERS_VERSION}; "
                         "regenerate it with `make figures`.")
    level = int(round(100 * float(record["level"])))
    lines: list[str] = []
    if not record["datasets"] and not record.get("study"):
        return f"No results are stored for profile `{record['profile']}`: run `make figures` first.\n"
    for entry in record["datasets"]:
        lines += [f"**{entry['dataset']}** ({entry['data_description']}), profile `{record['profile']}`: "
                  f"{entry['runs']} runs, seeds {', '.join(map(str, entry['seeds']))}, "
                  f"{entry['first_labels']}–{entry['last_labels']} labels in {entry['n_steps']} steps"
                  + (f"; left out, interrupted: {', '.join(entry['left_out'])}" if entry["left_out"] else "")
                  + ".", ""]
        if tables:
            metric = record["metric"]
            lines += [f"| method | AUBC of {metric} (%) [{level}% CI] | final {metric} (%) | runs |",
                      "|---|---:|---:|---:|"]
            lines += [f"| `{m['method']}` | {_pp(m['aubc'])}{_interval(m['ci_low'], m['ci_high'])} | "
                      f"{_pp(m['final'])} | {m['n_runs']} |" for m in entry["methods"]]
            lines.append("")
        significant = [t for t in entry["tests"] if t["significant"]]
        if not entry["tests"]:
            continue
        lines.append(f"Task-agnostic variants against their plain heuristic (paired t-test on AUBC, Holm across "
                     f"all {sum(len(e['tests']) for e in record['datasets'])} comparisons of this summary, "
                     f"α = {record['alpha_level']}): {len(significant)} of {len(entry['tests'])} significant.")
        for test in entry["tests"]:
            verdict = "significant" if test["significant"] else "not significant"
            p_holm = "—" if test["p_holm"] is None else f"{test['p_holm']:.3g}"
            lines.append(f"- `{test['treatment']}` − `{test['baseline']}`: {_pp(test['mean_diff'], True)} pp"
                         f"{_interval(test['ci_low'], test['ci_high'], True)}, {test['n_pairs']} pairs, "
                         f"p_holm = {p_holm}: {verdict}")
        lines.append("")
    for entry in record.get("study", []):
        lines += [f"**What the study adds (notebook 06), {entry['dataset']}** ({entry['data_description']}): "
                  f"{entry['runs']} runs, seeds {', '.join(map(str, entry['seeds']))}; Holm across that dataset's "
                  "study comparisons.", ""]
        if tables:
            lines += [f"| method | kind | AUBC of {record['metric']} (%) [{level}% CI] | runs |", "|---|---|---:|---:|"]
            lines += [f"| `{m['method']}` | {m['kind']} | {_pp(m['aubc'])}{_interval(m['ci_low'], m['ci_high'])} | "
                      f"{m['n_runs']} |" for m in entry.get("methods", [])]
            lines.append("")
        lines += [f"- *{question}* {answer}" for question, answer in entry["verdicts"].items()]
        lines.append("")
    return "\n".join(lines)
