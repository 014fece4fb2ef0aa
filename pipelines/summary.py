"""The one-screen summary printed at the end of ``tagger tag``."""
from __future__ import annotations

import datetime as dt


def _seconds(manifest) -> float:
    start = dt.datetime.fromisoformat(manifest.started_at)
    end = dt.datetime.fromisoformat(manifest.finished_at)
    return max((end - start).total_seconds(), 0.0)


def format_summary(result, output: str, top: int = 10) -> str:
    m = result.manifest
    secs = _seconds(m)
    rate = m.tagged / secs if secs > 0 else 0.0
    lines = [
        f"tagger tag: run {m.run_id} with {m.model_name}@{m.model_version}"
        + (f" ({m.model_variant})" if m.model_variant else "") + f" on {m.runner}",
        f"  matched {m.matched}  tagged {m.tagged}  failed {m.failed}  skipped {m.skipped}"
        + ("  (incremental)" if m.incremental else ""),
        f"  {secs:.1f} s wall, {rate:.1f} images/s",
    ]
    if getattr(result, "orphans_removed", None):
        lines.append(f"  removed the staging files of {len(result.orphans_removed)} interrupted run(s): "
                     + ", ".join(result.orphans_removed))
    if m.failures_by_stage:
        lines.append("  failures by stage: " + ", ".join(f"{k} {v}" for k, v in sorted(m.failures_by_stage.items())))
    tags = sorted(m.tag_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if tags:
        lines.append("  top tags: " + ", ".join(f"{k} {v}" for k, v in tags[:top]))
    lines += [
        f"  tags:         {output}/run_date={m.run_date}/model_version={m.model_version}/",
        f"  dead letters: {output}/_errors/run_date={m.run_date}/",
        f"  manifest:     {output}/_manifests/{m.run_id}.json",
        "  queries:      schemas/queries.sql (DuckDB)",
    ]
    return "\n".join(lines)
