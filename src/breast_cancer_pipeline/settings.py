"""Project settings: hooks and the configuration loader."""

from kedro.config import OmegaConfigLoader
from omegaconf.resolvers import oc

from breast_cancer_pipeline.context import ProjectContext
from breast_cancer_pipeline.hooks import (
    ChampionHook,
    LineageHook,
    LiveMetricsHook,
    NodeResourceHook,
    ParameterCheckHook,
)

# pluggy calls the last registered first: the parameter check runs before the other hooks
# start anything (Kedro calls no on_pipeline_error hook when a before_pipeline_run fails).
# LineageHook tags each run, ChampionHook gates the model version it registers.
HOOKS = (
    LiveMetricsHook(),
    NodeResourceHook(),
    LineageHook(),
    ChampionHook(),
    ParameterCheckHook(),
)

# The pipelines are built from the configuration of the session's context (its --env).
CONTEXT_CLASS = ProjectContext

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment (e.g. `demo`) overrides single keys of a pipeline's parameters,
    # not the whole top-level block.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
    # `${oc.env:MLFLOW_TRACKING_URI,...}` in mlflow.yml lets the environment choose the tracker.
    "custom_resolvers": {"oc.env": oc.env},
}
