"""The report's pictures, drawn without any library: SVG bar chart, heat colours, confusion table, thumbnails.

Everything returns strings or data URIs so the page stays one self-contained file.
"""
from __future__ import annotations

import base64
import html
import io
import math
import tarfile
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

THUMB_SIZE = 96
KEPT, DROPPED, WHISKER = "#0f766e", "#c4c8cf", "#1f2430"


def drop_chart(rows: list[dict], threshold: float) -> str:
    """Horizontal bars of the drop (points) per class, with the interval as a whisker."""
    rows = [r for r in rows if r.get("drop") is not None]
    if not rows:
        return "<p class=muted>No class has two background groups to compare yet.</p>"
    pts = lambda x: 100 * x  # noqa: E731
    lo = min(0.0, *(pts(r["drop_lo"] if r["drop_lo"] is not None else r["drop"]) for r in rows))
    hi = max(threshold, *(pts(r["drop_hi"] if r["drop_hi"] is not None else r["drop"]) for r in rows))
    lo, hi = 10 * math.floor(lo / 10), 10 * math.ceil(hi / 10)
    label_w, plot_w, value_w, row_h, top = 180, 640, 120, 24, 30
    width, height = label_w + plot_w + value_w, top + row_h * len(rows) + 46
    x = lambda v: label_w + plot_w * (v - lo) / (hi - lo or 1)  # noqa: E731
    out = [f"<svg class=chart xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}' role=img aria-label='accuracy drop per class'>",
           "<style>text{font:12px system-ui,sans-serif;fill:#1f2430}.tick{fill:#6b7280;font-size:11px}</style>"]
    for v in range(int(lo), int(hi) + 1, 10):
        out.append(f"<line x1='{x(v):.1f}' x2='{x(v):.1f}' y1='{top - 6}' y2='{height - 40}' "
                   f"stroke='{'#9ca3af' if v == 0 else '#eceef1'}' stroke-width='{1.5 if v == 0 else 1}'/>"
                   f"<text class=tick x='{x(v):.1f}' y='{height - 26}' text-anchor=middle>{v}</text>")
    out.append(f"<line x1='{x(threshold):.1f}' x2='{x(threshold):.1f}' y1='{top - 6}' y2='{height - 40}' "
               f"stroke='#d97706' stroke-dasharray='4 3'/><text class=tick x='{x(threshold) + 4:.1f}' y='{top - 12}'>"
               f"threshold {threshold:g} points</text>"
               f"<text class=tick x='{label_w + plot_w / 2:.1f}' y='{height - 8}' text-anchor=middle>"
               f"drop in accuracy, common − counter (points); whiskers: 95% interval</text>")
    for i, r in enumerate(rows):
        y = top + i * row_h
        mid = y + row_h / 2
        d = pts(r["drop"])
        colour = KEPT if r["decision"] == "kept" else DROPPED
        x0, x1 = sorted((x(0), x(d)))
        name = html.escape(r["class_name"])
        out.append(f"<g class='bar {html.escape(r['decision'])}'><title>{name}: {html.escape(r['common'] or '')} → "
                   f"{html.escape(r['counter'] or '')}, drop {d:.1f} points</title>"
                   f"<text x='{label_w - 8}' y='{mid + 4:.1f}' text-anchor=end>{name}</text>"
                   f"<rect x='{x0:.1f}' y='{y + 5}' width='{max(x1 - x0, 1):.1f}' height='{row_h - 10}' rx=2 "
                   f"fill='{colour}'/>")
        if r["drop_lo"] is not None:
            a, b = x(pts(r["drop_lo"])), x(pts(r["drop_hi"]))
            out.append(f"<line x1='{a:.1f}' x2='{b:.1f}' y1='{mid:.1f}' y2='{mid:.1f}' stroke='{WHISKER}'/>"
                       f"<line x1='{a:.1f}' x2='{a:.1f}' y1='{mid - 5:.1f}' y2='{mid + 5:.1f}' stroke='{WHISKER}'/>"
                       f"<line x1='{b:.1f}' x2='{b:.1f}' y1='{mid - 5:.1f}' y2='{mid + 5:.1f}' stroke='{WHISKER}'/>")
        out.append(f"<text x='{label_w + plot_w + 10}' y='{mid + 4:.1f}'>{d:.1f}"
                   f"<tspan class=tick> {html.escape(r['decision'])}</tspan></text></g>")
    out.append("</svg>")
    return "".join(out)


def heat_colour(acc: float) -> str:
    """Low accuracy warm, high accuracy cool; light enough that dark text reads on every cell."""
    stops = [(0.0, (244, 163, 132)), (0.5, (250, 240, 202)), (1.0, (134, 207, 190))]
    acc = min(1.0, max(0.0, acc))
    for (a, ca), (b, cb) in zip(stops, stops[1:]):
        if acc <= b:
            t = (acc - a) / (b - a)
            return "rgb({},{},{})".format(*(round(u + (v - u) * t) for u, v in zip(ca, cb)))
    return "rgb({},{},{})".format(*stops[-1][1])


def confusion_table(labels: list[str], cells: dict[tuple[str, str], int]) -> str:
    """Rows: the reference label; columns: the assigned one; shade by share of the row."""
    head = "".join(f"<th>{html.escape(b)}</th>" for b in labels)
    body = []
    for t in labels:
        total = sum(cells.get((t, a), 0) for a in labels)
        if not total:
            continue
        tds = []
        for a in labels:
            n = cells.get((t, a), 0)
            share = n / total
            colour = f"rgba(15,118,110,{0.08 + 0.6 * share:.2f})" if t == a else f"rgba(220,38,38,{0.5 * share:.2f})"
            tds.append(f"<td class='{'diag' if t == a else ''}' style='background:{colour if n else 'transparent'}' "
                       f"title='true {html.escape(t)}, assigned {html.escape(a)}: {n}'>{n or ''}</td>")
        recall = cells.get((t, t), 0) / total
        body.append(f"<tr><th>{html.escape(t)}</th>{''.join(tds)}<td class=num>{100 * recall:.0f}%</td></tr>")
    return (f"<div class=scroll><table class=confusion><thead><tr><th>true ↓ / assigned →</th>{head}"
            f"<th class=num>recall</th></tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def thumbnails(shards: Path, located: dict[str, tuple[str, str]], size: int = THUMB_SIZE) -> dict[str, str]:
    """uid -> JPEG data URI of a square ``size`` px thumbnail, read from RUN/shards/<shard> member KEY.jpg.

    Photos whose shard or member is missing, or that do not decode, are left out (the page shows
    a 'missing' tile for them).
    """
    by_shard: dict[str, dict[str, str]] = defaultdict(dict)
    for uid, (shard, key) in located.items():
        if shard and key:
            by_shard[shard][key] = uid
    out: dict[str, str] = {}
    for shard, keys in sorted(by_shard.items()):
        path = shards / shard
        if not path.is_file():
            continue
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    key, _, ext = base.partition(".")
                    if key in keys and ext.lower() in ("jpg", "jpeg", "png", "webp") and keys[key] not in out:
                        uri = _thumb_uri(tar.extractfile(member).read(), size)
                        if uri:
                            out[keys[key]] = uri
        except (tarfile.TarError, OSError):
            continue   # a damaged shard: its photos show as missing
    return out


def _thumb_uri(data: bytes, size: int) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.fit(ImageOps.exif_transpose(im).convert("RGB"), (size, size), Image.Resampling.LANCZOS)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=82, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
