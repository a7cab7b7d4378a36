"""The plan of a finetune run, resolved from the parameters and the head search."""

import pytest

from breast_cancer_pipeline.training.plan import FinetunePlan
from tests.pipelines.finetune.helpers import BEST_HEAD, finetune_params


def test_null_settings_come_from_the_head_search():
    params = finetune_params(batch_size=None, head={"dense_units": 8})
    plan = FinetunePlan.from_params(params, BEST_HEAD)
    assert (plan.batch_size, plan.phase1.learning_rate) == (16, 0.01)
    assert plan.head == {"dropout": 0.1, "dense_units": 8}  # finetune.head overrides
    assert (plan.phase2.from_layer, plan.phase2.fraction) == (None, 1.0)
    no_batch = {k: v for k, v in BEST_HEAD.items() if k != "batch_size"}
    with pytest.raises(ValueError, match=r"finetune.batch_size is not set .* 'batch_size'"):
        FinetunePlan.from_params(params, no_batch)
    with pytest.raises(ValueError, match=r"finetune.phase1.learning_rate is not set"):
        FinetunePlan.from_params(
            params, {k: v for k, v in BEST_HEAD.items() if k != "learning_rate"}
        )
