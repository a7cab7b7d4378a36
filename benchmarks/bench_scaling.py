"""``scaling.*``: how the cost of ingestion, the model-input arrays and feature extraction grows.

Each step runs at 1×, 4× and 16× a base number of images (``BASE``: 125 → 2,000 small
mammogram-like 96 px 16-bit TIFFs, 48 px model input; and, for the steps whose name ends in
``_1024x512``, 1024 px TIFFs into a ``[1024, 512]`` model input with ``crop_foreground``: 1 GiB
of arrays at 2,000 images), each in its own subprocess
(``python -m benchmarks.bench_scaling <step> <workdir> <n>``) so that its peak resident
memory is its own (the kernel's high-water mark of the child's address space,
:func:`breast_cancer_pipeline.memory.peak_rss_mb`; ``ru_maxrss`` would carry over the peak of
the process that started it, in a full ``make bench`` the 3.7 GiB of the areas run before):

- ``ingestion``: the ingestion nodes and image store, as ``kedro run --pipelines=ingestion``
  (one worker per core), TIFFs → PNGs and the manifest;
- ``model_input``: :func:`prepare_model_input` on those PNGs, saved by the project's
  :class:`NumpyArraysDataset` (what ``kedro run --pipelines=augmentation`` does);
- ``features``: :func:`extract_features` of the small CNN over the memory-mapped arrays, as
  backbone selection runs it (TensorFlow started and warmed up before the clock starts);
- ``ingestion_1024x512`` and ``model_input_1024x512``: the first two at high resolution, where
  the arrays are larger than the memory a step may hold: ``peak_rss_over_arrays_16x`` is the
  peak RSS of the model-input step over the size of its arrays on disk (goal: below 1).

Figures per step and size: seconds per image relative to 1× (goal: within ±20 %, i.e. the
cost is linear), peak RSS of the step's process and its workers, and the step's own memory
(``step_mb``: peak minus the process's resident memory just before the step, imports
excluded). Goal for memory: the peak at 16× within 20 % of the 1× peak; a step that holds
every image in memory shows as ``step_mb`` growing with the number of images. Goal for time:
``marginal_cost_ratio`` (see :func:`_marginal`) at most 1.2 for every step.
Three interleaved rounds (1×, 4×, 16× of every step per round; one round of 30 and 60
images in a smoke run); each relative figure is its
round's, the figure their median. Writes ``docs/scaling.png`` (not in a smoke run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import harness
from breast_cancer_pipeline import memory

#: Base number of images (``BENCH_SCALING_BASE``, default 125), the multiples measured,
#: source and model-input sides, rounds. At 125 → 2,000 images the fixed costs (imports,
#: the worker pool, building the model) still weigh; ``BENCH_SCALING_BASE=500`` measures the
#: per-image costs better (500 → 8,000; about three times longer).
BASE, FACTORS, SIZE, INPUT_SIZE, ROUNDS = (
    (30, (1, 2), 64, 32, 1)
    if harness.quick()
    else (int(os.environ.get("BENCH_SCALING_BASE", "125")), (1, 4, 16), 96, 48, harness.REPEATS)
)
#: The high-resolution variant: source side, model input ``[height, width]``, resize mode
#: (a smoke run: 128 px into [128, 64]).
LARGE = (
    (128, [128, 64], "crop_foreground")
    if harness.quick()
    else (1024, [1024, 512], "crop_foreground")
)
#: The suffix of the high-resolution steps.
HIGH = "_1024x512"
STEPS = ("ingestion", "model_input", "features", f"ingestion{HIGH}", f"model_input{HIGH}")
DOCS_FIGURE = Path(__file__).resolve().parents[1] / "docs" / "scaling.png"
LARGEST = f"{max(FACTORS)}x"
#: The largest relative change of seconds per image that still counts as linear.
TOLERANCE = 0.2
GOALS: dict[str, harness.Goal] = {
    **{
        f"scaling.{step}.seconds_per_image_ratio_{LARGEST}": ("<=", 1 + TOLERANCE) for step in STEPS
    },
    **{f"scaling.{step}.peak_rss_ratio_{LARGEST}": ("<=", 1 + TOLERANCE) for step in STEPS},
    **{f"scaling.{step}.marginal_cost_ratio": ("<=", 1 + TOLERANCE) for step in STEPS},
    f"scaling.model_input{HIGH}.peak_rss_over_arrays_{LARGEST}": ("<=", 1.0),
}


def _ingestion(workdir: Path, n: int, tag: str = "") -> None:
    from benchmarks.bench_ingestion import ingest
    from tests.params import base_params

    params = base_params(
        "ingestion", label_pattern=r"^(benign|malignant)/", group_pattern=r"(case \d+)/"
    )
    source, out = workdir / f"source{tag}-{n}", workdir / f"ingested{tag}-{n}"
    _, saved, manifest = ingest(source, out, params)
    assert saved["produced"] == n and len(manifest) == n, (saved, len(manifest))
    manifest.to_parquet(workdir / f"manifest{tag}-{n}.parquet")


def _model_input(workdir: Path, n: int, tag: str = "") -> None:
    from breast_cancer_pipeline.datasets import ImageStoreDataset, NumpyArraysDataset
    from breast_cancer_pipeline.pipelines.augmentation.nodes import prepare_model_input
    from tests.params import base_params

    out = workdir / f"ingested{tag}-{n}"
    images = ImageStoreDataset(path=str(out / "images"), journal=str(out / "index.jsonl")).load()
    manifest = pd.read_parquet(workdir / f"manifest{tag}-{n}.parquet")
    size, resize = (LARGE[1], LARGE[2]) if tag else (INPUT_SIZE, "stretch")
    params = base_params("augmentation", image_size=size, resize=resize)
    arrays = prepare_model_input(images, manifest, params)
    NumpyArraysDataset(str(workdir / f"arrays{tag}-{n}")).save(arrays)
    assert sum(len(arrays[f"y_{s}"]) for s in ("train", "val", "test")) == len(manifest)


def _features_warm_up() -> None:
    """TensorFlow's one-off start (import, thread pools, first kernels), not the step's cost."""
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import extract_features

    x = np.zeros((8, INPUT_SIZE, INPUT_SIZE, 1), np.uint8)
    y = np.arange(8, dtype=np.int32) % 2
    extract_features(
        {"x_train": x, "y_train": y, "x_val": x, "y_val": y}, {}, _CANDIDATE, _selection()
    )


_CANDIDATE = {"backbone": "small_cnn", "weights": None}


def _selection() -> dict[str, Any]:
    from tests.params import base_params

    return base_params("backbone_selection", augmented_passes=0)


def _features(workdir: Path, n: int) -> None:
    from breast_cancer_pipeline.datasets import NumpyArraysDataset
    from breast_cancer_pipeline.pipelines.backbone_selection.nodes import extract_features

    arrays = NumpyArraysDataset(str(workdir / f"arrays-{n}")).load()
    features = extract_features(arrays, {}, _CANDIDATE, _selection())
    assert len(features["features_train"]) + len(features["features_val"]) == len(
        arrays["y_train"]
    ) + len(arrays["y_val"])


def _images_of(step: str, workdir: Path, n: int) -> int:
    """Images the step processes (feature extraction: train and validation only)."""
    if step != "features":
        return n
    arrays = workdir / f"arrays-{n}"
    return sum(len(np.load(arrays / f"y_{s}.npy")) for s in ("train", "val"))


def _arrays_mb(step: str, workdir: Path, n: int) -> float:
    """The size on disk of the arrays a model-input step wrote (0 for the other steps)."""
    if not step.startswith("model_input"):
        return 0.0
    folder = workdir / f"arrays{step.removeprefix('model_input')}-{n}"
    return sum(f.stat().st_size for f in folder.glob("*.npy")) / 2**20


def child(step: str, workdir: Path, n: int) -> dict[str, float]:
    """Run one step at one size in this process; its seconds and memory."""
    base, tag = (step.removesuffix(HIGH), HIGH) if step.endswith(HIGH) else (step, "")
    work = {"ingestion": _ingestion, "model_input": _model_input, "features": _features}[base]
    if step == "features":
        _features_warm_up()
    before = memory.rss_mb()
    started = time.perf_counter()
    work(workdir, n, *([tag] if tag else []))
    seconds = time.perf_counter() - started
    workers = memory.children_peak_rss_mb()
    peak = max(memory.peak_rss_mb(), workers)
    return {
        "seconds": seconds,
        "images": _images_of(step, workdir, n),
        "rss_before_mb": before,
        "peak_rss_mb": peak,
        "step_mb": max(peak - before, 0.0),
        "workers_peak_rss_mb": workers,
        "arrays_mb": _arrays_mb(step, workdir, n),
    }


def _run_child(step: str, workdir: Path, n: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_scaling", step, str(workdir), str(n)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if done.returncode != 0:
        raise RuntimeError(f"scaling step {step} at {n} images failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _generate(workdir: Path) -> float:
    """TIFFs for the largest size once; each size's source links the first ``n`` of them."""
    from benchmarks.bench_ingestion import generate

    started = time.perf_counter()
    largest = BASE * max(FACTORS)
    for tag, side in (("", SIZE), (HIGH, LARGE[0])):
        pool = workdir / f"pool{tag}"
        generate(pool, largest, side, grain=40.0)
        files = sorted(
            pool.rglob("*.tif"),
            key=lambda p: int(p.stem.split("_")[1]) + 4 * int(p.parent.name.split()[1]),
        )
        for factor in FACTORS:
            n = BASE * factor
            for path in files[:n]:
                target = workdir / f"source{tag}-{n}" / path.relative_to(pool)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)
    return time.perf_counter() - started


