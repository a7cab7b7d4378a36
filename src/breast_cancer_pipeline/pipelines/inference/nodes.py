"""Inference: image files in, class probabilities, label and thresholded call out.

The same node scores a folder on disk (the batch command) and the rows of a request to the
MLflow endpoint: images are decoded by the function ingestion uses
(:mod:`breast_cancer_pipeline.imaging`) and brought to the model's input by the one training
used (:func:`breast_cancer_pipeline.geometry.fit_image`, with the size and resize mode of the
packaged model's configuration); the model holds all other preprocessing. A row that
cannot be decoded gets an ``error`` and no probabilities; the other rows are scored. Every
scored row gets the out-of-distribution score of the packaged model and whether it is within
its threshold (``inference.serving.ood``: flagged, or refused with an ``error``). A request
that breaks the ``inference.serving`` limits is refused whole (see
:mod:`breast_cancer_pipeline.serving.guard`). A model trained on tiles reads each image cut
into its tiles and answers it as a whole, with its top tiles
(:mod:`breast_cancer_pipeline.serving.tiling`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from breast_cancer_pipeline.cluster import available_cores, map_in_order, uses_cluster
from breast_cancer_pipeline.columns import PatternSpec, path_columns
from breast_cancer_pipeline.progress import Progress
from breast_cancer_pipeline.serving import (
    EXPLAIN_COLUMN,
    IMAGE_COLUMN,
    check_request,
    request_error,
)
from breast_cancer_pipeline.serving.levels import (
    key_columns,
    level_columns,
    level_tables,
    thresholded_classes,
)
from breast_cancer_pipeline.serving.runtime import DEFAULT_RUNTIME, served_by
from breast_cancer_pipeline.serving.tiling import (
    SIZE_COLUMNS,
    TOP_TILES_COLUMN,
    ExplainedTile,
    explained_tile,
    tile_gradcam_pngs,
    top_tiles,
)
from breast_cancer_pipeline.tiles import TileSpec

from .model_input import decode_row

logger = logging.getLogger(__name__)

#: The response column holding the Grad-CAM overlay (base64 PNG), present when a request asks.
GRADCAM_COLUMN = "gradcam_png"


def collect_images(
    images: Mapping[str, Callable[[], bytes]],
    column_patterns: Mapping[str, PatternSpec] | None = None,
) -> pd.DataFrame:
    """List the files of the folder to score, without reading them yet.

    Args:
        images: ``{relative path: load function}`` from a ``PartitionedDataset``.
        column_patterns: ``ingestion.column_patterns``: its path patterns give the files the
            columns ingestion gives the training images (e.g. ``group``, ``laterality``,
            ``view``), read from the path relative to the folder scored; tag patterns are
            left out.

    Returns:
        One row per file, sorted by path: ``path``, ``image`` (the load function) and one
        column per path pattern (empty where it does not match).
    """
    paths = sorted(images)
    frame = pd.DataFrame({"path": paths, IMAGE_COLUMN: [images[p] for p in paths]})
    columns = pd.DataFrame(
        [path_columns(p, column_patterns or {}) for p in paths], index=frame.index
    )
    return pd.concat([frame, columns], axis=1)


def predict_requests(
    requests: pd.DataFrame, serving_model: Any, params: dict, gradcam: dict | None = None
) -> pd.DataFrame:
    """Score every row of ``requests``; a row whose image cannot be decoded gets an error.

    Args:
        requests: A column ``image`` (base64 text of the file, raw bytes, or a function that
            returns the bytes), optionally ``path`` or ``id``, copied to the output,
            ``explain`` (true/false per row): a true row gets ``gradcam_png``, and the
            columns that identify a level (``group``, ``laterality``, ``view``, ``study``:
            :func:`~breast_cancer_pipeline.serving.levels.key_columns`), copied too.
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
        :func:`_ood_columns`), for each level of the packaged model whose columns the request
        has ``<level>_p_<class>``, ``<level>_label`` and ``<level>_n_images`` (the answer of
        the rows sharing the row's key:
        :func:`~breast_cancer_pipeline.serving.levels.level_columns`), and ``error`` (empty
        when the row was scored). Probabilities of failed rows are empty. With an
        ``explain`` column: ``gradcam_png``, the base64 PNG of the row's Grad-CAM overlay
        for its ``thresholded_label`` (:func:`breast_cancer_pipeline.explain.gradcam_pngs`),
        empty where ``explain`` is false or the row failed. A model trained on tiles
        answers the same columns per image, plus ``top_tiles`` (its ``tiles.top_k`` tiles
        of highest positive-class probability, each ``{top, left, height, width, score}``
        in the image's pixels: :func:`~breast_cancer_pipeline.serving.tiling.top_tiles`),
        ``image_height`` and ``image_width`` before ``error``; its ``gradcam_png`` is
        Grad-CAM on the top tile placed on a thumbnail of the whole image
        (:func:`~breast_cancer_pipeline.serving.tiling.tile_gradcam_pngs`).

    Raises:
        ValueError: The request has no ``image`` column or a bad ``explain`` value (HTTP 400
            when served) or holds more images or bytes than ``inference.serving`` allows
            (HTTP 413): a :func:`~breast_cancer_pipeline.serving.request_error`; or
            ``runtime`` is ``onnxruntime`` and the model has no ``model.onnx``.
    """
    return _predict(requests, serving_model, params, gradcam, cluster=None)


def _predict(
    requests: pd.DataFrame,
    serving_model: Any,
    params: dict,
    gradcam: dict | None,
    cluster: Mapping[str, Any] | None,
) -> pd.DataFrame:
    """:func:`predict_requests`, its images decoded here or on the Dask cluster of ``cluster``."""
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
    scored = _score(cells, names, explain, serving_model, params, cluster)
    proba, ood, errors, kept, tiled = scored
    columns = _prediction_columns(
        proba,
        errors,
        config,
        _ood_columns(ood, errors, serving_model, limits["ood"]),  # may add row errors
    )
    columns["prediction_set"] = _sets(serving_model, proba, errors)
    if tiled is not None:
        columns |= {key: _unless_failed(values, errors) for key, values in tiled.items()}
    columns["error"] = errors
    if explain is not None:
        called = columns["thresholded_label"]
        columns[GRADCAM_COLUMN] = _gradcam_column(serving_model, kept, called, gradcam)
    frame = _answer_frame(columns, requests, config, {id_column: ids} if id_column else {})
    n_bad = sum(bool(e) for e in errors)
    logger.info("Scored %d images (%d with an error)", len(cells) - n_bad, n_bad)
    return frame


def predict_files(
    requests: pd.DataFrame,
    serving_model: Any,
    params: dict,
    gradcam: dict | None = None,
    cluster: dict | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The batch command: :func:`predict_requests`, and one table per level of the model.

    Args:
        requests: As for :func:`predict_requests`, with whatever level columns the file
            names gave.
        serving_model: The packaged model.
        params: The ``inference`` parameters.
        gradcam: The ``reporting.gradcam`` parameters.
        cluster: The ``cluster`` parameters: with an ``address``, the files are read,
            decoded and resized on that Dask cluster (:func:`.model_input.decode_row`, the
            same pixels and row errors); the model runs here, batch by batch, either way.

    Returns:
        ``(predictions, {level: table})``: ``predictions`` with ``top_tiles`` (a model
        trained on tiles) as JSON text; the tables of
        :func:`~breast_cancer_pipeline.serving.levels.level_tables` (one row per key, from the
        rows scored), none for a model packaged without levels or a folder without their
        columns.
    """
    predictions = _predict(requests, serving_model, params, gradcam, cluster)
    if TOP_TILES_COLUMN in predictions.columns:  # a table cell of its own: JSON text
        cells = [None if t is None else json.dumps(t) for t in predictions[TOP_TILES_COLUMN]]
        predictions[TOP_TILES_COLUMN] = pd.Series(cells, index=predictions.index, dtype=object)
    config = serving_model.config
    return predictions, level_tables(predictions, config.get("levels"), config["class_names"])


def _answer_frame(
    columns: dict[str, list],
    requests: pd.DataFrame,
    config: Mapping[str, Any],
    identifier: dict[str, list],
) -> pd.DataFrame:
    """The answer of :func:`predict_requests` as a table.

    The identifier column, the request's level key columns echoed, the image ``columns``,
    then each level's answer inserted before ``error``.
    """
    levels = config.get("levels")
    keys = {c: [_cell(v) for v in requests[c].tolist()] for c in key_columns(requests, levels)}
    # Python objects, missing values as None (not NaN): the served JSON says null, and no
    # column is converted (to floats, Arrow strings) only to be converted back.
    frame = pd.DataFrame({**identifier, **keys, **columns}, dtype=object)
    for name, values in level_columns(frame, levels, config["class_names"]).items():
        frame.insert(frame.columns.get_loc("error"), name, pd.Series(values, dtype=object))
    return frame


def _cell(value: Any) -> Any:
    """A request cell as the answer echoes it: a missing value (NaN, NA) as None."""
    missing = value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))
    return None if missing else value


