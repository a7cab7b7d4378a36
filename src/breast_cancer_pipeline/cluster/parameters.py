"""The ``cluster`` parameters (defaults: ``conf/base/parameters_cluster.yml``).

Read by every stage that does per-image work: ingestion (the conversion), augmentation
(the model-input arrays) and the batch command (decoding the files it scores).
"""

from __future__ import annotations

import re

from pydantic import PositiveFloat, PositiveInt, field_validator

from breast_cancer_pipeline.param_schema import Params

#: A Dask scheduler's address: ``<protocol>://<host>[:<port>]``.
_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss)://[^/\s]+$")


class ClusterParams(Params):
    """Where per-image tasks run: this machine's processes, or a Dask cluster."""

    #: null: this machine; ``local``: a Dask LocalCluster here; ``tcp://host:8786``: a scheduler.
    address: str | None
    #: Images per Dask task (a task's scheduling and return are shared by its images).
    batch_size: PositiveInt
    #: Tasks (batches) in flight per worker thread of the cluster (bounds the client's memory).
    tasks_per_worker: PositiveInt
    #: Seconds to wait for the scheduler, then for its first worker.
    connect_timeout_seconds: PositiveFloat

    @field_validator("address")
    @classmethod
    def _address(cls, address: str | None) -> str | None:
        if address is None or address == "local" or _ADDRESS.match(address):
            return address
        raise ValueError(
            "must be null (this machine), 'local' (a Dask LocalCluster here) or a scheduler "
            "address such as tcp://10.0.0.5:8786"
        )


SCHEMA = ClusterParams
