"""No result of a run is typed by hand into the prose: the reference pages, the notebooks' markdown and the README
outside its generated block (issue 28). Results change whenever `make figures` runs again; the generated
numbers (`figures/numbers.json`, the README block, the book's landing page) and the executed notebooks hold them."""

from __future__ import annotations

import json
import re

import pytest

from alvae_utils.paths import REPO_ROOT
from alvae_utils.workflow.book import README_END, README_START

# A difference in percentage points, a Holm-adjusted p, or an AUBC or accuracy value, as result tables and verdicts
# state them (constants such as a learning rate of 0.001 or the Wilcoxon floor p = 0.0625 are not results).
RESULT = re.compile(r"[+−-]?\d+(?:\.\d+)?\s?pp\b|\d+(?:\.\d+)?\s*percentage points|p_holm\s*=\s*\d"
                    r"|(?:AUBC|accuracy)[^\n]{0,24}?\b0\.\d{2,}|\b0\.\d{2,}\s*(?:AUBC|accuracy)", re.IGNORECASE)


def _prose() -> dict[str, str]:
    docs = sorted((REPO_ROOT / "docs").glob("*.md"))
    texts = {f"docs/{path.name}": path.read_text(encoding="utf-8") for path in docs}
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        texts[f"notebooks/{path.name}"] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    texts["README.md"] = readme.split(README_START)[0] + readme.split(README_END)[-1]
    return texts


@pytest.mark.parametrize(("name", "text"), sorted(_prose().items()))
def test_no_result_number_is_typed_into_the_prose(name, text):
    typed = [match.group(0) for match in RESULT.finditer(text)]
    assert not typed, f"{name} types results {typed}: generate them (figures/numbers.json) or point to them"
