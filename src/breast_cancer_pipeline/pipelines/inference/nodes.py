"""Inference: image files in, class probabilities, label and thresholded call out.

The same node scores a folder on disk (the batch command) and the rows of a request to the
MLflow endpoint: images are decoded and resized by the functions ingestion and training use
(:mod:`breast_cancer_pipeline.imaging`); the model holds all other preprocessing. A row that
cannot be decoded gets an ``error`` and no probabilities; the other rows are scored. Every
scored row gets the out-of-distribution score of the packaged model and whether it is within
its threshold (``inference.serving.ood``: flagged, or refused with an ``error``). A request
that breaks the ``inference.serving`` limits is refused whole (see
:mod:`breast_cancer_pipeline.serving.guard`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.decode_budget import shared_budget
from breast_cancer_pipeline.imaging import ImageDecodeError, decode_image, resize_image
from breast_cancer_pipeline.serving import (
    EXPLAIN_COLUMN,
    IMAGE_COLUMN,
    check_request,
    image_bytes,
    request_error,
    row_error,
)
from breast_cancer_pipeline.serving.runtime import DEFAULT_RUNTIME, served_by

logger = logging.getLogger(__name__)

#: The response column holding the Grad-CAM overlay (base64 PNG), present when a request asks.
GRADCAM_COLUMN = "gradcam_png"
#: The parameter of the memory budget the decodes of the process share, named in row errors.
DECODE_BUDGET_PARAMETER = "inference.serving.decode_memory_mb"


def collect_images(images: Mapping[str, Callable[[], bytes]]) -> pd.DataFrame:
    """List the files of the folder to score, without reading them yet.

    Args:
        images: ``{relative path: load function}`` from a ``PartitionedDataset``.

    Returns:
        One row per file, sorted by path: ``path`` and ``image`` (the load function).
    """
    paths = sorted(images)
    return pd.DataFrame({"path": paths, IMAGE_COLUMN: [images[p] for p in paths]})


def predict_requests(
    requests: pd.DataFrame, serving_model: Any, params: dict, gradcam: dict | None = None
) -> pd.DataFrame:
    """Score every row of ``requests``; a row whose image cannot be decoded gets an error.

    Args:
        requests: A column ``image`` (base64 text of the file, raw bytes, or a function that
            returns the bytes), optionally ``path`` or ``id``, copied to the output, and
            ``explain`` (true/false per row): a true row gets ``gradcam_png``.
        serving_model: The packaged :class:`~breast_cancer_pipeline.serving.ServingModel`.
        params: The ``inference`` parameters (``batch_size``, ``max_pixels``,
            ``max_decoded_bytes``, ``window_percentiles``, ``serving``; its ``runtime`` runs
            the forward pass, :func:`~breast_cancer_pipeline.serving.runtime.served_by`).
        gradcam: The ``reporting.gradcam`` parameters (``layer``, ``alpha``): the served
            overlay is the report's, computed on the Keras model whatever the runtime.
            Needed only when a row asks for ``explain``.

    Returns:
        One row per request row, in order: the identifier column if given, ``label`` (the most
        probable class), one ``p_<class>`` column per class, ``threshold``,
        ``thresholded_label`` (the positive class when its probability reaches the threshold
        chosen on the validation split, else the most probable other class),
        ``prediction_set`` (the classes of the conformal set, a list; null for a model
        packaged without one), ``ood_score`` and ``in_distribution`` (see
        :func:`_ood_columns`) and ``error`` (empty when the row was scored). Probabilities
        of failed rows are empty. With an ``explain`` column: ``gradcam_png``, the base64 PNG
        of the row's Grad-CAM overlay for its ``thresholded_label``
        (:func:`breast_cancer_pipeline.explain.gradcam_pngs`), empty where ``explain`` is
        false or the row failed.

    Raises:
        ValueError: The request has no ``image`` column or a bad ``explain`` value (HTTP 400
            when served) or holds more images or bytes than ``inference.serving`` allows
            (HTTP 413): a :func:`~breast_cancer_pipeline.serving.request_error`; or
            ``runtime`` is ``onnxruntime`` and the model has no ``model.onnx``.
    """
    requests = _request_frame(requests)
    limits = params["serving"]
    # A model packaged before inference.serving.runtime existed is run as it was.
    serving_model = served_by(serving_model, limits.get("runtime", DEFAULT_RUNTIME))
    config = serving_model.config
    id_column = next((c for c in ("path", "id") if c in requests.columns), None)
    ids = requests[id_column].astype(str).tolist() if id_column else None
    cells = requests[IMAGE_COLUMN].tolist()
    check_request(cells, limits)
    names = [ids[i] if ids else f"row {i}" for i in range(len(cells))]
    explain = _explain_flags(requests, names, gradcam)
    proba, ood, errors, kept = _score(cells, names, explain, serving_model, params)
    columns = _prediction_columns(
        proba,
        errors,
        config,
        _ood_columns(ood, errors, serving_model, limits["ood"]),  # may add row errors
    )
    columns["prediction_set"] = _sets(serving_model, proba, errors)
    columns["error"] = errors
    if explain is not None:
        called = columns["thresholded_label"]
        columns[GRADCAM_COLUMN] = _gradcam_column(serving_model, kept, called, gradcam)
    if id_column:
        columns = {id_column: ids, **columns}
    # Python objects, missing values as None (not NaN): the served JSON says null, and no
    # column is converted (to floats, Arrow strings) only to be converted back.
    frame = pd.DataFrame(columns, dtype=object)
    n_bad = sum(bool(e) for e in errors)
    logger.info("Scored %d images (%d with an error)", len(cells) - n_bad, n_bad)
    return frame


def _score(
    cells: list[Any],
    names: list[str],
    explain: list[bool] | None,
    serving_model: Any,
    params: dict,
) -> tuple[np.ndarray, np.ndarray, list[str], dict[int, np.ndarray]]:
    """Decode and score the rows a batch at a time.

    Returns:
        ``(proba, ood scores, row errors, decoded pixels of the rows to explain)``; a row that
        failed has NaN probabilities and score, and its error.
    """
    config = serving_model.config
    kept: dict[int, np.ndarray] = {}
    proba = np.full((len(cells), len(config["class_names"])), np.nan, dtype=np.float64)
    errors = [""] * len(cells)
    decode = _row_decoder(cells, names, errors, config, params)
    ood = np.full(len(cells), np.nan)
    for rows, pixels in _decoded_batches(len(cells), params["batch_size"], decode):
        proba[rows], scores = serving_model.predict_with_ood(np.stack(pixels))
        if scores is not None:
            ood[rows] = scores
        kept.update((i, x) for i, x in zip(rows, pixels, strict=True) if explain and explain[i])
    return proba, ood, errors, kept


def _row_decoder(
    cells: list[Any], names: list[str], errors: list[str], config: Mapping[str, Any], params: dict
) -> Callable[[int], np.ndarray | None]:
    """A function decoding and resizing row ``i``, or recording its error and returning None.

    Decodes draw on the process-wide budget of ``inference.serving.decode_memory_mb`` (those
    that fit in ``small_decode_mb`` on a lane of their own), each at most
    ``inference.max_decoded_bytes``. A request's row still decoding after
    ``inference.serving.decode_seconds`` is answered with a row error (the decode finishes in
    the background, within the budget). An unexpected error is logged for the server and
    answered without a trace.
    """
    limits = params["serving"]
    # A model packaged before these limits existed carries none of them: served as it was.
    budget = None
    if limits.get("decode_memory_mb"):
        budget = shared_budget(
            limits["decode_memory_mb"] * 2**20,
            DECODE_BUDGET_PARAMETER,
            limits.get("small_decode_mb", 0) * 2**20,
        )
    deadline = limits.get("decode_seconds")

    def work(i: int) -> np.ndarray:
        data = image_bytes(cells[i], names[i], max_bytes=limits["max_image_bytes"])
        decoded = decode_image(
            data,
            names[i],
            color_mode=config["color_mode"],
            max_pixels=params["max_pixels"],
            window_percentiles=tuple(params["window_percentiles"]),
            max_decoded_bytes=params.get("max_decoded_bytes"),
            budget=budget,
        )
        return resize_image(decoded, config["image_size"])

    def decode(i: int) -> np.ndarray | None:
        try:
            if callable(cells[i]) or not deadline:  # the batch command's files: no deadline
                return work(i)
            finished, pixels = _within(deadline, lambda: work(i))
            if not finished:
                errors[i] = (
                    f"cannot decode {names[i]!r}: decoding took more than "
                    f"inference.serving.decode_seconds = {deadline:g} s. "
                    "Downsample the image or send it as PNG"
                )
            return pixels
        except ImageDecodeError as exc:
            errors[i] = row_error(exc, from_file=callable(cells[i]))
        except Exception:  # noqa: BLE001 - one bad row must not fail the others or leak a trace
            logger.exception("Unexpected error decoding %s", names[i])
            errors[i] = f"cannot decode {names[i]!r}: internal error (logged by the server)"
        return None

    return decode


def _within(seconds: float, work: Callable[[], np.ndarray]) -> tuple[bool, np.ndarray | None]:
    """Run ``work`` in a thread of its own, waiting at most ``seconds``.

    Returns ``(True, result)``, or ``(False, None)`` past ``seconds`` (the thread runs on,
    unwaited); an exception of ``work`` is raised here.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="decode", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return False, None
    if "error" in outcome:
        raise outcome["error"]
    return True, outcome["value"]


