"""mitigate's outputs: the Table-4-style comparison as text, CSV and JSON, and a bar chart (SVG)."""
from __future__ import annotations

import csv
import io
import json
import math
from html import escape
from pathlib import Path

from curation import atomic

COLUMNS = ("method", "avg_acc", "worst_group_acc", "common_acc", "counter_acc", "drop", "worst_group", "best_epoch")


def rows(summary: dict) -> list[dict]:
    from curation.mitigate.train import LABELS

    out = []
    for method, r in summary["results"].items():
        t = r["test"]
        out.append({"method": LABELS.get(method, method), "key": method, "avg_acc": t["avg_acc"],
                    "worst_group_acc": t["worst_group_acc"], "common_acc": t["common_acc"],
                    "counter_acc": t["counter_acc"], "drop": t["drop"], "worst_group": t["worst_group"],
                    "best_epoch": r.get("best_epoch")})
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.1f}"
    return "—" if v is None else str(v)


def table(summary: dict) -> str:
    """Markdown: one row per method, test-part figures."""
    head = ["method", "avg acc", "worst-group acc", "common", "counter", "drop", "worst group", "best epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows(summary):
        lines.append("| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |")
    c = summary["counts"]
    lines.append("")
    lines.append(f"Test part: {c['test']} photos ({summary['source']}); train {c['train']}, validation {c['val']}; "
                 f"{len(summary['pairs'])} classes with a common → counter pair.")
    return "\n".join(lines)


def chart(summary: dict) -> str:
    """Grouped bars per method: average and worst-group accuracy on the test part."""
    data = rows(summary)
    width, bar, gap, height, top = 120 + 90 * len(data), 28, 34, 260, 20
    scale = (height - 60) / 100
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             '<text x="10" y="14">test accuracy (%): average (grey) and worst group (red)</text>']
    base = height - 40
    for i, r in enumerate(data):
        x = 50 + i * (2 * bar + gap)
        for j, (key, colour) in enumerate((("avg_acc", "#999"), ("worst_group_acc", "#c33"))):
            v = r[key] if not math.isnan(r[key]) else 0.0
            h = v * scale
            parts.append(f'<rect x="{x + j * bar}" y="{base - h:.1f}" width="{bar - 2}" height="{h:.1f}" fill="{colour}"/>')
            parts.append(f'<text x="{x + j * bar + 2}" y="{base - h - 3:.1f}">{v:.0f}</text>')
        parts.append(f'<text x="{x}" y="{base + 14}">{escape(r["key"])}</text>')
    parts.append(f'<line x1="45" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#333"/>')
    parts.append(f'<line x1="45" y1="{top}" x2="45" y2="{base}" stroke="#333"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def write(out: Path, summary: dict) -> None:
    atomic.write_text(out / "results.json", json.dumps(summary, indent=2, default=str))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["key", *COLUMNS], extrasaction="ignore")
    writer.writeheader()
    for r in rows(summary):
        writer.writerow({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()})
    atomic.write_text(out / "results.csv", buf.getvalue())
    atomic.write_text(out / "results.md", table(summary) + "\n")
    atomic.write_text(out / "plot.svg", chart(summary))
