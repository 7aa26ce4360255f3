"""The built book in headless Chromium: its images load, its equations render, and no page asks the network.

Opens the ``ci`` book that ``make test`` builds (``build/ci/book/``) from local files, with Chromium's
network log on, and saves a screenshot of each page it opens to ``build/browser/``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from labdriver import APT_INSTALL, CHROMEDRIVER, CHROMIUM, OUT

from alvae_utils.workflow.book import book_dir

SITE = book_dir("ci") / "_build" / "html"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed; install them with `{APT_INSTALL}` (as root)")
    if not (SITE / "index.html").exists():
        pytest.skip("no book in build/ci/book/; `make test` builds it (or `make notebooks-ci`)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile_dir = Path(tempfile.mkdtemp(prefix="alvae-book-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--window-size=1400,1000", "--disable-dev-shm-usage",
                     f"--user-data-dir={profile_dir}"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    OUT.mkdir(parents=True, exist_ok=True)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER),
                                                                log_output=str(OUT / "chromedriver-book.log")))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile_dir, ignore_errors=True)


def _requested(driver) -> list[str]:
    """Every URL the page requested since the last call (Chromium's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _open(driver, page: Path, shot: str) -> list[str]:
    driver.get(page.as_uri())
    driver.execute_script("return document.readyState")  # get() returns once the load event fired
    loaded = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all([...document.images].map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))"
        ".then(() => done([...document.images].map(i => [i.getAttribute('src'), i.naturalWidth])));")
    driver.save_screenshot(str(OUT / f"book-{shot}.png"))
    assert loaded, f"{page.name} shows no image"
    broken = [src for src, width in loaded if not width]
    assert not broken, f"{page.name}: images that did not load: {broken}"
    return _requested(driver)


def test_landing_page_and_a_notebook_page_load_whole_and_offline(browser):
    notebook = next(iter(sorted((SITE / "notebooks").glob("02_active_learning*.html"))))
    requested = _open(browser, SITE / "index.html", "landing") + _open(browser, notebook, "notebook")
    remote = sorted({url for url in requested if url.startswith(("http:", "https:", "ws:", "wss:"))})
    assert not remote, f"the book asked the network for {remote}"


def test_equations_render_with_the_local_mathjax(browser):
    page = next(path for path in sorted(SITE.rglob("*.html")) if "\\(" in path.read_text(encoding="utf-8")
                or "\\[" in path.read_text(encoding="utf-8"))
    browser.get(page.as_uri())
    rendered = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const wait = (n) => (window.MathJax && MathJax.Hub && MathJax.Hub.queue) ?"
        " MathJax.Hub.Queue(() => done(document.querySelectorAll('.MathJax, .MathJax_CHTML, .MathJax_SVG').length))"
        " : (n > 0 ? setTimeout(() => wait(n - 1), 200) : done(-1)); wait(100);")
    browser.save_screenshot(str(OUT / "book-equations.png"))
    assert rendered > 0, f"{page.name}: MathJax rendered no equation ({rendered})"
    assert not [url for url in _requested(browser) if url.startswith(("http:", "https:"))]
