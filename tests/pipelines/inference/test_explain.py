"""Grad-CAM on request: the ``explain`` column of a request (a tiny small_cnn, ~10 s)."""

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.pipelines.inference.nodes import predict_requests
from tests.params import base_params
from tests.serving._served import tiny_serving_model

from ._files import pillow_file

GRADCAM = base_params("reporting")["gradcam"]


@pytest.fixture(scope="module")
def serving():
    return tiny_serving_model()


def _cells(n: int) -> list[str]:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (40, 40), dtype=np.uint8) for _ in range(n)]
    return [base64.b64encode(pillow_file(x, "PNG")).decode() for x in images]


def test_explained_rows_carry_the_reports_overlay(serving):
    from breast_cancer_pipeline.explain import grad_cam, overlay
    from breast_cancer_pipeline.imaging import decode_image, resize_image

    cells = _cells(3) + ["not base64 %%%"]
    requests = pd.DataFrame({"image": cells, "explain": [True, False, "true", True]})
    out = predict_requests(requests, serving, base_params("inference"), GRADCAM)
    assert out["gradcam_png"].isna().tolist() == [False, True, False, True]  # row 3 failed
    names = serving.class_names
    for i in (0, 2):
        png = base64.b64decode(out.at[i, "gradcam_png"])
        shown = np.asarray(Image.open(io.BytesIO(png)))
        pixels = resize_image(decode_image(base64.b64decode(cells[i]), "x"), 32)[None]
        k = names.index(out.at[i, "thresholded_label"])  # the decision is what is explained
        heat = grad_cam(serving.model, pixels, k, layer=GRADCAM["layer"])
        expected = overlay(pixels[0], heat[0], GRADCAM["alpha"])
        # The served overlay comes from a batch of rows, this one from a batch of one: on CPUs
        # where oneDNN picks batch-dependent kernels, a pixel may round to the next grey level.
        np.testing.assert_allclose(shown.astype(int), expected.astype(int), rtol=0, atol=1)
    # Explaining changes nothing else in the answer.
    plain = predict_requests(pd.DataFrame({"image": cells}), serving, base_params("inference"))
    pd.testing.assert_frame_equal(out.drop(columns="gradcam_png"), plain)


def test_without_explain_there_is_no_column_and_no_grad_cam(serving, monkeypatch):
    from breast_cancer_pipeline import explain

    def refuse(*args, **kwargs):
        raise AssertionError("Grad-CAM computed although no row asked for it")

    monkeypatch.setattr(explain, "grad_cam", refuse)
    cells = _cells(2)
    params = base_params("inference")
    out = predict_requests(pd.DataFrame({"image": cells}), serving, params, GRADCAM)
    assert "gradcam_png" not in out.columns
    none = pd.DataFrame({"image": cells, "explain": [False, None]})
    assert predict_requests(none, serving, params, GRADCAM)["gradcam_png"].isna().all()


@pytest.mark.parametrize(
    ("value", "gradcam", "message"),
    [
        ("yes", GRADCAM, "'explain' of case-1 is 'yes': send true or false"),
        (2, GRADCAM, "'explain' of case-1 is '2': send true or false"),
        (True, None, "served without Grad-CAM: drop 'explain'"),
    ],
)
def test_a_bad_explain_value_is_a_request_error(serving, value, gradcam, message):
    from breast_cancer_pipeline.serving import RequestError

    requests = pd.DataFrame({"image": _cells(1), "id": ["case-1"], "explain": [value]})
    with pytest.raises(RequestError, match=message) as info:
        predict_requests(requests, serving, base_params("inference"), gradcam)
    assert info.value.get_http_status_code() == 400
