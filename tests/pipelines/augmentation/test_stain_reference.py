"""The stain reference node: fitted on evenly spread training images, off by default."""

import numpy as np
import pytest

from breast_cancer_pipeline.pipelines.augmentation.stain_reference import fit_stain_reference
from tests.he_images import he_images
from tests.params import base_params


def test_off_by_default():
    model_input = {"x_train": np.zeros((3, 16, 16, 1), np.uint8)}
    assert fit_stain_reference(model_input, base_params("augmentation")) == {"normalize": None}


def test_fitted_on_the_sample_of_training_images():
    from breast_cancer_pipeline.stain import fit_reference

    x_train = he_images(9, 16, 0)
    params = base_params("augmentation", stain={"normalize": "reinhard", "reference_images": 3})
    reference = fit_stain_reference({"x_train": x_train}, params)
    assert reference == fit_reference(x_train[[0, 4, 8]], "reinhard")
    assert reference["images"] == 3


def test_grayscale_training_images_name_the_parameter():
    params = base_params("augmentation", stain={"normalize": "macenko"})
    with pytest.raises(ValueError, match="augmentation.stain.normalize='macenko' needs RGB"):
        fit_stain_reference({"x_train": np.zeros((2, 16, 16, 1), np.uint8)}, params)
