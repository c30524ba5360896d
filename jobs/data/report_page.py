"""The page kit of judgefleet's report.html files: escaping, tables, plots, one self-contained page.

Plots are drawn with matplotlib and embedded as SVG `data:` images, not with plotly: a report
then holds no JavaScript at all (plotly inlines ~4.6 MB of it per file), so it opens anywhere
with no network, and the page's Content-Security-Policy can forbid every script - text from the
data (a judge's feedback is written by a model and may hold markup) is escaped, and even if
something slipped through, nothing on the page could run. An SVG shown as an <img> cannot run
script or touch the page either.

Every value that comes from data goes through `esc` (tables do it for every cell); `raw` marks
the few strings that are already HTML. No Ray, no HTTP.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
from typing import Any, Dict, Mapping, Optional, Sequence

# No scripts, no network: styles and data: images only (the page is one file).
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;
padding:0 16px;color:#1d232b;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde3ea;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.muted{color:#5b6672}
table{border-collapse:collapse;margin:6px 0 12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #dde3ea;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f6f9;font-weight:600}td.num{text-align:right;white-space:nowrap}
.feedback{white-space:pre-wrap;max-width:720px;font-size:13px}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs img{border:1px solid #eef1f4;max-width:100%}
details summary{cursor:pointer;margin:8px 0}
"""
PALETTE = ("#2f6db5", "#e07b39", "#3c9d5d", "#c2444b", "#7b5ea7", "#8c6d4f", "#d16ba5", "#6b7b8c")


class raw(str):
    """A string that is already HTML (built here, from escaped parts)."""


def esc(value: Any) -> str:
    """Any value as HTML text: markup in it is shown, never interpreted."""
    if isinstance(value, raw):
        return value
    return html.escape("-" if value is None else str(value), quote=True)


def num(value: Optional[float], digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = (),
          text: Sequence[int] = ()) -> raw:
    """A table; every cell is escaped unless it is `raw`. `numeric`: columns aligned right; `text`:
    columns of long text, shown with their line breaks."""
    style = {**{i: " class=num" for i in numeric}, **{i: " class=feedback" for i in text}}
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{style.get(i, '')}>{esc(c)}</td>" for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    return raw(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def pairs_table(items: Sequence[Sequence[Any]]) -> raw:
    """A two-column table of (label, value) rows, for headline numbers."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return raw(f'<table class="headline"><tbody>{body}</tbody></table>')


def page(title: str, subtitle: str, sections: Sequence[raw]) -> str:
    """One self-contained HTML document (a section that is not `raw` is escaped)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1><p class=muted>{esc(subtitle)}</p>"
        + join(*sections) + "</body></html>\n")


def section(title: str, *parts: str) -> raw:
    """A titled section: `raw` parts as they are, text as escaped paragraphs."""
    return raw(f"<section><h2>{esc(title)}</h2>" + "".join(p if isinstance(p, raw) else f"<p>{esc(p)}</p>"
                                                          for p in parts) + "</section>")


def figures(*imgs: raw) -> raw:
    return raw('<div class="figs">' + join(*imgs) + "</div>")


def join(*parts: Any) -> raw:
    """Parts one after another: `raw` ones as they are, anything else escaped."""
    return raw("".join(esc(p) for p in parts))


# -- plots -------------------------------------------------------------------------------------
# Text is text, not TeX (a source named "a$b" stays a name) and stays text in the SVG (smaller files).
_RC = {"text.parse_math": False, "svg.fonttype": "none", "font.size": 9}