def _round(workdir: Path) -> dict[str, dict[str, float]]:
    """Every step at every size, the outputs of the last round removed first."""
    for pattern in ("ingested*-*", "arrays*-*"):
        for path in workdir.glob(pattern):
            shutil.rmtree(path)
    measured = {}
    for factor in FACTORS:
        for step in STEPS:
            measured[f"{step}.{factor}x"] = _run_child(step, workdir, BASE * factor)
    return measured


def _marginal(rounds: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Cost and memory of each added image, free of the fixed costs the 1× run carries.

    ``marginal_cost_ratio``: seconds per added image from the middle to the largest size
    over those from the smallest to the middle size (1.0: linear). ``rss_mb_per_1000_images``:
    how much the peak grows per 1,000 images more (0: flat).
    """
    low, mid, high = (f"{f}x" for f in FACTORS[:1] + FACTORS[-2:])
    figures: dict[str, Any] = {}
    for step in STEPS:
        ratios, growth = [], []
        for r in rounds:
            a, b, c = r[f"{step}.{low}"], r[f"{step}.{mid}"], r[f"{step}.{high}"]
            upper = (c["seconds"] - b["seconds"]) / (c["images"] - b["images"])
            lower = (b["seconds"] - a["seconds"]) / max(b["images"] - a["images"], 1)
            if lower > 0:  # at tiny sizes the middle run can be as fast as the smallest
                ratios.append(upper / lower)
            added = c["images"] - a["images"]
            growth.append(1000 * (c["peak_rss_mb"] - a["peak_rss_mb"]) / added)
        if ratios:
            figures[f"scaling.{step}.marginal_cost_ratio"] = harness.summary(ratios, 3)
        figures[f"scaling.{step}.rss_mb_per_1000_images"] = harness.summary(growth, 2)
    return figures


def _plot(figures: dict[str, Any], path: Path) -> None:
    from breast_cancer_pipeline.plotting import figure_png, pyplot

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    sizes = [BASE * f for f in FACTORS]
    for step in STEPS:
        ratios = [figures[f"scaling.{step}.seconds_per_image_ratio_{f}x"] for f in FACTORS]
        peaks = [figures[f"scaling.{step}.peak_rss_mb_{f}x"] for f in FACTORS]
        left.plot(sizes, [r["median"] for r in ratios], marker="o", label=step)
        right.plot(sizes, [p["median"] for p in peaks], marker="o", label=step)
    arrays = [figures[f"scaling.model_input{HIGH}.arrays_mb_{f}x"]["median"] for f in FACTORS]
    right.plot(sizes, arrays, ls="--", c="0.5", label=f"model_input{HIGH}: arrays on disk")
    left.axhspan(1 - TOLERANCE, 1 + TOLERANCE, color="0.9", label="±20 %")
    left.set(xscale="log", xlabel="images", ylabel="seconds per image / 1× figure")
    left.set_title("Time per image (median of rounds)")
    right.set(xscale="log", yscale="log", xlabel="images", ylabel="MiB")
    right.set_title("Peak RSS of the step's process")
    right.set_ylim(50, 5000)  # room above the lines for the legend
    for axes in (left, right):
        axes.minorticks_off()
        axes.set_xticks(sizes, [str(s) for s in sizes])
    left.legend(fontsize=8)
    right.legend(fontsize=7, ncols=2, loc="upper left")
    fig.tight_layout()
    path.write_bytes(figure_png(fig, 100))


def run(workdir: Path) -> dict[str, Any]:
    generate_seconds = _generate(workdir)
    rounds = harness.interleave({"round": lambda: _round(workdir)}, ROUNDS)["round"]
    figures: dict[str, Any] = {}
    for step in STEPS:
        for factor in FACTORS:
            per = [r[f"{step}.{factor}x"] for r in rounds]
            base = [r[f"{step}.1x"] for r in rounds]
            spi = [m["seconds"] / m["images"] for m in per]
            spi_base = [m["seconds"] / m["images"] for m in base]
            prefix, tag = f"scaling.{step}", f"{factor}x"
            figures[f"{prefix}.ms_per_image_{tag}"] = harness.summary([1000 * s for s in spi], 3)
            figures[f"{prefix}.seconds_per_image_ratio_{tag}"] = harness.summary(
                harness.ratios(spi, spi_base), 3
            )
            for key in ("peak_rss_mb", "step_mb", "rss_before_mb"):
                figures[f"{prefix}.{key}_{tag}"] = harness.summary([m[key] for m in per], 1)
            if step.startswith("model_input"):
                figures[f"{prefix}.arrays_mb_{tag}"] = harness.summary(
                    [m["arrays_mb"] for m in per], 1
                )
                figures[f"{prefix}.peak_rss_over_arrays_{tag}"] = harness.summary(
                    harness.ratios([m["peak_rss_mb"] for m in per], [m["arrays_mb"] for m in per]),
                    3,
                )
            figures[f"{prefix}.peak_rss_ratio_{tag}"] = harness.summary(
                harness.ratios([m["peak_rss_mb"] for m in per], [m["peak_rss_mb"] for m in base]),
                3,
            )
            figures[f"{prefix}.images_{tag}"] = per[0]["images"]
    figures.update(_marginal(rounds))
    if not harness.quick():
        _plot(figures, DOCS_FIGURE)
    _plot(figures, workdir / "scaling.png")  # the plot's code runs in smoke runs too
    return {
        **figures,
        "scaling.sizes": [BASE * f for f in FACTORS],
        "scaling.source": (
            f"{SIZE}x{SIZE} uint16 TIFF; model input {INPUT_SIZE} px; small_cnn. {HIGH[1:]} "
            f"steps: {LARGE[0]}x{LARGE[0]} uint16 TIFF; model input {LARGE[1]}, {LARGE[2]}"
        ),
        "scaling.generate_seconds": round(generate_seconds, 1),
    }


if __name__ == "__main__":
    step_name, directory, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(child(step_name, directory, count)))