def _score(
    cells: list[Any],
    names: list[str],
    explain: list[bool] | None,
    serving_model: Any,
    params: dict,
    cluster: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str], dict[int, Any], dict[str, list] | None]:
    """Decode and score the rows a batch at a time (decoded here, or on ``cluster``'s workers).

    Returns:
        ``(proba, ood scores, row errors, what Grad-CAM needs of the rows to explain, the
        tile columns)``: a row that failed has NaN probabilities and score, and its error;
        the tile columns (:func:`_tile_columns`) are None for a whole-image model.
    """
    config = serving_model.config
    spec = TileSpec.from_params(config.get("tiles"))
    kept: dict[int, Any] = {}
    proba = np.full((len(cells), len(config["class_names"])), np.nan, dtype=np.float64)
    errors = [""] * len(cells)
    if uses_cluster(cluster):
        batches = _batches_from_cluster(cells, names, errors, explain, config, params, cluster)
    else:
        decode = _row_decoder(cells, names, errors, explain, config, params)
        batches = _decoded_batches(len(cells), params["batch_size"], decode)
    ood = np.full(len(cells), np.nan)
    tiled = None if spec is None else _tile_columns(len(cells))
    for rows, pixels in batches:
        if spec is None:
            proba[rows], scores = serving_model.predict_with_ood(np.stack(pixels))
            kept.update((i, x) for i, x in zip(rows, pixels, strict=True) if explain and explain[i])
        else:
            answer = serving_model.predict_tiled(pixels, params["batch_size"])
            proba[rows], scores = answer.proba, answer.ood
            _record_tiles(rows, pixels, answer, spec.top_k, explain, tiled, kept)
        if scores is not None:
            ood[rows] = scores
    return proba, ood, errors, kept, tiled


