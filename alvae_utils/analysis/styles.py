"""How each method is drawn: one style per method, distinct within a figure, and legends that stay legible.

A heuristic's colour comes from its registry entry; a feature family's variant adds a marker, and α
variants are shaded light to dark with their own dash patterns (:func:`method_styles`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb

from ..selection.features import FAMILIES
from ..selection.methods import BALANCED, DEFAULT_ALPHA, Method

_ALT_LINESTYLES = ("-.", ":", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 2)),
                   (0, (6, 2, 2, 2)), (0, (2, 1)))
_ALT_MARKERS = ("^", "D", "v", "<", ">", "p", "X", "d", "8", "H")
_FAMILY_MARKERS = ("s", "P", "*", "h")  # a family's variant at the default α, by registration order
LEGEND_INSIDE_MAX = 7
"""Legends with more entries go beside the axes, in columns of at most :data:`LEGEND_ROWS`, and the figure widens
for them: inside, 15–30 entries would cover the curves, and in one column they overflow the figure."""
LEGEND_ROWS = 16


def method_style(method: str) -> dict:
    """Line style of a method label, identical in every figure; :func:`method_styles` makes those of one figure
    distinct.

    The heuristic's colour (:mod:`alvae_utils.selection.heuristics`; random grey); a feature-family
    variant is a darker shade, dashed, with one marker per family; a variant with a
    non-default α (``"coreset+vae(α=0.5)"``) gets another dash pattern and marker,
    fixed by its label. A label that names no registered heuristic gets a colour fixed by its text.
    """
    stable = zlib.crc32(method.encode())  # hash() is salted per process; crc32 is not
    parsed = Method.parse_or_none(method)
    if parsed is None:
        return {"color": plt.get_cmap("tab10")(stable % 10), "linestyle": "-", "marker": "o"}
    colour = parsed.heuristic_entry.colour
    if parsed.features is None:
        return {"color": colour, "linestyle": "-", "marker": "o"}
    darker = tuple(0.6 * channel for channel in to_rgb(colour))
    if parsed.alpha == DEFAULT_ALPHA:
        marker = _FAMILY_MARKERS[list(FAMILIES).index(parsed.features) % len(_FAMILY_MARKERS)]
        return {"color": darker, "linestyle": "--", "marker": marker}
    return {"color": darker, "linestyle": _ALT_LINESTYLES[stable % len(_ALT_LINESTYLES)],
            "marker": _ALT_MARKERS[stable % len(_ALT_MARKERS)]}


def _style_key(style: dict) -> tuple:
    return tuple(np.round(to_rgb(style["color"]), 3)), str(style["linestyle"]), style["marker"]


def method_styles(methods: Sequence[str]) -> dict[str, dict]:
    """A distinct style for each method drawn in one figure: ``{label: {"color", "linestyle", "marker"}}``.

    Plain heuristics and default-α variants keep :func:`method_style`. The other α variants of
    one heuristic and family are ordered by α (balanced last) and shaded from light (smallest α)
    to dark, each with its own dash pattern, so that α = 0.25 and α = 4 never look alike. Any
    two styles that still coincide (labels of unregistered heuristics, more variants than dash
    patterns) are told apart by the first free (marker, dash pattern) pair.
    """
    labels = list(dict.fromkeys(methods))
    styles = {label: method_style(label) for label in labels}
    variants: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for label in labels:
        parsed = Method.parse_or_none(label)
        if parsed is not None and parsed.features is not None and parsed.alpha != DEFAULT_ALPHA:
            order = float("inf") if parsed.alpha == BALANCED else float(parsed.alpha)
            variants.setdefault((parsed.heuristic, parsed.features), []).append((order, label))
    for (heuristic, _), members in variants.items():
        base = to_rgb(Method(heuristic).heuristic_entry.colour)
        for rank, (_, label) in enumerate(sorted(members)):
            shade = 0.85 - 0.55 * rank / max(1, len(members) - 1)  # light to dark
            styles[label] = {"color": tuple(shade * channel for channel in base),
                             "linestyle": _ALT_LINESTYLES[rank % len(_ALT_LINESTYLES)],
                             "marker": _ALT_MARKERS[rank // len(_ALT_LINESTYLES) % len(_ALT_MARKERS)]}
    used: set[tuple] = set()
    candidates = [(marker, dash) for marker in ("o", *_FAMILY_MARKERS, *_ALT_MARKERS)
                  for dash in ("-", "--", *_ALT_LINESTYLES)]
    for label in labels:
        style = styles[label]
        if _style_key(style) in used:
            style = next(({**style, "marker": marker, "linestyle": dash} for marker, dash in candidates
                          if _style_key({**style, "marker": marker, "linestyle": dash}) not in used), style)
        used.add(_style_key(style))
        styles[label] = style
    return styles


def place_legend(ax: Axes, entries: int, **kwargs) -> None:
    """The axes' legend: inside for a few entries, beside the axes in columns (:data:`LEGEND_ROWS`) for more."""
    if entries <= LEGEND_INSIDE_MAX:
        ax.legend(**kwargs)
        return
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=7,
              ncols=math.ceil(entries / LEGEND_ROWS), **kwargs)


def legend_width(entries: int) -> float:
    """Inches a figure widens for a legend beside its axes (:func:`place_legend`)."""
    return 0.0 if entries <= LEGEND_INSIDE_MAX else 2.3 * math.ceil(entries / LEGEND_ROWS)
