"""Fixtures of the browser test: ``lab`` (a sandboxed JupyterLab) and ``page`` (headless Chromium).

The tests here run only when selected explicitly (``make test-browser``, i.e.
``pytest tests/browser``, or ``ALVAE_BROWSER_TESTS=1``): a plain ``pytest tests``
skips them, since they take minutes. Without chromium and chromedriver they skip,
saying what to install. A failing test leaves a screenshot, the page text and the open
notebooks' JSON in ``build/browser/failure-<test>.*``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from labdriver import APT_INSTALL, CHROMEDRIVER, CHROMIUM, HERE, OUT, REPO_ROOT, Lab, Page, start_browser, start_lab


def _selected_explicitly(config: pytest.Config) -> bool:
    if os.environ.get("ALVAE_BROWSER_TESTS") == "1":
        return True
    for arg in config.args:
        path = (Path(config.invocation_params.dir) / arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _selected_explicitly(config):
        return
    skip = pytest.mark.skip(reason="browser test (minutes): run it with `make test-browser`")
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(skip)


def _require_browser() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed; install them with `{APT_INSTALL}` (as root)")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    _require_browser()  # before starting anything
    with start_lab() as server:
        yield server


_PAGES: list[Page] = []  # the live page, for the failure hook


@pytest.fixture(scope="session")
def page(lab: Lab) -> Iterator[Page]:
    with start_browser(lab) as current:
        _PAGES.append(current)
        try:
            yield current
        finally:
            _PAGES.remove(current)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    # Failures of a test's own body; the fixtures that drive the page dump their own failures.
    if report.failed and report.when == "call" and _PAGES and HERE in Path(item.path).parents:
        name = f"failure-{item.name}"
        _PAGES[-1].dump(name)
        report.sections.append(("browser", f"screenshot and page text: {OUT.relative_to(REPO_ROOT)}/{name}.*"))
    return report
