"""Classification metrics, in one place, for backbone selection, reporting and the benchmarks.

Built on scikit-learn wherever it has the function; scikit-learn is imported inside the
functions so that importing this module costs nothing. Conventions shared by every function:

- ``y`` holds integer class indices, ``proba`` is ``(n, k)`` class probabilities whose column
  ``j`` is class ``j`` of the model (so a class absent from ``y`` still has its column);
- the binary view is ``is_positive`` (bool) and ``score`` (the positive class's probability);
- a metric that is undefined on the data (e.g. an AUROC when a class is missing) is NaN.

The decision curve (net benefit against treat-all and treat-none) is here too, and how the
figures are written out: :func:`json_safe` / :func:`json_float` for
``metrics.json`` (NaN as ``null``) and :func:`tracked_metrics` for kedro-mlflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

#: Columns of :func:`calibration_bins`.
CALIBRATION_COLUMNS = ["bin_low", "bin_high", "mean_predicted", "observed_fraction", "count"]


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced class weights ``n / (k * count)`` (scikit-learn's ``compute_class_weight``).

    Args:
        y: Integer labels.
        n_classes: Number of classes of the model; a class absent from ``y`` gets weight 1.

    Returns:
        Class index → weight.
    """
    from sklearn.utils.class_weight import compute_class_weight  # noqa: PLC0415

    y = np.asarray(y)
    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    # sklearn divides by the number of classes present; the model has n_classes outputs.
    scale = len(present) / n_classes
    found = {int(c): float(w) * scale for c, w in zip(present, weights, strict=True)}
    return {k: found.get(k, 1.0) for k in range(n_classes)}


# ------------------------------------------------------------------------------ discrimination
def binary_auroc(is_positive: np.ndarray, score: np.ndarray) -> float:
    """AUROC of ``score`` for a binary outcome (``sklearn.metrics.roc_auc_score``).

    Returns:
        The AUROC (ties count half), or NaN when one of the two groups is empty.
    """
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    is_positive = np.asarray(is_positive, dtype=bool)
    if is_positive.all() or not is_positive.any():
        return float("nan")
    return float(roc_auc_score(is_positive, np.asarray(score, dtype=float)))


def per_class_auroc(y: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of every class (``sklearn.metrics.roc_auc_score``).

    Args:
        y: Integer labels, shape ``(n,)``.
        proba: Class probabilities, shape ``(n, k)``.

    Returns:
        Shape ``(k,)``; NaN for a class absent from ``y`` or when it is the only class present.
    """
    y, proba = np.asarray(y), np.asarray(proba, dtype=float)
    return np.array([binary_auroc(y == k, proba[:, k]) for k in range(proba.shape[1])])


def auroc(y: np.ndarray, proba: np.ndarray) -> float:
    """The summary AUROC: binary (of column 1) for two classes, else macro one-vs-rest.

    Args:
        y: Integer labels, shape ``(n,)``.
        proba: Class probabilities, shape ``(n, k)``.

    Returns:
        The AUROC, or NaN when undefined (a class missing from ``y``).
    """
    y, proba = np.asarray(y), np.asarray(proba, dtype=float)
    if proba.shape[1] == 2:
        return binary_auroc(y == 1, proba[:, 1])
    return summary_auroc(per_class_auroc(y, proba))


def summary_auroc(per_class: np.ndarray) -> float:
    """:func:`auroc` from the per-class AUROCs of :func:`per_class_auroc` (no recomputation).

    Two classes: the AUROC of class 1; more: their mean, NaN when one is undefined.
    """
    per_class = np.asarray(per_class, dtype=float)
    if per_class.size == 2:
        return float(per_class[1])
    return float("nan") if np.isnan(per_class).any() else float(per_class.mean())


def average_precision(is_positive: np.ndarray, score: np.ndarray) -> float:
    """Average precision of a binary score (``sklearn.metrics.average_precision_score``).

    Returns:
        The average precision, or NaN when there is no positive.
    """
    from sklearn.metrics import average_precision_score  # noqa: PLC0415

    is_positive = np.asarray(is_positive, dtype=bool)
    if not is_positive.any():
        return float("nan")
    return float(average_precision_score(is_positive, np.asarray(score, dtype=float)))


def balanced_accuracy(y: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (``sklearn``'s ``balanced_accuracy_score``).

    A class that is predicted but absent from ``y`` does not count (it has no recall).
    """
    import warnings  # noqa: PLC0415

    from sklearn.metrics import balanced_accuracy_score  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(np.asarray(y), np.asarray(predicted)))


