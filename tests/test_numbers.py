"""The headline numbers behind the README and the book: computed from the rows, and rendered without typing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from alvae_utils.analysis.numbers import headline_numbers, summary_markdown

GRID = (10, 20, 50)


def _rows(shift: float = 0.05, seeds=(0, 1, 2, 3)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    records = []
    for seed in seeds:
        base = np.array([0.3, 0.6, 0.8]) + rng.normal(0, 0.03, 3)
        for method, curve in (("coreset", base), ("coreset+vae", base + shift + rng.normal(0, 0.01, 3)),
                              ("random", base - 0.1)):
            records += [{"profile": "quick", "dataset": "mnist", "data_description": "synthetic", "config_key": "k",
                         "method": method, "seed": seed, "step": step, "n_labels": n, "accuracy": float(value),
                         "auc": np.nan} for step, (n, value) in enumerate(zip(GRID, curve, strict=True))]
    return pd.DataFrame(records)


def _area(values) -> float:
    """Normalised trapezoid area over GRID, written out."""
    steps = zip(GRID, GRID[1:], values, values[1:], strict=False)
    return sum((n1 - n0) * (a + b) / 2 for n0, n1, a, b in steps) / (GRID[-1] - GRID[0])


def test_aubc_and_test_match_a_hand_computation():
    rows = _rows()
    record = headline_numbers(rows, "quick")
    (entry,) = record["datasets"]
    assert entry["seeds"] == [0, 1, 2, 3] and entry["runs"] == 12
    assert (entry["first_labels"], entry["last_labels"], entry["n_steps"]) == (10, 50, 3)
    areas = {m: np.array([_area(rows[(rows.method == m) & (rows.seed == s)].sort_values("n_labels")["accuracy"]
                                .tolist()) for s in range(4)]) for m in ("coreset", "coreset+vae", "random")}
    by_method = {m["method"]: m for m in entry["methods"]}
    assert [m["method"] for m in entry["methods"]] == ["coreset+vae", "coreset", "random"]  # best first
    for method, values in areas.items():
        half = scipy_stats.t.ppf(0.975, 3) * values.std(ddof=1) / 2
        assert by_method[method]["aubc"] == pytest.approx(values.mean(), abs=1e-4)
        assert by_method[method]["ci_low"] == pytest.approx(values.mean() - half, abs=1e-4)
        final = rows[(rows.method == method) & (rows.n_labels == 50)]["accuracy"].mean()
        assert by_method[method]["final"] == pytest.approx(final, abs=1e-4)
    (test,) = entry["tests"]  # random has no family variant: only coreset vs coreset+vae
    assert (test["baseline"], test["treatment"]) == ("coreset", "coreset+vae")
    diff = areas["coreset+vae"] - areas["coreset"]
    assert test["mean_diff"] == pytest.approx(diff.mean(), abs=1e-4)
    assert test["p_ttest"] == pytest.approx(scipy_stats.ttest_rel(areas["coreset+vae"], areas["coreset"]).pvalue,
                                            abs=1e-4)
    assert test["significant"]


def test_record_survives_json_and_renders_its_own_numbers():
    record = headline_numbers(_rows(), "quick")
    assert json.loads(json.dumps(record)) == record
    text = summary_markdown(record)
    best = record["datasets"][0]["methods"][0]
    assert f"| `{best['method']}` | {100 * best['aubc']:.2f} [" in text
    diff = record["datasets"][0]["tests"][0]["mean_diff"]
    assert f"{100 * diff:+.2f} pp" in text and "1 of 1 significant" in text


def test_bad_input_is_refused_with_the_fix():
    rows = _rows()
    with pytest.raises(ValueError, match="one profile's results"):
        headline_numbers(pd.concat([rows, rows.assign(profile="paper")]), "quick")
    with pytest.raises(ValueError, match="accuracy"):
        headline_numbers(rows.drop(columns="accuracy"), "quick")
    with pytest.raises(ValueError, match="regenerate it with `make figures`"):
        summary_markdown({"version": 0})
    empty = headline_numbers(rows.iloc[:0], "quick")
    assert "No results are stored" in summary_markdown(empty)


def test_an_interrupted_run_is_left_out_and_named():
    rows = _rows()
    interrupted = rows[~((rows.method == "random") & (rows.seed == 1) & (rows.n_labels > 10))]
    (entry,) = headline_numbers(interrupted, "quick")["datasets"]
    assert entry["left_out"] == ["random seed 1"]
    assert {m["method"]: m["n_runs"] for m in entry["methods"]}["random"] == 3
    assert "left out, interrupted: random seed 1" in summary_markdown(headline_numbers(interrupted, "quick"))


def test_readme_block_is_replaced_between_its_markers(tmp_path):
    from alvae_utils.workflow.book import README_END, README_START, BookUnavailable, readme_block, update_readme

    record = headline_numbers(_rows(), "quick")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nstale numbers 0.99\n{README_END}\noutro\n")
    update_readme(readme, record)
    text = readme.read_text()
    assert text == f"intro\n{readme_block(record)}\noutro\n" and "stale" not in text
    readme.write_text("no markers\n")
    with pytest.raises(BookUnavailable, match="generated-numbers block"):
        update_readme(readme, record)


def test_committed_readme_block_matches_committed_numbers():
    """The README's numbers are those of figures/numbers.json, which `make figures` writes with them."""
    from alvae_utils.paths import REPO_ROOT
    from alvae_utils.workflow.book import readme_block

    numbers = REPO_ROOT / "figures" / "numbers.json"
    if not numbers.exists():
        pytest.skip("figures/numbers.json is not committed yet: `make figures` writes it")
    assert readme_block(json.loads(numbers.read_text(encoding="utf-8"))) in (REPO_ROOT / "README.md").read_text()


def test_numbers_leave_out_runs_of_an_older_schema(tmp_path, monkeypatch):
    """A store kept across a schema bump holds each run twice (old key, new key): the numbers count the new one."""
    from alvae_utils.config import SCHEMA_VERSION
    from alvae_utils.workflow import book
    from tiny import tiny_sweep

    from alvae_utils.selection.methods import Method

    tiny_sweep(monkeypatch, tmp_path, [Method("random")])
    folder = tmp_path / "ci" / "mnist-sample"
    [state] = folder.glob("*.state.json")
    key = state.name.removesuffix(".state.json")
    header = json.loads(state.read_text())
    (folder / "0ld0ld0ld0ld.csv").write_text((folder / f"{key}.csv").read_text())
    (folder / "0ld0ld0ld0ld.state.json").write_text(json.dumps({**header, "schema": SCHEMA_VERSION - 1}))
    monkeypatch.setattr(book, "_results_of", lambda profile: tmp_path / profile)
    record = book.write_numbers("ci", tmp_path / "figures")
    [entry] = record["datasets"]
    assert entry["runs"] == 1 and [m["n_runs"] for m in entry["methods"]] == [1]
