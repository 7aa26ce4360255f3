"""JupyterLab in a real browser: open, parametrise and run 02_active_learning like a user would.

Run it with ``make test-browser`` (it needs ``make setup`` and the system's Chromium:
``apt-get update && apt-get install -y chromium chromium-driver``; without them the
tests are skipped). It takes a few minutes, most of them the notebook's ``ci`` run;
``make unit-tests`` (``pytest tests``) skips it.

JupyterLab runs from the venv on 127.0.0.1 with a random token, serving the repository
root; the project's data, results and figures go to ``build/browser/`` (the ``ci``
sandbox, moved there) and Jupyter's own state to a temporary folder. Headless Chromium,
driven by Selenium, then checks:

* the tracked ``notebooks/02_active_learning.ipynb``, opened with its kernel, is not marked
  dirty (no ``jp-mod-dirty`` on its tab); it is closed without saving and its bytes must be
  unchanged;
* a copy, ``build/browser/notebooks/02_active_learning.ipynb``, gets profile ``ci`` and
  dataset ``mnist-sample`` typed into its ``parameters`` cell and is run with
  Run > Run All Cells; then:
  the kernel shown is "Python (alvae)", every code cell ran and none raised, each cell that
  plots (``plots.plot_...`` or ``display(fig)``) shows a rendered image, progress shows as
  ipywidgets bars (nested: runs and steps at once) and "IProgress not found" appears nowhere; once
  the run is over, no widget is left in an output (a closed one would read "Error displaying
  widget: model not found") and the sweep's cell reads "ci/mnist-sample runs: N/N done in ...".

Screenshots go to ``build/browser/`` (after opening, after editing, while progress bars show,
after the run), with a screenshot, the page text and the notebooks' JSON on a failure, next
to ``jupyterlab.log`` and ``chromedriver.log``.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time

import pytest

from labdriver import FIND_PANEL, OUT, REPO_ROOT, Lab, Page

NOTEBOOK = "notebooks/02_active_learning.ipynb"
COPY = "build/browser/notebooks/02_active_learning.ipynb"
PARAMETERS = {"profile": "ci", "dataset": "mnist-sample"}
KERNEL_DISPLAY_NAME = "Python (alvae)"
RUN_TIMEOUT = 20 * 60  # s; the ci run of 02 takes 1-3 min of CPU on two cores
PLOTTING = re.compile(r"plots\.plot_|display\(fig\)")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
FORBIDDEN_TEXT = "IProgress not found"  # tqdm's warning when ipywidgets is missing: text bars instead
# An ipywidgets progress bar in an output (IntProgress/FloatProgress; ipywidgets 8 names them
# widget-hprogress/-vprogress, ipywidgets 7 widget-progress).
PROGRESS_BAR = ".jp-OutputArea .widget-hprogress, .jp-OutputArea .widget-vprogress, .jp-OutputArea .widget-progress"

PARAMETERS_CELL_JS = FIND_PANEL + """
const tags = c => (c.model.toJSON().metadata || {}).tags || [];
const index = panel.content.widgets.findIndex(c => tags(c).includes('parameters'));
if (index < 0) return null;
return [index, panel.content.widgets[index].model.sharedModel.getSource()];
"""
CELL_EDITOR_JS = FIND_PANEL + """
const cell = panel.content.widgets[arguments[1]];
cell.node.scrollIntoView({block: 'center'});
return cell.node.querySelector('.cm-content');
"""
CELL_SOURCE_JS = FIND_PANEL + "return panel.content.widgets[arguments[1]].model.sharedModel.getSource();"
EDITOR_FOCUSED_JS = FIND_PANEL + """
const editor = panel.content.widgets[arguments[1]].node.querySelector('.cm-content');
return editor !== null && editor.contains(document.activeElement);
"""
# Polled while the notebook runs.
RUN_STATE_JS = FIND_PANEL + """
if (!panel) return null;
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
const code = panel.content.widgets.filter(c => c.model.type === 'code');
const text = Array.from(panel.node.querySelectorAll('.jp-OutputArea')).map(o => o.textContent).join('\\n');
return {
  kernel_status: kernel ? kernel.status : null,
  connection: kernel ? kernel.connectionStatus : null,
  counts: code.map(c => c.model.executionCount),
  pending: code.filter(c => ((c.node.querySelector('.jp-InputPrompt') || {}).textContent || '').includes('*')).length,
  errors: code.filter(c => c.model.outputs.toJSON().some(o => o.output_type === 'error')).length,
  progress_bars: panel.node.querySelectorAll(arguments[2]).length,
  widgets: panel.node.querySelectorAll('.jp-OutputArea .jupyter-widgets').length,
  forbidden_text: text.includes(arguments[1]),
  widget_errors: text.includes('Error displaying widget'),
};
"""
FIRST_PROGRESS_BAR_JS = """
const bar = document.querySelector(arguments[0]);
if (bar) bar.scrollIntoView({block: 'center'});
"""
# Read once the run is over.
CELLS_JS = FIND_PANEL + """
return panel.content.widgets.map((c, index) => ({
  index, type: c.model.type, source: c.model.sharedModel.getSource(),
  execution_count: c.model.type === 'code' ? c.model.executionCount : null,
  outputs: c.model.type === 'code' ? c.model.outputs.toJSON() : [],
  output_text: Array.from(c.node.querySelectorAll('.jp-OutputArea')).map(o => o.textContent).join('\\n'),
}));
"""
SCROLL_TO_CELL_JS = FIND_PANEL + "panel.content.widgets[arguments[1]].node.scrollIntoView({block: 'center'});"
CELL_IMAGES_JS = FIND_PANEL + """
return Array.from(panel.content.widgets[arguments[1]].node.querySelectorAll('.jp-OutputArea-output img'))
  .map(img => ({complete: img.complete, width: img.naturalWidth, height: img.naturalHeight}));
