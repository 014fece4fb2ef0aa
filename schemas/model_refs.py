"""The grammar of model names, versions, aliases and references, defined once and checked at every edge.

A name, version or alias becomes a path component of the registry, so anything outside this grammar (``..``,
``/``, empty, absolute paths, control characters, look-alike unicode) is refused before it reaches a path::

    NAME    = [a-z0-9][a-z0-9._-]{0,63}       e.g. tagger, coco-80, adv.v2  (ASCII, lower case)
    VERSION = v[1-9][0-9]{0,8}                 v1, v2, ... (no leading zeros: v01 is not v1)
    ALIAS   = [a-z][a-z0-9_-]{0,31}, not v<digits>    e.g. production
    REF     = NAME | NAME@VERSION | NAME@ALIAS         NAME alone means NAME@production
"""
from __future__ import annotations

import re
from typing import NamedTuple

from schemas.errors import UserError

PRODUCTION = "production"
NAME_GRAMMAR = "[a-z0-9][a-z0-9._-]{0,63}"
VERSION_GRAMMAR = "v[1-9][0-9]{0,8}"
ALIAS_GRAMMAR = "[a-z][a-z0-9_-]{0,31}"
_NAME = re.compile(NAME_GRAMMAR, re.ASCII)
_VERSION = re.compile(VERSION_GRAMMAR, re.ASCII)
_ALIAS = re.compile(ALIAS_GRAMMAR, re.ASCII)
_VERSION_LIKE = re.compile("v[0-9]+", re.ASCII)  # v0, v01, v1234567890: never an alias, never a version
REF_HELP = "NAME, NAME@production or NAME@vN"


class RefError(UserError, ValueError):
    """A model name, version, alias or reference outside the grammar."""


class ModelRef(NamedTuple):
    name: str
    which: str  # a VERSION or an ALIAS

    @property
    def is_version(self) -> bool:
        return is_version(self.which)

    def __str__(self) -> str:
        return f"{self.name}@{self.which}"


def is_version(text: object) -> bool:
    return isinstance(text, str) and _VERSION.fullmatch(text) is not None


def is_name(text: object) -> bool:
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


def is_alias(text: object) -> bool:
    return isinstance(text, str) and _ALIAS.fullmatch(text) is not None and _VERSION_LIKE.fullmatch(text) is None


def check_name(name: object, what: str = "model name") -> str:
    if not is_name(name):
        raise RefError(f"invalid {what} {_show(name)}: expected {NAME_GRAMMAR}")
    return name


def check_version(version: object, what: str = "version") -> str:
    if not is_version(version):
        raise RefError(f"invalid {what} {_show(version)}: expected vN (v1, v2, ...)")
    return version  # type: ignore[return-value]


def check_alias(alias: object) -> str:
    if not is_alias(alias):
        raise RefError(f"invalid alias {_show(alias)}: expected {ALIAS_GRAMMAR} (not vN)")
    return alias


def parse_ref(ref: object, default_alias: str = PRODUCTION) -> ModelRef:
    """``name``, ``name@production`` or ``name@v3`` -> ModelRef; anything else is a one-line RefError."""
    if not isinstance(ref, str):
        raise RefError(f"invalid model reference {_show(ref)}; expected {REF_HELP}")
    name, at, which = ref.partition("@")
    if not name:
        reason = "no name"
    elif not is_name(name):
        reason = f"the name {_show(name)} is outside {NAME_GRAMMAR}"
    elif at and not which:
        reason = "nothing after '@'"
    elif not (is_version(which or default_alias) or is_alias(which or default_alias)):
        reason = f"{_show(which)} is neither a version vN nor an alias name"
    else:
        return ModelRef(name, which or default_alias)
    raise RefError(f"invalid model reference {_show(ref)}: {reason}; expected {REF_HELP}")


def _show(value: object) -> str:
    """repr, shortened: the value may be a whole hand-edited document."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
