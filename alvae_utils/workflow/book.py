"""``make book``: the executed notebooks as a static site, with a landing page computed from the results.

The book is assembled from what ``make figures`` left, never executed again:

* a landing page: what alvae reproduces, on which data, the main figures, and the headline numbers
  of the stored results (:func:`alvae_utils.analysis.numbers.headline_numbers`, rendered, not typed);
* one page per executed notebook in ``build/<profile>/`` (every dataset's copy), without its
  progress-bar widgets, whose display would need a widget manager from a CDN;
* the reference pages of ``docs/``.

Jupyter Book 1.x (Sphinx, myst-nb, sphinx-book-theme) builds it offline: equations use the MathJax
2.7 that ``jupyter-server-mathjax`` ships, copied next to the pages, so no page asks the network for
anything. Every page carries a banner naming the profile, the data and the build date. The site is
written to ``build/book/`` (``build/<profile>/book/`` for another profile than ``quick``).
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from ..analysis.figures import FIGURES
from ..analysis.numbers import headline_numbers, summary_markdown
from ..config import SCHEMA_VERSION
from ..experiment.profiles import PROFILES, StudyConfig
from ..experiment.results import COLUMNS, load_results
from ..paths import REPO_ROOT, build_dir, gallery_dir, results_root
from .notebooks import NOTEBOOKS

DOCS_DIR = REPO_ROOT / "docs"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
LANDING_FIGURES = ("learning_curves", "beyond_curves", "study_ranking", "study_gains")
"""Registered figures (:data:`alvae_utils.analysis.figures.FIGURES`) shown on the landing page, every
file of each; all figures are on their notebooks' pages."""


NUMBERS_FILE = "numbers.json"
TIMINGS_FILE = "timings.csv"
README_START = "<!-- numbers:start: written by `make figures` from figures/numbers.json; do not edit by hand -->"
README_END = "<!-- numbers:end -->"


def write_numbers(profile: str, directory: Path) -> dict:
    """Compute :func:`headline_numbers` of ``profile``'s stored results and write them to
    ``directory/numbers.json`` (atomically); return the record. ``make figures`` calls it."""
    record = headline_numbers(_stored_rows(profile), profile, study=_study_of(profile))
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{NUMBERS_FILE}.partial"
    partial.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    partial.replace(directory / NUMBERS_FILE)
    return record


def readme_block(record: dict) -> str:
    """The README's generated block (markers included) for a numbers record: its short form, without the AUBC
    tables, which the book's landing page shows."""
    return f"{README_START}\n{summary_markdown(record, tables=False).rstrip()}\n{README_END}"


