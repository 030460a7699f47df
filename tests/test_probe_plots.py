"""Probe figures are pure: data in, Figure out, nothing written."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.plots.probe import confusion_figure, validation_curve_figure


def test_confusion_figure(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cm = np.array([[3, 1, 0], [0, 0, 0], [1, 0, 4]])
    fig = confusion_figure(cm, ["a", "b", "c"], title="t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    shown = ax.images[0].get_array()
    np.testing.assert_allclose(shown[0], [0.75, 0.25, 0.0])  # rows are recall fractions
    np.testing.assert_allclose(shown[1], [0, 0, 0])  # empty class: no division by zero
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="does not match"):
        confusion_figure(cm, ["a", "b"])


def test_validation_curve_figure():
    fig = validation_curve_figure([0.1, 1, 10], [0.2, 0.8, 0.7], 1.0)
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), [0.2, 0.8, 0.7])
