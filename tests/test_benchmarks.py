"""The benchmark harness on fake measurements (no real benchmark runs here)."""

from __future__ import annotations

import http.server
import json
import math
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import harness, run


def test_interleave_runs_the_measures_in_rounds():
    calls = []
    measures = {name: (lambda name=name: calls.append(name) or len(calls)) for name in "AB"}
    results = harness.interleave(measures, repeats=3)
    assert calls == ["A", "B", "A", "B", "A", "B"]
    assert results == {"A": [1, 3, 5], "B": [2, 4, 6]}


def test_summary_ratios_agreement_and_headline():
    figure = harness.summary([3.0, 1.0, 2.0, 10.0], digits=2)
    assert figure == {"median": 2.5, "min": 1.0, "max": 10.0, "repeats": [3.0, 1.0, 2.0, 10.0]}
    # Each round's ratio, not the ratio of medians: one slow round of both cancels out.
    assert harness.ratios([2.0, 20.0, 3.0], [1.0, 10.0, 3.0]) == [2.0, 2.0, 1.0]
    assert harness.headline(harness.summary(harness.ratios([2.0, 20.0, 3.0], [1, 10, 3]))) == 2
    assert harness.agreement([True, False, True]) == {"all": False, "repeats": [True, False, True]}
    assert harness.headline({"all": True, "repeats": [True]}) is True
    assert harness.headline("small_cnn") == "small_cnn"
    with pytest.raises(ValueError, match="2 numerators but 1 denominators"):
        harness.ratios([1, 2], [1])
    with pytest.raises(ValueError, match="no values"):
        harness.summary([])


def test_goals_are_reported_met_or_missed_with_the_margin():
    figures = {
        "a.ratio": harness.summary([0.8, 0.85, 0.95]),
        "a.latency": harness.summary([1.1, 1.2, 1.4]),
        "a.same": harness.agreement([True, True, False]),
    }
    goals = {
        "a.ratio": (">=", 0.9),
        "a.latency": ("<=", 1.3),
        "a.same": ("==", True),
        "a.not_measured": (">=", 1),
    }
    report = harness.check_goals(figures, goals)
    assert report == {
        "a.ratio": {"goal": ">= 0.9", "value": 0.85, "met": False, "margin": -0.056},
        "a.latency": {"goal": "<= 1.3", "value": 1.2, "met": True, "margin": 0.077},
        "a.same": {"goal": "== True", "value": False, "met": False, "margin": None},
    }
    with pytest.raises(ValueError, match="unknown comparison '>'"):
        harness.check_goals(figures, {"a.ratio": (">", 1)})


def test_reference_loop_times_fixed_work_five_times():
    reference = harness.reference_loop(repeats=5, scale=0.005)
    cpu = reference["cpu_seconds"]
    assert len(cpu["repeats"]) == 5
    assert 0 < cpu["min"] <= cpu["median"] <= cpu["max"]
    assert reference["work"] == harness.REFERENCE_WORK and reference["scale"] == 0.005
    # The same work every time: same result.
    assert harness.reference_work(0.005) == harness.reference_work(0.005)


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("0", False), ("", False)])
def test_quick_mode_is_read_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("BENCH_QUICK", value)
    assert harness.quick() is expected


def _area(figures, goals=None, error=None):
    def measure(workdir):
        assert workdir.is_dir()
        if error is not None:
            raise error
        return figures

    return SimpleNamespace(run=measure, GOALS=goals or {})


def test_a_missed_goal_is_reported_not_fatal(tmp_path, capsys):
    output = tmp_path / "latest.json"
    slow = _area({"a.ratio": harness.summary([0.5, 0.6, 0.7])}, {"a.ratio": (">=", 0.9)})
    assert run.run_areas({"a": slow}, output, reference_scale=0.01) == 0
    results = json.loads(output.read_text())
    assert results["goals"]["a.ratio"]["met"] is False
    assert results["figures"]["a.ratio"]["repeats"] == [0.5, 0.6, 0.7]
    assert "a.bench_seconds" in results["figures"]
    assert set(results["machine"]) >= {"cpu_model", "cores", "memory_gib", "load_average"}
    assert len(results["reference"]["cpu_seconds"]["repeats"]) == 5
    assert results["areas"]["a"]["figures"] == ["a.bench_seconds", "a.ratio"]
    assert results["areas"]["a"]["reference_cpu_seconds"] > 0
    assert results["updated"].endswith("Z") and results["failed"] == {}
    assert "goal a.ratio >= 0.9: 0.6 — MISSED by 33.3%" in capsys.readouterr().out


