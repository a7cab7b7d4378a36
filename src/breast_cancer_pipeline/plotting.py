"""The one matplotlib set-up: a headless (Agg) pyplot and figures rendered to PNG bytes.

Every figure of the project is a PNG byte string (saved by ``BinaryFileDataset``, logged to
MLflow by ``MlflowArtifactDataset``, embedded in the reports), made with :func:`pyplot` and
finished with :func:`figure_png`. matplotlib is imported on first use, like TensorFlow.
"""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def figure_png(fig: Any, dpi: int) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it.

    Args:
        fig: The figure.
        dpi: Its resolution (a ``*.figure_dpi`` parameter).

    Returns:
        The PNG file's bytes.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()
