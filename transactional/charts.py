"""Server-rendered SVG line charts: no JavaScript, nothing loaded from elsewhere.

``line_chart()`` draws one or more series over the same labels, with a
y-axis, a legend and optional horizontal threshold lines, and returns the
SVG as a safe string. Every piece of text is escaped here, so callers may
pass whatever they like as names and labels. Colours are the caller's;
text and axes use ``currentColor``, so the page's CSS decides them (and the
admin's dark theme works).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil, floor, log10

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import slugify

#: Space around the plot for the y labels and the x labels.
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_BOTTOM = 56, 48, 28
#: Height of one legend row, and the gap between the legend and the plot.
LEGEND_ROW, LEGEND_GAP = 18, 10
#: Grid lines the y-axis aims for.
Y_TICKS = 4


@dataclass(frozen=True)
class Series:
    """One line: a value (or None for "no data") per label."""

    name: str
    values: Sequence[float | None]
    color: str
    dash: str = ""


@dataclass(frozen=True)
class Threshold:
    """A horizontal line at ``value``, named ``name`` in the legend."""

    value: float
    name: str
    color: str
    dash: str = ""


def line_chart(
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    description: str = "",
    width: int = 960,
    height: int = 280,
    thresholds: Sequence[Threshold] = (),
    y_format: Callable[[float], str] = lambda value: f"{value:g}",
    min_step: float = 0.0,
    label_every: int = 5,
) -> SafeString:
    """Return an SVG line chart of ``series`` over ``labels``, every text escaped."""
    chart_id = slugify(title) or "chart"
    legend, legend_height = _legend([*series, *thresholds], width)
    step, steps = _y_steps(_highest(series, thresholds), min_step)
    plot = _Plot(width, height, len(labels), step * steps, legend_height + LEGEND_GAP)
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
            f'width="100%" style="max-width: {width}px" role="img" '
            f'aria-labelledby="{chart_id}-title {chart_id}-desc">'
        ),
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
        *_y_axis(plot, step, steps, y_format),
        *_x_axis(plot, labels, label_every),
        *_thresholds(plot, thresholds, y_format),
        *(_line(plot, labels, line, y_format) for line in series),
        *legend,
        "</svg>",
    ]
    return mark_safe("\n".join(parts))


@dataclass(frozen=True)
class _Plot:
    """Where the plot area is, and how values map onto it."""

    width: int
    height: int
    count: int
    top_value: float
    top: int

    @property
    def left(self) -> int:
        return MARGIN_LEFT

    @property
    def right(self) -> int:
        return self.width - MARGIN_RIGHT

    @property
    def bottom(self) -> int:
        return self.height - MARGIN_BOTTOM

    def x(self, index: int) -> float:
        if self.count <= 1:
            return (self.left + self.right) / 2
        return self.left + index * (self.right - self.left) / (self.count - 1)

    def y(self, value: float) -> float:
        return self.bottom - min(value, self.top_value) / self.top_value * (self.bottom - self.top)


def _highest(series: Sequence[Series], thresholds: Sequence[Threshold]) -> float:
    values = [v for line in series for v in line.values if v is not None]
    return max([*values, *(t.value for t in thresholds), 0.0])


def _y_steps(highest: float, min_step: float) -> tuple[float, int]:
    """Return a round step (1, 2, 2.5 or 5 times a power of ten) and how many pass ``highest``."""
    if highest <= 0:
        return max(min_step, 1.0), Y_TICKS
    wanted = highest * 1.1  # headroom for the top point and its line label
    raw = wanted / Y_TICKS
    magnitude = 10 ** floor(log10(raw))
    step = max(next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), min_step)
    return step, max(ceil(wanted / step - 1e-9), 1)


def _y_axis(plot: _Plot, step: float, steps: int, y_format: Callable[[float], str]) -> list[str]:
    parts = ['<g class="chart-axis" font-size="11" fill="currentColor">']
    for tick in range(steps + 1):
        y = plot.y(step * tick)
        parts.append(
            f'<line x1="{plot.left}" y1="{y:.1f}" x2="{plot.right}" y2="{y:.1f}" '
            f'stroke="currentColor" stroke-opacity="{0.6 if tick == 0 else 0.15}"/>'
        )
        parts.append(
            f'<text x="{plot.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(y_format(step * tick))}</text>"
        )
    parts.append("</g>")
    return parts


def _x_axis(plot: _Plot, labels: Sequence[str], every: int) -> list[str]:
    parts = ['<g class="chart-axis" font-size="11" fill="currentColor" text-anchor="middle">']
    last = len(labels) - 1
    for index, label in enumerate(labels):
        if (last - index) % every:  # count back from the newest, so it is always labelled
            continue
        x = plot.x(index)
        parts.append(
            f'<line x1="{x:.1f}" y1="{plot.bottom}" x2="{x:.1f}" y2="{plot.bottom + 4}" '
            'stroke="currentColor"/>'
            f'<text x="{x:.1f}" y="{plot.bottom + 17}">{escape(label)}</text>'
        )
    parts.append("</g>")
    return parts


def _thresholds(
    plot: _Plot, thresholds: Sequence[Threshold], y_format: Callable[[float], str]
) -> list[str]:
    """Return the threshold lines, each with its value past the right end (never overlapping)."""
    parts = []
    label_y = float("-inf")
    for threshold in sorted(thresholds, key=lambda t: -t.value):  # top to bottom
        y = plot.y(threshold.value)
        label_y = max(y + 4, label_y + 12)
        color = escape(threshold.color)
        dash = f' stroke-dasharray="{escape(threshold.dash)}"' if threshold.dash else ""
        parts.append(
            f'<g class="chart-threshold" aria-label="{escape(threshold.name)}">'
            f'<line x1="{plot.left}" y1="{y:.1f}" x2="{plot.right}" y2="{y:.1f}" '
            f'stroke="{color}" stroke-width="1.5"{dash}/>'
            f'<text x="{plot.right + 4}" y="{label_y:.1f}" font-size="11" '
            f'fill="{color}">{escape(y_format(threshold.value))}</text></g>'
        )
    return parts


def _line(
    plot: _Plot, labels: Sequence[str], line: Series, y_format: Callable[[float], str]
) -> str:
    color = escape(line.color)
    dash = f' stroke-dasharray="{escape(line.dash)}"' if line.dash else ""
    parts = [f'<g class="chart-series" aria-label="{escape(line.name)}">']
    # A None breaks the line: "no data" is not zero.
    for run in _runs(line.values):
        points = " ".join(f"{plot.x(i):.1f},{plot.y(v):.1f}" for i, v in run)
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"{dash}/>'
        )
    for index, value in enumerate(line.values):
        if value is None:
            continue
        tip = f"{labels[index]}: {line.name} {y_format(value)}"
        parts.append(
            f'<circle cx="{plot.x(index):.1f}" cy="{plot.y(value):.1f}" r="2.5" fill="{color}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    parts.append("</g>")
    return "".join(parts)


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Split ``values`` into runs of (index, value) without None."""
    runs: list[list[tuple[int, float]]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            runs.append([])
        else:
            runs[-1].append((index, value))
    return [run for run in runs if run]


def _legend(items: Sequence[Series | Threshold], width: int) -> tuple[list[str], int]:
    """Return the legend, wrapped onto as many rows as it needs, and its height."""
    parts = ['<g class="chart-legend" font-size="12" fill="currentColor">']
    x, row = MARGIN_LEFT, 0
    for item in items:
        item_width = 24 + 7 * len(item.name)  # a rough width of the name at 12px
        if x > MARGIN_LEFT and x + item_width > width - MARGIN_RIGHT:
            x, row = MARGIN_LEFT, row + 1
        y = 14 + row * LEGEND_ROW
        dash = f' stroke-dasharray="{escape(item.dash)}"' if item.dash else ""
        parts.append(
            f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{escape(item.color)}" '
            f'stroke-width="3"{dash}/><text x="{x + 24}" y="{y + 4}">{escape(item.name)}</text>'
        )
        x += item_width + 18
    parts.append("</g>")
    return parts, (row + 1) * LEGEND_ROW