def test_a_failing_area_fails_the_run_and_the_others_are_kept(tmp_path):
    output = tmp_path / "latest.json"
    first = {
        "a": _area({"a.x": 1, "other.y": 2}, {"other.y": (">=", 1)}),
        "b": _area({"b.x": 1}),
    }
    assert run.run_areas(first, output, reference_scale=0.01) == 0
    # A rerun of a: its figures of the last run go, even those named after another subject.
    second = {
        "a": _area({"a.z": 3}),
        "b": _area({}, error=AssertionError("wrong result: 3 rows, expected 4")),
    }
    assert run.run_areas(second, output, reference_scale=0.01) == 1
    results = json.loads(output.read_text())
    assert results["failed"] == {"b": "AssertionError: wrong result: 3 rows, expected 4"}
    assert {k for k in results["figures"] if not k.endswith(".bench_seconds")} == {"a.z", "b.x"}
    assert results["goals"] == {}


def test_each_finished_area_is_written_before_the_next_starts(tmp_path):
    output = tmp_path / "latest.json"
    seen = {}

    def second(workdir):
        seen.update(json.loads(output.read_text())["figures"])
        raise KeyboardInterrupt  # the run stopped here, as by a session's end

    areas = {"a": _area({"a.x": 1}), "b": SimpleNamespace(run=second, GOALS={})}
    with pytest.raises(KeyboardInterrupt):
        run.run_areas(areas, output, reference_scale=0.01)
    assert seen["a.x"] == 1  # a's figures were on disk while b ran
    assert json.loads(output.read_text())["figures"]["a.x"] == 1


class _ClosingHandler(http.server.BaseHTTPRequestHandler):
    """Answers a POST as HTTP/1.1 (kept alive), then closes, as a server at its idle timeout."""

    protocol_version = "HTTP/1.1"
    connections: list[tuple[str, int]] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.connections.append(self.client_address)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_the_serving_client_reopens_a_connection_the_server_closed():
    from benchmarks.bench_serving import _Client

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ClosingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = _Client(server.server_address[1], timeout=10)
        answers = [client.post("/invocations", f"{i}".encode()) for i in range(3)]
        client.close()
    finally:
        server.shutdown()
        server.server_close()
    assert answers == [b"0", b"1", b"2"]
    assert len(set(_ClosingHandler.connections)) == 3  # one connection per request here


@pytest.fixture
def quick_module(monkeypatch):
    """A benchmark module imported in smoke mode (its sizes are read at import), then restored."""
    import importlib

    monkeypatch.setenv("BENCH_QUICK", "1")
    loaded = []

    def load(name):
        module = importlib.reload(importlib.import_module(f"benchmarks.{name}"))
        loaded.append(module)
        return module

    yield load
    monkeypatch.delenv("BENCH_QUICK")
    for module in loaded:
        importlib.reload(module)


def test_rank_correlation_is_kendall_tau_of_the_two_ways_aurocs(quick_module):
    bench = quick_module("bench_backbone_selection")
    a, b = bench.CANDIDATES

    def records(x, y):
        return {a: {"val_auroc_mean": x}, b: {"val_auroc_mean": y}}

    assert bench._kendall_tau(records(0.6, 0.8), records(0.7, 0.9)) == 1.0
    assert bench._kendall_tau(records(0.6, 0.8), records(0.9, 0.7)) == -1.0
    assert bench._kendall_tau(records(0.5, 0.5), records(0.9, 0.7)) == 0.0  # a tie: no order


@pytest.mark.slow
def test_backbone_selection_smoke_run_uses_pretrained_local_weights(quick_module, tmp_path):
    bench = quick_module("bench_backbone_selection")
    figures = bench.run(tmp_path)  # asserts that each extractor loaded its weights file
    for name in bench.CANDIDATES:
        assert (tmp_path / f"{name}_pretrained.weights.h5").stat().st_size > 0
    assert -1.0 <= figures["backbone_selection.rank_correlation"]["median"] <= 1.0
    assert figures["backbone_selection.cached_speedup_1_epochs"]["median"] > 0
    assert len(figures["backbone_selection.same_winner"]["repeats"]) == bench.ROUNDS


