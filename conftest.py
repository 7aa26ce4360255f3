"""Repository-wide pytest hooks (nbval comparison settings for executed notebooks)."""


def pytest_collectstart(collector):
    # Progress bars (stderr) and rendered figures are not compared; numbers, tables and text are.
    path = getattr(collector, "path", None)
    if path is not None and path.suffix == ".ipynb":
        collector.skip_compare += ("stderr", "image/png", "application/pdf")
