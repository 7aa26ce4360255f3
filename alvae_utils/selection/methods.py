"""Methods: a selection heuristic plus, optionally, a feature family and its scale α (Eq. 6).

A method's label names it everywhere (results, statistics, figures):
``coreset``, ``coreset+vae`` (α = :data:`DEFAULT_ALPHA`), ``coreset+vae(α=0.5)`` or
``coreset+vae(α=balanced)`` (α estimated at every selection,
:func:`alvae_utils.selection.alpha.balanced_alpha`).
This module is the one home of labels: parsing (:meth:`Method.parse`, :meth:`Method.read`,
:meth:`Method.parse_or_none`, :func:`parsed_methods`, :func:`labels_of`), the inverse of the stored key fields
(:meth:`Method.from_key_fields`), and α (:func:`parse_alpha`, :func:`check_alpha`). Heuristics and
families are looked up in their registries (:mod:`alvae_utils.selection.heuristics`,
:mod:`alvae_utils.selection.features`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..config import ConfigError, shown
from .features import FAMILIES, FeatureFamily, get_family
from .heuristics import HEURISTICS, LOSS_MODULE, REPRESENTATION, Heuristic, get_heuristic, with_variants
from .pairs import MAX_ALPHA

BALANCED = "balanced"
"""The α (Eq. 6) given as ``"balanced"``: estimated at every selection by
:func:`alvae_utils.selection.alpha.balanced_alpha`."""

DEFAULT_ALPHA: float = 1.0
"""Scale α of the feature block in Eq. 6. The paper does not state its value; 1.0
appends the VAE means unscaled. It multiplies the family's block only. Notebook 05's
sweep over {0.25, 1, 4, 16, balanced} found no value that beats α = 0 significantly
(docs/beyond.md), so 1.0 was kept; ``"balanced"`` weighs both blocks equally."""

def parse_alpha(text: str) -> float | str:
    """α as written in a label or on the command line: a number, or ``"balanced"``. Checked by :func:`check_alpha`.

    Raises ConfigError for text that is neither.
    """
    text = text.strip()
    if text == BALANCED:
        return BALANCED
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"α must be a number ≥ 0 or {BALANCED}, got {text!r}.") from None


def check_alpha(alpha: object, what: str = "the feature family's features") -> float | str:
    """α itself: a number in [0, :data:`MAX_ALPHA`] (returned as a float, -0 as 0) or ``"balanced"``; ConfigError
    otherwise, naming α, the value and the range."""
    if alpha == BALANCED:
        return BALANCED
    if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ConfigError(f"α must be ≥ 0 and finite, or {BALANCED!r} (it scales {what}), got {alpha!r}.")
    if alpha > MAX_ALPHA:
        raise ConfigError(f"α={shown(alpha)} is above the largest accepted α, {MAX_ALPHA:g}: it scales {what}, whose "
                          "squared distances then overflow float32 (or drown the task features entirely); give "
                          f"α ≤ {MAX_ALPHA:g}, or α={BALANCED}.")
    return float(alpha) + 0.0


_LABEL = re.compile(r"^(?P<heuristic>[^+()]+)(?:\+(?P<family>[^+()]+)(?:\(α=(?P<alpha>[^()]+)\))?)?$")


@dataclass(frozen=True)
class Method:
    """A heuristic, optionally with the features of a registered family appended (scaled by α)."""

    heuristic: str
    features: str | None = None  # a feature family's name, e.g. "vae"; None: the plain heuristic
    # Scale of the family's block: a number ≥ 0, or BALANCED (estimated at every selection). Unused without a family.
    alpha: float | str = DEFAULT_ALPHA

    def validate(self) -> None:
        """Raise ConfigError for an unknown heuristic or family, a heuristic without variants, or a bad α.

        α = ``"balanced"`` needs a family and a heuristic that appends its features to
        T_f (core-set, MedAL). Loss prediction rejects it: there α·V enters the module's
        last, fully connected layer, whose weights learn the block's scale, so no value
        of α balances anything; α only rescales those weights' initialisation and steps.
        """
        heuristic = get_heuristic(self.heuristic)
        if heuristic.extra_features == REPRESENTATION:
            self._check_representation()
        if self.features is None:
            if self.alpha == BALANCED:
                raise ConfigError(f"α={BALANCED} scales a feature family's block, and {self.heuristic} has none; "
                                  f"write e.g. {self.heuristic}+vae(α={BALANCED}).")
            return
        family = get_family(self.features)
        if heuristic.extra_features is None:
            raise ConfigError(f"heuristic {self.heuristic!r} has no {family.title} variant; "
                              f"add {family.title} features only to {', '.join(sorted(with_variants()))}.")
        if self.alpha == BALANCED:
            if heuristic.extra_features == LOSS_MODULE:
                raise ConfigError(
                    f"α={BALANCED} is not defined for {self.heuristic}: it equalises the mean squared pair distances "
                    f"of the two feature blocks that distance-based heuristics compare, but {self.heuristic} gives "
                    f"α·{family.title} features to the loss-prediction module's last layer, which learns their "
                    f"scale itself. Give α a number instead, e.g. {self.heuristic}+{self.features}(α=0.5) "
                    "(--alpha 0.5).")
            return
        check_alpha(self.alpha, f"the {family.title} features")

    def _check_representation(self) -> None:
        """A heuristic that selects from a family's features alone (TypiClust) needs a family and takes no α."""
        if self.features is None:
            raise ConfigError(f"{self.heuristic} selects from a feature family's representation alone, so it needs "
                              f"one: write {self.heuristic}+FAMILY with FAMILY one of {', '.join(FAMILIES)} "
                              f"(e.g. {self.heuristic}+vae).")
        if self.alpha != DEFAULT_ALPHA:
            raise ConfigError(f"{self.heuristic} takes no α (got {self.alpha!r}): scaling the only representation "
                              f"changes no pick. Write {self.heuristic}+{self.features}.")

    @property
    def heuristic_entry(self) -> Heuristic:
        """The registered heuristic (:attr:`heuristic` is its name)."""
        return get_heuristic(self.heuristic)

    @property
    def family(self) -> FeatureFamily | None:
        """The registered feature family, or None for the plain heuristic."""
        return None if self.features is None else get_family(self.features)

    @property
    def label(self) -> str:
        """``coreset``, ``coreset+vae`` (α = default), ``coreset+vae(α=0.5)`` or ``coreset+vae(α=balanced)``."""
        if self.features is None:
            return self.heuristic
        if self.alpha == DEFAULT_ALPHA:
            return f"{self.heuristic}+{self.features}"
        if self.alpha == BALANCED:
            return f"{self.heuristic}+{self.features}(α={BALANCED})"
        alpha = float(self.alpha) + 0.0  # -0 → 0
        text = f"{alpha:g}" if float(f"{alpha:g}") == alpha else repr(alpha)  # short, and exact: parses back
        return f"{self.heuristic}+{self.features}(α={text})"

    @property
    def base(self) -> Method:
        """The plain heuristic this method extends (itself when it has no family)."""
        return Method(self.heuristic)

    def key_fields(self) -> dict[str, object]:
        """What identifies the method in a run key (α only matters with a family).

        The VAE family keeps the fields it had before families were a concept
        (``use_vae``), so its stored runs keep their keys.
        """
        alpha = self.alpha if self.alpha == BALANCED else float(self.alpha) + 0.0
        fields: dict[str, object] = {"heuristic": self.heuristic, "use_vae": self.features == "vae",
                                     "alpha": alpha if self.features else None}
        if self.features not in (None, "vae"):
            fields["features"] = self.features
        entry = HEURISTICS.get(self.heuristic)
        if entry is not None and entry.mc_samples:  # BALD's dropout and T decide its numbers
            fields["mc_dropout"], fields["mc_samples"] = entry.mc_dropout, entry.mc_samples
        return fields

    @classmethod
    def parse(cls, text: str, alpha: float | str = DEFAULT_ALPHA) -> Method:
        """A label → Method (validated).

        ``"coreset"``, ``"coreset+vae"`` (α = ``alpha``), ``"coreset+vae(α=0.5)"`` or
        ``"coreset+vae(α=balanced)"``; ConfigError for text that is not a label or names no valid method.
        """
        method = cls.read(text, alpha)
        method.validate()
        return method

    @classmethod
    def read(cls, text: str, alpha: float | str = DEFAULT_ALPHA) -> Method:
        """A label → Method, not validated: the syntax only, so that a label of a stored run selects it
        (``coreset+vae(α=1e17)`` and ``coreset+vae(α=1e+17)`` are one label) even where :meth:`parse` would
        refuse to run it. ConfigError for text that is not a label."""
        match = _LABEL.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ConfigError(f"cannot parse method {text!r}; write HEURISTIC, HEURISTIC+FAMILY or "
                              "HEURISTIC+FAMILY(α=VALUE), e.g. coreset+vae.")
        if match["alpha"] is not None:
            try:
                alpha = parse_alpha(match["alpha"])
            except ConfigError:
                raise ConfigError(f"cannot read α in method {text!r}; write e.g. coreset+vae(α=0.5) or "
                                  f"coreset+vae(α={BALANCED}).") from None
        return cls(match["heuristic"], match["family"], alpha)

    @classmethod
    def parse_or_none(cls, text: str) -> Method | None:
        """:meth:`parse`, or None for text that is not the label of a method of registered entries.

        For tables that may hold runs of heuristics or families not registered in this process:
        such rows are left out of what needs the method, not an error.
        """
        try:
            return cls.parse(text)
        except ConfigError:
            return None

    @classmethod
    def from_key_fields(cls, fields: Mapping[str, object]) -> Method:
        """The inverse of :meth:`key_fields`: the method a stored run key describes (not validated: the
        run may be of a heuristic or family not registered in this process)."""
        family = fields.get("features") or ("vae" if fields.get("use_vae") else None)
        alpha = fields.get("alpha")
        return cls(str(fields["heuristic"]), family, DEFAULT_ALPHA if alpha is None else alpha)