def roc_pr_curves(is_positive: np.ndarray, score: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC and precision-recall points of a binary score (scikit-learn's curve functions).

    Returns:
        ``(roc, pr)`` from ``roc_curve`` and ``precision_recall_curve``: columns ``fpr``,
        ``tpr``, ``threshold`` and ``recall``, ``precision``, ``threshold``. Thresholds are
        capped at 1: the ROC's first point (sklearn's ``inf``) and the PR curve's end point
        ``(recall 0, precision 1)`` get 1.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: PLC0415

    is_positive = np.asarray(is_positive, dtype=bool)
    score = np.asarray(score, dtype=float)
    fpr, tpr, roc_thr = roc_curve(is_positive, score)
    precision, recall, pr_thr = precision_recall_curve(is_positive, score)
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(roc_thr, 1.0)})
    pr = pd.DataFrame(
        {"recall": recall, "precision": precision, "threshold": np.append(pr_thr, 1.0)}
    )
    return roc, pr


# ------------------------------------------------------------------------------ thresholds
def _roc_points(is_positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, ...]:
    """``roc_curve`` at every distinct score (descending), without its leading ``inf`` point."""
    from sklearn.metrics import roc_curve  # noqa: PLC0415

    is_positive = np.asarray(is_positive, dtype=bool)
    if is_positive.all() or not is_positive.any():
        raise ValueError("a threshold needs both positive and negative images")
    fpr, tpr, thresholds = roc_curve(
        is_positive, np.asarray(score, dtype=float), drop_intermediate=False
    )
    return fpr[1:], tpr[1:], thresholds[1:]


def youden_threshold(is_positive: np.ndarray, score: np.ndarray) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity - 1 (ties: the higher).

    A case is called positive when ``score >= threshold``; candidates are the distinct scores
    (``sklearn.metrics.roc_curve``). J is compared exactly (from the counts), so equal values
    are a tie whatever the floating-point rounding.

    Raises:
        ValueError: ``is_positive`` is all true or all false.
    """
    fpr, tpr, thresholds = _roc_points(is_positive, score)
    n_positive = int(np.asarray(is_positive, dtype=bool).sum())
    n_negative = len(is_positive) - n_positive
    # J * n_positive * n_negative in integers, so that equal J are equal (ties exact);
    # argmax takes the first, the highest threshold.
    scaled = np.rint(tpr * n_positive) * n_negative - np.rint(fpr * n_negative) * n_positive
    return float(thresholds[int(np.argmax(scaled))])


def sensitivity_threshold(is_positive: np.ndarray, score: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity reaches ``target`` (so specificity is highest).

    A case is called positive when ``score >= threshold``. Reaching means at least
    ``ceil(target * n_positive)`` positives (at least one) at or above the threshold.

    Raises:
        ValueError: ``is_positive`` is all true or all false.
    """
    _, tpr, thresholds = _roc_points(is_positive, score)
    n_positive = int(np.asarray(is_positive, dtype=bool).sum())
    needed = max(math.ceil(float(target) * n_positive - 1e-9), 1)
    found = np.rint(tpr * n_positive) >= needed
    return float(thresholds[int(np.argmax(found))])


def binary_counts(is_positive: np.ndarray, called: np.ndarray) -> dict[str, Any]:
    """Confusion counts and the derived rates of a binary call (``sklearn`` confusion matrix).

    Returns:
        ``tp``, ``fp``, ``tn``, ``fn`` and ``sensitivity``, ``specificity``, ``ppv``, ``npv``,
        ``f1`` (NaN when the denominator is zero).
    """
    from sklearn.metrics import confusion_matrix  # noqa: PLC0415

    matrix = confusion_matrix(
        np.asarray(is_positive, dtype=bool), np.asarray(called, dtype=bool), labels=[False, True]
    )
    tn, fp, fn, tp = (int(v) for v in matrix.ravel())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


