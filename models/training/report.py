"""``report.html``: one self-contained file (no scripts, no external resources) a person reads before trusting a
model: the quality figures with their spread, the calibrated operating points, and the gate's comparison.

Plots are matplotlib figures rendered offline to inline SVG (axes with ticks and labels).
"""
from __future__ import annotations

import html
import io
import math
import re

import numpy as np

from models.training.metrics import pr_curve, threshold_metrics
from schemas.card import ModelCard

WHY_F1 = (
    "Calibrated thresholds are chosen per class to maximise F1 on the images they were calibrated on (out-of-fold "
    "predictions for the probe recipe, the validation split for fine-tuning); classes with fewer than "
    "{min_support} positives there share one global threshold chosen for macro-F1. On small data those choices "
    "are noisy: a class with two or three positives gets a threshold that fits them and not the next images, and "
    "the global fallback trades precision on frequent classes for recall on rare ones. So on a small test split "
    "macro-F1 at the calibrated thresholds can come out below macro-F1 at a fixed 0.5, even though calibration "
    "is the better policy in expectation; compare the two with the test split's size in mind, and prefer mAP "
    "(threshold-free) and its cross-validated spread for judging the model."
)


def render_report(card: ModelCard, history: list[dict], test_targets: np.ndarray, test_probs: np.ndarray,
                  val_probs: np.ndarray, val_targets: np.ndarray) -> bytes:
    """``val_*``: the images the thresholds were calibrated on and the model's scores there."""
    test = card.metrics["test"]
    gate = card.gate or {}
    cv = card.metrics.get("cross_validation")
    summary = [
        ("test mAP (images no model trained or calibrated on)", test["mAP"]),
        ("cross-validated mAP, mean +- sd over folds",
         f"{cv['mAP_mean']:.4f} +- {cv['mAP_std']:.4f} ({cv['folds']} folds)" if cv else "n/a (fine-tune recipe)"),
        ("classes evaluated (with test positives)", test["classes_evaluated"]),
        ("test images", test["n_images"]),
        ("macro-F1 at calibrated thresholds", test["macro_f1"]),
        ("macro-F1 at 0.5", test["at_0.5"]["macro_f1"]),
        ("micro-F1 at calibrated thresholds", test["micro_f1"]),
        ("micro-F1 at 0.5", test["at_0.5"]["micro_f1"]),
        ("Hamming loss", test["hamming_loss"]),
        ("exact-match accuracy", test["exact_match"]),
        ("gate", f"{gate.get('decision')}: {gate.get('reason')}"),
        ("recipe / input size", f"{card.training.get('recipe')} / {card.preprocessing.input_size} px"),
        ("wall time (s)", card.training.get("wall_seconds")),
    ]
    per_class_rows = "".join(
        f"<tr><td>{html.escape(c)}</td><td>{_v(m['AP'])}</td><td>{_v(m['threshold'])}</td><td>{_v(m['precision'])}"
        f"</td><td>{_v(m['recall'])}</td><td>{_v(m['f1'])}</td><td>{m['support']}</td></tr>"
        for c, m in test["per_class"].items()
    )
    min_support = card.metrics.get("calibration", {}).get("min_support", 3)
    sections = [
        "<h2>Quality and its spread</h2>", _quality_plot(cv, test, history),
        "<h2>Promotion gate</h2>", _gate_plot(gate),
        "<h2>Thresholds</h2>", _threshold_plot(val_targets, val_probs, card),
        f"<p>{html.escape(WHY_F1.format(min_support=min_support))}</p>",
        "<h2>Precision-recall curves (test split)</h2>",
        "<p>Each panel: one class on the test images; the dot is the calibrated operating point, the cross the "
        "fixed 0.5 threshold.</p>",
        _pr_grid(card, test_targets, test_probs),
    ]
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(card.ref)} training report</title>
<style>body{{font:14px sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}td,th{{border:1px solid
#ccc;padding:2px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>{html.escape(card.ref)} ({html.escape(card.architecture)})</h1>
<p>created {html.escape(card.created_at)}; parent {html.escape(str(card.parent_version))}; onnx sha256
{html.escape(card.onnx_sha256[:16])}...; data fingerprint {html.escape(card.data_fingerprint[:16])}...;
split {html.escape(str(card.split.get('method')))}</p>
<h2>Summary</h2><table>{''.join(f'<tr><td>{html.escape(k)}</td><td>{html.escape(_v(v))}</td></tr>' for k, v in summary)}</table>
{variants_section(card)}
{''.join(sections)}
<h2>Per class (test split, calibrated thresholds)</h2>
<table><tr><th>class</th><th>AP</th><th>threshold</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{per_class_rows}</table>
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


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "tagger", "font.size": 9})
    return plt.figure(figsize=(width, height))


def _svg(fig) -> str:
    """The figure as inline SVG: no XML prolog, DOCTYPE or RDF metadata (nothing that names a URL to fetch)."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)


def _quality_plot(cv: dict | None, test: dict, history: list[dict]) -> str:
    fig = _figure(6.5, 2.6)
    ax = fig.add_subplot(1, 2, 1)
    if cv:
        folds = cv["fold_mAP"]
        ax.scatter(range(1, len(folds) + 1), folds, color="#1f77b4", label="fold mAP")
        ax.axhline(cv["mAP_mean"], color="#1f77b4", linestyle="--", label=f"CV mean {cv['mAP_mean']:.3f}")
        ax.axhspan(cv["mAP_mean"] - cv["mAP_std"], cv["mAP_mean"] + cv["mAP_std"], color="#1f77b4", alpha=0.15,
                   label=f"+- 1 sd ({cv['mAP_std']:.3f})")
        ax.set_xlabel("cross-validation fold")
        ax.set_xticks(range(1, len(folds) + 1))
    elif history:
        ax.plot([h["epoch"] for h in history], [h["val_mAP"] for h in history], marker="o", label="validation mAP")
        ax.set_xlabel("epoch")
    if test.get("mAP") is not None:
        ax.axhline(test["mAP"], color="#d62728", label=f"test mAP {test['mAP']:.3f}")
    ax.set_ylabel("mAP")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("mAP: folds, mean and spread" if cv else "validation mAP per epoch")
    ax2 = fig.add_subplot(1, 2, 2)
    if history:
        ax2.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("training loss")
        ax2.set_title("training loss")
    else:
        sizes = cv.get("fold_sizes", []) if cv else []
        ax2.bar(range(1, len(sizes) + 1), sizes, color="#999")
        ax2.set_xlabel("cross-validation fold")
        ax2.set_ylabel("images held out")
        ax2.set_title("fold sizes (content-hash folds)")
    fig.tight_layout()
    return _svg(fig)


def _gate_plot(gate: dict) -> str:
    rows = [(f"vs label prior ({_v(gate['vs_prior']['other_mAP'])})", gate["vs_prior"])] if gate.get("vs_prior") else []
    if gate.get("vs_production"):
        rows.append((f"vs production {gate.get('production_version')} ({_v(gate['vs_production']['other_mAP'])})",
                     gate["vs_production"]))
    text = f"<p><b>{html.escape(str(gate.get('decision', '?')).upper())}</b>: {html.escape(str(gate.get('reason')))}</p>"
    rows = [(n, c) for n, c in rows if c.get("difference") is not None and None not in c.get("interval", [None])]
    if not rows:
        return text
    fig = _figure(6.5, 0.8 + 0.5 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, c) in enumerate(rows):
        lo, hi = c["interval"]
        ax.errorbar([c["difference"]], [i], xerr=[[c["difference"] - lo], [hi - c["difference"]]], fmt="o",
                    capsize=4, color="#2ca02c" if lo > 0 else "#d62728")
    ax.axvline(0, color="#666", linewidth=1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([n for n, _ in rows])
    ax.set_xlabel(f"candidate mAP minus the other's, with the {int(rows[0][1]['confidence'] * 100)}% bootstrap "
                  f"interval over {rows[0][1]['images']} test images")
    ax.set_ylim(-0.6, len(rows) - 0.4)
    fig.tight_layout()
    return text + _svg(fig)


def _threshold_plot(targets: np.ndarray, probs: np.ndarray, card: ModelCard) -> str:
    if len(targets) == 0:
        return ""
    grid = np.round(np.arange(0.02, 0.99, 0.02), 2)
    scores = [threshold_metrics(targets, probs, float(t)) for t in grid]
    cal = card.metrics.get("calibration", {})
    fig = _figure(4.5, 2.8)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(grid, [m["macro_f1"] for m in scores], label="macro-F1")
    ax.plot(grid, [m["micro_f1"] for m in scores], label="micro-F1")
    if cal.get("global_threshold") is not None:
        ax.axvline(cal["global_threshold"], color="#666", linestyle=":",
                   label=f"global fallback {cal['global_threshold']:.2f}")
    ax.set_xlabel("one threshold for every class")
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1)
    ax.set_title(f"F1 vs threshold on the {cal.get('calibrated_on', 'calibration')} predictions "
                 f"({len(targets)} images)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _svg(fig)


def _pr_grid(card: ModelCard, targets: np.ndarray, probs: np.ndarray) -> str:
    present = [i for i in range(len(card.classes)) if targets[:, i].any()]
    if not present:
        return "<p>No class has a positive in the test split.</p>"
    cols = 6
    rows = math.ceil(len(present) / cols)
    fig = _figure(11, 1.9 * rows)
    thresholds = card.threshold_vector
    for n, i in enumerate(present):
        ax = fig.add_subplot(rows, cols, n + 1)
        precision, recall, _ = pr_curve(targets[:, i], probs[:, i])
        ax.step([0.0, *recall], [1.0, *precision], where="post", linewidth=1)
        for t, marker in ((thresholds[i], "o"), (0.5, "x")):
            m = threshold_metrics(targets[:, [i]], probs[:, [i]], [t])
            ax.plot(m["recall"][0], m["precision"][0], marker, color="#d62728" if marker == "o" else "#333")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{card.classes[i]} (n={int(targets[:, i].sum())})", fontsize=8)
        ax.tick_params(labelsize=6)
        if n % cols == 0:
            ax.set_ylabel("precision", fontsize=7)
        if n >= len(present) - cols:
            ax.set_xlabel("recall", fontsize=7)
    fig.tight_layout()
    return _svg(fig)