def _sets(serving_model: Any, proba: np.ndarray, errors: list[str]) -> list[list[str] | None]:
    """The conformal set of every answered row; ``None`` where the row has an error."""
    ok = np.array([not e for e in errors], dtype=bool)
    sets: list[list[str] | None] = [None] * len(proba)
    for i, found in zip(np.flatnonzero(ok), serving_model.prediction_sets(proba[ok]), strict=True):
        sets[i] = found
    return sets


def _ood_columns(
    scores: np.ndarray, errors: list[str], serving_model: Any, settings: Mapping[str, Any]
) -> dict[str, list]:
    """``ood_score`` and ``in_distribution`` per row; with ``action: reject``, row errors.

    ``in_distribution`` is true when the score is at most the threshold that accepts
    ``accept_rate`` of the validation images. Rows that were not scored, and every row of a
    model packaged without a score, get ``None`` in both. With ``action: reject`` an
    out-of-distribution row gets an ``error`` (so no probabilities); ``errors`` is updated.

    Args:
        scores: Score per row (NaN where there is none).
        errors: The row errors so far.
        serving_model: The packaged model (its ``ood`` gives the threshold).
        settings: ``inference.serving.ood`` (``accept_rate``, ``action``).
    """
    ood = getattr(serving_model, "ood", None)
    known = ~np.isnan(scores)
    if ood is None or not known.any():
        return {"ood_score": [None] * len(scores), "in_distribution": [None] * len(scores)}
    threshold = ood.threshold(settings["accept_rate"])
    inside = [bool(s <= threshold) if k else None for s, k in zip(scores, known, strict=True)]
    if settings["action"] == "reject":
        for i, flag in enumerate(inside):
            if flag is False and not errors[i]:
                errors[i] = _ood_error(scores[i], threshold, settings["accept_rate"])
    return {
        "ood_score": [float(s) if k else None for s, k in zip(scores, known, strict=True)],
        "in_distribution": inside,
    }