# ------------------------------------------------------------------------------ calibration
def _probabilities(proba: np.ndarray) -> np.ndarray:
    """Float64 rows in [0, 1] summing to 1 (float32 softmax rows miss 1 by ~1e-7)."""
    proba = np.clip(np.asarray(proba, dtype=float), 0.0, 1.0)
    return proba / proba.sum(axis=1, keepdims=True)


def brier_score(y: np.ndarray, proba: np.ndarray) -> float:
    """Multi-class Brier score: the mean over images of the sum over classes of squared error.

    ``sklearn.metrics.brier_score_loss`` with ``labels`` = every class of the model and
    ``scale_by_half=False``, for two classes as for more: it lies in [0, 2], and for two classes
    it is twice the customary positive-class Brier score.
    """
    from sklearn.metrics import brier_score_loss  # noqa: PLC0415

    proba = _probabilities(proba)
    labels = list(range(proba.shape[1]))
    return float(brier_score_loss(np.asarray(y), proba, labels=labels, scale_by_half=False))


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (``sklearn.metrics.log_loss``, natural log).

    ``labels`` = every class of the model, so a class absent from ``y`` is allowed; a zero
    probability of the true class is clipped at float64's machine epsilon by sklearn.
    """
    from sklearn.metrics import log_loss as sklearn_log_loss  # noqa: PLC0415

    proba = _probabilities(proba)
    return float(sklearn_log_loss(np.asarray(y), proba, labels=list(range(proba.shape[1]))))


def calibration_bins(is_positive: np.ndarray, score: np.ndarray, n_bins: int) -> pd.DataFrame:
    """Equal-width reliability bins (``sklearn.calibration.calibration_curve``) with counts.

    As in scikit-learn, a bin holds the scores in ``(bin_low, bin_high]`` (the first also 0).

    Returns:
        One row per non-empty bin: ``bin_low``, ``bin_high``, ``mean_predicted``,
        ``observed_fraction`` and ``count``.
    """
    from sklearn.calibration import calibration_curve  # noqa: PLC0415

    truth = np.asarray(is_positive, dtype=bool).astype(int)
    score = np.clip(np.asarray(score, dtype=float), 0.0, 1.0)
    if len(score) == 0:
        return pd.DataFrame(columns=CALIBRATION_COLUMNS)
    observed, predicted = calibration_curve(
        truth, score, n_bins=n_bins, strategy="uniform", pos_label=1
    )
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], score), minlength=n_bins)
    filled = np.flatnonzero(counts)  # the bins calibration_curve reports, in its order
    return pd.DataFrame(
        {
            "bin_low": edges[filled],
            "bin_high": edges[filled + 1],
            "mean_predicted": predicted,
            "observed_fraction": observed,
            "count": counts[filled].astype(int),
        },
        columns=CALIBRATION_COLUMNS,
    )


def expected_calibration_error(bins: pd.DataFrame) -> float:
    """ECE: the count-weighted mean gap between predicted and observed frequency per bin.

    Args:
        bins: The table of :func:`calibration_bins`.

    Returns:
        The ECE, or NaN for an empty table.
    """
    if bins.empty:
        return float("nan")
    gaps = (bins["mean_predicted"] - bins["observed_fraction"]).abs()
    return float((gaps * bins["count"]).sum() / bins["count"].sum())


def binned_ece(is_positive: np.ndarray, score: np.ndarray, n_bins: int) -> float:
    """:func:`expected_calibration_error` of :func:`calibration_bins`, computed directly.

    The same bins and the same value, in NumPy alone: fast enough for a bootstrap (a
    thousand resamples in milliseconds, where building the tables takes seconds).

    Returns:
        The ECE, or NaN when ``score`` is empty.
    """
    truth = np.asarray(is_positive, dtype=float)
    score = np.clip(np.asarray(score, dtype=float), 0.0, 1.0)
    if len(score) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], score)
    predicted = np.bincount(bins, weights=score, minlength=n_bins)
    observed = np.bincount(bins, weights=truth, minlength=n_bins)
    return float(np.abs(predicted - observed).sum() / len(score))


# ------------------------------------------------------------------------------ intervals
def stratified_resamples(y: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Bootstrap index sets that resample within each class (no resample lacks a class).

    Each resample draws, with replacement, as many images of each class as ``y`` holds.

    Args:
        y: Integer labels, shape ``(n,)``.
        n_resamples: Number of resamples.
        seed: Seed of ``numpy.random.default_rng``.

    Returns:
        Indices into ``y``, shape ``(n_resamples, n)``, grouped by class.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    blocks = []
    for k in np.unique(y):
        members = np.flatnonzero(y == k)
        blocks.append(members[rng.integers(0, len(members), (n_resamples, len(members)))])
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((n_resamples, 0), dtype=int)


def is_clustered(groups: np.ndarray | None) -> bool:
    """Whether ``groups`` (one id per row, or None) has a group of more than one row."""
    if groups is None:
        return False
    _, counts = np.unique(np.asarray(groups).astype(str), return_counts=True)
    return bool((counts > 1).any())


def bootstrap_kind(groups: np.ndarray | None) -> str:
    """``cluster`` when :func:`bootstrap_resamples` resamples groups, else ``image``."""
    return "cluster" if is_clustered(groups) else "image"


def cluster_resamples(
    y: np.ndarray, groups: np.ndarray, n_resamples: int, seed: int
) -> list[np.ndarray]:
    """Bootstrap index sets that resample whole groups, stratified by the group's label.

    A group's label is the set of its rows' labels: a group whose rows share one label is in
    that label's stratum, a group with several labels in a stratum of its own kind. Each
    resample draws, with replacement, as many groups of each stratum as ``groups`` holds and
    takes every row of each group drawn, so rows of one group (a patient's images) stay
    together and the resample keeps the correlation between them.

    Args:
        y: Integer labels, shape ``(n,)``.
        groups: The group (patient) of each row, shape ``(n,)``.
        n_resamples: Number of resamples.
        seed: Seed of ``numpy.random.default_rng``.

    Returns:
        ``n_resamples`` arrays of indices into ``y``; their lengths vary with the groups drawn.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    labels = [tuple(np.unique(y[order[s : s + n]])) for s, n in zip(starts, sizes, strict=True)]
    strata = [np.flatnonzero([lab == key for lab in labels]) for key in sorted(set(labels))]
    resamples = []
    for _ in range(n_resamples):
        drawn = np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata])
        size = sizes[drawn]
        offsets = np.repeat(starts[drawn] - np.cumsum(size) + size, size)
        resamples.append(order[offsets + np.arange(size.sum())])
    return resamples


