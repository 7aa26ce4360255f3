"""Registries: name → entry tables (heuristics, feature families) with errors that list the valid names."""

from __future__ import annotations

import re
from typing import Generic, TypeVar

from .config import ConfigError

Entry = TypeVar("Entry")
_NAME = re.compile(r"[a-z][a-z0-9_-]*")


class Registry(dict[str, Entry], Generic[Entry]):
    """A dict of named entries, in registration order.

    ``registry[name]`` raises ConfigError listing the registered names when
    ``name`` is unknown; :meth:`add` checks the name, which becomes part of
    method labels, figure file names and command lines (``[a-z][a-z0-9_-]*``).
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind  # "heuristic", "feature family": used in messages

    def __missing__(self, name: str) -> Entry:
        raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self)}.")

    def add(self, name: str, entry: Entry, replace: bool = False) -> Entry:
        """Register ``entry`` as ``name`` and return it; ConfigError for a bad or taken name (unless ``replace``)."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{self.kind} name {name!r} must be lower case letters, digits, '_' or '-', starting "
                              "with a letter: it becomes part of method labels, file names and command lines.")
        if name in self and not replace:
            raise ConfigError(f"{self.kind} {name!r} is already registered; pass replace=True to redefine it.")
        self[name] = entry
        return entry