def _ood_error(score: float, threshold: float, accept_rate: float) -> str:
    return (
        f"image refused as out of distribution: its out-of-distribution score {score:.4g} is "
        f"above the threshold {threshold:.4g} (which accepts {accept_rate:.0%} of the "
        "validation images), so it does not look like the images the model was trained on. "
        "Send an image of the kind and modality of the training data (the model card's "
        "intended use); blank frames, photographs, documents and other modalities are refused"
    )


def _request_frame(requests: Any) -> pd.DataFrame:
    """The request as a DataFrame with an ``image`` column, or an error for its caller."""
    if not isinstance(requests, pd.DataFrame):
        try:
            requests = pd.DataFrame(requests)
        except (TypeError, ValueError):
            requests = pd.DataFrame()
    if IMAGE_COLUMN not in requests.columns:
        got = [str(c)[:40] for c in requests.columns[:10]]
        raise request_error(
            f"the request has no {IMAGE_COLUMN!r} column (it has {got}): send "
            f'{{"dataframe_split": {{"columns": ["{IMAGE_COLUMN}"], "data": [["<base64 of an '
            f'image file>"], ...]}}}}, optionally with an "id" column'
        )
    return requests


def _explain_flags(requests: pd.DataFrame, names: list[str], gradcam: dict | None) -> list | None:
    """Whether each row asks for Grad-CAM (None: the request has no ``explain`` column).

    Raises:
        ValueError: A value is not true/false (or 1/0, "true"/"false"; empty is false), or
            rows ask for it from a model served without ``reporting.gradcam``: a
            :func:`~breast_cancer_pipeline.serving.request_error`.
    """
    if EXPLAIN_COLUMN not in requests.columns:
        return None
    flags = [_flag(value) for value in requests[EXPLAIN_COLUMN].tolist()]
    for name, flag, value in zip(names, flags, requests[EXPLAIN_COLUMN].tolist(), strict=True):
        if flag is None:
            raise request_error(
                f"{EXPLAIN_COLUMN!r} of {name} is {str(value)[:40]!r}: send true or false"
            )
    if any(flags) and gradcam is None:
        raise request_error(f"this model was served without Grad-CAM: drop {EXPLAIN_COLUMN!r}")
    return flags