def _tile_columns(n: int) -> dict[str, list]:
    """A tile model's answer columns, empty: ``top_tiles``, ``image_height``, ``image_width``."""
    return {TOP_TILES_COLUMN: [None] * n, **{key: [None] * n for key in SIZE_COLUMNS}}


def _record_tiles(
    rows: list[int],
    images: list[Any],
    answer: Any,
    k: int,
    explain: list[bool] | None,
    columns: dict[str, list],
    kept: dict[int, Any],
) -> None:
    """Fill the tile ``columns`` of the scored ``rows``; keep the top tile of rows to explain.

    ``answer`` is the rows' :class:`~breast_cancer_pipeline.serving.tiling.TiledAnswer`: with
    the attention head's weights the top tiles are those of highest attention.
    """
    attention = answer.tile_attention or [None] * len(rows)
    for i, image, scores, weights in zip(rows, images, answer.tile_scores, attention, strict=True):
        columns[TOP_TILES_COLUMN][i] = top_tiles(image.tiles.boxes, scores, k, weights)
        columns[SIZE_COLUMNS[0]][i], columns[SIZE_COLUMNS[1]][i] = image.height, image.width
        if explain and explain[i]:
            kept[i] = explained_tile(image, scores, weights)


def _unless_failed(values: list, errors: list[str]) -> list:
    """``values``, None where the row has an error (e.g. refused as out of distribution)."""
    return [None if error else value for value, error in zip(values, errors, strict=True)]


