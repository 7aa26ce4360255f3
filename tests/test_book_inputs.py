"""What `make book` accepts: every notebook executed, each copy readable and executed by papermill (the
review of issue 28 fed it damaged, unexecuted and missing copies)."""

from __future__ import annotations

import json

import pytest

from alvae_utils.workflow import book
from alvae_utils.workflow.notebooks import NOTEBOOKS


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "build_dir", lambda: tmp_path)
    (tmp_path / "ci").mkdir()
    for name in NOTEBOOKS:
        executed = {"cells": [], "metadata": {"papermill": {}}, "nbformat": 4, "nbformat_minor": 5}
        (tmp_path / "ci" / f"{name}.ipynb").write_text(json.dumps(executed))
    return tmp_path / "ci"


def test_every_notebook_is_needed(folder):
    assert [p.stem for p in book.executed_notebooks("ci")] == list(NOTEBOOKS)
    first = next(iter(NOTEBOOKS))
    (folder / f"{first}.ipynb").unlink()
    with pytest.raises(book.BookUnavailable, match=f"no executed copy of {first}.*make figures PROFILE=ci"):
        book.executed_notebooks("ci")


@pytest.mark.parametrize("text, problem", [
    ("[]", "is not a notebook"), ('{"cells": null}', "is not a notebook"),
    ('{"cells": [{"cell_type": "code", "outputs": [1], "source": ""}]}', "is not a notebook"),
    ('{"cells": [', "cannot be read"), ("", "cannot be read"),
    ('{"cells": [], "metadata": {}}', "was not executed by `make figures`"),
])
def test_a_damaged_or_unexecuted_copy_is_refused_naming_the_file_and_the_fix(folder, text, problem):
    path = folder / "01_vae_training.ipynb"
    path.write_text(text)
    with pytest.raises(book.BookUnavailable, match=f"01_vae_training.ipynb.*{problem}.*make figures"):
        book.read_executed(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(book.BookUnavailable, match="cannot be read"):
        book.read_executed(path)


def test_the_landing_page_says_how_long_each_notebook_took(folder):
    (folder / book.TIMINGS_FILE).write_text(
        "notebook,dataset,seconds,started,load_before,load_after,machine\n"
        "01_vae_training,mnist,41.2,2026-12-05 07:49:50 UTC,0.71,1.9,\"AMD EPYC, 2 CPUs, no GPU\"\n"
        "03_significance_tests,,6.8,2026-12-05 08:03:10 UTC,2.1,2.0,\"AMD EPYC, 2 CPUs, no GPU\"\n")
    text = book.timings_markdown(book.read_timings("ci"))
    assert "| `01_vae_training` | mnist | 41 | 2026-12-05 07:49:50 UTC | 0.71 → 1.9 |" in text
    assert "| `03_significance_tests` | all | 7 |" in text
    assert "In all 48 s (1 min) for 2 notebook runs, on AMD EPYC, 2 CPUs, no GPU." in text


def test_older_timings_and_none_read_plainly(folder):
    (folder / book.TIMINGS_FILE).write_text("notebook,dataset,seconds\n02_active_learning,mnist,787.0\n")
    text = book.timings_markdown(book.read_timings("ci"))
    assert "| `02_active_learning` | mnist | 787 | — | — → — |" in text
    assert "In all 787 s (13 min) for 1 notebook runs." in text
    (folder / book.TIMINGS_FILE).unlink()
    assert "No timings were recorded" in book.timings_markdown(book.read_timings("ci"))


@pytest.mark.parametrize("text", ["notebook,dataset,seconds\n01_vae_training,mnist,forty\n",
                                  "just,some\nother,table\n", b"\xff\xfe\x00garbage",
                                  "notebook,dataset,seconds\n01_vae_training,mnist,nan\n",
                                  "notebook,dataset,seconds\n01_vae_training,mnist,-50\n", "directory"])
def test_a_damaged_timings_file_is_named_with_its_fix(folder, text):
    path = folder / book.TIMINGS_FILE
    if text == "directory":
        path.mkdir()
    else:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=r"timings\.csv is not a timings table .*`make figures PROFILE=ci`"):
        book.read_timings("ci")


def test_timings_without_a_dataset_column_or_with_a_byte_order_mark_read(folder):
    (folder / book.TIMINGS_FILE).write_text("\ufeffnotebook,seconds\n01_vae_training,12\n", encoding="utf-8")
    assert "| `01_vae_training` | all | 12 |" in book.timings_markdown(book.read_timings("ci"))


def test_a_partial_run_replaces_only_its_own_timings(folder, monkeypatch):
    from alvae_utils.workflow import papermill

    monkeypatch.setattr(book, "build_dir", lambda: folder.parent)
    path = folder / book.TIMINGS_FILE
    path.write_text("notebook,dataset,seconds\n01_vae_training,mnist,41\n02_active_learning,mnist,787\n"
                    "03_significance_tests,,7\n")
    rows = papermill._previous_timings("ci")
    rows["02_active_learning", "mnist"] = {"notebook": "02_active_learning", "dataset": "mnist", "seconds": 5.0}
    papermill._write_timings(path, rows)
    assert [(row["notebook"], row["seconds"]) for row in book.read_timings("ci")] == [
        ("01_vae_training", "41"), ("02_active_learning", "5.0"), ("03_significance_tests", "7")]