@pytest.mark.slow
def test_scaling_smoke_run_measures_every_step_at_every_size(quick_module, tmp_path):
    bench = quick_module("bench_scaling")
    docs_before = bench.DOCS_FIGURE.stat().st_mtime_ns if bench.DOCS_FIGURE.exists() else None
    figures = bench.run(tmp_path)
    for step in bench.STEPS:
        assert figures[f"scaling.{step}.seconds_per_image_ratio_1x"]["median"] == 1.0
        for factor in bench.FACTORS:
            assert figures[f"scaling.{step}.peak_rss_mb_{factor}x"]["median"] > 50
            assert figures[f"scaling.{step}.ms_per_image_{factor}x"]["median"] > 0
    assert figures["scaling.ingestion.images_2x"] == 2 * bench.BASE
    # The high-resolution arrays (128 x 64 in a smoke run), their size on disk beside the peak.
    arrays_mb = figures[f"scaling.model_input{bench.HIGH}.arrays_mb_2x"]["median"]
    assert arrays_mb == pytest.approx(2 * bench.BASE * 128 * 64 / 2**20, rel=0.1)
    assert f"scaling.model_input{bench.HIGH}.peak_rss_over_arrays_2x" in figures
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    after = bench.DOCS_FIGURE.stat().st_mtime_ns if bench.DOCS_FIGURE.exists() else None
    assert after == docs_before  # a smoke run leaves the docs' figure alone


def _default_metrics(single_ci, ece_before, ece_after):
    """The blocks of the default run's ``metrics.json`` the evaluation benchmark reads."""
    return {
        "auroc": 0.82,
        "auroc_ci_low": single_ci[0],
        "auroc_ci_high": single_ci[1],
        "external": {"auroc": 0.70},
        "calibration": _calibration(ece_before, ece_after),
    }


def _calibration(ece_before, ece_after):
    return {
        "temperature": 1.2,
        "n_val": 70,
        "ece_top_label_before": ece_before,
        "ece_top_label_after": ece_after,
        "log_loss_before": 1.0,
        "log_loss_after": 0.9,
    }


def _cv_metrics(pooled_ci):
    """The blocks of the cross-validation run's ``metrics.json`` the benchmark reads."""
    return {
        "calibration": _calibration(0.2, 0.15),
        "tta": {"auroc_gain": 0.01},
        "cv": {
            "auroc_pooled": 0.8,
            "auroc_pooled_ci_low": pooled_ci[0],
            "auroc_pooled_ci_high": pooled_ci[1],
            "auroc_ci_low": 0.6,
            "auroc_ci_high": 1.0,
            "ensemble": {"test_auroc": 0.86, "single_test_auroc": 0.82},
        },
    }


def test_evaluation_figures_are_read_off_each_run_and_summarised_over_seeds():
    from benchmarks import bench_evaluation as bench

    runs = [
        bench.figures_of(_default_metrics((0.7, 0.9), 0.2, 0.1), _cv_metrics((0.75, 0.85))),
        bench.figures_of(_default_metrics((0.6, 0.9), 0.1, 0.12), _cv_metrics((0.70, 0.80))),
    ]
    assert runs[0]["cv_ci_width_ratio"] == pytest.approx(0.5)  # 0.10 wide over 0.20 wide
    assert runs[0]["cv_fold_ci_width_ratio"] == pytest.approx(2.0)
    assert runs[0]["calibration_ece_ratio"] == pytest.approx(0.5)
    assert runs[0]["cv_calibration_ece_ratio"] == pytest.approx(0.75)
    assert runs[0]["cv_calibration_log_loss_ratio"] == pytest.approx(0.9)
    assert runs[0]["ensemble_auroc_gain"] == pytest.approx(0.04)
    assert runs[0]["external_auroc_drop"] == pytest.approx(0.12)
    assert runs[0]["hard_single_auroc"] == 0.82
    assert math.isnan(runs[0]["calibration_temperature_ci_low"])  # an older metrics.json
    cv_with_interval = _cv_metrics((0.75, 0.85))
    cv_with_interval["calibration"].update(temperature_ci_low=0.9, temperature_ci_high=1.4)
    with_interval = bench.figures_of(_default_metrics((0.7, 0.9), 0.2, 0.1), cv_with_interval)
    assert with_interval["cv_calibration_temperature_ci_high"] == 1.4
    figures = bench.summarise(runs)
    ratio = figures["evaluation.cv_ci_width_ratio"]
    assert ratio == {"mean": 0.4167, "min": 0.3333, "max": 0.5, "seeds": [0.5, 0.3333]}
    # A flag holds only if it held for every seed; goals read the mean, or the flag.
    assert figures["evaluation.calibration_ece_after_le_before"] == {
        "all": False,
        "repeats": [True, False],
    }
    assert harness.headline(figures["evaluation.calibration_ece_ratio"]) == pytest.approx(0.85)
    with pytest.raises(KeyError):  # a run without the benchmark's settings lacks a block
        bench.figures_of({"auroc": 0.9}, {})


