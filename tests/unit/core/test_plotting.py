"""Plotting is an extra: without matplotlib the error names what to install."""

from __future__ import annotations

import sys

import pytest

from core.plotting import PlottingUnavailable, pyplot


def test_pyplot_draws_to_files_only():
    plt = pyplot()
    assert plt.get_backend().lower() == "agg"


def test_without_matplotlib_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(PlottingUnavailable, match=r"pip install 'kcloud-opt-predictor\[plot\]'"):
        pyplot()