def update_readme(readme: Path, record: dict) -> None:
    """Replace the block between the README's markers with :func:`readme_block` of ``record``.

    Raises BookUnavailable when the markers are missing (they mark where the numbers go)."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise BookUnavailable(f"{readme} has no generated-numbers block; put the lines {README_START!r} and "
                              f"{README_END!r} where the headline numbers go.")
    readme.write_text(text[:start] + readme_block(record) + text[end + len(README_END):], encoding="utf-8")


class BookUnavailable(RuntimeError):
    """What the book needs is missing; the message says what to run or install."""


def book_dir(profile: str) -> Path:
    """Where the built site goes: ``build/book/`` for ``quick``, ``build/<profile>/book/`` otherwise."""
    return build_dir() / "book" if profile == "quick" else build_dir() / profile / "book"


def executed_notebooks(profile: str) -> list[Path]:
    """The executed copies of ``profile`` in notebook-table order (every dataset's copy of a notebook).

    Raises BookUnavailable when there is none, naming the command that makes them.
    """
    folder = build_dir() / profile
    found = [path for name in NOTEBOOKS for path in sorted(folder.glob(f"{name}*.ipynb"))
             if path.stem == name or path.stem.startswith(f"{name}-")]
    if not found:
        raise BookUnavailable(f"no executed notebooks in {folder}; run `make figures PROFILE={profile}` first "
                              "(the book renders them, it never executes them).")
    missing = [name for name in NOTEBOOKS if not any(p.stem == name or p.stem.startswith(f"{name}-") for p in found)]
    if missing:
        raise BookUnavailable(f"{folder} has no executed copy of {', '.join(missing)}; run `make figures "
                              f"PROFILE={profile}` (all notebooks) before building the book.")
    return found


def read_executed(path: Path) -> dict:
    """The executed notebook at ``path`` (nbformat JSON), checked: BookUnavailable, naming the file and the
    fix, when it cannot be read, is not a notebook, or was not executed by ``make figures`` (papermill)."""
    fix = f"run `make figures` again to rewrite it ({path.name} is an executed copy, never edited by hand)"
    try:
        notebook = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BookUnavailable(f"{path} cannot be read ({type(error).__name__}: {error}); {fix}.") from None
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list) or not all(isinstance(cell, dict) and isinstance(cell.get("outputs", []), list)
                                              and all(isinstance(o, dict) for o in cell.get("outputs", []))
                                              for cell in cells):
        raise BookUnavailable(f"{path} is not a notebook (its cells or outputs are damaged); {fix}.")
    if "papermill" not in notebook.get("metadata", {}):
        raise BookUnavailable(f"{path} was not executed by `make figures` (no papermill record): the book shows "
                              f"results, so {fix}.")
    return notebook


def without_widgets(notebook: dict) -> dict:
    """``notebook`` (nbformat JSON) without widget outputs and widget state; other outputs stay.

    A closed progress bar carries only a widget view and its text fallback ("0% 0/15"): both go.
    """
    for cell in notebook.get("cells", []):
        if "outputs" in cell:
            cell["outputs"] = [output for output in cell["outputs"] if WIDGET_VIEW not in output.get("data", {})]
    notebook.get("metadata", {}).pop("widgets", None)
    return notebook


def _data_line(rows) -> str:
    if rows.empty:
        return "no stored results"
    pairs = rows[["dataset", "data_description"]].drop_duplicates().sort_values("dataset")
    return "; ".join(f"{d} ({s})" for d, s in pairs.itertuples(index=False))


def _figures_of(profile: str) -> Path:
    return gallery_dir() if profile == "quick" else build_dir() / profile / "figures"


def _study_of(profile: str) -> StudyConfig | None:
    """The study of a registered profile, whose verdicts the numbers record carries."""
    return PROFILES[profile].study if profile in PROFILES else None


def _results_of(profile: str) -> Path:
    return (build_dir() / "ci" / "results" if profile == "ci" else results_root()) / profile


def _stored_rows(profile: str) -> pd.DataFrame:
    """``profile``'s stored rows (:data:`~alvae_utils.experiment.results.COLUMNS`) of the current schema; none
    without its results folder. Runs of an older schema left in the folder are superseded (a bump recomputes
    them under new keys), and would otherwise count twice."""
    directory = _results_of(profile)
    rows = load_results(directory, schema=SCHEMA_VERSION) if directory.exists() else pd.DataFrame(columns=list(COLUMNS))
    return rows[rows["profile"] == profile]


def read_timings(profile: str) -> list[dict[str, str]]:
    """The rows of ``build/<profile>/timings.csv`` (what the last ``make figures`` of ``profile`` took), or none.

    Raises ValueError, naming the file and the fix, for a file that is not such a table (no ``notebook``
    and ``seconds`` columns, or a row whose seconds are not a number)."""
    path = build_dir() / profile / TIMINGS_FILE
    if not path.exists():
        return []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
            rows = list(csv.DictReader(handle))
        for row in rows:
            seconds = float(row["seconds"])
            if not (math.isfinite(seconds) and seconds >= 0 and row["notebook"].strip()):
                raise ValueError(f"row {row} has no notebook or no finite, non-negative seconds")
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"{path} is not a timings table ({type(error).__name__}: {error}); delete it, and "
                         f"`make figures PROFILE={profile}` writes it again.") from None
    return rows


def timings_markdown(rows: list[dict[str, str]]) -> str:
    """A table of each notebook's wall-clock time with its start and the load average around it, the total, and
    the machine: from ``timings.csv`` rows (older files without the start, load and machine show '—')."""
    if not rows:
        return ("No timings were recorded for this profile (`make figures` writes them to "
                "`build/<profile>/timings.csv`).\n")
    lines = ["| notebook | dataset | seconds | started | load average before → after |", "|---|---|---:|---|---|"]
    for row in rows:
        cell = {key: str(row.get(key) or "").replace("|", "\\|") for key in row}  # a | would end the cell
        load = f"{cell.get('load_before') or '—'} → {cell.get('load_after') or '—'}"
        lines.append(f"| `{cell['notebook']}` | {cell.get('dataset') or 'all'} | {float(row['seconds']):,.0f} | "
                     f"{cell.get('started') or '—'} | {load} |")
    total = sum(float(row["seconds"]) for row in rows)
    machines = sorted({row.get("machine") or "" for row in rows} - {""})
    lines += ["", f"In all {total:,.0f} s ({total / 60:.0f} min) for {len(rows)} notebook runs"
              + (f", on {'; '.join(machines)}." if machines else ".")
              + " A load average above the machine's CPU count means other work shared it, and the times grow."]
    return "\n".join(lines) + "\n"


def landing_page(profile: str, numbers: dict, data: str, pages: list[str], figures: list[str], built: str,
                 timings: str = "") -> str:
    """Markdown of the landing page: every number in it comes from ``numbers``, ``timings`` (the markdown of
    :func:`timings_markdown`) or the build's date."""
    lines = ["# alvae: task-agnostic information in task-based active learning", "",
             "A reproduction of Godwin, Zain, Safir, Humphrey and Quinn, *Incorporating Task-Agnostic "
             "Information in Task-Based Active Learning Using a Variational Autoencoder* (SciPy 2022), "
             "and a kit for its question: does task-agnostic information (a VAE's latent code, learned from "
             "the whole pool without labels) help task-based active learning (core-set, MedAL, loss "
             "prediction)? The paper appends the VAE's μ to the task model's features (its Eq. 6) and finds "
             "no significant gain; the notebooks below reproduce that comparison and go beyond it.", "",
             f"This book was built on {built} from the executed notebooks of profile `{profile}`, on {data}. "
             "Nothing was re-executed for it: every table, figure and verdict below is what the notebooks and "
             "the stored results hold.", "", "## Headline numbers", "",
             "Computed from the stored results when the book was built "
             "(`alvae_utils.analysis.numbers`). AUBC is the area under the learning curve, normalised by "
             "the label range, so it reads as a mean accuracy over the curve.", "",
             summary_markdown(numbers), "## Main figures", ""]
    lines += [f"```{{image}} {figure}\n:alt: {Path(figure).stem}\n:width: 100%\n```\n" for figure in figures]
    if not figures:
        lines.append("No gallery figure was found for this profile.\n")
    lines += ["## The notebooks", ""] + [f"- {{doc}}`notebooks/{page}`" for page in pages]
    lines += ["", "## How long they took", "", "Each notebook's last run by `make figures` of this profile, as "
              "`timings.csv` recorded it (its start says when; `make figures --only` replaces only its own rows):",
              "", timings or timings_markdown([])]
    lines += ["", "## Reference", "", "How to install, run, extend and check alvae: see the reference pages "
              "in the table of contents."]
    return "\n".join(lines) + "\n"


def _config(profile: str, data: str, built: str) -> str:
    banner = f"Built {built} from profile <code>{profile}</code>: {data}."
    return json.dumps({
        "title": "alvae", "author": "alvae contributors", "only_build_toc_files": True,
        "execute": {"execute_notebooks": "off"},
        "sphinx": {"config": {
            "mathjax_path": "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full",
            # jupyter-server-mathjax ships the STIX-Web fonts only (as Jupyter configures them); myst-nb
            # marks notebook text `tex2jax_ignore`, so the math Sphinx wraps in class "math" is processed by class.
            "mathjax2_config": {"HTML-CSS": {"availableFonts": [], "preferredFont": None, "imageFont": None,
                                             "webFont": "STIX-Web"},
                                "tex2jax": {"processClass": "math|output_area", "processEscapes": True}},
            # Not the book's own _static/: Jupyter Book adds every .js file found there as a <script>.
            "html_static_path": ["offline_static"],
            "html_theme_options": {"announcement": banner, "use_repository_button": False},
            "myst_enable_extensions": ["dollarmath", "amsmath"],
            "myst_heading_anchors": 4,  # reference pages link to each other's sections
            "nb_output_stderr": "show",
            "suppress_warnings": ["mystnb.unknown_mime_type"],
        }},
    }, indent=1)  # JSON is YAML


def assemble(profile: str, source: Path) -> Path:
    """Write the book's sources for ``profile`` to ``source`` (emptied first); return ``source``.

    Raises BookUnavailable without executed notebooks or without the reference pages of ``docs/``.
    """
    notebooks = executed_notebooks(profile)
    docs = sorted(DOCS_DIR.glob("*.md"))
    if not docs:
        raise BookUnavailable(f"no reference pages in {DOCS_DIR}; restore docs/ from git.")
    if source.exists():
        shutil.rmtree(source)
    (source / "notebooks").mkdir(parents=True)
    chapters = []
    for path in notebooks:
        notebook = without_widgets(read_executed(path))
        (source / "notebooks" / path.name).write_text(json.dumps(notebook, indent=1))
        chapters.append({"file": f"notebooks/{path.stem}", "title": _title(notebook, path.stem)})
    shutil.copytree(DOCS_DIR, source / "reference")
    figures_dir = _figures_of(profile)
    patterns = [re.sub(r"\{\w+\}", "*", pattern) for name in LANDING_FIGURES for pattern in FIGURES[name].patterns()
                if pattern.endswith(".png")]
    figures = list(dict.fromkeys(path for pattern in patterns for path in sorted(figures_dir.glob(pattern))))
    (source / "figures").mkdir()
    for path in figures:
        shutil.copy2(path, source / "figures" / path.name)
    shutil.copytree(_mathjax(), source / "offline_static" / "mathjax")
    rows = _stored_rows(profile)
    built = datetime.date.today().isoformat()
    data = _data_line(rows)
    numbers = headline_numbers(rows, profile, study=_study_of(profile))
    try:
        timings = timings_markdown(read_timings(profile))
    except ValueError as error:  # a damaged record of times must not stop the book: the page says what is wrong
        timings = f"The timings could not be read: {error}\n"
    (source / "index.md").write_text(landing_page(profile, numbers, data, [p.stem for p in notebooks],
                                                  [f"figures/{p.name}" for p in figures], built, timings))
    (source / "_config.yml").write_text(_config(profile, data, built))
    toc = {"format": "jb-book", "root": "index", "parts": [
        {"caption": "Notebooks", "chapters": chapters},
        {"caption": "Reference", "chapters": [{"file": f"reference/{p.stem}"} for p in docs]}]}
    (source / "_toc.yml").write_text(json.dumps(toc, indent=1))
    return source


def _title(notebook: dict, stem: str) -> str:
    """The notebook's first heading, with the dataset of a per-dataset copy (``02_…-mnist``): the
    table of contents tells the copies apart."""
    heading = next((line.lstrip("#").strip() for cell in notebook["cells"] if cell["cell_type"] == "markdown"
                    for line in "".join(cell["source"]).splitlines() if line.startswith("#")), stem)
    _, _, dataset = stem.partition("-")
    return f"{heading} ({dataset})" if dataset else heading


def _mathjax() -> Path:
    """MathJax 2.7 as jupyter-server-mathjax ships it (the book's `book` extra installs it)."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise BookUnavailable("jupyter-server-mathjax is not installed; `make book` installs the book's "
                              "dependencies (pip install -e '.[book]').") from None
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def build_book(profile: str = "quick") -> Path:
    """Assemble and build the book of ``profile`` (warnings are errors); return the site's index.html."""
    output = book_dir(profile)
    source = assemble(profile, output.parent / f"{output.name}-src")
    if output.exists():
        shutil.rmtree(output)
    # jupyter-book's CLI has no `python -m` entry: call its click group in a child interpreter.
    command = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(source),
               "--path-output", str(output), "--warningiserror", "--keep-going", "--all", "--quiet"]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"the book did not build (jupyter-book exit {finished.returncode}):\n"
                           f"{finished.stdout[-4000:]}\n{finished.stderr[-4000:]}")
    index = output / "_build" / "html" / "index.html"
    print(f"[alvae] book of profile {profile}: open {index}", flush=True)
    return index
