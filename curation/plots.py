"""Every chart counteranimal draws — the report's and evaluate's — in one style, through matplotlib.

One ``style()`` (an rcParams context) holds the look; each chart is one function that draws under
it and returns inline SVG (text kept as text, so the page stays searchable and crisp) or writes
SVG and PNG files (``save``). Nothing here touches pyplot's global state or the network: figures
are plain ``matplotlib.figure.Figure`` objects, so drawing is safe in any thread and any backend.
Colours for HTML tables (heat cells, the confusion matrix) come from here too, so the page and the
charts share one palette.
"""
from __future__ import annotations

import base64
import contextlib
import io
import math
import re
from pathlib import Path
from typing import Iterator

import matplotlib
from matplotlib.colors import LinearSegmentedColormap, to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from curation import atomic

DPI = 100
INK, MUTED, GRID = "#1f2430", "#6b7280", "#eceef1"
KEPT, DROPPED, UNDECIDED = "#0f766e", "#c4c8cf", "#b45309"
COMMON, COUNTER, THRESHOLD, HELD_OUT = "#2563eb", "#d97706", "#d97706", "#7c3aed"
DECISION_COLOURS = {"kept": KEPT, "dropped": DROPPED, "undecided": UNDECIDED}

RC = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 10,
    "text.color": INK,
    "axes.edgecolor": "#d1d5db",
    "axes.labelcolor": INK,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "xtick.color": MUTED,
    "ytick.color": INK,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "svg.fonttype": "none",        # text as <text>: searchable, crisp, no embedded glyph paths
    "svg.hashsalt": "counteranimal",  # stable ids: the same chart gives the same bytes
}

# Low accuracy warm, high accuracy cool; light enough that dark text reads on every cell.
ACCURACY_CMAP = LinearSegmentedColormap.from_list("accuracy", [(0.0, "#f4a384"), (0.5, "#faf0ca"), (1.0, "#86cfbe")])


@contextlib.contextmanager
def style(**overrides) -> Iterator[None]:
    """The shared look, for the duration of a chart's drawing and saving."""
    with matplotlib.rc_context({**RC, **overrides}):
        yield


def figure(width_px: float, height_px: float) -> Figure:
    """A figure of the given size in CSS pixels (call under ``style()``)."""
    return Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)


