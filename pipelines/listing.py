"""Listing local globs so that every name the glob matches is counted, whatever it is.

Beam's local listing (``os.walk`` + ``os.path.getsize``) silently drops dangling symlinks and symlink loops
(their size raises), and its ``*`` never matches a name containing a backslash. Inputs that vanish at listing
cannot be accounted for, so local globs are listed here instead, with Beam's pattern syntax (``*`` within one
path component, ``**`` across components, ``?``, ``[...]``): every matching directory entry is yielded (a
FIFO, a socket, a broken link...), and the read step turns what is not a regular file into a dead letter.

Walking never follows symlinked directories (no loops, no escaping the tree). A directory is yielded only
when the pattern's last component has a literal character (``*.jpg`` matches a directory ``x.jpg``, which
is then dead-lettered; ``photos/*`` and ``photos/**`` list files, not sub-directories).
"""
from __future__ import annotations

import os
import re
from typing import Iterator

_GLOB = re.compile(r"[*?\[]")


def has_glob(pattern: str) -> bool:
    return bool(_GLOB.search(pattern))


def translate(pattern: str) -> re.Pattern:
    """Beam's glob syntax as a regex over the whole path; unlike Beam, ``*`` matches backslashes too."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if i < n and pattern[i] == "*":
                out.append(".*")
                i += 1
            else:
                out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + (1 if i < n and pattern[i] == "!" else 0)
            j += 1 if j < n and pattern[j] == "]" else 0
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(r"\[")
                continue
            stuff = pattern[i:j].replace("\\", "\\\\")
            i = j + 1
            if stuff.startswith("!"):
                stuff = "^" + stuff[1:]
            elif stuff.startswith("^"):
                stuff = "\\" + stuff
            out.append(f"[{stuff}]")
        else:
            out.append(re.escape(c))
    return re.compile("(?s)" + "".join(out) + r"\Z")


def list_local(pattern: str) -> Iterator[str]:
    """Every path under the pattern's fixed prefix that ``pattern`` (absolute, normalised) matches."""
    if not has_glob(pattern):
        if os.path.lexists(pattern):
            yield pattern
        return
    prefix = _GLOB.split(pattern, 1)[0]
    root = prefix if prefix.endswith("/") else os.path.dirname(prefix) or "/"
    regex = translate(pattern)
    last = pattern.rsplit("/", 1)[-1]
    dirs_count = bool(re.sub(r"[*?]|\[[^\]]*\]", "", last))
    root = root.rstrip("/") or "/"
    recursive = "**" in pattern or "/" in pattern[len(root):].lstrip("/")
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except OSError:  # unreadable or vanished directory: its entries cannot be named, so nothing to count
            continue
        with entries:
            yield from _matches(entries, regex, dirs_count, recursive, stack)


def _matches(entries, regex: re.Pattern, dirs_count: bool, recursive: bool, stack: list[str]) -> Iterator[str]:
    for entry in entries:
        path = entry.path
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        if is_dir:
            if dirs_count and regex.match(path):
                yield path
            if recursive:
                stack.append(path)
        elif regex.match(path):
            yield path
