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
from schemas.tagging import MANIFESTS_DIR

# Package data of `schemas` (not docs/): `--incremental` reads it at run time, also from a non-editable install.
QUERIES_FILE = os.path.join(os.path.dirname(os.path.abspath(schemas.__file__)), "queries.sql")
_SECTION = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_MANIFEST_GLOB = "{output}/_manifests/*.json"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
LOG = logging.getLogger(__name__)


def load_queries(path: str = QUERIES_FILE) -> dict[str, str]:
    """{name: SQL text} for every ``-- name:`` section of schemas/queries.sql."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    parts = _SECTION.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2])}


def _has(output: str, pattern: str) -> bool:
    return bool(glob.glob(os.path.join(glob.escape(output), pattern)))


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
    good, broken = run_manifests(output)
    if not good:
        con.execute("CREATE TABLE manifests (run_id VARCHAR)")
    setup = load_queries()["setup"]
    if broken:  # read only the well-formed manifests: one hand-edited file must not hide every run
        LOG.warning("ignoring %d malformed run manifest(s) under %s: %s", len(broken), output,
                    ", ".join(os.path.basename(p) for p in broken[:5]))
        setup = setup.replace(f"'{_MANIFEST_GLOB}'", "[" + ", ".join(_sql_path(p) for p in good) + "]")
    setup = setup.replace("{output}", glob_literal(output).replace("'", "''"))
    for statement in filter(None, (s.strip() for s in setup.split(";"))):
        if not "".join(line for line in statement.splitlines() if not line.startswith("--")).strip():
            continue
        view = re.search(r"VIEW (\w+)", statement).group(1)
        if view == "manifests" and not good:
            continue
        if view == "tags" and not _has(output, "run_date=*/model_version=*/*.parquet"):
            _empty(con, "tags", TAGS_SCHEMA, run_date=True)
            continue
        if view == "errors" and not _has(output, "_errors/run_date=*/*.parquet"):
            _empty(con, "errors", DEAD_LETTER_SCHEMA, run_date=True)
            continue
        con.execute(statement)
    return con


def run_manifests(output: str) -> tuple[list[str], list[str]]:
    """(well-formed, malformed) run manifest files of ``output``. Well-formed: a regular file of at most 16 MiB
    holding a JSON object with a string ``run_id``; anything else (hand-edited, truncated, a FIFO) marks no
    run as committed, and is reported instead of breaking every view."""
    from pipelines.reading import ReadError, read_bounded

    good, broken = [], []
    for path in sorted(glob.glob(os.path.join(glob.escape(output), MANIFESTS_DIR, "*.json"))):
        try:
            doc = json.loads(read_bounded(path, MAX_MANIFEST_BYTES, timeout=10))
            ok = isinstance(doc, dict) and isinstance(doc.get("run_id"), str)
        except (ReadError, ValueError):
            ok = False
        (good if ok else broken).append(path)
    return good, broken


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
