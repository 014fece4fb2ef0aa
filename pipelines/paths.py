"""Path identity and printable names: one spelling per input, and text every writer can store.

Local paths are normalised lexically (absolute, ``.``, ``..`` and repeated slashes removed) and ``file://``
URIs become the local path they name, so ``a.jpg``, ``./a.jpg``, ``sub/../a.jpg`` and ``file:///dir/a.jpg``
are one input, counted and tagged once. Symlinks are not resolved: two names of one file are two inputs (as in
the archive), and a link keeps its own name in the output.

File names are bytes on Linux, but everything that crosses a Beam boundary or lands in Parquet must be valid
UTF-8 (Beam's coders encode strings strictly). A local path that is not valid UTF-8 therefore gets the
standard spelling of any byte string as a path: a ``file://`` URI with its bytes percent-encoded
(``file:///archive/caf%E9.jpg``), which the reader decodes back to the exact bytes. It is unambiguous (a plain
path never starts with ``file://``; a decodable ``file://`` URI becomes a plain path) and a user can paste it.
:func:`printable` makes any other text (messages) valid UTF-8 with ``\\xNN`` escapes.
"""
from __future__ import annotations

import os
from urllib.parse import quote, unquote, urlsplit


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def file_uri_path(uri: str) -> str:
    """``file:///a/b%20c.jpg`` (or ``file://localhost/...``) -> ``/a/b c.jpg`` (RFC 8089 percent-decoding)."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{printable(uri)}: file:// URIs on another host ({parts.netloc}) are not local paths")
    return unquote(parts.path, errors="surrogateescape")


def canonical_uri(uri: str, base: str | None = None) -> str:
    """The one identity of an input: normalised absolute local path, or the URI unchanged for other schemes.

    ``base`` is the directory relative local paths are relative to (default: the working directory).
    """
    if uri.startswith("file://"):
        uri = file_uri_path(uri)
    elif "://" in uri:
        return uri
    if not os.path.isabs(uri):
        uri = os.path.join(base if base is not None else os.getcwd(), uri)
    path = os.path.normpath(uri)
    if path.startswith("//"):  # POSIX normpath keeps a leading '//': one spelling only
        path = "/" + path.lstrip("/")
    if printable(path) != path:  # not UTF-8: percent-encoded file:// URI (see module docstring)
        return "file://" + quote(os.fsencode(path), safe="/")
    return path


def local_path(uri: str) -> str:
    """The filesystem path of a local URI (a plain path, or a ``file://`` URI decoded to its exact bytes)."""
    return file_uri_path(uri) if uri.startswith("file://") else uri


def printable(text: str) -> str:
    """``text`` as valid UTF-8: undecodable file-name bytes as ``\\xNN``, other lone surrogates as ``\\udNNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def one_line(text: str, limit: int = 500) -> str:
    """A message for a dead-letter row: printable, no line breaks, at most ``limit`` characters."""
    return " ".join(printable(text).split())[:limit]
