"""Is mixed precision worth it on this GPU? Training and inference images/s, float32 vs mixed.

``python -m benchmarks.gpu_check`` builds the classifier of the selected backbone (from
``data/07_model_output/selected_backbone.json``, else ``--backbone``) at the configured image
size, with random weights (speed does not depend on them) and the whole base trainable, as
fine-tuning's phase 2 trains it; then times ``fit`` and ``predict`` on random images under each
policy, in interleaved rounds (float32, mixed, float32, mixed, ...; the median of each is
printed). ``mixed_bfloat16`` is measured too on GPUs of compute capability ≥ 8.

It also says which policy ``finetune.mixed_precision: auto`` picks here. On a machine without
a GPU it says so and exits 0 (``--allow-cpu`` measures on the CPU anyway, to try the script).
Results are printed and written to ``benchmarks/results/gpu_check.json``. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness
from tests.params import base_params

PROJECT = Path(__file__).resolve().parents[1]
SELECTED = PROJECT / "data" / "07_model_output" / "selected_backbone.json"
OUTPUT = Path(__file__).parent / "results" / "gpu_check.json"


def _arguments(argv: list[str]) -> argparse.Namespace:
    selected = json.loads(SELECTED.read_text())["backbone"] if SELECTED.is_file() else None
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    parser.add_argument("--backbone", default=selected or "efficientnet_b0")
    parser.add_argument("--env", default=None, help="configuration environment (e.g. demo)")
    parser.add_argument("--image-size", type=int, default=None, help="default: augmentation's")
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--batch-size", type=int, default=None, help="default: finetune's")
    parser.add_argument("--steps", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--repeats", type=int, default=harness.REPEATS)
    parser.add_argument("--allow-cpu", action="store_true", help="measure without a GPU too")
    args = parser.parse_args(argv)
    if args.image_size is None:
        args.image_size = base_params("augmentation", args.env)["image_size"]
    if args.batch_size is None:
        args.batch_size = base_params("finetune", args.env)["batch_size"] or 32
    return args


def _gpus() -> list[dict[str, Any]]:
    import tensorflow as tf

    return [
        {"name": gpu.name, **tf.config.experimental.get_device_details(gpu)}
        for gpu in tf.config.list_physical_devices("GPU")
    ]


def _measurer(policy: str, args: argparse.Namespace) -> dict[str, Any]:
    """Warmed-up ``() -> images/s`` of training and of inference for a model under ``policy``."""
    from breast_cancer_pipeline.modeling import build_classifier
    from breast_cancer_pipeline.training.phases import compile_classifier, unfreeze
    from breast_cancer_pipeline.training.precision import dtype_policy

    n = args.batch_size * args.steps
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, args.image_size, args.image_size, args.channels), np.uint8)
    y = np.eye(3, dtype=np.float32)[np.arange(n) % 3]
    with dtype_policy(policy):
        model = build_classifier(
            args.backbone, 3, args.image_size, args.channels, None, {"dropout": 0.2}
        )
        unfreeze(model, fraction=1.0, keep_batchnorm_frozen=False)
        compile_classifier(model, 1e-4, 3, "auto")
    assert model.output.dtype == "float32", model.output.dtype
    model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)  # warm-up: tracing
    model.predict(x, batch_size=args.batch_size, verbose=0)

    def train() -> float:
        started = time.perf_counter()
        history = model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all(), history.history
        return n / (time.perf_counter() - started)

    def predict() -> float:
        started = time.perf_counter()
        model.predict(x, batch_size=args.batch_size, verbose=0)
        return n / (time.perf_counter() - started)

    return {"train": train, "predict": predict}


def main(argv: list[str]) -> int:
    """Measure and print; 0 also when there is no GPU to measure."""
    args = _arguments(argv)
    gpus = _gpus()
    if not gpus and not args.allow_cpu:
        print("No GPU visible to TensorFlow: nothing to measure (finetune.mixed_precision: auto")
        print("keeps float32 here). On a GPU machine: make install EXTRAS=gpu, then rerun.")
        return 0
    from breast_cancer_pipeline.training.precision import mixed_precision_policy

    capability = min((g.get("compute_capability") or (0, 0) for g in gpus), default=(0, 0))
    policies = ["float32", "mixed_float16"] + (["mixed_bfloat16"] if capability >= (8, 0) else [])
    measurers = {policy: _measurer(policy, args) for policy in policies}
    rounds = harness.interleave(
        {f"{p}.{kind}": fn for p, fns in measurers.items() for kind, fn in fns.items()},
        repeats=args.repeats,
    )
    figures = {name: harness.summary(values, 1) for name, values in rounds.items()}
    for policy in policies[1:]:
        for kind in ("train", "predict"):
            speedup = harness.ratios(rounds[f"{policy}.{kind}"], rounds[f"float32.{kind}"])
            figures[f"{policy}.{kind}_speedup"] = harness.summary(speedup, 2)
    result = {
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": harness.machine(),
        "gpus": [{k: str(v) for k, v in g.items()} for g in gpus],
        "auto_policy": mixed_precision_policy("auto"),
        "model": f"{args.backbone} {args.image_size} px x{args.channels}, batch {args.batch_size}",
        "images_per_second": figures,
    }
    print(json.dumps(result, indent=2))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