def test_evaluation_holds_out_more_images_through_the_demo_configuration(tmp_path):
    """The split ratios reach the copy's demo parameters (``--params`` cannot carry a list)."""
    from benchmarks import bench_evaluation as bench
    from benchmarks._project import copy_project
    from tests.params import load_parameters

    project = copy_project(tmp_path / "project")
    bench.held_out_more(project, bench.SPLIT_RATIOS)
    split = load_parameters(project, "demo")["ingestion"]["split"]
    assert split["ratios"] == list(bench.SPLIT_RATIOS)
    assert split["seed"] == 42  # conf/base's other split settings kept
    assert sum(bench.SPLIT_RATIOS) == pytest.approx(1.0)
    # The demo's own ingestion settings (its layout's column patterns) are kept beside them.
    demo = load_parameters(project, "demo")["ingestion"]["column_patterns"]
    assert set(demo) >= {"group", "laterality", "view"}


def test_fresh_calibration_undoes_the_served_temperature_and_reads_the_class_folder():
    """ECE and log loss before the temperature are those of the probabilities it rescaled."""
    import pandas as pd

    from benchmarks import bench_evaluation as bench
    from breast_cancer_pipeline import metrics as m
    from breast_cancer_pipeline.evaluation.calibration import apply_temperature

    rng = np.random.default_rng(0)
    raw = rng.dirichlet([1.0, 1.0, 1.0], size=60)
    y = rng.integers(0, 3, size=60)
    served = apply_temperature(raw, 1.5)
    names = ["benign", "malignant", "normal"]
    answers = pd.DataFrame({"path": [f"{names[i]}/image ({k}).png" for k, i in enumerate(y)]})
    answers["label"] = "ignored"  # the predicted class: not the truth
    for i, name in enumerate(names):
        answers[f"p_{name}"] = served[:, i]
    answers["error"] = None
    change = bench.calibration_change(answers, 1.5, 10)
    assert change["n"] == 60
    assert change["log_loss_before"] == pytest.approx(m.log_loss(y, raw), rel=1e-5)
    assert change["log_loss_after"] == pytest.approx(m.log_loss(y, served), rel=1e-5)
    correct, confidence = raw.argmax(axis=1) == y, raw.max(axis=1)
    assert change["ece_before"] == pytest.approx(m.binned_ece(correct, confidence, 10), abs=1e-6)
    figures = bench._fresh_figures(change, "fresh")
    assert figures["fresh_ece_ratio"] == pytest.approx(change["ece_after"] / change["ece_before"])
    assert figures["fresh_ece_after_le_before"] == (change["ece_after"] <= change["ece_before"])
    answers.loc[3, "error"] = "cannot decode"
    with pytest.raises(RuntimeError, match="1 fresh image"):
        bench.calibration_change(answers, 1.5, 10)


def test_fresh_images_are_the_demo_images_without_their_masks(tmp_path, monkeypatch):
    from benchmarks import bench_evaluation as bench

    def demo_data(project, log, *args):
        assert "--pipelines=demo_data" in args and "demo_data.seed=1000" in args[1]
        for name in ("benign/benign (1).png", "benign/benign (1)_mask.png", "normal/n (2).tif"):
            (project / "data/01_raw/demo" / name).parent.mkdir(parents=True, exist_ok=True)
            (project / "data/01_raw/demo" / name).write_bytes(b"x")

    monkeypatch.setattr(bench, "_kedro", demo_data)
    fresh = bench.fresh_images(tmp_path)
    assert sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*.*")) == [
        "benign/benign (1).png",
        "normal/n (2).tif",
    ]
    assert not (tmp_path / "fresh").exists()  # the generating copy is removed


