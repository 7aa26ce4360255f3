"""Repository-wide pytest hooks (nbval comparison settings for executed notebooks)."""

import nbval.plugin

from alvae_utils.progress import PROGRESS_METADATA

_transform_streams = nbval.plugin.transform_streams_for_comparison


def _without_widgets(outputs):
    """Progress bars are widgets, and a closed one leaves a text line: progress, not results. Never compared."""
    kept = [output for output in outputs
            if "application/vnd.jupyter.widget-view+json" not in output.get("data", {})
            and not output.get("metadata", {}).get(PROGRESS_METADATA)]
    return _transform_streams(kept)


nbval.plugin.transform_streams_for_comparison = _without_widgets


def pytest_collectstart(collector):
    # Text progress (stderr) and rendered figures are not compared; numbers, tables and text are.
    path = getattr(collector, "path", None)
    if path is not None and path.suffix == ".ipynb":
        collector.skip_compare += ("stderr", "image/png", "application/pdf")