"""
KERNEL_NAME_JS = FIND_PANEL + """
const toolbar = panel.node.querySelector('.jp-NotebookPanel-toolbar .jp-KernelName');
return toolbar ? toolbar.innerText.trim() : null;
"""
PAGE_TEXT_JS = "return document.body.innerText;"


# ---------------------------------------------------------------------------------------------
# Helpers


def _diff(before, after, where: str) -> list[str]:
    """Readable differences between two JSON values (added, removed and changed keys)."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes = []
        for key in sorted(set(before) | set(after)):
            path = f"{where}.{key}"
            if key not in after:
                changes.append(f"{path}: removed (was {json.dumps(before[key])})")
            elif key not in before:
                changes.append(f"{path}: added {json.dumps(after[key])}")
            else:
                changes += _diff(before[key], after[key], path)
        return changes
    return [] if before == after else [f"{where}: {json.dumps(before)} -> {json.dumps(after)}"]


def notebook_changes(on_disk: dict, in_lab: dict) -> list[str]:
    """What JupyterLab changed in a notebook it opened: format version, metadata, cell ids and metadata.

    Cell metadata ``trusted`` is left out: it is JupyterLab's in-memory trust flag, never saved.
    """
    changes = _diff({k: on_disk.get(k) for k in ("nbformat", "nbformat_minor")},
                    {k: in_lab.get(k) for k in ("nbformat", "nbformat_minor")}, "notebook")
    changes += _diff(on_disk.get("metadata", {}), in_lab.get("metadata", {}), "metadata")
    if len(on_disk["cells"]) != len(in_lab["cells"]):
        return changes + [f"cells: {len(on_disk['cells'])} -> {len(in_lab['cells'])}"]
    for index, (old, new) in enumerate(zip(on_disk["cells"], in_lab["cells"], strict=True)):
        if old.get("id") != new.get("id"):
            changes.append(f"cells[{index}].id: {old.get('id')!r} -> {new.get('id')!r}")
        changes += _diff(old.get("metadata", {}),
                         {k: v for k, v in new.get("metadata", {}).items() if k != "trusted"},
                         f"cells[{index}].metadata")
    return changes


def with_values(source: str, values: dict[str, str]) -> str:
    """``source`` of a parameters cell with each ``name: type = value  # comment`` line given a new value."""
    for name, value in values.items():
        pattern = re.compile(rf"^(?P<head>{name}\s*(?::[^=]+)?=\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^#\s]+)", re.M)
        match = pattern.search(source)
        if match is None:
            raise AssertionError(f"the parameters cell does not assign {name!r}:\n{source}")
        source = source[:match.start("value")] + json.dumps(value) + source[match.end("value"):]
    return source