def test_levels_figures_are_read_off_metrics_and_the_per_image_interval():
    import pandas as pd

    from benchmarks import bench_levels as bench

    metrics = {
        "auroc": 0.80,
        "auroc_ci_low": 0.60,
        "auroc_ci_high": 0.90,
        "levels": {
            "patient": {"auroc": 0.86, "auroc_ci_low": 0.55, "auroc_ci_high": 0.95, "n": 12},
            "breast": {"auroc": 0.83, "auroc_ci_low": 0.6, "auroc_ci_high": 0.95, "n": 24},
        },
    }
    figures = bench.figures_of(metrics, image_ci_width=0.15)
    assert figures["patient_auroc_gain"] == pytest.approx(0.06)
    assert figures["breast_auroc_gain"] == pytest.approx(0.03)
    assert figures["cluster_ci_width_ratio"] == pytest.approx(0.30 / 0.15)
    assert figures["patient_ci_width"] == pytest.approx(0.40)
    summary = bench.summarise([figures, {**figures, "patient_auroc_gain": 0.02}])
    assert summary["levels.patient_auroc_gain"]["mean"] == pytest.approx(0.04)
    with pytest.raises(KeyError):  # a run without levels
        bench.figures_of({"auroc": 0.8, "auroc_ci_low": 0.7, "auroc_ci_high": 0.9}, 0.1)
    # The per-image width: separable scores give a zero-width interval at AUROC 1.
    predictions = pd.DataFrame(
        {"label": ["a", "b"] * 10, "p_a": [0.9, 0.1] * 10, "p_b": [0.1, 0.9] * 10}
    )
    boot = {"n_resamples": 20, "confidence": 0.95, "seed": 0}
    assert bench.per_image_interval(predictions, ["a", "b"], boot) == 0.0


