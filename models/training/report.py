"""``report.html``: metric tables and inline SVG plots in one file that opens offline (no scripts, no CDN)."""
from __future__ import annotations

import html
import math
from typing import Sequence

import numpy as np

from models.training.metrics import pr_curve, threshold_metrics
from schemas.card import ModelCard

W, H, PAD = 320, 200, 34


def render_report(card: ModelCard, history: list[dict], test_targets: np.ndarray, test_probs: np.ndarray,
                  val_probs: np.ndarray, val_targets: np.ndarray) -> bytes:
    test = card.metrics["test"]
    gate = card.gate
    summary = [
        ("test mAP", test["mAP"]),
        ("classes evaluated (with test positives)", test["classes_evaluated"]),
        ("test images", test["n_images"]),
        ("macro-F1 at calibrated thresholds", test["macro_f1"]),
        ("macro-F1 at 0.5", test["at_0.5"]["macro_f1"]),
        ("micro-F1 at calibrated thresholds", test["micro_f1"]),
        ("micro-F1 at 0.5", test["at_0.5"]["micro_f1"]),
        ("Hamming loss", test["hamming_loss"]),
        ("exact-match accuracy", test["exact_match"]),
        ("gate", f"{gate.get('decision')}: {gate.get('reason')}"),
        ("best epoch / val mAP", f"{card.training.get('best_epoch')} / {_v(card.training.get('best_val_mAP'))}"),
        ("median training images/s", card.training.get("images_per_s_median")),
        ("wall time (s)", card.training.get("wall_seconds")),
    ]
    per_class_rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{_v(m['AP'])}</td><td>{_v(m['threshold'])}</td><td>{_v(m['precision'])}"
        f"</td><td>{_v(m['recall'])}</td><td>{_v(m['f1'])}</td><td>{m['support']}</td></tr>"
        for c, m in test["per_class"].items()
    )
    epochs = [h["epoch"] for h in history]
    loss_plot = _line_plot("training loss and validation mAP per epoch", epochs,
                           {"train loss": [h["loss"] for h in history], "val mAP": [h["val_mAP"] for h in history]})
    grid = np.round(np.arange(0.02, 0.99, 0.02), 2)
    f1 = [threshold_metrics(val_targets, val_probs, float(t)) for t in grid]
    f1_plot = _line_plot("validation F1 vs a single threshold", grid.tolist(),
                         {"macro-F1": [m["macro_f1"] for m in f1], "micro-F1": [m["micro_f1"] for m in f1]})
    pr_plots = "".join(
        _pr_plot(c, test_targets[:, i], test_probs[:, i]) for i, c in enumerate(card.classes) if test_targets[:, i].any()
    )
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(card.ref)} training report</title>
<style>body{{font:14px sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:2px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}svg{{margin:4px;background:#fafafa}}
</style></head><body>
<h1>{html.escape(card.ref)} ({html.escape(card.architecture)})</h1>
<p>created {html.escape(card.created_at)}; parent {html.escape(str(card.parent_version))}; onnx sha256
{html.escape(card.onnx_sha256[:16])}...; data fingerprint {html.escape(card.data_fingerprint[:16])}...</p>
<h2>Test split</h2><table>{''.join(f'<tr><td>{html.escape(k)}</td><td>{html.escape(_v(v))}</td></tr>' for k, v in summary)}</table>
{variants_section(card)}
<h2>Training</h2>{loss_plot}{f1_plot}
<h2>Per class (test split, calibrated thresholds)</h2>
<table><tr><th>class</th><th>AP</th><th>threshold</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{per_class_rows}</table>
<h2>Precision-recall curves (test split)</h2>{pr_plots}
</body></html>"""
    return body.encode()


def variants_section(card: ModelCard) -> str:
    """The model files of this version (FP32, INT8...) with their test numbers, or why one was withheld."""
    if not card.variants:
        return ""
    rows = []
    for name, entry in sorted(card.variants.items()):
        test = (entry.get("metrics") or {}).get("test") or {}
        worst = test.get("largest_class_ap_drop") or {}
        drop = "" if not worst else f"{_v(worst.get('drop'))} ({html.escape(str(worst.get('class')))})"
        status = entry.get("status", "")
        if entry.get("withheld_reason"):
            status += ": " + entry["withheld_reason"]
        calib = entry.get("calibration") or {}
        cells = [name, entry.get("file", ""), _v(test.get("mAP")), _v(test.get("macro_f1")), _v(test.get("mAP_drop")),
                 drop, entry.get("thresholds", "") or "card", calib.get("fingerprint", "")[:16], status]
        rows.append("<tr>" + "".join(f"<td>{c if c is drop else html.escape(str(c))}</td>" for c in cells) + "</tr>")
    head = ("<tr><th>variant</th><th>file</th><th>test mAP</th><th>macro-F1</th><th>mAP drop vs FP32</th>"
            "<th>largest class AP drop</th><th>thresholds</th><th>calibration set</th><th>status</th></tr>")
    return f"<h2>Model variants (test split)</h2><table>{head}{''.join(rows)}</table>"


def _v(x) -> str:
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.4f}"
    return "n/a" if x is None else str(x)


def _svg(title: str, inner: str, x_label: str, y_label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img">'
            f'<title>{html.escape(title)}</title>'
            f'<text x="{W / 2}" y="14" text-anchor="middle" font-size="12">{html.escape(title)}</text>'
            f'<rect x="{PAD}" y="{PAD - 14}" width="{W - 2 * PAD}" height="{H - 2 * PAD + 14}" fill="none" stroke="#999"/>'
            f'<text x="{W / 2}" y="{H - 4}" text-anchor="middle" font-size="10">{html.escape(x_label)}</text>'
            f'<text x="10" y="{H / 2}" font-size="10" transform="rotate(-90 10 {H / 2})">{html.escape(y_label)}</text>'
            f"{inner}</svg>")


def _polyline(xs: Sequence[float], ys: Sequence[float], x_range, y_range, colour: str) -> str:
    (x0, x1), (y0, y1) = x_range, y_range
    pts = [
        f"{PAD + (x - x0) / ((x1 - x0) or 1) * (W - 2 * PAD):.1f},"
        f"{H - PAD - (y - y0) / ((y1 - y0) or 1) * (H - 2 * PAD - 14):.1f}"
        for x, y in zip(xs, ys) if y is not None and not math.isnan(y)
    ]
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(pts)}"/>'


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def _line_plot(title: str, xs: Sequence[float], series: dict[str, Sequence[float]]) -> str:
    values = [v for s in series.values() for v in s if v is not None and not math.isnan(v)]
    if not xs or not values:
        return ""
    x_range = (min(xs), max(xs))
    y_range = (min(0.0, min(values)), max(1.0, max(values)))
    inner = "".join(_polyline(xs, s, x_range, y_range, COLOURS[i % 4]) for i, s in enumerate(series.values()))
    legend = "".join(
        f'<text x="{PAD + 4}" y="{PAD + 2 + 12 * i}" font-size="10" fill="{COLOURS[i % 4]}">{html.escape(name)}</text>'
        for i, name in enumerate(series)
    )
    return _svg(title, inner + legend, "epoch" if "epoch" in title else "threshold", f"0 .. {y_range[1]:.2g}")


def _pr_plot(name: str, y_true: np.ndarray, scores: np.ndarray) -> str:
    precision, recall, _ = pr_curve(y_true, scores)
    xs, ys = [0.0, *recall.tolist()], [1.0, *precision.tolist()]
    return _svg(f"{name} (n={int(y_true.sum())})", _polyline(xs, ys, (0, 1), (0, 1), COLOURS[0]), "recall", "precision")