def type_into_cell(page: Page, path: str, index: int, text: str) -> None:
    """Click into cell ``index``'s editor, select everything and type ``text``, then leave edit mode."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    editor = page.js(CELL_EDITOR_JS, path, index)
    assert editor is not None, f"cell {index} of {path} has no CodeMirror editor"
    ActionChains(page.driver).click(editor).perform()
    page.wait(lambda d: page.js(EDITOR_FOCUSED_JS, path, index), 10, f"cell {index}'s editor did not take focus")
    keys = ActionChains(page.driver).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL)
    for number, line in enumerate(text.split("\n")):
        if number:
            keys.send_keys(Keys.ENTER)
        if line:
            keys.send_keys(line)
    keys.send_keys(Keys.ESCAPE).perform()


def run_all_from_menu(page: Page) -> None:
    """Run > Run All Cells, clicked."""
    from selenium.webdriver.common.by import By

    page.driver.find_element(
        By.XPATH, "//li[contains(@class, 'lm-MenuBar-item')][normalize-space(.//div"
                  "[contains(@class, 'lm-MenuBar-itemLabel')])='Run']").click()
    item = page.wait(lambda d: [e for e in d.find_elements(
        By.XPATH, "//li[contains(@class, 'lm-Menu-item')][normalize-space(.//div"
                  "[contains(@class, 'lm-Menu-itemLabel')])='Run All Cells']") if e.is_displayed()],
        10, "the Run menu shows no 'Run All Cells'")[0]
    assert "lm-mod-disabled" not in item.get_attribute("class"), "'Run All Cells' is disabled"
    item.click()


# ---------------------------------------------------------------------------------------------
# The tracked notebook: opened, checked, closed unsaved.


@pytest.fixture(scope="module")
def tracked_on_open(lab: Lab, page: Page) -> dict:
    tracked = REPO_ROOT / NOTEBOOK
    # JupyterLab checkpoints a writable file it opens that has no checkpoint yet; the server
    # keeps checkpoints in its temporary folder (labdriver.start_lab), so none lands here.
    checkpoint = tracked.parent / ".ipynb_checkpoints" / f"{tracked.stem}-checkpoint{tracked.suffix}"
    had_checkpoint = checkpoint.exists()
    before = tracked.read_bytes()
    try:
        page.open(NOTEBOOK)
        page.wait_kernel_ready(NOTEBOOK)
        settled = page.settled(NOTEBOOK)
        tab_dirty = page.tab_is_dirty(NOTEBOOK)
        page.screenshot("01-tracked-notebook-open")
        page.close_without_saving(NOTEBOOK)
        lab.shut_down_sessions(NOTEBOOK)
    except BaseException:
        page.dump("failure-tracked-notebook")
        raise
    finally:
        created_checkpoint = not had_checkpoint and checkpoint.exists()
        if created_checkpoint:  # remove what this test wrote, and the folder if that is all it holds
            checkpoint.unlink()
            with contextlib.suppress(OSError):
                checkpoint.parent.rmdir()
    return {
        "tab_dirty": tab_dirty, "model_dirty": settled["dirty"],
        "changes": notebook_changes(json.loads(before), settled["notebook"]),
        "unchanged": tracked.read_bytes() == before, "saves": lab.saves_logged(NOTEBOOK),
        "created_checkpoint": created_checkpoint,
    }


def test_tracked_notebook_is_not_written(tracked_on_open):
    assert tracked_on_open["unchanged"] and not tracked_on_open["saves"], (
        f"{NOTEBOOK} changed while JupyterLab had it open (server log: {tracked_on_open['saves'] or 'no save'})")
    assert not tracked_on_open["created_checkpoint"], (
        f"opening {NOTEBOOK} wrote a checkpoint next to it (now removed); checkpoints belong in the sandbox")


def test_tracked_notebook_is_not_dirty_on_open(tracked_on_open):
    changes = "\n  ".join(tracked_on_open["changes"]) or "(no metadata change found)"
    assert not tracked_on_open["tab_dirty"], (
        f"JupyterLab marks {NOTEBOOK} as modified as soon as it opens it with its kernel, so saving (or "
        f"autosave) rewrites it. What it changed:\n  {changes}\n"
        f"Commit the notebook with that metadata (open it in JupyterLab, let the kernel start, save); "
        f"language_info.version is the kernel's Python version, so it must match the venv's.")
    assert not tracked_on_open["model_dirty"], "the tab looks clean but the notebook model is dirty"


# ---------------------------------------------------------------------------------------------
# The copy: parameters typed in, Run All Cells, results inspected.


@pytest.fixture(scope="module")
def executed(lab: Lab, page: Page, tracked_on_open) -> dict:
    """Open the copy, type the parameters, run all cells; what was seen while it ran, and the cells after."""
    copy = REPO_ROOT / COPY
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / NOTEBOOK, copy)
    seen = {"max_progress_bars": 0, "max_widgets": 0, "forbidden_text": False, "widget_errors": False}
    try:
        page.open(COPY)
        page.wait_kernel_ready(COPY)
        seen["dirty_on_open"] = page.settled(COPY)["dirty"]
        page.screenshot("02-copy-open")

        found = page.js(PARAMETERS_CELL_JS, COPY)
        assert found, f"{NOTEBOOK} has no cell tagged 'parameters'"
        index, source = found
        wanted = with_values(source, PARAMETERS)
        type_into_cell(page, COPY, index, wanted)
        try:
            page.wait(lambda d: page.js(CELL_SOURCE_JS, COPY, index) == wanted, 10, "")
        except AssertionError:
            raise AssertionError(f"typing into the parameters cell gave\n{page.js(CELL_SOURCE_JS, COPY, index)}\n"
                                 f"instead of\n{wanted}") from None
        seen["parameters_cell"] = index
        page.screenshot("03-parameters-typed")

        run_all_from_menu(page)

        def finished(_driver):
            state = page.js(RUN_STATE_JS, COPY, FORBIDDEN_TEXT, PROGRESS_BAR)
            if state is None:
                raise AssertionError(f"{COPY} is no longer open")
            if state["connection"] != "connected" or state["kernel_status"] in ("dead", "unknown"):
                raise AssertionError(f"the kernel went away during the run: {state}")
            if state["progress_bars"] and not seen["max_progress_bars"]:
                page.js(FIRST_PROGRESS_BAR_JS, PROGRESS_BAR)
                page.screenshot("04-progress-widgets")
            for key in ("progress_bars", "widgets"):
                seen[f"max_{key}"] = max(seen[f"max_{key}"], state[key])
            for key in ("forbidden_text", "widget_errors"):
                seen[key] = seen[key] or state[key]
            seen["last_state"] = state
            over = state["kernel_status"] == "idle" and not state["pending"]
            return over and (all(count is not None for count in state["counts"]) or state["errors"])

        started = time.monotonic()
        page.wait(finished, RUN_TIMEOUT, lambda: f"Run All Cells did not finish (every code cell run, kernel "
                                                 f"idle); last state: {seen.get('last_state')}", poll=1)
        seen["run_seconds"] = round(time.monotonic() - started)
        cells = page.js(CELLS_JS, COPY)
        seen["kernel_name"] = page.js(KERNEL_NAME_JS, COPY)
        seen["page_text"] = page.js(PAGE_TEXT_JS)
        seen["images"] = {}
        for cell in cells:
            if cell["type"] == "code" and PLOTTING.search(cell["source"]):
                page.js(SCROLL_TO_CELL_JS, COPY, cell["index"])  # paint it (cells off screen are skipped)
                try:
                    page.wait(lambda d, i=cell["index"]: any(img["complete"] and img["width"]
                                                             for img in page.js(CELL_IMAGES_JS, COPY, i)),
                              10, "no image rendered")
                except AssertionError:
                    pass  # reported by test_every_plotting_cell_shows_an_image
                seen["images"][cell["index"]] = page.js(CELL_IMAGES_JS, COPY, cell["index"])
        page.screenshot("05-after-run")
    except BaseException:
        page.dump("failure-run")
        raise
    finally:
        (OUT / "run.json").write_text(json.dumps({k: v for k, v in seen.items() if k != "page_text"}, indent=1))
    return {"seen": seen, "cells": cells}


def _code_cells(executed):
    return [cell for cell in executed["cells"] if cell["type"] == "code"]


def _describe(cell) -> str:
    first = cell["source"].splitlines()[0] if cell["source"] else ""
    return f"cell {cell['index']} ({first!r})"


def test_kernel_shown_is_the_project_kernel(executed):
    assert executed["seen"]["kernel_name"] == KERNEL_DISPLAY_NAME, (
        f"the notebook toolbar shows kernel {executed['seen']['kernel_name']!r}, not {KERNEL_DISPLAY_NAME!r}")


def test_every_code_cell_ran(executed):
    not_run = [_describe(cell) for cell in _code_cells(executed) if cell["execution_count"] is None]
    assert not not_run, f"cells without an execution count after Run All Cells: {', '.join(not_run)}"


def test_no_cell_raised(executed):
    failed = []
    for cell in _code_cells(executed):
        for output in cell["outputs"]:
            if output.get("output_type") == "error":
                failed.append(f"{_describe(cell)}: {output.get('ename')}: {output.get('evalue')}")
    assert not failed, "cells raised:\n  " + "\n  ".join(failed)
    tracebacks = [_describe(cell) for cell in _code_cells(executed) if "Traceback" in cell["output_text"]]
    assert not tracebacks, f"a traceback shows in the output of {', '.join(tracebacks)}"


def test_parameters_typed_reach_the_kernel(executed):
    index = executed["seen"]["parameters_cell"]
    after = [cell for cell in _code_cells(executed) if cell["index"] > index and "check_parameters(" in cell["source"]]
    assert after, "no cell calls check_parameters() after the parameters cell"
    shown = after[0]["output_text"]
    for value in PARAMETERS.values():
        assert repr(value) in shown, f"{_describe(after[0])} shows {shown!r}, without {value!r}"


def test_every_plotting_cell_shows_an_image(executed):
    plotting = [cell for cell in _code_cells(executed) if PLOTTING.search(cell["source"])]
    assert plotting, "no cell plots (plots.plot_... or display(fig)): the notebook changed, update this test"
    missing = []
    for cell in plotting:
        images = executed["seen"]["images"].get(cell["index"], [])
        if not any(img["complete"] and img["width"] for img in images):
            kinds = sorted({kind for output in cell["outputs"] for kind in output.get("data", {})}
                           | {output["output_type"] for output in cell["outputs"]})
            missing.append(f"{_describe(cell)}: {len(images)} <img>, none rendered; output kinds {kinds}")
    assert not missing, "plotting cells without a rendered image:\n  " + "\n  ".join(missing)


def test_progress_shows_as_widgets(executed):
    seen = executed["seen"]
    assert seen["max_progress_bars"] > 0, (
        f"no ipywidgets progress bar ({PROGRESS_BAR}) appeared in an output while the notebook ran "
        f"(ipywidgets elements seen: {seen['max_widgets']}); is ipywidgets installed in the kernel's environment?")
    assert not seen["widget_errors"], "an output reads 'Error displaying widget'"
    # Runs, steps and epochs: the nested bars show inside the runs bar's output while it runs.
    assert seen["max_progress_bars"] >= 2, f"at most {seen['max_progress_bars']} bar showed at once"


def test_closed_bars_leave_a_finished_line_and_no_widget(executed):
    # A closed widget left in an output draws as "Error displaying widget: model not found", also in the outputs
    # JupyterLab folds away behind "Show more outputs" (which the page text does not contain): read the model.
    left = [_describe(cell) for cell in _code_cells(executed)
            if any(WIDGET_VIEW in output.get("data", {}) for output in cell["outputs"])]
    assert not left, f"widget outputs left after the run in {', '.join(left)}"
    sweep = next(cell for cell in _code_cells(executed) if "run_sweep(" in cell["source"])
    assert re.search(r"ci/mnist-sample runs: (\d+)/\1 done in", sweep["output_text"]), sweep["output_text"][:500]


def test_no_iprogress_warning(executed):
    in_outputs = [_describe(cell) for cell in _code_cells(executed)
                  if FORBIDDEN_TEXT in json.dumps(cell["outputs"]) or FORBIDDEN_TEXT in cell["output_text"]]
    assert not executed["seen"]["forbidden_text"] and not in_outputs, (
        f"{FORBIDDEN_TEXT!r} shows (in {', '.join(in_outputs) or 'an output while running'}): "
        f"tqdm fell back to text bars")
    assert FORBIDDEN_TEXT not in executed["seen"]["page_text"], f"{FORBIDDEN_TEXT!r} shows on the page"


def test_outputs_go_to_the_sandbox(executed):
    figures = sorted(p.name for p in (OUT / "figures").glob("*.png"))
    assert figures, f"no figure written to {(OUT / 'figures').relative_to(REPO_ROOT)} ($ALVAE_FIGURES_DIR)"
    assert any((OUT / "results").rglob("*")), f"nothing written to {(OUT / 'results').relative_to(REPO_ROOT)}"
