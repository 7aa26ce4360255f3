"""The book that ``make test`` builds from the ``ci`` profile's executed notebooks (``build/ci/book/``).

Sphinx already ran with warnings as errors; these checks cover what it cannot see: every figure of
every executed notebook is an image file of the site, every internal link and anchor resolves, no
page loads anything from the network, and the landing page's numbers are those computed from the
stored results.
"""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from alvae_utils.analysis.numbers import headline_numbers
from alvae_utils.config import SCHEMA_VERSION
from alvae_utils.experiment.profiles import PROFILES
from alvae_utils.experiment.results import load_results
from alvae_utils.paths import build_dir
from alvae_utils.workflow.book import WIDGET_VIEW, book_dir, read_timings

SITE = book_dir("ci") / "_build" / "html"
PAGES = sorted(path for path in SITE.rglob("*.html") if "_static" not in path.relative_to(SITE).parts) \
    if SITE.exists() else []

pytestmark = pytest.mark.skipif(not PAGES, reason="no book in build/ci/book/; run `make notebooks-ci`")


class _Page(HTMLParser):
    """Links (href), resources (src, link href) and element ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.resources: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        if tag in ("img", "script", "iframe", "source") and values.get("src"):
            self.resources.append(values["src"])
            if tag == "img":
                self.images.append(values["src"])
        if tag == "link" and values.get("href") and values.get("rel") != "canonical":
            self.resources.append(values["href"])


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _local(url: str) -> bool:
    return not urlsplit(url).scheme and not url.startswith("//")


def test_every_notebook_figure_is_an_image_of_its_page():
    for source in sorted((build_dir() / "ci").glob("*.ipynb")):
        cells = json.loads(source.read_text(encoding="utf-8"))["cells"]
        expected = sum("image/png" in output.get("data", {}) and WIDGET_VIEW not in output.get("data", {})
                       for cell in cells for output in cell.get("outputs", []))
        page = SITE / "notebooks" / f"{source.stem}.html"
        assert page.exists(), f"{source.name} has no page in the book"
        images = [src for src in _parse(page).images if "_images/" in src]
        assert len(images) == expected, f"{page.name}: {len(images)} images for {expected} figures"
        for src in images:
            assert (page.parent / unquote(src)).resolve().is_file(), f"{page.name}: {src} does not exist"


def test_internal_links_and_anchors_resolve_and_nothing_comes_from_the_network():
    parsed = {path.resolve(): _parse(path) for path in PAGES}
    for path, page in parsed.items():
        external = [url for url in page.resources if not _local(url)]
        assert not external, f"{path.name} loads from the network: {external}"
        for url in page.resources + [link for link in page.links if _local(link)]:
            parts = urlsplit(url)
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            assert target.exists(), f"{path.relative_to(SITE.resolve())}: {url} does not resolve"
            if parts.fragment and target.suffix == ".html" and target in parsed:
                assert parts.fragment in parsed[target].ids, f"{path.name}: anchor {url} does not resolve"


def test_landing_page_numbers_are_computed_from_the_results():
    rows = load_results(build_dir() / "ci" / "results" / "ci", schema=SCHEMA_VERSION)
    record = headline_numbers(rows[rows["profile"] == "ci"], "ci", study=PROFILES["ci"].study)
    text = html.unescape(re.sub(r"<[^>]+>", "", (SITE / "index.html").read_text(encoding="utf-8")))
    assert record["study"], "the ci profile stored no study runs (notebook 06)"
    flat = " ".join(text.split())
    for entry in record["study"]:
        for question, answer in entry["verdicts"].items():
            assert f"{question} {answer}" in flat, (entry["dataset"], question)
    assert record["datasets"], "the ci profile stored no results"
    for entry in record["datasets"]:
        assert f"{entry['runs']} runs, seeds {', '.join(map(str, entry['seeds']))}" in text
        for method in entry["methods"]:
            assert f"{100 * method['aubc']:.2f}" in text, (entry["dataset"], method)
        for test in entry["tests"]:
            if test["mean_diff"] is not None:
                assert f"{100 * test['mean_diff']:+.2f} pp" in text, (entry["dataset"], test)


def test_every_page_says_what_it_was_built_from():
    for path in PAGES:
        if path.name in ("genindex.html", "search.html"):
            continue
        assert "from profile ci" in re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")), path.name


def test_the_landing_page_gives_each_notebooks_recorded_time():
    rows = read_timings("ci")
    assert rows and all(row["started"] and row["machine"] and row["load_after"] for row in rows), rows
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", (SITE / "index.html").read_text(encoding="utf-8"))).split())
    for row in rows:
        assert f"{row['notebook']} {row['dataset'] or 'all'} {float(row['seconds']):,.0f} {row['started']}" in text
    assert f"In all {sum(float(row['seconds']) for row in rows):,.0f} s" in text