def _flag(value: Any) -> bool | None:
    """A request's true/false (1/0, "true"/"false"; empty is false), None for anything else."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return False
    if isinstance(value, bool | np.bool_ | int | np.integer | float) and value in (0, 1):
        return bool(value)
    return {"true": True, "1": True, "false": False, "0": False, "": False}.get(
        str(value).strip().lower()
    )


def _gradcam_column(
    serving_model: Any,
    kept: dict[int, np.ndarray],
    called: list[str | None],
    gradcam: dict | None,
) -> list[str | None]:
    """Base64 PNG overlays for the kept rows that were scored, for their thresholded label."""
    import base64

    from breast_cancer_pipeline.explain import gradcam_pngs

    column: list[str | None] = [None] * len(called)
    rows = [i for i in sorted(kept) if called[i] is not None]
    names = serving_model.class_names
    classes = [names.index(called[i]) for i in rows]
    images = np.stack([kept[i] for i in rows]) if rows else np.empty((0,))
    for i, png in zip(
        rows, gradcam_pngs(serving_model.model, images, classes, gradcam), strict=True
    ):
        column[i] = base64.b64encode(png).decode("ascii")
    return column


def _decoded_batches(
    n: int, batch_size: int, decode: Callable[[int], np.ndarray | None]
) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    """``(rows, pixels)`` of every batch with at least one decoded image, in order.

    The next batch is read and decoded in a thread while the caller scores this one (file
    reads, Pillow's decoders and TensorFlow all release the GIL), so neither waits.
    """

    def decode_batch(start: int) -> tuple[list[int], list[np.ndarray]]:
        rows, pixels = [], []
        for i in range(start, min(start + batch_size, n)):
            decoded = decode(i)
            if decoded is not None:
                rows.append(i)
                pixels.append(decoded)
        return rows, pixels

    if n <= batch_size:  # one batch (a typical request): nothing to overlap, no thread
        rows, pixels = decode_batch(0)
        if rows:
            yield rows, pixels
        return
    starts = list(range(0, n, batch_size))
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(decode_batch, starts[0]) if starts else None
        for k in range(len(starts)):
            rows, pixels = pending.result()
            if k + 1 < len(starts):
                pending = reader.submit(decode_batch, starts[k + 1])
            if rows:
                yield rows, pixels


def _prediction_columns(
    proba: np.ndarray,
    errors: list[str],
    config: Mapping[str, Any],
    ood_columns: Mapping[str, list],
) -> dict[str, list]:
    """``label``, ``p_<class>``, ``threshold``, ``thresholded_label`` and the OOD columns."""
    names, positive = config["class_names"], config["positive_class"]
    threshold = float(config["threshold"])
    ok = [not e for e in errors]
    pos = names.index(positive)
    others = [i for i in range(len(names)) if i != pos]
    safe = np.nan_to_num(proba)
    best_other = np.array(others)[safe[:, others].argmax(axis=1)]
    called = np.where(safe[:, pos] >= threshold, pos, best_other)
    return {
        "label": [
            names[i] if good else None for i, good in zip(safe.argmax(axis=1), ok, strict=True)
        ],
        **{
            f"p_{c}": [float(v) if good else None for v, good in zip(proba[:, j], ok, strict=True)]
            for j, c in enumerate(names)
        },
        "threshold": [threshold] * len(errors),
        "thresholded_label": [
            names[i] if good else None for i, good in zip(called, ok, strict=True)
        ],
        **ood_columns,
    }
