"""Where per-image work runs: this machine, or a Dask cluster (the ``cluster`` parameters).

* :mod:`.executors`: a Dask executor for ``cluster.address`` (``local``: a ``LocalCluster``;
  ``tcp://host:8786``: a running scheduler), and the bounded fan-outs every stage uses
  (results as each ends, or in submission order).

The parameters of the ``cluster`` block are checked by :mod:`.parameters`; defaults live in
``conf/base/parameters_cluster.yml``. Dask is imported only when a run uses a cluster.
"""

from breast_cancer_pipeline.cluster.executors import (
    LOCAL,
    ClusterError,
    as_completed,
    available_cores,
    dask_executor,
    in_order,
    map_in_order,
    uses_cluster,
)

__all__ = [
    "LOCAL",
    "ClusterError",
    "as_completed",
    "available_cores",
    "dask_executor",
    "in_order",
    "map_in_order",
    "uses_cluster",
]
