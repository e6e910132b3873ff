"""Matplotlib on demand: plotting is the optional `plot` extra, imported only when a picture is asked for."""

from __future__ import annotations

from types import ModuleType

PLOTTING_NEEDS = "drawing a picture needs matplotlib: pip install 'kcloud-opt-predictor[plot]'"


class PlottingUnavailable(ImportError):
    """matplotlib is not installed; the message says how to install it."""


def pyplot() -> ModuleType:
    """`matplotlib.pyplot` on the file-only Agg backend, or PlottingUnavailable naming the extra to install."""
    try:
        import matplotlib
    except ImportError as exc:
        raise PlottingUnavailable(PLOTTING_NEEDS) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
