"""The HTML report's figures: a builder's ``matplotlib`` figure as an embedded PNG ``data:`` URI.

The drawing is :mod:`forgetscope.analysis.plots`, the one figure module (the CLI writes the same figures
as files); :func:`render` turns one into a :class:`Figure` with its alt text, so the report embeds each
figure inline and opens without network or JavaScript.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

DPI = 100


@dataclass
class Figure:
    """One embedded figure: ``uri`` is a ``data:image/png;base64,...`` string; ``reading`` says what it shows."""

    uri: str
    alt: str
    reading: str = ""
    width: int = 0


def render(fig: MplFigure, alt: str, reading: str = "") -> Figure:
    FigureCanvasAgg(fig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tight_layout warnings on crowded panels are harmless
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    width = round(fig.get_figwidth() * DPI)
    return Figure("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), alt, reading, width)
