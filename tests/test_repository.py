"""What a reader meets in the repository: where the Lab opens, where outputs go, and a clean git tree."""

import json
import os
import shlex
import shutil
import subprocess

import pytest

from alvae_utils import paths
from alvae_utils.workflow.notebooks import NOTEBOOKS

NOTEBOOK_DIR = paths.REPO_ROOT / "notebooks"


def _make_dry_run(target: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(["make", "-n", target], cwd=paths.REPO_ROOT, capture_output=True, text=True, check=True)
    return result.stdout


def test_make_lab_opens_the_repository_and_works_as_root():
    command = next(line for line in _make_dry_run("lab").replace("\\\n", " ").splitlines() if "jupyter lab" in line)
    assert "--ServerApp.root_dir=." in command and "default_url=/lab/tree/notebooks" in command
    assert ("--allow-root" in command) == (os.geteuid() == 0)


def test_interactive_figures_stay_out_of_the_committed_gallery(monkeypatch):
    monkeypatch.delenv("ALVAE_FIGURES_DIR", raising=False)
    assert paths.figures_dir() == paths.REPO_ROOT / "build" / "figures"
    assert paths.gallery_dir() == paths.REPO_ROOT / "figures"
    assert (paths.REPO_ROOT / ".gitignore").read_text().count("build/") == 1


def test_notebook_outputs_are_stripped_by_a_git_filter():
    assert "*.ipynb filter=nbstripout" in (paths.REPO_ROOT / ".gitattributes").read_text()
    if not (paths.REPO_ROOT / ".git").exists() or not (paths.REPO_ROOT / ".venv" / ".alvae-installed").exists():
        pytest.skip("not a git checkout set up by `make setup`")
    clean = subprocess.run(["git", "config", "--get", "filter.nbstripout.clean"], cwd=paths.REPO_ROOT,
                           capture_output=True, text=True).stdout
    assert "-m nbstripout --keep-id" in clean


def test_a_notebook_with_outputs_is_staged_without_them(tmp_path):
    """The filter itself: what `git add` stores for an executed notebook equals the committed clean one."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    nbstripout = paths.REPO_ROOT / ".venv" / "bin" / "nbstripout"
    if not nbstripout.exists():
        pytest.skip("nbstripout is not installed; run `make setup`")
    committed = (NOTEBOOK_DIR / "03_significance_tests.ipynb").read_text(encoding="utf-8")
    executed = json.loads(committed)
    for cell in executed["cells"]:
        if cell["cell_type"] == "code":
            cell["execution_count"] = 3
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["42\n"]}]
            cell["metadata"]["execution"] = {"iopub.status.busy": "2026-11-29T12:00:00"}
            cell["metadata"]["papermill"] = {"duration": 1.5, "status": "completed"}
    executed["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    executed["metadata"]["papermill"] = {"parameters": {"profile": "ci"}}
    target = tmp_path / "03.ipynb"
    target.write_text(json.dumps(executed, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    makefile = (paths.REPO_ROOT / "Makefile").read_text()
    options = shlex.split(next(line for line in makefile.splitlines() if line.startswith("NBSTRIPOUT"))
                          .split(":=", 1)[1])
    subprocess.run([str(nbstripout), *options, str(target)], check=True)
    assert target.read_text(encoding="utf-8") == committed


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_notebooks_carry_the_metadata_jupyterlab_writes(name):
    notebook = json.loads((NOTEBOOK_DIR / f"{name}.ipynb").read_text(encoding="utf-8"))
    assert (notebook["nbformat"], notebook["nbformat_minor"]) == (4, 5)
    assert all(cell.get("id") for cell in notebook["cells"])
    assert notebook["metadata"]["kernelspec"] == {"display_name": "Python (alvae)", "language": "python",
                                                  "name": "alvae"}
    assert {"codemirror_mode", "file_extension", "mimetype", "name", "nbconvert_exporter",
            "pygments_lexer"} <= set(notebook["metadata"]["language_info"])


def test_the_ci_profile_is_introduced_as_a_smoke_test():
    notebook = json.loads((NOTEBOOK_DIR / "02_active_learning.ipynb").read_text(encoding="utf-8"))
    text = "".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown")
    assert "smoke test of the code paths, not an experiment" in text


def test_packaging_finds_every_sub_package():
    """A built wheel holds every sub-package of the tree, not only the top-level package."""
    import tomllib

    from setuptools import find_packages

    find = tomllib.loads((paths.REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packaged = set(find_packages(str(paths.REPO_ROOT), include=find["include"]))
    on_disk = {".".join(init.parent.relative_to(paths.REPO_ROOT).parts)
               for init in (paths.REPO_ROOT / "alvae_utils").rglob("__init__.py")}
    assert len(on_disk) > 1 and packaged == on_disk
