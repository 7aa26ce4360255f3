"""The notebooks as executed by ``make figures`` (``build/ci/``, written by the papermill pass of ``make test``).

nbval compares text outputs only, so these checks cover what it cannot see: every
figure is an image in the executed notebook, every progress bar ended as one finished
line (no widget left frozen), and no warning reaches a cell's output: stderr holds at
most a fact said once, as one line.
"""

import json
import re
from pathlib import Path

import pytest

from alvae_utils.paths import build_dir
from alvae_utils.progress import PROGRESS_METADATA

WIDGET = "application/vnd.jupyter.widget-view+json"
EXECUTED = sorted((build_dir() / "ci").glob("*.ipynb"))

pytestmark = pytest.mark.skipif(not EXECUTED, reason="no executed notebooks in build/ci/; run `make notebooks-ci`")

DRAWS = "figures.draw("  # a cell that draws a registered figure (alvae_utils.analysis.figures)

def _code_cells(path: Path) -> list[dict]:
    return [cell for cell in json.loads(path.read_text(encoding="utf-8"))["cells"] if cell["cell_type"] == "code"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _text(output: dict) -> str:
    if output["output_type"] == "stream":
        return "".join(output["text"])
    return "".join(output.get("data", {}).get("text/plain", ""))


@pytest.mark.parametrize("path", EXECUTED, ids=[path.stem for path in EXECUTED])
def test_every_figure_is_an_image_in_the_executed_notebook(path):
    figure_cells = [cell for cell in _code_cells(path) if DRAWS in _source(cell)]
    for cell in figure_cells:
        assert any("image/png" in output.get("data", {}) for output in cell["outputs"]), _source(cell)[:200]


def test_the_notebooks_draw_figures_at_all():
    assert sum(DRAWS in _source(cell) for path in EXECUTED for cell in _code_cells(path)) >= 5


@pytest.mark.parametrize("path", EXECUTED, ids=[path.stem for path in EXECUTED])
def test_no_warning_and_no_text_progress_in_the_outputs(path):
    # The one thing allowed on stderr is a fact the reader needs, said once as one line (progress.say_once):
    # no warning with its source line, no repeat, no text bar.
    said = []
    for cell in _code_cells(path):
        for output in cell["outputs"]:
            text = _text(output)
            assert "IProgress not found" not in text and "Warning" not in text, text[:300]
            if output["output_type"] == "stream" and output["name"] == "stderr":
                said += text.splitlines()
    assert all(line.startswith("alvae: ") for line in said), f"stderr in {path.name}: {said[:5]}"
    assert len(said) == len(set(said)), f"a line said twice in {path.name}: {said}"


@pytest.mark.parametrize("path", EXECUTED, ids=[path.stem for path in EXECUTED])
def test_progress_reads_as_finished(path):
    # A closed bar leaves one text line in its place; a widget left in the copy would show frozen ("0% 0/15").
    for cell in _code_cells(path):
        for output in cell["outputs"]:
            assert WIDGET not in output.get("data", {}), f"a widget left in {_source(cell)[:80]!r}: {_text(output)}"
            if output.get("metadata", {}).get(PROGRESS_METADATA):
                assert re.fullmatch(r".+: (\d+)/\1 done in [\d:]+", _text(output)), _text(output)


def test_every_level_of_progress_ends_finished():
    def lines(notebook: str, call: str) -> list[str]:
        cell = next(cell for path in EXECUTED if path.stem.startswith(notebook)
                    for cell in _code_cells(path) if call in _source(cell))
        return [_text(output) for output in cell["outputs"] if output.get("metadata", {}).get(PROGRESS_METADATA)]

    # The runs bar holds the steps and epochs bars while it runs (progress.py), and ends as one line.
    assert "ci/mnist-sample runs" in [line.split(":")[0] for line in lines("02_active_learning-mnist", "run_sweep(")]
    assert [line.split(":")[0] for line in lines("01_vae_training", "get_or_train_vae(")] == ["VAE epochs"]
