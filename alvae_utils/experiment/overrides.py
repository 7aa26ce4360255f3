"""Overrides: change any setting of a profile by a dotted key, from a notebook, the CLI or ``make figures``.

One namespace covers everything a profile sets:

* the experiment: ``pool_size``, ``eval_size``, ``initial_labels`` (ξ), ``budget`` (β),
  ``max_labels`` (η), ``pool_seed``, ``pool_imbalance`` (ρ) — applied to every dataset of the profile;
* ``train.<field>`` (:class:`~alvae_utils.config.TrainConfig`), ``vae.<field>``
  (:class:`~alvae_utils.config.VAEConfig`), ``simclr.<field>`` (:class:`~alvae_utils.config.SimCLRConfig`),
  ``tsne.<field>`` (:class:`~alvae_utils.config.TSNEConfig`);
* ``methods`` (method labels, e.g. ``coreset,coreset+vae``) and ``seeds`` (e.g. ``0,1,2``).

Types and allowed ranges are read from the configuration dataclasses themselves
(:func:`alvae_utils.config.setting`), so every entry point checks the same rules.
An overridden setting changes the experiment's configuration key, so its runs are
stored apart from the profile's own; the profile records its overrides
(:attr:`Profile.overrides`), and figure footers name them (:attr:`Profile.label`,
:func:`alvae_utils.experiment.profiles.describe_overrides`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace

from ..config import (
    ConfigError, ExperimentConfig, SimCLRConfig, TrainConfig, TSNEConfig, VAEConfig, check_value, setting_type, shown,
)
from ..selection.methods import Method
from .profiles import Profile

SECTIONS: dict[str, type] = {"train": TrainConfig, "vae": VAEConfig, "simclr": SimCLRConfig, "tsne": TSNEConfig}
_NESTED = {"dataset", "train", "vae", "simclr"}  # experiment fields that are not overridden directly
LISTS = {"methods": "method labels, e.g. coreset,coreset+vae", "seeds": "run seeds, e.g. 0,1,2 (integers ≥ 0)"}


def _owner(key: str) -> tuple[type, str]:
    """(dataclass, field name) of a scalar key; ConfigError listing the valid keys otherwise."""
    section, _, name = key.rpartition(".")
    owner = SECTIONS.get(section) if section else ExperimentConfig
    if owner is None or name not in {f.name for f in fields(owner)} or (owner is ExperimentConfig and name in _NESTED):
        raise ConfigError(f"unknown setting {key!r}; valid keys:\n{describe_keys()}")
    return owner, name


def valid_keys() -> dict[str, str]:
    """Every overridable key with its type, range and description."""
    keys = {}
    for section, owner in (("", ExperimentConfig), *SECTIONS.items()):
        for f in fields(owner):
            if owner is ExperimentConfig and f.name in _NESTED:
                continue
            allowed = f.metadata.get("range")
            kind = getattr(setting_type(owner, f.name), "__name__", None) or str(setting_type(owner, f.name))
            keys[f"{section}.{f.name}" if section else f.name] = (
                f"{kind}{f', {allowed}' if allowed else ''}: {f.metadata.get('help', '')}")
    return {**keys, **LISTS}


def describe_keys(patterns: Iterable[str] = ("*",)) -> str:
    """The valid keys matching ``patterns``, one per line with type, range and meaning."""
    return "\n".join(f"  {key} ({text})" for key, text in valid_keys().items()
                     if any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns))


def _from_text(key: str, text: str) -> object:
    """A value for ``key`` read from command-line text (types from the configuration)."""
    if key != key.strip(".") or ".." in key:
        raise ConfigError(f"unknown setting {key!r}; valid keys:\n{describe_keys()}")
    if key in LISTS:
        return [part.strip() for part in text.split(",") if part.strip()]
    owner, name = _owner(key)
    hint = setting_type(owner, name)
    word = text.strip()
    if word.lower() in {"none", "null"}:
        return None
    for kind in (bool, int, float, str):
        if kind is hint or kind in getattr(hint, "__args__", ()):
            if kind is bool:
                if word.lower() in {"true", "1", "yes"}:
                    return True
                if word.lower() in {"false", "0", "no"}:
                    return False
                continue
            try:
                return kind(word)
            except ValueError:
                continue
    return word  # the type check then names what was expected


def parse_assignments(assignments: Iterable[str]) -> dict[str, object]:
    """``["train.initial_epochs=3", "methods=coreset,coreset+vae"]`` → checked overrides."""
    parsed = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"cannot read {assignment!r}; write KEY=VALUE, e.g. train.initial_epochs=3.")
        if key.strip() in parsed:
            raise ConfigError(f"{key.strip()} is set twice ({assignment!r}); give each setting once.")
        parsed[key.strip()] = _from_text(key.strip(), text)
    return normalise(parsed)


def normalise(overrides: Mapping[str, object], allowed: Iterable[str] = ("*",), where: str = "") -> dict[str, object]:
    """Check keys and types; return the overrides sorted by key (lists as tuples). :func:`apply` checks ranges.

    ``allowed`` are glob patterns of the keys the caller uses (a notebook uses only
    some); ``where`` names the caller in errors. Text values (``"3"``) are read as the
    setting's type. Raises ConfigError listing the valid keys for an unknown or unused key.
    """
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{where}overrides must be a dict of KEY: VALUE, got {type(overrides).__name__}.")
    allowed = tuple(allowed)
    checked: dict[str, object] = {}
    for key in sorted(overrides):
        value = overrides[key]
        if not isinstance(key, str):
            raise ConfigError(f"{where}override keys are strings such as 'train.initial_epochs', got {key!r}.")
        if key not in valid_keys():
            _owner(key)  # raises, listing the valid keys
        if not any(fnmatch.fnmatchcase(key, pattern) for pattern in allowed):
            raise ConfigError(f"{where}does not use the setting {key!r}; it takes:\n{describe_keys(allowed)}")
        if isinstance(value, str) and (key in LISTS or setting_type(*_owner(key)) is not str):
            value = _from_text(key, value)
        # Ranges are checked when the overrides are applied, by the configurations' own validate().
        checked[key] = _list(key, value) if key in LISTS else check_value(*_owner(key), value, key, check_range=False)
    return checked


def _list(key: str, value: object) -> tuple:
    items = tuple(value) if isinstance(value, (list, tuple)) else None
    if not items:
        raise ConfigError(f"{key} must be a non-empty list of {LISTS[key]}; got {value!r}.")
    if len(set(items)) != len(items):
        raise ConfigError(f"{key} lists an entry twice: {list(items)}.")
    if key == "methods":
        for label in items:
            if not isinstance(label, str):
                raise ConfigError(f"methods are labels such as 'coreset+vae', got {label!r}.")
        # Normalised labels: "coreset+vae(α=4.0)" and " coreset+vae(α=4)" are one method, stored under one label.
        labels = tuple(Method.parse(label).label for label in items)  # raises for an unknown heuristic or family
        if len(set(labels)) != len(labels):
            twice = sorted({label for label in labels if labels.count(label) > 1})
            raise ConfigError(f"methods name the same method twice ({', '.join(twice)}) in {list(items)}; "
                              "give each once.")
        return labels
    for seed in items:
        if isinstance(seed, str) and seed.strip().isascii() and seed.strip().isdecimal():
            continue
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seeds must be integers ≥ 0, got {shown(seed)}.")
    return tuple(int(seed) for seed in items)


def apply(profile: Profile, overrides: Mapping[str, object]) -> Profile:
    """``profile`` with ``overrides`` (checked by :func:`normalise`) applied to every experiment and recorded.

    Raises ConfigError if a changed experiment or t-SNE setting no longer forms a valid run.
    """
    checked = normalise(overrides)
    if not checked:
        return profile
    sections: dict[str, dict[str, object]] = {"": {}, **{name: {} for name in SECTIONS}}
    for key, value in checked.items():
        if key not in LISTS:
            section, _, name = key.rpartition(".")
            sections[section][name] = value
    experiments = tuple(replace(e, **sections[""], train=replace(e.train, **sections["train"]),
                                vae=replace(e.vae, **sections["vae"]), simclr=replace(e.simclr, **sections["simclr"]))
                        for e in profile.experiments)
    for experiment in experiments:
        experiment.validate()
    tsne = replace(profile.tsne, **sections["tsne"])
    tsne.validate()
    methods = tuple(Method.parse(label) for label in checked["methods"]) if "methods" in checked else profile.methods
    seeds = checked.get("seeds", profile.seeds)
    recorded = tuple(sorted({**dict(profile.overrides), **checked}.items()))
    return replace(profile, experiments=experiments, tsne=tsne, methods=methods, seeds=seeds, overrides=recorded)
