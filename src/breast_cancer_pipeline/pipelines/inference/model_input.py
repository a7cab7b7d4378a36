"""One row of a request or of the batch command as the model reads it, or its row error.

:func:`decode_row` is the per-image task of inference: it reads the row's file, decodes it
under the limits of the ``inference`` parameters and brings it to the model's geometry with
the functions training uses (:mod:`breast_cancer_pipeline.imaging`,
:func:`breast_cancer_pipeline.geometry.fit_image`), or, for a model trained on tiles, cuts
it into its tiles (:func:`breast_cancer_pipeline.serving.tiling.cut_image`, which calls
:func:`breast_cancer_pipeline.tiles.tile_image`). The served model calls it in its
own process; the batch command calls it there too, or on the workers of a Dask cluster
(``cluster.address``), where it is sent by reference: it is a module-level function of plain,
picklable arguments, and gives the same pixels and the same row errors wherever it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from breast_cancer_pipeline.decode_budget import DecodeBudget, shared_budget
from breast_cancer_pipeline.geometry import Geometry, fit_image
from breast_cancer_pipeline.imaging import ImageDecodeError, decode_image
from breast_cancer_pipeline.serving import image_bytes, row_error
from breast_cancer_pipeline.serving.tiling import TiledImage, cut_image
from breast_cancer_pipeline.tiles import TileSpec

logger = logging.getLogger(__name__)

#: The parameter of the memory budget the decodes of the process share, named in row errors.
DECODE_BUDGET_PARAMETER = "inference.serving.decode_memory_mb"


def decode_budget(limits: Mapping[str, Any]) -> DecodeBudget | None:
    """The process-wide budget of ``inference.serving.decode_memory_mb``, or None.

    Decodes that fit in ``small_decode_mb`` draw on a lane of their own. A model packaged
    before these limits existed carries none of them: no budget, served as it was.

    Args:
        limits: The ``inference.serving`` parameters.
    """
    if not limits.get("decode_memory_mb"):
        return None
    return shared_budget(
        limits["decode_memory_mb"] * 2**20,
        DECODE_BUDGET_PARAMETER,
        limits.get("small_decode_mb", 0) * 2**20,
    )


def row_pixels(
    cell: Any, name: str, config: Mapping[str, Any], params: Mapping, explain: bool = False
) -> np.ndarray | TiledImage:
    """The model input of one row: its file read, decoded within the limits, fitted or cut.

    Args:
        cell: The row's ``image``: base64 text, raw bytes, or a function returning the bytes
            of a file (the batch command).
        name: The row's name in error messages.
        config: The served model's configuration (``color_mode``, ``image_size``, ``resize``,
            ``crop_margin``, ``tiles``).
        params: The ``inference`` parameters (``max_pixels``, ``max_decoded_bytes``,
            ``window_percentiles``, ``serving``).
        explain: The row asks for Grad-CAM: a tiled image keeps a thumbnail
            (``inference.serving.thumbnail_side``).

    Returns:
        ``uint8`` pixels of the model's input size or, for a model with ``tiles``, the
        image's tiles.

    Raises:
        ImageDecodeError: The row holds no usable image, or one over a limit (for a tile
            model, also one too large to tile within the decode budget).
    """
    limits = params["serving"]
    budget = decode_budget(limits)
    data = image_bytes(cell, name, max_bytes=limits["max_image_bytes"])
    decoded = decode_image(
        data,
        name,
        color_mode=config["color_mode"],
        max_pixels=params["max_pixels"],
        window_percentiles=tuple(params["window_percentiles"]),
        max_decoded_bytes=params.get("max_decoded_bytes"),
        budget=budget,
    )
    spec = TileSpec.from_params(config.get("tiles"))
    if spec is None:
        return fit_image(decoded, Geometry.from_config(config))
    side = limits["thumbnail_side"] if explain else None
    return cut_image(decoded, name, spec, budget, side)


def decode_row(
    cell: Any, name: str, config: Mapping[str, Any], params: Mapping, explain: bool = False
) -> tuple[np.ndarray | TiledImage | None, str]:
    """:func:`row_pixels`, with a failure turned into the row's error (the per-image task).

    An unexpected failure is logged where it happened (the server, or the cluster's worker)
    and answered without a trace.

    Args:
        cell: The row's ``image`` (see :func:`row_pixels`).
        name: The row's name in error messages.
        config: The served model's configuration.
        params: The ``inference`` parameters.
        explain: The row asks for Grad-CAM (see :func:`row_pixels`).

    Returns:
        ``(pixels, "")``, or ``(None, error)`` when the row cannot be scored.
    """
    try:
        return row_pixels(cell, name, config, params, explain), ""
    except ImageDecodeError as exc:
        return None, row_error(exc, from_file=callable(cell))
    except Exception:  # noqa: BLE001 - one bad row must not fail the others or leak a trace
        logger.exception("Unexpected error decoding %s", name)
        return None, f"cannot decode {name!r}: internal error (logged by the server)"
