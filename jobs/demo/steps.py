"""The demo's steps after the data: train once, tag incrementally, read the results back with DuckDB."""
from __future__ import annotations

import glob
import os

from jobs.cli import main as tagger
from models.registry import Registry, RegistryError
from schemas.errors import UserError

MODEL_NAME = "demo"
# Small enough for the 10-minute `make demo` budget on 2 cores (install included), big enough to learn.
TRAIN_ARGS = ("--image-size", "128", "--epochs", "16", "--warmup-epochs", "2", "--patience", "4")


def ensure_model(registry_root: str, train_dir: str, work_dir: str, epochs: int | None = None) -> tuple[str, bool]:
    """The production version of the demo model; trains and publishes one first if there is none."""
    registry = Registry(registry_root)
    try:
        return registry.resolve(f"{MODEL_NAME}@production")[1], False
    except RegistryError:
        pass
    code = tagger(["train", "--data", train_dir, "--registry", registry_root, "--name", MODEL_NAME,
                   "--work-dir", work_dir, *TRAIN_ARGS,
                   *(("--epochs", str(epochs), "--warmup-epochs", "1") if epochs else ())])
    if code != 0:
        raise UserError(f"demo training failed with exit status {code}")
    return registry.resolve(f"{MODEL_NAME}@production")[1], True


def tag_archive(archive_dir: str, output: str, registry_root: str) -> None:
    """One incremental `tagger tag` run over the archive (a second demo run skips what it already tagged)."""
    code = tagger(["tag", "--input", os.path.join(archive_dir, "**"), "--output", output,
                   "--registry", registry_root, "--model", f"{MODEL_NAME}@production", "--incremental",
                   "--max-failed-fraction", "0.5"])  # the archive holds four deliberately broken files
    if code != 0:
        raise UserError(f"demo tagging failed with exit status {code}")


def latest_manifest(output: str) -> str | None:
    manifests = glob.glob(os.path.join(output, "_manifests", "*.json"))
    return max(manifests, key=os.path.getmtime) if manifests else None


def analyst_queries(output: str, rows: int = 8) -> str:
    """The README's four queries, run exactly as schemas/queries.sql has them, as text tables."""
    from pipelines.catalog import connect, run_query

    con = connect(output)
    parts = []
    top_cols, top = run_query(con, "top_tags_per_day")
    parts.append(_table("top tags per day", top_cols, top, rows))
    tag = top[0][top_cols.index("tag")] if top else "bag"
    cols, found = run_query(con, "images_with_tag", {"tag": tag, "min_probability": 0.9})
    parts.append(_table(f"images with tag {tag!r} at probability >= 0.9 ({len(found)} images)", cols, found, rows))
    cols, pairs = run_query(con, "tag_cooccurrence")
    parts.append(_table("tag co-occurrence", cols, pairs, rows))
    versions = con.execute("SELECT DISTINCT model_name, model_version FROM tags ORDER BY 1, 2").fetchall()
    if len(versions) >= 2:
        (model_a, a), (model_b, b) = versions[-2], versions[-1]
        params = {"model_a": model_a, "version_a": a, "model_b": model_b, "version_b": b}
        cols, diff = run_query(con, "compare_versions", params)
        parts.append(_table(f"model {model_a}@{a} vs {model_b}@{b} on the same images", cols, diff, rows))
    else:
        parts.append("-- model versions compared: only one version has tagged this archive so far; retrain "
                     "(tagger train ... --name demo) and run the demo again to compare two.")
    return "\n\n".join(parts)


def _table(title: str, columns: list[str], rows: list[tuple], limit: int) -> str:
    shown = [[_cell(v) for v in row] for row in rows[:limit]]
    widths = [max([len(c)] + [len(r[i]) for r in shown]) for i, c in enumerate(columns)]
    lines = [f"-- {title}", "  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in shown]
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows")
    if not rows:
        lines.append("(no rows)")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    text = str(value)
    return text if len(text) <= 60 else "..." + text[-57:]