def bootstrap_resamples(
    y: np.ndarray, n_resamples: int, seed: int, groups: np.ndarray | None = None
) -> list[np.ndarray] | np.ndarray:
    """The resamples of every bootstrap: groups when they cluster rows, else rows.

    Args:
        y: Integer labels, shape ``(n,)``.
        n_resamples: Number of resamples.
        seed: Seed of the resampling.
        groups: The group (patient) of each row, or None. When a group holds more than one
            row, whole groups are resampled (:func:`cluster_resamples`); otherwise rows
            within each class (:func:`stratified_resamples`).

    Returns:
        An iterable of ``n_resamples`` index arrays.
    """
    if is_clustered(groups):
        return cluster_resamples(y, groups, n_resamples, seed)
    return stratified_resamples(y, n_resamples, seed)


def bootstrap_intervals(
    y: np.ndarray,
    proba: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], Mapping[str, float]],
    n_resamples: int,
    confidence: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of statistics of ``(y, proba)``, stratified by label.

    The resamples come from :func:`bootstrap_resamples`: whole groups (patients), stratified
    by the group's label, when ``groups`` has a group of several rows (a cluster bootstrap);
    rows stratified by class otherwise. ``statistic`` runs once on the
    data as given (so that scikit-learn checks the inputs), then on every resample with
    scikit-learn's input validation off (``sklearn.config_context``): that check costs more
    than an AUROC on a few hundred images, and a resample of valid inputs is valid.

    Args:
        y: Integer labels, shape ``(n,)``.
        proba: Class probabilities, shape ``(n, k)``.
        statistic: Function of ``(y, proba)`` returning name → value (several statistics per
            resample share one pass, e.g. the per-class AUROCs).
        n_resamples: Number of resamples.
        confidence: Coverage of each interval, in (0, 1).
        seed: Seed of the resampling.
        groups: The group (patient) of each row, or None (rows resampled alone).

    Returns:
        Name → ``(low, high)``; NaN when the statistic is undefined in every resample.
    """
    import sklearn  # noqa: PLC0415

    y, proba = np.asarray(y), np.asarray(proba, dtype=float)
    values: dict[str, list[float]] = {name: [] for name in statistic(y, proba)}
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for idx in bootstrap_resamples(y, n_resamples, seed, groups):
            for name, value in statistic(y[idx], proba[idx]).items():
                values[name].append(value)
    tail = (1.0 - confidence) / 2 * 100
    intervals = {}
    for name, found in values.items():
        finite = np.asarray(found, dtype=float)
        finite = finite[~np.isnan(finite)]
        if finite.size == 0:
            intervals[name] = (float("nan"), float("nan"))
        else:
            low, high = np.percentile(finite, [tail, 100 - tail])
            intervals[name] = (float(low), float(high))
    return intervals


def interval_keys(intervals: Mapping[str, tuple[float, float]], suffix: str = "") -> dict:
    """``name → (low, high)`` as the keys ``<name><suffix>_ci_low`` and ``_ci_high``."""
    keys = {}
    for name, (low, high) in intervals.items():
        keys[f"{name}{suffix}_ci_low"], keys[f"{name}{suffix}_ci_high"] = low, high
    return keys


def auroc_with_interval(
    y: np.ndarray,
    proba: np.ndarray,
    n_resamples: int,
    confidence: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """:func:`auroc` and its stratified bootstrap interval (:func:`bootstrap_intervals`).

    Args:
        y: Integer labels, shape ``(n,)``.
        proba: Class probabilities, shape ``(n, k)``.
        n_resamples: Number of resamples.
        confidence: Coverage of the interval, in (0, 1).
        seed: Seed of the resampling.
        groups: The group (patient) of each row: a cluster bootstrap when a group has
            several rows.

    Returns:
        ``{"auroc", "auroc_ci_low", "auroc_ci_high"}``.
    """
    found = bootstrap_intervals(
        y, proba, lambda y_, p_: {"auroc": auroc(y_, p_)}, n_resamples, confidence, seed, groups
    )
    return {"auroc": auroc(y, proba), **interval_keys(found)}


def summary_intervals(
    y: np.ndarray,
    proba: np.ndarray,
    pos: int,
    n_resamples: int,
    confidence: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """Bootstrap intervals of the summary AUROC, class ``pos``'s AUROC and the Brier score.

    One pass of :func:`bootstrap_intervals` for the three (a cluster bootstrap when a group
    of ``groups`` has several rows).

    Returns:
        ``auroc``, ``auroc_positive`` and ``brier_score``, each as ``<name>_ci_low`` and
        ``<name>_ci_high`` (:func:`interval_keys`).
    """

    def statistic(y_: np.ndarray, proba_: np.ndarray) -> dict[str, float]:
        per_class = per_class_auroc(y_, proba_)
        return {
            "auroc": summary_auroc(per_class),
            "auroc_positive": float(per_class[pos]),
            "brier_score": brier_score(y_, proba_),
        }

    return interval_keys(
        bootstrap_intervals(y, proba, statistic, n_resamples, confidence, seed, groups)
    )


def calibration_summary(
    y: np.ndarray, proba: np.ndarray, pos: int, n_bins: int
) -> tuple[dict[str, float], pd.DataFrame]:
    """ECE of p(class ``pos``) and of the top-label confidence, Brier score and log loss.

    Returns:
        ``({"ece_positive", "ece_top_label", "brier_score", "log_loss"}, bins)``: the
        figures and the reliability bins of p(class ``pos``) (:func:`calibration_bins`).
    """
    y, proba = np.asarray(y), np.asarray(proba, dtype=float)
    bins = calibration_bins(y == pos, proba[:, pos], n_bins)
    top_bins = calibration_bins(proba.argmax(axis=1) == y, proba.max(axis=1), n_bins)
    values = {
        "ece_positive": expected_calibration_error(bins),
        "ece_top_label": expected_calibration_error(top_bins),
        "brier_score": brier_score(y, proba),
        "log_loss": log_loss(y, proba),
    }
    return values, bins


# ------------------------------------------------------------------------------ net benefit
#: Columns of :func:`decision_curve`.
DECISION_CURVE_COLUMNS = ["threshold", "model", "treat_all", "treat_none"]


def net_benefit(is_positive: np.ndarray, score: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit of acting on the cases with ``score >= t``, at each threshold ``t``.

    Vickers and Elkin (2006): ``TP / n - FP / n * t / (1 - t)``; the threshold probability
    ``t`` weighs a false positive against a true positive as ``t : (1 - t)``.

    Args:
        is_positive: Whether each case is positive, shape ``(n,)``.
        score: The model's probability of the positive class, shape ``(n,)``.
        thresholds: Threshold probabilities in ``(0, 1)``.

    Returns:
        One net benefit per threshold (NaN without a case).
    """
    is_positive = np.asarray(is_positive, dtype=bool)
    score = np.asarray(score, dtype=float)
    thresholds = np.asarray(thresholds, dtype=float)
    if is_positive.size == 0:
        return np.full(thresholds.shape, np.nan)
    called = score[None, :] >= thresholds[:, None]
    tp = (called & is_positive[None, :]).sum(axis=1)
    fp = (called & ~is_positive[None, :]).sum(axis=1)
    return (tp - fp * thresholds / (1.0 - thresholds)) / is_positive.size