def test_the_serving_peer_takes_the_pixel_tensor_and_answers_keras_probabilities(
    mlflow_store, monkeypatch
):
    """The peer of serving.peer_latency_ratio: the plain Keras model on MLflow's scoring app."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    from benchmarks import bench_serving as bench
    from tests.serving._served import asgi_request, tiny_serving_model

    model = tiny_serving_model().model
    one = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 1), dtype=np.uint8)
    bench._log_peer(model, one)
    app = scoring_server.init(mlflow.pyfunc.load_model(f"models:/{bench.PEER}/1"))
    monkeypatch.delenv("MLFLOW_IS_IN_SERVING_ENVIRONMENT", raising=False)
    headers = {"content-type": "application/json"}
    status, answer = asgi_request(app, bench.peer_body(one), headers=headers)
    assert status == 200, answer
    expected = model.predict(one, verbose=0)
    np.testing.assert_allclose(bench.peer_probabilities(answer), expected, atol=1e-5)
    onnx = bench.inference_params("onnxruntime")
    assert onnx["serving"] == {**bench.INFERENCE["serving"], "runtime": "onnxruntime"}
    assert bench.INFERENCE["serving"]["runtime"] == "tensorflow"


def test_resolution_figures_are_gains_per_seed_and_skipped_variants_say_why():
    from benchmarks import bench_resolution as bench

    def seed(mask, resize, tiles=None):
        microcalc = {
            "resize": {"auroc": resize, "external_auroc": resize - 0.1, "seconds": 60.0},
            "tiles_mask": {"auroc": mask, "external_auroc": float("nan"), "seconds": 70.0},
            "tiles": {"skipped": "no tiles"}
            if tiles is None
            else {"auroc": tiles, "external_auroc": tiles - 0.1},
        }
        return {"microcalc": microcalc, "histology": {"resize": {"skipped": "stain"}}}

    figures = bench.figures_of([seed(0.9, 0.6), seed(0.8, 0.7, tiles=0.75), seed(0.95, 0.55)])
    gain = figures["resolution.tile_auroc_gain"]  # mask-labelled tiles minus resized
    assert gain["repeats"] == [0.3, 0.1, 0.4] and gain["median"] == 0.3
    # Each gain on the external site too, where both sides have a finite external AUROC.
    assert figures["resolution.image_label_tile_auroc_gain_external"]["repeats"] == [0.05]
    assert "resolution.tile_auroc_gain_external" not in figures  # tiles_mask's are NaN
    assert figures["resolution.mask_label_auroc_gain"]["repeats"] == [0.05]  # one seed had both
    assert figures["resolution.image_label_tile_auroc_gain"]["repeats"] == [0.05]
    assert figures["resolution.microcalc.tiles_mask.auroc"]["median"] == 0.9
    assert "resolution.microcalc.tiles_mask.external_auroc" not in figures  # never defined
    assert figures["resolution.microcalc.resize.seconds"]["repeats"] == [60.0] * 3
    assert figures["resolution.skipped"] == {
        "microcalc.tiles": "no tiles",
        "histology.resize": "stain",
    }
    assert "resolution.histology_tile_auroc_gain" not in figures
    report = harness.check_goals(figures, bench.GOALS)
    assert report["resolution.tile_auroc_gain"]["met"] is True


def test_resolution_runs_share_a_training_budget_and_use_the_issue_parameter_names():
    from benchmarks import bench_resolution as bench
    from breast_cancer_pipeline.tiles import TileSpec

    common = bench.common_settings("microcalc", 2, masks=True)
    assert common["ingestion"]["mask_pattern"] == "{stem}_mask.png"
    assert common["demo_data"]["seed"] == common["finetune"]["seed"] == 2
    assert bench.common_settings("histology", 1, masks=False)["ingestion"]["color_mode"] == "rgb"
    resized = bench.variant_settings("microcalc", "resize", common)
    tiled = bench.variant_settings("microcalc", "tiles_mask", common)
    per_image = bench.tiles_per_image("microcalc")
    assert resized["finetune"]["phase2"]["epochs"] == bench.EPOCHS
    # As many pixels: the resized images' EPOCHS x RESIZED^2 over an image's tiles' pixels.
    pixels = per_image * bench.TILE_SIZE**2
    assert tiled["finetune"]["phase2"]["epochs"] == round(bench.EPOCHS * bench.RESIZED**2 / pixels)
    assert TileSpec.from_params(tiled["augmentation"]["tiles"]).labels == "mask"
    # The aggregation variants that reuse a model differ from it only in the aggregation.
    for name, trained in bench.REUSE.items():
        spec = dict(bench.VARIANTS["microcalc"][name]["augmentation"]["tiles"])
        model = dict(bench.VARIANTS["microcalc"][trained]["augmentation"]["tiles"])
        assert spec.pop("aggregation") != model.pop("aggregation") and spec == model
    aggregations = {
        bench.VARIANTS["microcalc"][name]["augmentation"]["tiles"]["aggregation"]
        for name in bench.VARIANTS["microcalc"]
        if name.startswith(("agg_", "tiles"))
    }
    assert aggregations == {"mean", "max", "top_k_mean", "noisy_or", "attention"}
    stains = [v.get("augmentation", {}).get("stain") for v in bench.VARIANTS["histology"].values()]
    assert {(s or {}).get("normalize") for s in stains} == {None, "reinhard", "macenko"}


def test_resolution_skips_a_variant_whose_feature_this_checkout_lacks(tmp_path, monkeypatch):
    from benchmarks import bench_resolution as bench
    from benchmarks._project import copy_project
    from tests.params import load_parameters

    project = copy_project(tmp_path / "project")
    demo = load_parameters(project, "demo")
    common = bench.common_settings("histology", 1, masks=False)
    bench.configure(project, common, demo)
    assert bench.missing_feature(project, "resize") is None  # the common settings are valid
    bench.configure(project, bench.merge(common, {"augmentation": {"hue_magic": 1}}), demo)
    reason = bench.missing_feature(project, "resize")
    assert "augmentation.hue_magic: unknown key" in reason
    monkeypatch.setattr(bench, "MODULES", (("agg_x", "breast_cancer_pipeline.no_such", "X"),))
    assert bench.missing_feature(project, "agg_x") == (
        "X is not in this checkout (no module breast_cancer_pipeline.no_such)"
    )
