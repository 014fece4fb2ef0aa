"""Reading hand-editable JSON documents (model cards, alias files) strictly, with errors that name the field.

Anything a hand-edited file can hold is either accepted as exactly what the schema means or refused in one
line saying which field is wrong and why: bytes that are not UTF-8, an empty or truncated file, NaN/Infinity,
numbers too large for their type, duplicate keys, absurd nesting, and values of the wrong type (``"abc"``
where a number belongs, ``"192"`` for an integer, a number where a list belongs, ``null``...). The types
come from the dataclass annotations, so a field added to a card is checked without further code.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import json
import math
import re
import types
import typing
from typing import Any, Literal, Mapping, Union

from schemas.errors import UserError

MAX_DOCUMENT_BYTES = 32 << 20  # a 10,000-class card with per-class metrics is ~3 MB
_PLAIN = re.compile("[A-Za-z_][A-Za-z0-9_]*")  # keys shown as .name in field paths; others as ['key']


class JSONValueError(UserError, ValueError):
    """A JSON document or one of its values that does not fit the schema; the message names the field."""


class _NonFinite:
    """Stands in for NaN/Infinity/1e999 while parsing, so the error can name the field that held it."""

    def __init__(self, text: str) -> None:
        self.text = text[:40]


class _WithDuplicate(dict):
    """An object that had a key twice (``json.loads`` would silently keep the last value)."""

    duplicate: str = ""


def loads_strict(data: bytes | str, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse a whole JSON document; refuse what ``json.loads`` would silently accept or crash on."""
    if isinstance(data, bytes):
        if len(data) > max_bytes:
            raise JSONValueError(f"is {len(data)} bytes, more than the {max_bytes} a document may have")
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise JSONValueError(f"is not UTF-8 text (invalid byte at offset {exc.start})") from None
    if not data.strip():
        raise JSONValueError("is empty")
    try:
        document = json.loads(data, parse_constant=_NonFinite, parse_float=_finite_float,
                              object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise JSONValueError(f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's 4300-digit conversion limit
        raise JSONValueError(f"holds a number that cannot be read ({str(exc).split(':')[0]})") from None
    except RecursionError:
        raise JSONValueError("is nested too deeply") from None
    _refuse_placeholders(document)
    return document


def _finite_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out and not isinstance(out, _WithDuplicate):
            out = _WithDuplicate(out)
            out.duplicate = key
        out[key] = value
    return out


def _refuse_placeholders(document: Any) -> None:
    """Name the field of the first NaN/Infinity or duplicate key found (the parser could not)."""
    stack = [(document, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _NonFinite):
            raise JSONValueError(f"{_where(path)}holds {value.text}, which is not a finite JSON number")
        if isinstance(value, _WithDuplicate):
            raise JSONValueError(f"{_where(path)}has the key {_short(value.duplicate)} twice in one object")
        if isinstance(value, dict):
            stack.extend((v, _key_path(path, k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))


def check_fields(cls: type, data: object, path: str = "") -> dict[str, Any]:
    """Keyword arguments for dataclass ``cls`` from a JSON object, each converted to its annotated type."""
    if not isinstance(data, Mapping):
        raise JSONValueError(f"{_where(path)}expected an object, got {describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        shown = [k if len(k) <= 40 else k[:37] + "..." for k in unknown[:5]]
        raise JSONValueError(f"{_where(path)}unknown fields {shown}")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise JSONValueError(f"{_where(path)}missing required field {missing[0]!r}")
    hints = typing.get_type_hints(cls)
    return {name: convert(value, hints[name], _join(path, name)) for name, value in data.items()}


def convert(value: Any, annotation: Any, path: str) -> Any:
    """``value`` as ``annotation`` (str, int, float, bool, Literal, Optional, tuple, Mapping, Any, dataclass)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return convert(value, options[0], path)
    elif origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise JSONValueError(f"{_where(path)}expected one of {list(args)}, got {describe(value)}")
    elif origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise JSONValueError(f"{_where(path)}expected a list, got {describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise JSONValueError(f"{_where(path)}expected a list of {len(args)} values, got {len(value)}")
        return tuple(convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    elif origin in (collections.abc.Mapping, dict):
        if not isinstance(value, Mapping):
            raise JSONValueError(f"{_where(path)}expected an object, got {describe(value)}")
        value_type = args[1] if args else Any
        return {convert(k, str, path): convert(v, value_type, f"{path}[{_short(k)}]") for k, v in value.items()}
    elif annotation is str:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise JSONValueError(f"{_where(path)}holds a lone surrogate (not valid unicode text)") from None
            return value
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise JSONValueError(f"{_where(path)}expected an integer, got {describe(value)}")
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if math.isfinite(number):
                return number
            raise JSONValueError(f"{_where(path)}expected a finite number, got {describe(value)}")
        raise JSONValueError(f"{_where(path)}expected a number, got {describe(value)}")
    elif dataclasses.is_dataclass(annotation):
        from_dict = getattr(annotation, "from_dict", None)
        if from_dict is not None:
            return from_dict(value, path=path)
        return annotation(**check_fields(annotation, value, path))
    else:
        raise TypeError(f"convert: unsupported annotation {annotation!r} at {path}")
    expected = {str: "a string", bool: "true or false"}.get(annotation, str(annotation))
    raise JSONValueError(f"{_where(path)}expected {expected}, got {describe(value)}")


def describe(value: Any) -> str:
    """A short description of a JSON value for an error message: ``'abc' (string)``, ``null``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"{_short(value)} (string)"
    if isinstance(value, int):
        text = str(value) if value.bit_length() < 200 else f"an integer of {value.bit_length()} bits"
        return text
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)}"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _short(text: Any) -> str:
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _key_path(path: str, key: str) -> str:
    return _join(path, key) if _PLAIN.fullmatch(key) else f"{path}[{_short(key)}]"


def _where(path: str) -> str:
    return f"field {path}: " if path else ""