def decision_curve(
    is_positive: np.ndarray, score: np.ndarray, thresholds: np.ndarray
) -> pd.DataFrame:
    """The model's net benefit beside treating every case and treating none.

    Returns:
        One row per threshold: ``threshold``, ``model`` (:func:`net_benefit`), ``treat_all``
        (the net benefit of calling every case positive) and ``treat_none`` (0).
    """
    thresholds = np.asarray(thresholds, dtype=float)
    everyone = np.zeros(len(np.asarray(score)))  # a score every threshold calls positive
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "model": net_benefit(is_positive, score, thresholds),
            "treat_all": net_benefit(is_positive, everyone + 1.0, thresholds),
            "treat_none": np.zeros(thresholds.shape),
        },
        columns=DECISION_CURVE_COLUMNS,
    )


def helpful_ranges(curve: pd.DataFrame) -> list[tuple[float, float]]:
    """The runs of thresholds where the model's net benefit beats both treat-all and treat-none.

    Args:
        curve: The table of :func:`decision_curve`, thresholds ascending.

    Returns:
        ``(first, last)`` threshold of each run, in order; empty when the model never helps.
    """
    helps = (curve["model"] > np.maximum(curve["treat_all"], curve["treat_none"])).to_numpy()
    thresholds = curve["threshold"].to_numpy(dtype=float)
    ranges, start = [], None
    for i, good in enumerate(helps):
        if good and start is None:
            start = i
        if start is not None and (not good or i == len(helps) - 1):
            end = i if good else i - 1
            ranges.append((float(thresholds[start]), float(thresholds[end])))
            start = None
    return ranges


# ------------------------------------------------------------------------------ written out
def json_safe(value: Any) -> Any:
    """``value`` with every NaN (nested in dicts) as ``None``, so that it is strict JSON.

    ``metrics.json`` is read by ``dvc metrics show``, which refuses NaN; :func:`json_float`
    reads such a ``None`` back.
    """
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def json_float(value: Any) -> float:
    """A figure of ``metrics.json`` as a float: ``None`` (written for NaN) back to NaN."""
    return float("nan") if value is None else float(value)


def tracked_metrics(prefix: str, values: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The finite numbers of ``values`` as kedro-mlflow metric entries ``<prefix>.<name>``.

    Booleans, strings, nested dicts and NaN are left out.

    Returns:
        ``{"<prefix>.<name>": {"value": float, "step": 0}}``, the format of kedro-mlflow's
        ``MlflowMetricsHistoryDataset``.
    """
    return {
        f"{prefix}.{k}": {"value": float(v), "step": 0}
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }
