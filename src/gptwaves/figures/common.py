"""Saving figures: PNG and SVG side by side, each written atomically (temp file + rename)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import atomic_path

DPI = 130


def new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path_stem, dpi: int = DPI) -> list[Path]:
    """Write ``path_stem.png`` and ``path_stem.svg`` (no timestamps, so reruns are reproducible)."""
    stem = Path(path_stem)
    png = stem.with_name(stem.name + ".png")
    svg = stem.with_name(stem.name + ".svg")
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", metadata={"Software": None})
    with atomic_path(svg) as tmp:
        fig.savefig(tmp, format="svg", metadata={"Date": None})
    return [png, svg]