def svg(fig: Figure, name: str) -> str:
    """The figure as an inline ``<svg>`` element (no XML prologue). ``name`` salts the ids matplotlib
    generates, so several charts on one page never share an id, and becomes the element's class."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"counteranimal-{name}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.S)
    # Size in CSS pixels (matplotlib writes points), so the chart is as wide as it was laid out.
    w, h = (round(v * DPI) for v in fig.get_size_inches())
    text = re.sub(r'width="[\d.]+pt" height="[\d.]+pt"', f'width="{w}" height="{h}"', text, count=1)
    # Prefix matplotlib's generic ids (figure_1, axes_1, patch_3 ...) with the chart's name.
    text = re.sub(r'id="((?:figure|axes|patch|line2d|text|matplotlib\.axis|xtick|ytick|legend|PathCollection|'
                  r'LineCollection|PolyCollection|BarContainer)_\d+)"', rf'id="{name}-\1"', text)
    return text.replace("<svg ", f'<svg class="chart {name}" role="img" ', 1)


def png(fig: Figure, dpi: int = 2 * DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def save(fig: Figure, stem: str | Path, name: str = "chart") -> list[Path]:
    """Write ``stem``.svg and ``stem``.png atomically; returns both paths."""
    stem = Path(stem)
    paths = [stem.with_suffix(".svg"), stem.with_suffix(".png")]
    atomic.write_text(paths[0], '<?xml version="1.0" encoding="utf-8"?>\n' + svg(fig, name) + "\n")
    atomic.write_bytes(paths[1], png(fig))
    return paths


# -- colours for HTML tables --------------------------------------------------------------------

def heat_colour(acc: float) -> str:
    """Background colour of an accuracy cell (0..1)."""
    return to_hex(ACCURACY_CMAP(min(1.0, max(0.0, acc))))


def confusion_colour(share: float, diagonal: bool) -> str:
    """Cell colour for a share of a confusion row: agreement green, disagreement red."""
    if diagonal:
        return to_hex((15 / 255, 118 / 255, 110 / 255, 0.08 + 0.6 * share), keep_alpha=True)
    return to_hex((220 / 255, 38 / 255, 38 / 255, 0.5 * share), keep_alpha=True)


# -- the report's charts -----------------------------------------------------------------------

def drop_chart(rows: list[dict], threshold: float, interval: str = "95% interval",
               held_out_interval: str = "95% interval") -> str | None:
    """Horizontal bars of the in-sample drop (points) per class with its interval as a whisker,
    and, where a row has one, the held-out drop as a diamond with its own whisker.

    ``rows``: dicts with class_name, decision, drop, drop_lo, drop_hi and optionally
    drop_held_out(_lo/_hi), in the order to draw (top first). None when no row has a drop.
    Each bar's SVG group has the id ``drop-bar-<decision>-<i>``.
    """
    rows = [r for r in rows if r.get("drop") is not None]
    if not rows:
        return None
    pts = lambda x: None if x is None else 100 * x  # noqa: E731
    held = [r for r in rows if r.get("drop_held_out") is not None]
    values = [threshold, 0.0]
    for r in rows:
        values += [pts(v) for v in (r["drop"], r.get("drop_lo"), r.get("drop_hi"), r.get("drop_held_out"),
                                    r.get("drop_held_out_lo"), r.get("drop_held_out_hi")) if v is not None]
    lo, hi = 10 * math.floor(min(values) / 10), 10 * math.ceil(max(values) / 10)
    if hi <= lo:
        hi = lo + 10
    row_h = 26 if held else 22
    width, left, plot_w, top, bottom = 940, 190, 620, 52, 44
    height = top + row_h * len(rows) + bottom
    with style():
        fig = figure(width, height)
        ax = fig.add_axes((left / width, bottom / height, plot_w / width, row_h * len(rows) / height))
        y = list(range(len(rows)))
        offset = 0.17 if held else 0.0
        bars = ax.barh([i - offset for i in y], [pts(r["drop"]) for r in rows], height=0.5 if held else 0.6,
                       color=[DECISION_COLOURS.get(r["decision"], DROPPED) for r in rows], zorder=2)
        for i, (bar, r) in enumerate(zip(bars, rows)):
            bar.set_gid(f"drop-bar-{r['decision']}-{i}")
            if r.get("drop_lo") is not None and r.get("drop_hi") is not None:
                ax.errorbar(pts(r["drop"]), i - offset, xerr=[[pts(r["drop"]) - pts(r["drop_lo"])],
                                                              [pts(r["drop_hi"]) - pts(r["drop"])]],
                            fmt="none", ecolor=INK, elinewidth=1, capsize=3, zorder=3)
            if r.get("drop_held_out") is not None:
                d = pts(r["drop_held_out"])
                err = None
                if r.get("drop_held_out_lo") is not None and r.get("drop_held_out_hi") is not None:
                    err = [[d - pts(r["drop_held_out_lo"])], [pts(r["drop_held_out_hi"]) - d]]
                marker = ax.errorbar(d, i + offset, xerr=err, fmt="D", color=HELD_OUT, markersize=5, elinewidth=1,
                                     capsize=2, zorder=4)
                marker.lines[0].set_gid(f"drop-held-out-{i}")
            ax.annotate(f"{pts(r['drop']):.1f}  {r['decision']}", xy=(1, i), xycoords=("axes fraction", "data"),
                        xytext=(8, 0), textcoords="offset points", va="center", fontsize=9,
                        color=INK if r["decision"] == "kept" else MUTED, annotation_clip=False)
        ax.axvline(0, color="#9ca3af", linewidth=1.2, zorder=1)
        ax.axvline(threshold, color=THRESHOLD, linestyle=(0, (4, 3)), linewidth=1, zorder=1)
        ax.set_xlim(lo, hi)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_yticks(y, [r["class_name"] for r in rows])
        ax.tick_params(axis="y", length=0)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("drop in accuracy, common − counter (points)")
        handles = [Patch(color=KEPT, label="kept"), Patch(color=UNDECIDED, label="undecided"),
                   Patch(color=DROPPED, label="dropped"),
                   Line2D([], [], color=INK, marker="|", markersize=8, label=f"in-sample drop: {interval}")]
        if held:
            handles.append(Line2D([], [], color=HELD_OUT, marker="D", markersize=5,
                                  label=f"held-out drop: {held_out_interval}"))
        handles.append(Line2D([], [], color=THRESHOLD, linestyle=(0, (4, 3)), label=f"threshold {threshold:g} points"))
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(8 / width, 1 - 2 / height), ncol=3,
                   fontsize=8.5, handlelength=1.4, columnspacing=1.1)
        return svg(fig, "drops")


# -- evaluate's chart ----------------------------------------------------------------------------

def effective_robustness(points: list[tuple[str, float, float]], stem: str | Path,
                         reference: list[tuple[str, float, float]] | None = None) -> list[Path]:
    """Counter against common accuracy (percent), one point per model, with the least-squares line
    (the paper's effective-robustness view: a model above the line is more robust than its common
    accuracy predicts). ``points``: (label, common, counter) of the models evaluated; ``reference``:
    the paper's published models, drawn in grey and fitted with ours. Writes stem.svg and stem.png.
    """
    import numpy as np

    ours = [(lbl, x, y) for lbl, x, y in points if x is not None and y is not None]
    ref = [(lbl, x, y) for lbl, x, y in (reference or []) if x is not None and y is not None]
    every = ours + ref
    xs = np.array([x for _, x, _ in every], dtype=float)
    ys = np.array([y for _, _, y in every], dtype=float)
    lo = max(0.0, 5 * math.floor((min(xs.min(), ys.min()) - 3) / 5)) if len(xs) else 0.0
    hi = min(100.0, 5 * math.ceil((max(xs.max(), ys.max()) + 3) / 5)) if len(xs) else 100.0
    with style():
        fig = figure(560, 540)
        ax = fig.add_axes((0.12, 0.1, 0.84, 0.82))
        ax.plot([lo, hi], [lo, hi], color="#9ca3af", linewidth=1, linestyle=(0, (2, 3)), label="counter = common")
        if len(every) >= 2 and np.ptp(xs) > 0:
            slope, intercept = np.polyfit(xs, ys, 1)
            ax.plot([lo, hi], [slope * lo + intercept, slope * hi + intercept], color=INK, linewidth=1.2,
                    label=f"fit: counter = {slope:.2f} × common {'+' if intercept >= 0 else '−'} {abs(intercept):.1f}")
        if ref:
            ax.scatter([x for _, x, _ in ref], [y for _, _, y in ref], s=22, color=DROPPED, zorder=2,
                       label="published (paper v1)")
        for lbl, x, y in ours:
            ax.scatter([x], [y], s=36, color=COMMON, zorder=3)
            ax.annotate(lbl, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8.5, color=INK)
        ax.scatter([], [], s=36, color=COMMON, label="evaluated here")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("common accuracy (%, class-balanced)")
        ax.set_ylabel("counter accuracy (%, class-balanced)")
        ax.set_title("Effective robustness: counter vs common")
        ax.legend(loc="upper left", fontsize=8.5)   # above the diagonal: where counter > common, usually empty
        return save(fig, stem, "effective-robustness")