def parsed_methods(labels: Iterable[str]) -> dict[str, Method]:
    """``{label: Method}`` for each distinct label of ``labels`` that names a method (:meth:`Method.parse_or_none`),
    in the order of first appearance."""
    methods = {label: Method.parse_or_none(label) for label in dict.fromkeys(labels)}
    return {label: method for label, method in methods.items() if method is not None}


_ANY = object()


def labels_of(labels: Iterable[str], *, family: str | None = _ANY, alpha: float | str = _ANY) -> list[str]:
    """The distinct labels among ``labels`` whose method has feature family ``family`` (None: the plain
    heuristic) and α ``alpha`` (a number or :data:`BALANCED`); a criterion left out matches any method.

    ``labels_of(rows["method"], alpha=BALANCED)``: the balanced-α variants. Labels that name no method
    of registered entries are left out.
    """
    return [label for label, method in parsed_methods(labels).items()
            if (family is _ANY or method.features == family)
            and (alpha is _ANY or (method.features is not None and method.alpha == alpha))]


RANDOM = "random"
"""The baseline every heuristic is compared with (:func:`random_pairs`)."""


def random_pairs(labels: Iterable[str]) -> list[tuple[str, str]]:
    """(random, heuristic) label pairs among ``labels``: random with each plain heuristic, and with each variant of a
    heuristic that has no plain form (TypiClust selects from its family's features alone).

    Sorted by label; none without random among ``labels``. These comparisons ask whether a heuristic beats
    random at all, a question of its own: test them as their own Holm family, apart from :func:`variant_pairs`.
    """
    methods = parsed_methods(sorted(set(labels)))
    if RANDOM not in methods:
        return []
    return [(RANDOM, label) for label, method in methods.items() if label != RANDOM
            and (method.features is None or method.heuristic_entry.extra_features == REPRESENTATION)]


def variant_pairs(labels: Iterable[str]) -> list[tuple[str, str]]:
    """(plain heuristic, variant) label pairs among ``labels``: each heuristic with each of its ``+family`` variants.

    Sorted by label; labels that are not methods of registered heuristics are skipped.
    """
    methods = parsed_methods(sorted(set(labels)))
    return [(base, label) for base, plain in methods.items() if plain.features is None
            for label, method in methods.items() if method.features is not None and method.base == plain]
