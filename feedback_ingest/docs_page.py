"""The validation page of an ingest run: one self-contained HTML file rendered from the GX validation result.

GX's own data docs load Bootstrap, jQuery, bootstrap-table and Font Awesome from CDNs and build the
validation list in the browser with JavaScript; offline (where these jobs run) they render unstyled with an
empty list. This page has inline CSS, no script and no external resource, and shows every expectation with
its outcome, the unexpected count and a sample of the unexpected values.
"""
from __future__ import annotations

import html
import json
from typing import Any

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:72rem;
color:#1d2433;padding:0 1rem}
h1{font-size:1.4rem;margin:0 0 .25rem}p.meta{color:#5b6577;margin:.1rem 0}
.badge{display:inline-block;border-radius:.3rem;padding:.05rem .45rem;font-weight:600;font-size:.8rem}
.ok{background:#d8f3dc;color:#1b5e20}.fail{background:#fde2e1;color:#b71c1c}
.stats{display:flex;gap:1rem;margin:1rem 0 1.5rem;flex-wrap:wrap}
.stat{border:1px solid #d5dae3;border-radius:.4rem;padding:.5rem .9rem;min-width:8rem}
.stat b{display:block;font-size:1.3rem}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #e3e7ee;padding:.4rem .5rem;
text-align:left;vertical-align:top}th{background:#f4f6fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.85em;word-break:break-all}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(success: bool) -> str:
    return f'<span class="badge {"ok" if success else "fail"}">{"passed" if success else "failed"}</span>'


def _sample(values: list, limit: int = 5) -> str:
    shown = ", ".join(json.dumps(v, default=str) for v in values[:limit])
    more = f" … {len(values) - limit} more" if len(values) > limit else ""
    return f"<code>{_esc(shown)}</code>{_esc(more)}" if values else ""


def render_validation_page(result: dict, run_id: str, rows: int) -> str:
    """HTML for ``result`` (GX's ``ExpectationSuiteValidationResult.to_json_dict()``) of one ingest run."""
    stats = result.get("statistics") or {}
    items = result.get("results") or []
    body = []
    for number, item in enumerate(items, start=1):
        config = item.get("expectation_config") or {}
        kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k not in ("column", "batch_id")}
        outcome = item.get("result") or {}
        count = outcome.get("unexpected_count")
        percent = outcome.get("unexpected_percent")
        body.append(
            "<tr>"
            f'<td class="num">{number}</td><td>{_badge(bool(item.get("success")))}</td>'
            f"<td><code>{_esc(config.get('type', '?'))}</code>"
            f"{'<br><code>' + _esc(json.dumps(kwargs, default=str)) + '</code>' if kwargs else ''}</td>"
            f"<td>{_esc((config.get('kwargs') or {}).get('column', ''))}</td>"
            f"<td><b>{_esc((config.get('meta') or {}).get('reason', ''))}</b>"
            f"{'<br>' + _esc(config['description']) if config.get('description') else ''}</td>"
            f'<td class="num">{"" if count is None else _esc(count)}</td>'
            f'<td class="num">{"" if percent is None else f"{percent:.1f}%"}</td>'
            f"<td>{_sample(outcome.get('partial_unexpected_list') or [])}</td>"
            "</tr>"
        )
    success = bool(result.get("success"))
    suite = (result.get("suite_name") or "")
    cards = [("rows validated", rows), ("expectations", stats.get("evaluated_expectations", len(items))),
             ("passed", stats.get("successful_expectations", "")),
             ("failed", stats.get("unsuccessful_expectations", ""))]
    stat_html = "".join(f'<div class="stat"><b>{_esc(v)}</b>{_esc(k)}</div>' for k, v in cards)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Feedback validation {_esc(run_id)}</title><style>{_CSS}</style></head>
<body>
<h1>Feedback validation {_badge(success)}</h1>
<p class="meta">ingest run <code>{_esc(run_id)}</code> · suite <code>{_esc(suite)}</code></p>
<p class="meta">Rows failing any expectation were quarantined with these reasons; the full result is
<a href="../validation.json">validation.json</a>.</p>
<div class="stats">{stat_html}</div>
<table class="validation-list">
<thead><tr><th>#</th><th>result</th><th>expectation</th><th>column</th><th>reason</th><th>unexpected</th>
<th>share</th><th>sample of unexpected values</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
</body></html>
"""
