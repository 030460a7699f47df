"""Metrics against hand-made confusion matrices; the C sweep and refit against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.probe.classify import (c_grid, confusion_matrix, fit_probe, mean_per_class_accuracy,
                                   overall_accuracy, per_class_accuracy)


def test_mean_per_class_accuracy_unequal_class_sizes():
    # class 0: 8 images, 6 right; class 1: 2 images, 1 right; class 2: 4 images, 4 right
    y_true = [0] * 8 + [1] * 2 + [2] * 4
    y_pred = [0] * 6 + [1, 2] + [1, 0] + [2] * 4
    cm = confusion_matrix(y_true, y_pred, 3)
    expected = np.array([[6, 1, 1],
                         [1, 1, 0],
                         [0, 0, 4]])
    np.testing.assert_array_equal(cm, expected)
    np.testing.assert_allclose(per_class_accuracy(cm), [0.75, 0.5, 1.0])
    assert mean_per_class_accuracy(cm) == pytest.approx(0.75)
    assert overall_accuracy(cm) == pytest.approx(11 / 14)  # differs: big classes weigh more


def test_absent_classes_are_left_out_of_the_mean():
    cm = confusion_matrix([0, 0, 2], [0, 1, 2], 4)  # classes 1 and 3 have no test images
    acc = per_class_accuracy(cm)
    assert np.isnan(acc[1]) and np.isnan(acc[3])
    assert mean_per_class_accuracy(cm) == pytest.approx((0.5 + 1.0) / 2)


def _blobs(n_per_class=30, classes=4, dim=16, seed=0, spread=1.5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    X = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centres])
    y = np.repeat(np.arange(classes), n_per_class)
    return X / np.linalg.norm(X, axis=1, keepdims=True), y


def test_fit_probe_chooses_c_and_refits_on_all_trainval():
    from sklearn.linear_model import LogisticRegression

    X_all, y_all = _blobs(n_per_class=40)
    test = np.arange(len(y_all)) % 40 >= 30  # 10 test images per class, never seen in fitting
    X, y, Xt, yt = X_all[~test], y_all[~test], X_all[test], y_all[test]
    grid = c_grid(1e-3, 1e3, 7)
    fit = fit_probe(X, y, 4, grid=grid, seed=0)
    assert fit.grid == grid and len(fit.val_scores) == 7
    assert fit.C == grid[int(np.argmax(fit.val_scores))]
    assert min(fit.val_scores) < max(fit.val_scores)  # the grid matters on overlapping classes
    assert fit.n_train == len(y) and 0 < fit.n_val < len(y)
    # the final model is the one fit on all of trainval with the chosen C
    ref = LogisticRegression(C=fit.C, solver="lbfgs", max_iter=1000).fit(X, y)
    np.testing.assert_allclose(fit.model.coef_, ref.coef_, atol=1e-3)
    cm = confusion_matrix(yt, fit.predict(Xt), 4)
    assert mean_per_class_accuracy(cm) > 0.75  # chance: 0.25


def test_svm_and_errors():
    X, y = _blobs(spread=0.6)
    fit = fit_probe(X, y, 4, classifier="svm", grid=c_grid(0.1, 10, 3))
    assert mean_per_class_accuracy(confusion_matrix(y, fit.predict(X), 4)) > 0.9
    with pytest.raises(ValueError, match="valid names: logistic, svm"):
        fit_probe(X, y, 4, classifier="forest")
    with pytest.raises(ValueError, match="c_min"):
        c_grid(10, 1, 3)
