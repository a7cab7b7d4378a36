"""Usage data stays on this machine: every tool's telemetry and analytics switch, off by default.

MLflow, Kedro's telemetry plugin, DVC and Great Expectations each send usage data unless told
not to. :func:`keep_usage_data_local` sets each tool's own switch in the process environment
(and so in every process it starts) unless the user has set that variable already, or opted in
with ``BREAST_CANCER_PIPELINE_TELEMETRY=allow``. The package calls it when it is imported, so
``kedro run``, the server and the benchmarks run with every switch off; ``make`` exports the
same variables, ``.telemetry`` holds Kedro's consent (false) and ``.dvc/config`` DVC's.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: The variable that, set to ``allow``, leaves every tool's own default in place.
OPT_IN = "BREAST_CANCER_PIPELINE_TELEMETRY"

#: Each tool's switch and the value that turns its usage data off.
TELEMETRY_OFF: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",  # MLflow and kedro-telemetry
    "KEDRO_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
}


def keep_usage_data_local(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Turn every telemetry switch of :data:`TELEMETRY_OFF` off where the user has not set it.

    Args:
        environ: The environment to change; ``os.environ`` when ``None``.

    Returns:
        The variables this call set (empty when the user opted in or set them all).
    """
    env = os.environ if environ is None else environ
    if env.get(OPT_IN, "").strip().lower() == "allow":
        return {}
    added = {key: value for key, value in TELEMETRY_OFF.items() if key not in env}
    env.update(added)
    return added
