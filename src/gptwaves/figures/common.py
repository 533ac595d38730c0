"""Saving figures: PNG and SVG side by side, each written atomically (temp file + rename).

The formats can be narrowed with the environment variable ``GPTWAVES_FIGURES``: a comma list of
``png`` and ``svg`` (default both) or ``none`` (no figure files; the report then shows none). Drawing
a figure costs more than the analysis behind it at small sizes, so batch jobs and the test suite
that do not need vector figures set ``GPTWAVES_FIGURES=png``.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import SettingsError
from ..io import atomic_path

DPI = 130
#: Figure formats written by default (``GPTWAVES_FIGURES`` overrides, see the module docstring).
FORMATS = ("png", "svg")


def figure_formats() -> tuple[str, ...]:
    """The formats to write: ``$GPTWAVES_FIGURES`` (``png``, ``svg``, both, or ``none``), else :data:`FORMATS`."""
    raw = os.environ.get("GPTWAVES_FIGURES", "").strip().lower()
    if not raw:
        return FORMATS
    if raw == "none":
        return ()
    want = [f.strip() for f in raw.split(",")]
    bad = [f for f in want if f not in FORMATS]
    if bad or not want:
        raise SettingsError(f"GPTWAVES_FIGURES must be a comma list of png and svg, or none, not {raw[:40]!r}")
    return tuple(f for f in FORMATS if f in want)


def new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path_stem, dpi: int = DPI) -> list[Path]:
    """Write ``path_stem.png`` and ``path_stem.svg`` (those of :func:`figure_formats`; no timestamps,
    so reruns are reproducible). Returns the paths written."""
    stem = Path(path_stem)
    out = []
    for fmt in figure_formats():
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(path) as tmp:
            if fmt == "png":
                fig.savefig(tmp, dpi=dpi, format="png", metadata={"Software": None})
            else:
                fig.savefig(tmp, format="svg", metadata={"Date": None})
        out.append(path)
    return out
