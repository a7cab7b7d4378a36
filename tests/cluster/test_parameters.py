"""The ``cluster`` parameter model: conf/base validates, a bad address is named with the fix."""

import pytest

from breast_cancer_pipeline.param_schema import schema_for, validate_block
from tests.params import base_params, refusal


def test_shared_block_has_its_model_and_keeps_this_machine_by_default():
    assert schema_for("cluster").__module__ == "breast_cancer_pipeline.cluster.parameters"
    model = validate_block("cluster", base_params("cluster", env="demo"))
    assert model.address is None


@pytest.mark.parametrize("address", ["local", "tcp://10.0.0.5:8786", "tls://scheduler:8786"])
def test_addresses_are_accepted(address):
    assert validate_block("cluster", base_params("cluster", address=address)).address == address


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"address": "10.0.0.5:8786"}, "such as tcp://10.0.0.5:8786"),
        ({"address": "http://10.0.0.5:8787/status"}, "cluster.address = 'http://"),
        ({"batch_size": 0}, "cluster.batch_size = 0"),
        ({"tasks_per_worker": 0}, "cluster.tasks_per_worker = 0"),
        ({"connect_timeout_seconds": 0}, "cluster.connect_timeout_seconds = 0"),
        ({"workers": 4}, "cluster.workers: unknown key"),
    ],
)
def test_bad_values_are_named(overrides, message):
    assert message in refusal("cluster", **overrides)
