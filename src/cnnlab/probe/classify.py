"""The linear classifier on fixed features: C chosen on a validation split, then refit.

As in Kornblith et al. (2019): multinomial logistic regression (L-BFGS) on L2-normalized
features; the inverse regularization strength C is chosen from a log-spaced grid by the
mean-per-class accuracy on a stratified validation split held out from trainval, then the
classifier is refit on all of trainval with that C. A linear SVM is offered for comparison.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from cnnlab.data.labeled import stratified_split
from cnnlab.progress import track
from cnnlab.registry import Registry

log = logging.getLogger(__name__)

# Grid of C = 1/lambda, log-spaced. Unit-norm features give small logits, so useful C values
# are large (C <= 0.3 predicts one class on Pets); Kornblith et al. search 1e-6..1e5 on 45 points.
C_MIN, C_MAX, C_STEPS = 1e-1, 1e5, 13  # half-decade steps
VAL_FRACTION = 0.2  # of each class in trainval, held out to choose C
MAX_ITER = 1000  # L-BFGS iterations (about 30-60 are used on Pets features)
# BLAS/OpenMP threads while fitting. The problems are small (N x 1280 by 1280 x 37): one thread
# avoids spin-waiting workers; on the shared 2-core machine a fit took 2 s with 1 thread and
# 16-26 s with 2. No warm starts along the grid either: with the averaged loss, a warm start at
# a larger C already meets the tolerance and L-BFGS stops at once, which flattens the curve.
FIT_THREADS = 1


def _logistic(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    # lbfgs with several classes is the multinomial (softmax) model in scikit-learn >= 1.5.
    return LogisticRegression(C=C, solver="lbfgs", max_iter=MAX_ITER, random_state=seed)


def _svm(C: float, seed: int):
    from sklearn.svm import LinearSVC

    return LinearSVC(C=C, max_iter=10_000, random_state=seed)


CLASSIFIERS: Registry = Registry("classifier")
CLASSIFIERS.register("logistic", _logistic)
CLASSIFIERS.register("svm", _svm)


def c_grid(c_min: float = C_MIN, c_max: float = C_MAX, steps: int = C_STEPS) -> list[float]:
    if not 0 < c_min <= c_max or steps < 1:
        raise ValueError(f"need 0 < c_min <= c_max and steps >= 1, got {c_min}, {c_max}, {steps}")
    return [float(c) for c in np.logspace(np.log10(c_min), np.log10(c_max), steps)]


# ----------------------------------------------------------------------------- metrics
def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; row = true class, column = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall per class (diagonal / row sum); NaN for classes absent from the true labels."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def mean_per_class_accuracy(cm: np.ndarray) -> float:
    """Mean of per-class accuracies over the classes that occur (the standard Pets metric)."""
    acc = per_class_accuracy(cm)
    return float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan")


def overall_accuracy(cm: np.ndarray) -> float:
    return float(np.trace(cm) / max(cm.sum(), 1))


# ----------------------------------------------------------------------------- fitting
@dataclass
class ProbeFit:
    """The refit classifier, the chosen C and the validation curve."""

    classifier: str
    model: object
    C: float
    grid: list[float]
    val_scores: list[float]  # mean-per-class accuracy on the validation split, one per C
    n_train: int
    n_val: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def predict(self, X) -> np.ndarray:
        return self.model.predict(np.asarray(X, dtype=np.float64))


def _fit(kind: str, C: float, X, y, seed: int):
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    clf = CLASSIFIERS.get(kind)(C, seed)
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=FIT_THREADS):
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(X, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("%s with C=%g did not converge in its iteration limit", kind, C)
    return clf


def fit_probe(
    X_trainval, y_trainval, n_classes: int, *, classifier: str = "logistic", grid: list[float] | None = None,
    val_fraction: float = VAL_FRACTION, seed: int = 0,
) -> ProbeFit:
    """Choose C on a stratified validation split of trainval, then refit on all of it."""
    t0 = time.perf_counter()
    CLASSIFIERS.get(classifier)  # unknown name -> ValueError listing the valid ones
    X = np.asarray(X_trainval, dtype=np.float64)
    y = np.asarray(y_trainval, dtype=np.int64)
    grid = sorted(grid or c_grid())
    notes: list[str] = []
    if len(np.unique(y)) < 2:
        raise ValueError("the probe needs training images of at least two classes")
    if len(grid) == 1:
        best, scores, n_val = grid[0], [float("nan")], 0
    else:
        fit_idx, val_idx = stratified_split(y, val_fraction, seed)
        n_val = len(val_idx)
        singles = int((np.bincount(y) == 1).sum())
        if singles:
            notes.append(f"{singles} classes have one training image: they are never in the validation split")
        scores = []
        for C in track(grid, "choosing C"):
            clf = _fit(classifier, C, X[fit_idx], y[fit_idx], seed)
            cm = confusion_matrix(y[val_idx], clf.predict(X[val_idx]), n_classes)
            scores.append(mean_per_class_accuracy(cm))
            log.info("C=%-10.4g validation mean-per-class accuracy %.4f", C, scores[-1])
        best = grid[int(np.argmax(scores))]  # first maximum: the most regularized of the best
        if best in (grid[0], grid[-1]) and len(grid) > 2:
            notes.append(f"chosen C={best:g} is at the edge of the grid; consider widening it")
    model = _fit(classifier, best, X, y, seed)
    return ProbeFit(classifier, model, best, grid, [float(s) for s in scores], len(y), n_val,
                    time.perf_counter() - t0, notes)
