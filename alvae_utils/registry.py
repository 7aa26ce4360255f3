"""Registries: name → entry tables (heuristics, feature families) with errors that list the valid names."""

from __future__ import annotations

from typing import Generic, TypeVar

from .config import ConfigError

Entry = TypeVar("Entry")


class Registry(dict[str, Entry], Generic[Entry]):
    """A dict of named entries, in registration order.

    ``registry[name]`` raises ConfigError listing the registered names when
    ``name`` is unknown; :meth:`add` checks the name, which becomes part of
    method labels (lower case, without ``+ ( ) =`` or spaces).
    """

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind  # "heuristic", "feature family": used in messages

    def __missing__(self, name: str) -> Entry:
        raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self)}.")

    def add(self, name: str, entry: Entry, replace: bool = False) -> Entry:
        """Register ``entry`` as ``name`` and return it; ConfigError for a bad or taken name (unless ``replace``)."""
        if not isinstance(name, str) or not name or not name.islower() or any(c in name for c in "+()= "):
            raise ConfigError(f"{self.kind} name {name!r} must be lower case, without '+', '(', ')', '=' or "
                              "spaces: it becomes part of method labels.")
        if name in self and not replace:
            raise ConfigError(f"{self.kind} {name!r} is already registered; pass replace=True to redefine it.")
        self[name] = entry
        return entry
