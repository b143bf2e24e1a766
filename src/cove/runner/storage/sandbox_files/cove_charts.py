"""Matplotlib backend of Cove's default snapshot: ``plt.show()`` prints each open figure
as a chart artifact line, which ``code_run`` returns in ``artifacts.charts``.

Sandbox-side code: it is installed in the default snapshot and selected for Python
``code_run`` with ``MPLBACKEND=module://cove_charts``. A line is the marker, then
``{"type": "chart", "value": CHART}`` in JSON, where CHART is Daytona's chart shape:
``type`` (line, scatter, bar, pie, box_and_whisker, composite_chart or unknown),
``title``, ``png`` (base64), ``elements`` and, by type, axis labels, ticks and scales.
Everything else is Agg's: ``savefig`` works as usual. Written for Python 3.8 and later
and any matplotlib 3, since the sandbox's Python is the image's.
"""

import base64
import io
import json
import math
import sys

import numpy as np
from matplotlib import axes as _axes
from matplotlib._pylab_helpers import Gcf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.container import BarContainer
from matplotlib.patches import Wedge

MARKER = "dtn_artifact_k39fd2:"
FigureCanvas = FigureCanvasAgg
_bxp = _axes.Axes.bxp


def _recording_bxp(self, bxpstats, *args, **kwargs):
    """Axes.bxp (which boxplot calls), remembering the statistics it drew."""
    drawn = _bxp(self, bxpstats, *args, **kwargs)
    boxes = self.__dict__.setdefault("_cove_boxes", [])
    boxes.extend(dict(stats) for stats in bxpstats)
    return drawn


_axes.Axes.bxp = _recording_bxp


def show(*_args, **_kwargs):
    """Print every open figure as a chart artifact, then close them all."""
    for manager in Gcf.get_all_fig_managers():
        try:
            chart = figure_chart(manager.canvas.figure)
        except Exception as exc:  # a figure we cannot read must not fail the user's code
            print(f"cove_charts: cannot read a figure: {exc!r}", file=sys.stderr)
            continue
        sys.stdout.flush()
        sys.stdout.write(MARKER + json.dumps({"type": "chart", "value": chart}) + "\n")
        sys.stdout.flush()
    Gcf.destroy_all()


def figure_chart(figure):
    """The chart of one figure: its only axes, or a composite of them."""
    png = io.BytesIO()
    figure.savefig(png, format="png")  # (draws it: tick labels exist from here on)
    charts = [axes_chart(ax) for ax in figure.get_axes() if ax.has_data()]
    suptitle = figure._suptitle.get_text() if getattr(figure, "_suptitle", None) else ""
    if len(charts) == 1:
        chart = charts[0]
        chart["title"] = chart.get("title") or suptitle
    elif charts:
        chart = {"type": "composite_chart", "title": suptitle, "elements": charts}
    else:
        chart = {"type": "unknown", "title": suptitle, "elements": []}
    chart["png"] = base64.b64encode(png.getvalue()).decode("ascii")
    return chart


def axes_chart(ax):
    """The chart of one axes, by what it holds (boxes, wedges, bars, markers, lines)."""
    chart = {"title": ax.get_title()}
    wedges = [patch for patch in ax.patches if isinstance(patch, Wedge)]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    if ax.__dict__.get("_cove_boxes"):
        chart.update(type="box_and_whisker", elements=_boxes(ax))
    elif wedges:
        chart.update(type="pie", elements=[_wedge(w) for w in wedges])
        return chart
    elif bars:
        chart.update(type="bar", elements=_bars(ax, bars))
    elif scatters:
        chart.update(type="scatter", elements=[_points(c, c.get_offsets()) for c in scatters])
        chart.update(_axis(ax, "x"), **_axis(ax, "y"))
    elif ax.get_lines():
        chart.update(type="line", elements=[_points(ln, ln.get_xydata()) for ln in ax.lines])
        chart.update(_axis(ax, "x"), **_axis(ax, "y"))
    else:
        chart.update(type="unknown", elements=[])
    chart.update(x_label=ax.get_xlabel(), y_label=ax.get_ylabel())
    return chart


def _axis(ax, name):
    axis = ax.xaxis if name == "x" else ax.yaxis
    ticks = [_number(t) for t in axis.get_ticklocs()]
    return {
        f"{name}_ticks": [t for t in ticks if t is not None],
        f"{name}_tick_labels": [label.get_text() for label in axis.get_ticklabels()],
        f"{name}_scale": axis.get_scale(),
    }


def _label(artist):
    """The label the user gave (matplotlib's own start with an underscore)."""
    label = artist.get_label()
    return label if isinstance(label, str) and not label.startswith("_") else ""


def _points(artist, xy):
    """The finite points of ``xy`` (masked and NaN ones are gaps in the plot)."""
    data = np.ma.asarray(xy, dtype=float).filled(np.nan).reshape(-1, 2)
    points = data[np.isfinite(data).all(axis=1)].tolist()
    return {"label": _label(artist), "points": points}


def _bars(ax, containers):
    elements = []
    for container in containers:
        horizontal = getattr(container, "orientation", None) == "horizontal"
        axis = ax.yaxis if horizontal else ax.xaxis
        ticks = zip(axis.get_ticklocs(), axis.get_ticklabels())  # noqa: B905 (Python 3.8)
        names = {_place(t): label.get_text() for t, label in ticks}
        for index, bar in enumerate(container.patches):
            if horizontal:
                place, size = bar.get_y() + bar.get_height() / 2, bar.get_width()
            else:
                place, size = bar.get_x() + bar.get_width() / 2, bar.get_height()
            elements.append({
                "label": names.get(_place(place)) or str(index),
                "group": _label(container),
                "value": _text(size),
            })
    return elements


def _wedge(wedge):
    angle = _number(wedge.theta2 - wedge.theta1)
    return {"label": _label(wedge), "angle": angle or 0, "radius": _number(wedge.r) or 0}


def _boxes(ax):
    elements = []
    for index, stats in enumerate(ax.__dict__.get("_cove_boxes", [])):
        element = {"label": str(stats.get("label", index + 1))}
        for key, name in (("whislo", "min"), ("q1", "first_quartile"), ("med", "median"),
                          ("q3", "third_quartile"), ("whishi", "max")):
            value = _number(stats.get(key))
            if value is not None:
                element[name] = value
        fliers = [_number(v) for v in stats.get("fliers", [])]
        element["outliers"] = [v for v in fliers if v is not None]
        elements.append(element)
    return elements


def _number(value):
    """A finite float (JSON has no NaN or infinity), or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _place(value):
    number = _number(value)
    return None if number is None else round(number, 9)


def _text(value):
    number = _number(value)
    if number is None:
        return ""
    return str(int(number)) if number.is_integer() else repr(number)
