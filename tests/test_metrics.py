"""The metrics module, each function against a value worked out by hand on a tiny example."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline import metrics as m

# Three classes, four images (used by several tests):
#   image  label  p(0)  p(1)  p(2)
#   0      0      0.6   0.3   0.1
#   1      0      0.3   0.3   0.4
#   2      1      0.5   0.4   0.1
#   3      2      0.2   0.2   0.6
Y3 = np.array([0, 0, 1, 2])
P3 = np.array([[0.6, 0.3, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])


def test_binary_auroc_counts_ties_half():
    # positives score {0.5, 0.9}, negatives {0.5, 0.1}: pairs (0.5, 0.5) tie = 1/2,
    # (0.5, 0.1) = 1, (0.9, 0.5) = 1, (0.9, 0.1) = 1 -> 3.5 / 4 = 0.875.
    assert m.binary_auroc(np.array([1, 0, 1, 0]), np.array([0.5, 0.5, 0.9, 0.1])) == 0.875
    assert math.isnan(m.binary_auroc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_per_class_and_macro_auroc():
    # class 0: positives {0.6, 0.3} vs negatives {0.5, 0.2}: 1 + 1 + 0 + 1 = 3 of 4 -> 0.75;
    # class 1: positive 0.4 vs {0.3, 0.3, 0.2} -> 1; class 2: positive 0.6 vs {0.1, 0.4, 0.1} -> 1.
    assert m.per_class_auroc(Y3, P3) == pytest.approx([0.75, 1.0, 1.0])
    assert m.auroc(Y3, P3) == pytest.approx((0.75 + 1 + 1) / 3)
    assert m.summary_auroc(np.array([0.75, 1.0, 1.0])) == pytest.approx(2.75 / 3)


def test_auroc_is_nan_when_a_class_is_missing():
    # No image of class 2: its one-vs-rest AUROC, hence the macro average, is undefined.
    y = np.array([0, 0, 1, 1])
    per_class = m.per_class_auroc(y, P3)
    assert np.isnan(per_class[2]) and not np.isnan(per_class[:2]).any()
    assert math.isnan(m.auroc(y, P3))


def test_binary_auroc_of_column_one():
    # p(1) = 0.2, 0.9, 0.6 for labels 0, 1, 0: positive 0.9 beats both negatives -> 1.0;
    # p(1) = 0.7 for the first image: 0.9 > 0.7 and 0.9 > 0.6 -> still 1.0; 0.65 < 0.7 -> 0.5.
    proba = np.array([[0.3, 0.7], [0.35, 0.65], [0.4, 0.6]])
    assert m.auroc(np.array([0, 1, 0]), proba) == 0.5
    assert m.summary_auroc(np.array([0.5, 0.5])) == 0.5


def test_average_precision():
    # ranked: 0.9 positive (precision 1, recall 1/2), 0.8 negative, 0.7 positive (precision
    # 2/3, recall 1): AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    is_pos, score = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])
    assert m.average_precision(is_pos, score) == pytest.approx(5 / 6)
    assert math.isnan(m.average_precision(np.zeros(3), np.array([0.1, 0.2, 0.3])))


def test_balanced_accuracy_over_the_classes_present():
    # recall of 0: 2/3, of 1: 1/1 -> 5/6
    assert m.balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])) == pytest.approx(
        5 / 6
    )
    # class 2 is predicted but absent: recalls 1/3 and 1 -> 2/3
    assert m.balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 2, 1, 1])) == pytest.approx(
        2 / 3
    )


# Validation example: p(positive) of 4 positives 0.9, 0.8, 0.6, 0.3; of 3 negatives 0.7, 0.2, 0.1.
VAL_POS = np.array([True] * 4 + [False] * 3)
VAL_SCORE = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1])


@pytest.mark.parametrize(
    ("target", "threshold"),
    [
        (0.75, 0.6),  # 3 of 4 positives needed: 0.9, 0.8, 0.6 -> 0.6
        (0.5, 0.8),  # 2 of 4: 0.9, 0.8
        (0.7, 0.6),  # ceil(2.8) = 3 of 4
        (1.0, 0.3),  # all 4
        (0.01, 0.9),  # at least one
    ],
)
def test_sensitivity_threshold_is_the_highest_reaching_the_target(target, threshold):
    assert m.sensitivity_threshold(VAL_POS, VAL_SCORE, target) == threshold


def test_youden_threshold():
    # J(t) = sens + spec - 1 at each distinct score, called positive when score >= t:
    # 0.9: 1/4 + 3/3 - 1 = 0.25; 0.8: 0.5; 0.7: 0.5 + 2/3 - 1 = 0.167; 0.6: 0.75 + 2/3 - 1 = 0.417;
    # 0.3: 1 + 2/3 - 1 = 0.667 (the maximum); 0.2: 1 + 1/3 - 1 = 0.333; 0.1: 0.
    assert m.youden_threshold(VAL_POS, VAL_SCORE) == 0.3
    # a tie of J goes to the higher threshold (here 2/3 at 0.8 and at 0.6; in floating point
    # 2/3 - 0 and 1 - 1/3 differ in the last bit)
    is_pos = np.array([True, True, False, True, False, False])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    # J: 0.9 -> 1/3; 0.8 -> 2/3; 0.7 -> 2/3 - 1/3 = 1/3; 0.6 -> 1 - 1/3 = 2/3; 0.2 -> 1/3
    assert m.youden_threshold(is_pos, score) == 0.8
    with pytest.raises(ValueError, match="both positive and negative"):
        m.youden_threshold(np.ones(3, bool), np.array([0.1, 0.2, 0.3]))


def _old_youden(is_pos, score):
    """The rule reporting/nodes.py applied by hand before it used roc_curve (reference)."""
    candidates = np.unique(score)[::-1]
    youden = [(score[is_pos] >= t).mean() + (score[~is_pos] < t).mean() - 1.0 for t in candidates]
    return float(candidates[int(np.argmax(youden))])


def _old_sensitivity(is_pos, score, target):
    ranked = np.sort(score[is_pos])[::-1]
    k = math.ceil(float(target) * len(ranked) - 1e-9)
    return float(ranked[max(k, 1) - 1])


@pytest.mark.parametrize("seed", range(40))
def test_thresholds_match_the_former_hand_written_rule(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 25))
    is_pos = np.zeros(n, bool)
    is_pos[rng.choice(n, int(rng.integers(1, n)), replace=False)] = True
    score = np.round(rng.random(n), 1)  # one decimal: many ties
    assert m.youden_threshold(is_pos, score) == _old_youden(is_pos, score)
    for target in (0.5, 0.8, 0.9, 0.95, 1.0):
        assert m.sensitivity_threshold(is_pos, score, target) == _old_sensitivity(
            is_pos, score, target
        )


def test_binary_counts():
    # called positive: images 0, 1, 3. tp = 2 (0, 1), fn = 1 (2), fp = 1 (3), tn = 1 (4).
    counts = m.binary_counts(
        np.array([True, True, True, False, False]), np.array([True, True, False, True, False])
    )
    assert {k: counts[k] for k in ("tp", "fn", "fp", "tn")} == {"tp": 2, "fn": 1, "fp": 1, "tn": 1}
    assert counts["sensitivity"] == pytest.approx(2 / 3)
    assert counts["specificity"] == pytest.approx(1 / 2)
    assert counts["ppv"] == pytest.approx(2 / 3)
    assert counts["npv"] == pytest.approx(1 / 2)
    assert counts["f1"] == pytest.approx(4 / 6)  # 2 tp / (2 tp + fp + fn)
    none_called = m.binary_counts(np.array([True, False]), np.array([False, False]))
    assert math.isnan(none_called["ppv"]) and none_called["npv"] == 0.5


def test_brier_score_sums_over_classes():
    # image 0 (label 0): (1 - 0.8)^2 + (0 - 0.2)^2 = 0.08; image 1 (label 1): 0.4^2 + 0.4^2 =
    # 0.32; mean 0.2 (twice the positive-class Brier of 0.1).
    proba = np.array([[0.8, 0.2], [0.4, 0.6]])
    assert m.brier_score(np.array([0, 1]), proba) == pytest.approx(0.2)
    # three classes, class 2 absent: 0.3^2 + 0.2^2 + 0.1^2 = 0.14; 0.5^2 + 0.5^2 + 0 = 0.5
    proba3 = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    assert m.brier_score(np.array([0, 0]), proba3) == pytest.approx(0.32)


def test_log_loss():
    # -(ln 0.8 + ln 0.6) / 2 = (0.22314 + 0.51083) / 2
    proba = np.array([[0.8, 0.2], [0.4, 0.6]])
    assert m.log_loss(np.array([0, 1]), proba) == pytest.approx(0.366985, abs=1e-6)
    # class 2 absent from y is fine: -(ln 0.7 + ln 0.5) / 2
    proba3 = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    assert m.log_loss(np.array([0, 0]), proba3) == pytest.approx(0.524911, abs=1e-6)


def test_float32_softmax_rows_are_accepted():
    logits = np.array([[2.0, 0.1, -1.0], [0.3, 0.2, 0.1]], dtype=np.float32)
    proba = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    expected = -np.log(proba[[0, 1], [0, 2]].astype(float)).mean()
    assert m.log_loss(np.array([0, 2]), proba) == pytest.approx(expected, rel=1e-6)


def test_calibration_bins_and_ece():
    # 10 bins (low, high] as in sklearn: 0.05 -> [0, 0.1]; 0.12 and 0.15 -> (0.1, 0.2];
    # 0.91 and 0.95 -> (0.9, 1]; a score of exactly 0.1 falls in the first bin.
    truth = np.array([0, 1, 0, 1, 1, 1])
    score = np.array([0.05, 0.15, 0.12, 0.95, 0.91, 0.1])
    bins = m.calibration_bins(truth[:5], score[:5], 10)
    assert list(bins.columns) == m.CALIBRATION_COLUMNS
    assert bins["bin_low"].tolist() == pytest.approx([0.0, 0.1, 0.9])
    assert bins["bin_high"].tolist() == pytest.approx([0.1, 0.2, 1.0])
    assert bins["count"].tolist() == [1, 2, 2]
    assert bins["mean_predicted"].tolist() == pytest.approx([0.05, 0.135, 0.93])
    assert bins["observed_fraction"].tolist() == pytest.approx([0.0, 0.5, 1.0])
    # ECE = (1 * 0.05 + 2 * |0.135 - 0.5| + 2 * |0.93 - 1|) / 5 = (0.05 + 0.73 + 0.14) / 5
    assert m.expected_calibration_error(bins) == pytest.approx(0.184)
    edge = m.calibration_bins(truth, score, 10)
    assert edge["count"].tolist() == [2, 2, 2]
    assert math.isnan(m.expected_calibration_error(m.calibration_bins([], [], 10)))


def test_roc_pr_curves():
    # positives 0.9, 0.7; negatives 0.8, 0.1
    roc, pr = m.roc_pr_curves(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1]))
    assert list(zip(roc["fpr"], roc["tpr"], strict=True)) == [
        (0.0, 0.0),
        (0.0, 0.5),
        (0.5, 0.5),
        (0.5, 1.0),
        (1.0, 1.0),
    ]
    assert roc["threshold"].tolist() == [1.0, 0.9, 0.8, 0.7, 0.1]
    # precision at thresholds 0.1, 0.7, 0.8, 0.9: 2/4, 2/3, 1/2, 1/1; then (recall 0, 1)
    assert pr["precision"].tolist() == pytest.approx([0.5, 2 / 3, 0.5, 1.0, 1.0])
    assert pr["recall"].tolist() == [1.0, 1.0, 0.5, 0.5, 0.0]
    assert pr["threshold"].tolist() == [0.1, 0.7, 0.8, 0.9, 1.0]


def test_class_weights():
    # n = 4, k = 3 model classes: 4 / (3 * 3) for class 0, 4 / (3 * 1) for class 1, 1 if absent
    weights = m.class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights == pytest.approx({0: 4 / 9, 1: 4 / 3, 2: 1.0})


def test_stratified_resamples_keep_every_class_count():
    y = np.array([0] * 19 + [1] + [2] * 5)
    resamples = m.stratified_resamples(y, 200, seed=3)
    assert resamples.shape == (200, 25)
    for idx in resamples:
        assert np.bincount(y[idx], minlength=3).tolist() == [19, 1, 5]
    assert (resamples == m.stratified_resamples(y, 200, seed=3)).all()
    assert not (resamples == m.stratified_resamples(y, 200, seed=4)).all()
    # the draws vary within a class (a bootstrap, not a permutation)
    assert len({tuple(sorted(idx[:19])) for idx in resamples}) > 100


def test_bootstrap_intervals_are_percentiles_of_the_stratified_resamples():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [30, 3, 12])
    proba = rng.dirichlet([1, 1, 1], len(y))

    def statistic(y_, p_):
        return {"share_1": float(np.mean(y_ == 1)), "mean_p0": float(p_[:, 0].mean())}

    ci = m.bootstrap_intervals(y, proba, statistic, 500, 0.9, seed=5)
    # the class shares never change: an interval of zero width (a plain bootstrap varies them)
    assert ci["share_1"] == pytest.approx((3 / 45, 3 / 45))
    means = [proba[idx, 0].mean() for idx in m.stratified_resamples(y, 500, 5)]
    assert ci["mean_p0"] == pytest.approx(tuple(np.percentile(means, [5, 95])))
    assert ci == m.bootstrap_intervals(y, proba, statistic, 500, 0.9, seed=5)


def test_bootstrap_interval_of_an_undefined_statistic_is_nan():
    y = np.array([0, 0, 1, 1])  # class 2 never appears: its AUROC is undefined
    ci = m.bootstrap_intervals(y, P3, lambda a, b: {"auroc": m.auroc(a, b)}, 20, 0.95, 0)
    assert all(math.isnan(v) for v in ci["auroc"])


def test_importing_the_module_does_not_import_sklearn():
    code = "import sys, breast_cancer_pipeline.metrics; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_binned_ece_equals_the_ece_of_the_bins():
    rng = np.random.default_rng(3)
    score = np.concatenate([rng.random(500), [0.0, 0.1, 0.2, 1.0]])  # edges land low
    truth = rng.random(len(score)) < score**2
    for n_bins in (2, 10, 15):
        expected = m.expected_calibration_error(m.calibration_bins(truth, score, n_bins))
        assert m.binned_ece(truth, score, n_bins) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(m.binned_ece([], [], 10))


def test_auroc_with_interval_is_the_auroc_and_its_bootstrap_percentiles():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 40)
    score = 0.3 * y + 0.7 * rng.random(80)
    proba = np.stack([1 - score, score], axis=1)
    found = m.auroc_with_interval(y, proba, 200, 0.9, 4)
    low, high = m.bootstrap_intervals(y, proba, lambda a, b: {"a": m.auroc(a, b)}, 200, 0.9, 4)["a"]
    assert found == {"auroc": m.auroc(y, proba), "auroc_ci_low": low, "auroc_ci_high": high}
    assert low < found["auroc"] < high


def test_interval_keys_name_each_end_after_the_statistic():
    keys = m.interval_keys({"auroc": (0.7, 0.9), "ece": (0.01, 0.05)}, "_after")
    assert keys == {
        "auroc_after_ci_low": 0.7,
        "auroc_after_ci_high": 0.9,
        "ece_after_ci_low": 0.01,
        "ece_after_ci_high": 0.05,
    }


def test_summary_intervals_share_one_bootstrap_of_the_three_statistics():
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1, 2], 20)
    proba = rng.dirichlet([1, 1, 1], 60) + np.eye(3)[y]
    proba /= proba.sum(axis=1, keepdims=True)
    found = m.summary_intervals(y, proba, 2, 100, 0.95, 0)
    assert list(found) == [
        f"{name}_ci_{end}"
        for name in ("auroc", "auroc_positive", "brier_score")
        for end in ("low", "high")
    ]
    alone = m.auroc_with_interval(y, proba, 100, 0.95, 0)  # same resamples, same seed
    assert (found["auroc_ci_low"], found["auroc_ci_high"]) == (
        alone["auroc_ci_low"],
        alone["auroc_ci_high"],
    )
    positive = m.bootstrap_intervals(
        y, proba, lambda a, b: {"p": m.binary_auroc(a == 2, b[:, 2])}, 100, 0.95, 0
    )["p"]
    assert (found["auroc_positive_ci_low"], found["auroc_positive_ci_high"]) == positive


def test_calibration_summary_of_the_positive_class_and_the_top_label():
    values, bins = m.calibration_summary(Y3, P3, 0, 2)
    # p(0) = 0.6, 0.3, 0.5, 0.2 for labels 0, 0, 1, 2: bins (0, 0.5] and (0.5, 1]
    assert bins["count"].tolist() == [3, 1]
    assert values["ece_positive"] == pytest.approx(m.binned_ece(Y3 == 0, P3[:, 0], 2))
    top_right = P3.argmax(axis=1) == Y3  # top labels 0, 2, 0, 2: right, wrong, wrong, right
    assert values["ece_top_label"] == pytest.approx(m.binned_ece(top_right, P3.max(axis=1), 2))
    assert values["brier_score"] == m.brier_score(Y3, P3)
    assert values["log_loss"] == m.log_loss(Y3, P3)


def test_nan_is_written_as_null_and_read_back_as_nan():
    written = m.json_safe({"auroc": float("nan"), "n": 3, "per_class": {"a": float("nan")}})
    assert written == {"auroc": None, "n": 3, "per_class": {"a": None}}
    assert math.isnan(m.json_float(None)) and m.json_float(0.5) == 0.5


def test_tracked_metrics_keep_the_finite_numbers_only():
    values = {"auroc": 0.9, "n": 12, "ok": True, "rule": "youden", "ece": float("nan")}
    values |= {"inf": float("inf"), "block": {"x": 1.0}}
    assert m.tracked_metrics("test", values) == {
        "test.auroc": {"value": 0.9, "step": 0},
        "test.n": {"value": 12.0, "step": 0},
    }


# ------------------------------------------------------------------------------ cluster bootstrap
def _correlated_patients(n_patients=30, images=10, seed=0):
    """Patients whose images share one score (tiny noise): images are no independent evidence."""
    rng = np.random.default_rng(seed)
    label = np.arange(n_patients) % 2
    patient_score = rng.normal(label * 1.0, 1.0)
    y = np.repeat(label, images)
    score = np.repeat(patient_score, images) + rng.normal(0, 0.01, n_patients * images)
    proba = 1 / (1 + np.exp(-score))
    groups = np.repeat([f"p{i:02d}" for i in range(n_patients)], images)
    return y, np.column_stack([1 - proba, proba]), groups


def test_cluster_resamples_keep_patients_whole_and_their_label_counts():
    y, _, groups = _correlated_patients(n_patients=6, images=3)
    for idx in m.cluster_resamples(y, groups, 50, seed=1):
        drawn = groups[idx]
        # Every patient drawn brings all 3 of its images, as many times as it was drawn.
        assert all(count % 3 == 0 for count in np.unique(drawn, return_counts=True)[1])
        # Stratified by the patient's label: 3 malignant and 3 benign patients each time.
        assert (y[idx] == 1).sum() == 9 and (y[idx] == 0).sum() == 9


def test_a_patient_of_two_labels_is_a_stratum_of_its_own():
    y = np.array([0, 1, 0, 0, 1, 1])
    groups = np.array(["mixed", "mixed", "a", "b", "c", "d"])
    for idx in m.cluster_resamples(y, groups, 30, seed=2):
        assert list(groups[idx]).count("mixed") == 2  # the one mixed patient, always drawn
        assert len(idx) == 6


def test_the_cluster_bootstrap_widens_the_interval_of_correlated_images():
    y, proba, groups = _correlated_patients()
    boot = {"n_resamples": 200, "confidence": 0.95, "seed": 3}
    per_image = m.auroc_with_interval(y, proba, **boot)
    cluster = m.auroc_with_interval(y, proba, **boot, groups=groups)
    assert cluster["auroc"] == per_image["auroc"]
    width = {
        name: found["auroc_ci_high"] - found["auroc_ci_low"]
        for name, found in (("image", per_image), ("cluster", cluster))
    }
    # 10 near-identical images per patient: the evidence is 30 patients, not 300 images
    # (about sqrt(10) = 3.2 times wider).
    assert width["cluster"] > 2.0 * width["image"]
    assert m.bootstrap_kind(groups) == "cluster" and m.bootstrap_kind(None) == "image"


def test_one_image_per_patient_is_the_stratified_image_bootstrap():
    y, proba, _ = _correlated_patients(images=1)
    groups = np.array([f"p{i}" for i in range(len(y))])
    assert m.bootstrap_kind(groups) == "image"
    boot = {"n_resamples": 50, "confidence": 0.9, "seed": 4}
    assert m.auroc_with_interval(y, proba, **boot, groups=groups) == m.auroc_with_interval(
        y, proba, **boot
    )


# ------------------------------------------------------------------------------ net benefit
def test_net_benefit_and_treat_all_worked_out_by_hand():
    # Positives score 0.9 and 0.4, negatives 0.6, 0.2, 0.1 (prevalence 0.4).
    is_positive = np.array([1, 1, 0, 0, 0], dtype=bool)
    score = np.array([0.9, 0.4, 0.6, 0.2, 0.1])
    curve = m.decision_curve(is_positive, score, np.array([0.25, 0.5, 0.75]))
    # t = 0.25: TP 2, FP 1 -> 2/5 - 1/5 * (1/3); t = 0.5: TP 1, FP 1 -> 1/5 - 1/5 * 1;
    # t = 0.75: TP 1, FP 0 -> 1/5.
    assert curve["model"].tolist() == pytest.approx([0.4 - 0.2 / 3, 0.0, 0.2])
    # Treat all: 0.4 - 0.6 * t / (1 - t).
    assert curve["treat_all"].tolist() == pytest.approx([0.2, -0.2, 0.4 - 1.8])
    assert curve["treat_none"].tolist() == [0.0, 0.0, 0.0]
    # Helps where it beats both: 0.25 (0.333 > 0.2) and 0.75 (0.2 > 0), not 0.5 (0 = 0).
    assert m.helpful_ranges(curve) == [(0.25, 0.25), (0.75, 0.75)]


def test_helpful_ranges_join_consecutive_thresholds():
    curve = pd.DataFrame(
        {
            "threshold": [0.1, 0.2, 0.3, 0.4, 0.5],
            "model": [0.1, 0.3, 0.3, 0.0, 0.2],
            "treat_all": [0.2, 0.1, 0.0, -0.1, -0.3],
            "treat_none": 0.0,
        }
    )
    assert m.helpful_ranges(curve) == [(0.2, 0.3), (0.5, 0.5)]
    assert m.helpful_ranges(curve.assign(model=-1.0)) == []
