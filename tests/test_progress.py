"""Progress as a reader meets it: facts said once, and notebook bars that end as one finished line."""

import re

import nbformat
import pytest

from alvae_utils import progress
from alvae_utils.workflow.papermill import KERNEL_NAME, kernel_problem

needs_kernel = pytest.mark.skipif(kernel_problem() is not None, reason="the notebooks' Jupyter kernel is not installed")


def _run_cells(*sources: str, allow_errors: bool = False) -> list[list]:
    """Execute a notebook of code cells ``sources`` in the notebooks' kernel; each cell's outputs."""
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    NotebookClient(notebook, kernel_name=KERNEL_NAME, timeout=120, allow_errors=allow_errors).execute()
    return [cell.outputs for cell in notebook.cells]


def test_a_fact_is_said_once_as_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(progress, "_said", set())
    monkeypatch.setenv(progress.LOG_VARIABLE, str(tmp_path / "progress.log"))
    for _ in range(3):
        progress.say_once("MNIST is unavailable;\n  the sample stands in.")
    progress.say_once("another fact")
    assert capsys.readouterr().err.splitlines() == ["alvae: MNIST is unavailable; the sample stands in.",
                                                    "alvae: another fact"]
    logged = (tmp_path / "progress.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in logged] == ["MNIST is unavailable; the sample stands in.", "another fact"]


@needs_kernel
def test_nested_notebook_bars_leave_one_finished_line_and_no_widget():
    [outputs] = _run_cells(
        "from alvae_utils.progress import bar, track\n"
        "for run in track(range(2), desc='ci/x runs', leave=True):\n"
        "    for step in track(range(3), desc='steps'):\n"
        "        epochs = bar(2, 'train epochs')\n"
        "        epochs.update(2)\n"
        "        epochs.close()\n"
        "stopped = bar(5, 'VAE epochs')\n"
        "stopped.update(2)\n"
        "stopped.close()")
    # One output per outermost bar (the nested ones were shown inside it), each a text line:
    # no closed widget left to draw as "model not found", no frozen "0%" in the executed copy.
    assert [list(output["data"]) for output in outputs] == [["text/plain"]] * 2
    texts = [output["data"]["text/plain"] for output in outputs]
    assert re.fullmatch(r"ci/x runs: 2/2 done in \d\d:\d\d", texts[0]), texts
    assert re.fullmatch(r"VAE epochs: 2/5 stopped after \d\d:\d\d", texts[1]), texts
    assert all(output["metadata"] == {progress.PROGRESS_METADATA: True} for output in outputs)


@needs_kernel
def test_a_bar_an_earlier_cell_left_open_ends_when_the_next_cell_runs():
    first, second = _run_cells(
        "from alvae_utils.progress import bar\n"
        "runs = bar(3, 'runs')  # kept alive by the variable (or by a traceback's frames), never closed\n"
        "raise RuntimeError('boom')",
        "after = bar(1, 'next cell')\nafter.update(1)\nafter.close()",
        allow_errors=True)
    assert [output["output_type"] for output in first] == ["display_data", "error"]
    assert re.fullmatch(r"runs: 0/3 stopped after \d\d:\d\d", first[0]["data"]["text/plain"])
    assert len(second) == 1 and re.fullmatch(r"next cell: 1/1 done in \d\d:\d\d", second[0]["data"]["text/plain"])
