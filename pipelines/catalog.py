"""Reading a tagging output directory back: committed runs, DuckDB views and the analyst queries.

The queries live in schemas/queries.sql (one copy for README, demo and tests). Readers trust only runs with a
manifest, which is also what ``--incremental`` uses to decide what is already tagged.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re
from typing import Any

import schemas

# Package data of `schemas` (not docs/): `--incremental` reads it at run time, also from a non-editable install.
QUERIES_FILE = os.path.join(os.path.dirname(os.path.abspath(schemas.__file__)), "queries.sql")
_SECTION = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_MANIFEST_GLOB = "{output}/_manifests/*.json"
_TAGS_GLOB = "{output}/run_date=*/model_version=*/*.parquet"
_ERRORS_GLOB = "{output}/_errors/run_date=*/*.parquet"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
LOG = logging.getLogger(__name__)


def load_queries(path: str = QUERIES_FILE) -> dict[str, str]:
    """{name: SQL text} for every ``-- name:`` section of schemas/queries.sql."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    parts = _SECTION.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2])}


def glob_literal(path: str) -> str:
    """``path`` with DuckDB's glob metacharacters made literal (``out[2024]`` would match ``out2``...)."""
    return "".join(f"[{c}]" if c in "[*?" else c for c in path)


def connect(output: str, database: str = ":memory:"):
    """A DuckDB connection with the ``manifests``, ``tags`` and ``errors`` views over ``output`` (local path).

    Views over directories with nothing committed yet are empty tables of the right shape, so queries on a
    fresh output directory return no rows instead of failing.
    """
    import duckdb

    from schemas.tagging import DEAD_LETTER_SCHEMA, TAGS_SCHEMA

    con = duckdb.connect(database)
    output = os.path.abspath(output)
    setup = load_queries()["setup"]
    present = {}
    # Read only well-formed files: one hand-edited manifest or a junk .parquet must not break every view.
    for view, pattern, well_formed in (("manifests", _MANIFEST_GLOB, _is_manifest), ("tags", _TAGS_GLOB, _is_parquet),
                                       ("errors", _ERRORS_GLOB, _is_parquet)):
        good, broken = _files(output, pattern, well_formed)
        present[view] = bool(good)
        if broken:
            LOG.warning("ignoring %d malformed file(s) under %s: %s", len(broken), output,
                        ", ".join(os.path.relpath(p, output) for p in broken[:5]))
            setup = setup.replace(f"'{pattern}'", "[" + ", ".join(_sql_path(p) for p in good) + "]")
    if not present["manifests"]:
        con.execute("CREATE TABLE manifests (run_id VARCHAR)")
    setup = setup.replace("{output}", glob_literal(output).replace("'", "''"))
    for statement in filter(None, (s.strip() for s in setup.split(";"))):
        if not "".join(line for line in statement.splitlines() if not line.startswith("--")).strip():
            continue
        view = re.search(r"VIEW (\w+)", statement).group(1)
        if view == "manifests" and not present[view]:
            continue
        if view == "tags" and not present[view]:
            _empty(con, "tags", TAGS_SCHEMA, run_date=True)
            continue
        if view == "errors" and not present[view]:
            _empty(con, "errors", DEAD_LETTER_SCHEMA, run_date=True)
            continue
        con.execute(statement)
    return con


def _files(output: str, pattern: str, well_formed) -> tuple[list[str], list[str]]:
    """(well-formed, malformed) files ``pattern`` (a glob under ``{output}``) matches."""
    good, broken = [], []
    for path in sorted(glob.glob(pattern.replace("{output}", glob.escape(output)))):
        (good if well_formed(path) else broken).append(path)
    return good, broken


def _is_manifest(path: str) -> bool:
    """A run manifest: a regular file of at most 16 MiB holding a JSON object with a string ``run_id``;
    anything else (hand-edited, truncated, a FIFO) marks no run as committed."""
    from pipelines.reading import ReadError, read_bounded

    try:
        doc = json.loads(read_bounded(path, MAX_MANIFEST_BYTES, timeout=10))
    except (ReadError, ValueError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("run_id"), str)


def _is_parquet(path: str) -> bool:
    """A regular file that starts and ends with Parquet's magic bytes (a junk file named .parquet does not)."""
    from pipelines.reading import ReadError, open_regular

    try:
        fd = open_regular(path, 1 << 62)
    except ReadError:
        return False
    try:
        size = os.fstat(fd).st_size
        return size >= 12 and os.pread(fd, 4, 0) == b"PAR1" and os.pread(fd, 4, size - 4) == b"PAR1"
    except OSError:
        return False
    finally:
        os.close(fd)


def _sql_path(path: str) -> str:
    return "'" + glob_literal(path).replace("'", "''") + "'"


def _empty(con, name: str, schema, run_date: bool) -> None:
    table = schema.empty_table()
    con.register(f"_{name}_empty", table)
    extra = ", CAST(NULL AS DATE) AS run_date" if run_date else ""
    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT *{extra} FROM _{name}_empty WHERE false")


def run_query(con, name: str, params: dict[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
    """Run one named query exactly as written in schemas/queries.sql; returns (column names, rows)."""
    cursor = con.execute(load_queries()[name], params or {})
    return [d[0] for d in cursor.description], cursor.fetchall()


def tagged_hashes(output: str, model_name: str, model_version: str) -> frozenset[bytes]:
    """Content sha256 digests (32 raw bytes) already tagged by this model version in committed runs."""
    if not os.path.isdir(output):
        return frozenset()
    con = connect(output)
    rows = con.execute(
        "SELECT DISTINCT unhex(content_sha256) FROM tags WHERE model_name = ? AND model_version = ?",
        [model_name, model_version],
    ).fetchall()
    return frozenset(bytes(r[0]) for r in rows)
