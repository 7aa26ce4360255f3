"""The notebooks as executed by ``make figures`` (``build/ci/``, written by the papermill pass of ``make test``).

nbval compares text outputs only, so these checks cover what it cannot see: every
figure is an image in the executed notebook, progress is shown as widgets (runs,
steps and epochs), and no warning reaches a cell's output.
"""

import json
from pathlib import Path

import pytest

from alvae_utils.paths import build_dir

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
    for cell in _code_cells(path):
        for output in cell["outputs"]:
            text = _text(output)
            assert "IProgress not found" not in text and "Warning" not in text, text[:300]
            if output["output_type"] == "stream":
                assert output["name"] != "stderr", f"stderr output in {_source(cell)[:80]!r}: {text[:300]}"


def test_progress_is_shown_as_widgets_at_every_level():
    runs_cell = next(cell for path in EXECUTED if path.stem.startswith("02_active_learning")
                     for cell in _code_cells(path) if "run_sweep" in _source(cell))
    bars = [_text(output) for output in runs_cell["outputs"] if WIDGET in output.get("data", {})]
    for level in ("runs", "steps", "train epochs"):
        assert any(level in bar for bar in bars), (level, bars[:5])
    vae_cell = next(cell for path in EXECUTED if path.stem.startswith("01_vae_training")
                    for cell in _code_cells(path) if "get_or_train_vae(" in _source(cell))
    assert any(WIDGET in output.get("data", {}) and "VAE epochs" in _text(output) for output in vae_cell["outputs"])
