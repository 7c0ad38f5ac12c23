"""The one figure registry and house style: every ``sarssl plot NAME`` figure is a builder
registered here (:func:`register_figure`); :mod:`sarssl.figures.cli` dispatches to it.

Each builder declares its own command-line options and returns a
:class:`matplotlib.figure.Figure`; the command writes it as a 300 dpi PNG at ``--out`` and
as a vector PDF beside it (same stem), both atomically. Builders are plain functions of
data (e.g. :func:`sarssl.figures.curves.learning_curves` takes a tidy metrics table), so
they can be used and tested without the command line.

Figures are built on :class:`~matplotlib.figure.Figure` directly (no ``pyplot`` state, no
GUI): rendering uses the Agg raster backend for PNG and the PDF backend for PDF. One style
(:func:`publication_style`) and one colour per initialisation (:data:`INIT_COLORS`: scratch
grey, MAE blue, DINO orange, U-Net green) keep every figure consistent. Line style encodes
the protocol: solid = full fine-tuning, dashed = linear probing (frozen encoder).

Adding a figure::

    def _my_args(parser): parser.add_argument("--chips-dir", required=True)

    @register_figure("my-figure", "what it shows", _my_args)
    def _build_my_figure(args) -> Figure: ...
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from ..errors import SarsslError
from ..io import atomic_path

log = logging.getLogger(__name__)
# The PDF backend subsets fonts through fontTools, which logs every table at INFO level.
logging.getLogger("fontTools").setLevel(logging.WARNING)

# --------------------------------------------------------------------------- style
#: One colour per initialisation, the same in every figure (Okabe-Ito-like tab colours).
INIT_COLORS: dict[str, str] = {
    "scratch": "#7f7f7f",  # grey
    "mae": "#1f77b4",  # blue
    "dino": "#ff7f0e",  # orange
    "unet": "#2ca02c",  # green
    "pixel": "#000000",  # black: the per-pixel control
}
#: Colours for other initialisations (checkpoint names), chosen from the name's CRC32 so a
#: given name always gets the same colour whatever else is plotted.
_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728")
PROTOCOL_LINESTYLES: dict[str, str] = {"finetune": "-", "linear": "--"}
PROTOCOL_HATCHES: dict[str, str] = {"finetune": "", "linear": "///"}
PROTOCOL_LEGEND: dict[str, str] = {"finetune": "full fine-tuning", "linear": "linear probing"}
DPI = 300

_STYLE: dict[str, object] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.4,
    "lines.markersize": 3.5,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,  # embed TrueType: text stays text (editable, searchable) in the PDF
    "ps.fonttype": 42,
    "svg.fonttype": "none",
}


@contextlib.contextmanager
def publication_style() -> Iterator[None]:
    """Temporarily apply the house figure style (small serif-free fonts, light grid)."""
    with matplotlib.rc_context(_STYLE):
        yield


def init_color(init: str) -> str:
    """The colour of an initialisation (fixed for known names, stable hash otherwise)."""
    if init in INIT_COLORS:
        return INIT_COLORS[init]
    return _EXTRA_COLORS[zlib.crc32(init.encode()) % len(_EXTRA_COLORS)]


def save_figure(fig: Figure, out: str | os.PathLike, dpi: int = DPI) -> tuple[Path, Path]:
    """Write ``fig`` as PNG at ``out`` (``dpi``) and as vector PDF beside it, atomically."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise SarsslError(f"{out}: figure output must end in .png (the PDF is written beside it)")
    pdf = out.with_suffix(".pdf")
    with publication_style():
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": "sarssl"})
        with atomic_path(pdf) as tmp:
            fig.savefig(tmp, format="pdf", metadata={"Creator": "sarssl"})
    log.info("wrote %s and %s", out, pdf)
    return out, pdf


def styled(build: Callable[..., Figure]) -> Callable[..., Figure]:
    """Decorator: build the figure under :func:`publication_style` (fonts are fixed when
    artists are created, so the style must be active while building, not only when saving)."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs) -> Figure:
        with publication_style():
            return build(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class FigureSpec:
    """A registered figure: its CLI name, help, options and builder."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], Figure]


FIGURES: dict[str, FigureSpec] = {}


def register_figure(
    name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[Callable[[argparse.Namespace], Figure]], Callable[[argparse.Namespace], Figure]]:
    """Decorator: register ``build(args) -> Figure`` as ``sarssl plot NAME``."""

    def deco(
        build: Callable[[argparse.Namespace], Figure],
    ) -> Callable[[argparse.Namespace], Figure]:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} registered twice")
        FIGURES[name] = FigureSpec(name, help, add_arguments or (lambda p: None), build)
        return build

    return deco