def _plot(draw):
    """`draw(...) -> (figure, alt text)` becomes `(...) -> <img>` holding the figure as SVG."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> raw:
        import matplotlib

        with matplotlib.rc_context(_RC):
            fig, alt = draw(*args, **kwargs)
            buf = io.BytesIO()
            fig.savefig(buf, format="svg")
        data = base64.b64encode(buf.getvalue()).decode()
        return raw(f'<img alt="{esc(alt)}" src="data:image/svg+xml;base64,{data}">')

    return wrapper


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend, safe in any thread

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _label(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@_plot
def bars(panels: Mapping[str, Mapping[Any, int]], title: str, xlabel: str = "score"):
    """Small multiples: one bar chart of value -> count per panel (e.g. per source)."""
    names = list(panels) or ["(none)"]
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig = _figure(3.6 * cols, 2.5 * rows)
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        counts = panels.get(name, {})
        keys = list(counts)
        numeric = all(_is_number(v) for v in keys)
        xs = [float(v) for v in keys] if numeric else list(range(len(keys)))
        gaps = [b - a for a, b in zip(sorted(xs), sorted(xs)[1:])]
        width = 0.8 * min(gaps) if numeric and gaps else 0.8
        ax.bar(xs, [counts[v] for v in keys], width=width, color=PALETTE[k % len(PALETTE)])
        if not numeric:
            ax.set_xticks(xs, [_label(v) for v in keys])
        ax.set_title(str(name)[:60], fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
    return fig, title


@_plot
def stacked_shares(groups: Mapping[str, Mapping[Any, int]], title: str):
    """One horizontal bar per group, split by score: each group's share of each score."""
    names = list(groups)
    keys = sorted({k for g in groups.values() for k in g}, key=_order)
    fig = _figure(7.5, 0.9 + 0.3 * max(len(names), 2))
    ax = fig.add_subplot(1, 1, 1)
    left = [0.0] * len(names)
    for j, key in enumerate(keys):
        shares = [groups[n].get(key, 0) / (sum(groups[n].values()) or 1) for n in names]
        ax.barh(range(len(names)), shares, left=left, color=PALETTE[j % len(PALETTE)], label=_label(key))
        left = [a + b for a, b in zip(left, shares)]
    ax.set_yticks(range(len(names)), [str(n)[:40] for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of scored samples")
    if keys:
        ax.legend(title="score", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(title, fontsize=10)
    return fig, title


@_plot
def scatter(points: Sequence[Sequence[float]], xlabel: str, ylabel: str, title: str, seed: int = 0):
    """(x, y, count) -> `count` dots near (x, y), jittered so that equal scores do not hide each other."""
    import numpy as np

    rng = np.random.default_rng(seed)
    times = [int(p[2]) for p in points]
    xs = np.repeat([float(p[0]) for p in points], times)
    ys = np.repeat([float(p[1]) for p in points], times)
    fig = _figure(3.8, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    if len(xs):
        ax.scatter(xs + rng.uniform(-0.15, 0.15, len(xs)), ys + rng.uniform(-0.15, 0.15, len(ys)), s=16, alpha=0.55,
                   color=PALETTE[0], linewidths=0, rasterized=len(xs) > 3000)  # many dots: one image, a small file
        low, high = min(xs.min(), ys.min()), max(xs.max(), ys.max())
        ax.plot([low, high], [low, high], color="#999", linewidth=0.8, linestyle="--")
    ax.set_xlabel(xlabel[:50])
    ax.set_ylabel(ylabel[:50])
    ax.set_title(title[:60], fontsize=10)
    return fig, title


@_plot
def intervals(rows: Sequence[Sequence[Any]], xlabel: str, title: str):
    """(label, estimate, low, high) -> one dot per row with its interval as a line (a forest plot);
    a row with no interval is a dot alone, one with no estimate is left empty."""
    fig = _figure(5.2, 0.9 + 0.32 * max(1, len(rows)))
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(len(rows)))[::-1]  # the first row at the top
    for y, (label, estimate, low, high) in zip(ys, rows):
        if estimate is None:
            continue
        if low is not None and high is not None:
            ax.plot([low, high], [y, y], color=PALETTE[0], linewidth=2)
        ax.plot([estimate], [y], "o", color=PALETTE[1], markersize=5)
    ax.set_yticks(ys, [str(r[0])[:40] for r in rows])
    ax.axvline(0, color="#999", linewidth=0.8, linestyle="--")
    ax.set_xlabel(xlabel[:60])
    ax.set_title(title[:70], fontsize=10)
    return fig, title


@_plot
def heatmap(matrix: Sequence[Sequence[int]], labels: Sequence[Any], ylabel: str, xlabel: str, title: str):
    """A confusion matrix: its rows up the y axis (`ylabel`), its columns along x (`xlabel`), each cell
    with its count."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    m = np.asarray(matrix, dtype=float).reshape(len(labels), len(labels))
    fig = _figure(3.9, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(m, cmap="Blues", vmin=0, origin="lower")  # score 1 at the bottom, as in a scatter
    top = m.max() if m.size else 0
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(int(v)), ha="center", va="center", fontsize=8, color="white" if v > top / 2 else "#1d232b")
    ticks = [_label(v) for v in labels]
    ax.set_xticks(range(len(ticks)), ticks)
    ax.set_yticks(range(len(ticks)), ticks)
    ax.set_xlabel(xlabel[:50])
    ax.set_ylabel(ylabel[:50])
    ax.set_title(title[:60], fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8).locator = MaxNLocator(integer=True)
    return fig, title


def counts_of(mapping: Mapping[Any, int]) -> Dict[Any, int]:
    """{"1": 3, "2.5": 1, "A": 2} -> {1: 3, 2.5: 1, "A": 2}: JSON's text keys as numbers where they
    are numbers, numbers first and in order."""
    def key(k: Any) -> Any:
        try:
            v = float(k)
        except (TypeError, ValueError):
            return k
        if not math.isfinite(v):
            return k
        return int(v) if v.is_integer() else v

    return {k: mapping[raw_k] for k, raw_k in sorted(((key(k), k) for k in mapping), key=lambda kk: _order(kk[0]))}


def _order(value: Any):
    return (0, value, "") if _is_number(value) else (1, 0, str(value))


def text_list(items: Sequence[str]) -> raw:
    return raw("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")