def _row_decoder(
    cells: list[Any],
    names: list[str],
    errors: list[str],
    explain: list[bool] | None,
    config: Mapping[str, Any],
    params: dict,
) -> Callable[[int], Any]:
    """A function decoding and resizing row ``i``, or recording its error and returning None.

    Each row is :func:`.model_input.decode_row`: decodes draw on the process-wide budget of
    ``inference.serving.decode_memory_mb``, each at most ``inference.max_decoded_bytes``. A
    request's row still decoding after ``inference.serving.decode_seconds`` is answered with
    a row error (the decode finishes in the background, within the budget).
    """
    deadline = params["serving"].get("decode_seconds")

    def decode(i: int) -> Any:
        flag = bool(explain and explain[i])
        if callable(cells[i]) or not deadline:  # the batch command's files: no deadline
            pixels, errors[i] = decode_row(cells[i], names[i], config, params, flag)
            return pixels
        finished, outcome = _within(
            deadline, lambda: decode_row(cells[i], names[i], config, params, flag)
        )
        if not finished:
            errors[i] = (
                f"cannot decode {names[i]!r}: decoding took more than "
                f"inference.serving.decode_seconds = {deadline:g} s. "
                "Downsample the image or send it as PNG"
            )
            return None
        pixels, errors[i] = outcome
        return pixels

    return decode


def _batches_from_cluster(
    cells: list[Any],
    names: list[str],
    errors: list[str],
    explain: list[bool] | None,
    config: Mapping[str, Any],
    params: dict,
    cluster: Mapping[str, Any],
) -> Iterator[tuple[list[int], list[Any]]]:
    """The batches of :func:`_decoded_batches`, the rows decoded on the Dask cluster.

    Every row is :func:`.model_input.decode_row` on a worker, the results gathered in order
    (``cluster.batch_size`` rows per task, ``cluster.tasks_per_worker`` tasks in flight per
    worker thread, so the workers decode ahead while this process scores); each row's error
    is recorded in ``errors``. Progress (count, rate, ETA) is logged as results come back.
    """
    batch_size = params["batch_size"]
    calls = (
        (cells[i], names[i], config, params, bool(explain and explain[i]))
        for i in range(len(cells))
    )
    progress = Progress(len(cells), "Decoding on the Dask cluster", logger, unit="images")
    rows: list[int] = []
    pixels: list[np.ndarray] = []
    results = map_in_order(decode_row, calls, cluster, available_cores(len(cells)))
    for i, (decoded, error) in enumerate(results):
        errors[i] = error
        if decoded is not None:
            rows.append(i)
            pixels.append(decoded)
        progress.advance()
        if (i + 1) % batch_size == 0 or i + 1 == len(cells):  # the local batches' boundaries
            if rows:
                yield rows, pixels
            rows, pixels = [], []
    progress.finish()


def _within(seconds: float, work: Callable[[], Any]) -> tuple[bool, Any]:
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
    """Base64 PNG overlays for the kept rows that were scored, for their thresholded label.

    A kept row is the model's input (whole-image model) or its top tile and thumbnail
    (:class:`~breast_cancer_pipeline.serving.tiling.ExplainedTile`).
    """
    import base64

    from breast_cancer_pipeline.explain import gradcam_pngs

    column: list[str | None] = [None] * len(called)
    rows = [i for i in sorted(kept) if called[i] is not None]
    names = serving_model.class_names
    classes = [names.index(called[i]) for i in rows]
    if rows and isinstance(kept[rows[0]], ExplainedTile):
        pngs = tile_gradcam_pngs(serving_model.model, [kept[i] for i in rows], classes, gradcam)
    else:
        images = np.stack([kept[i] for i in rows]) if rows else np.empty((0,))
        pngs = gradcam_pngs(serving_model.model, images, classes, gradcam)
    for i, png in zip(rows, pngs, strict=True):
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
    safe = np.nan_to_num(proba)
    called = thresholded_classes(safe, names.index(positive), threshold)
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
