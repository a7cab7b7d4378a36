"""The served node: MLflow's scoring app run in-process on request errors, and the packaged
model logged and registered like a training run does, then served for real by `mlflow models
serve` on 127.0.0.1 (slow: one server for the module, about a minute)."""

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.params import base_params
from tests.payloads import deflated_dicom, zeros_png
from tests.serving._served import (
    CONFIG,
    asgi_post,
    free_port,
    log_and_register,
    post,
    request_body,
)

from ._files import dark_png16, every_format
from .test_nodes import FakeServingModel

PROJECT = Path(__file__).resolve().parents[3]


def test_mlflow_scoring_app_answers_request_errors_with_just_the_message(tmp_path):
    """MLflow's own FastAPI app (what `mlflow models serve` runs), in-process."""
    import mlflow
    from mlflow.pyfunc import scoring_server

    from breast_cancer_pipeline.pipelines.inference.nodes import predict_requests

    inference = base_params("inference", serving={"max_images": 2})

    class FakePyfunc(mlflow.pyfunc.PythonModel):
        """The served node on the fake model (no TensorFlow)."""

        def predict(self, context, model_input, params=None):
            return predict_requests(model_input, FakeServingModel(), inference)

    mlflow.pyfunc.save_model(tmp_path / "pyfunc", python_model=FakePyfunc())
    app = scoring_server.init(mlflow.pyfunc.load_model(str(tmp_path / "pyfunc")))
    png = base64.b64encode(every_format(tmp_path)["a.png"]).decode()

    status, body = asgi_post(app, request_body([png]))
    assert status == 200 and body["predictions"][0]["error"] == "", body
    status, body = asgi_post(app, request_body(["x"], columns=("picture",)))
    assert status == 400
    assert body == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "the request has no 'image' column (it has ['picture']): send "
        '{"dataframe_split": {"columns": ["image"], "data": [["<base64 of an image file>"], '
        '...]}}, optionally with an "id" column',
    }
    status, body = asgi_post(app, request_body([png] * 3))
    assert status == 413
    assert body["message"].startswith("the request holds 3 images, more than inference.serving")


def _local_proba(tmp_path: Path, files: dict[str, bytes]) -> np.ndarray:
    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset

    serving = ServingModelDataset(str(tmp_path / "serving_model")).load()
    return serving.predict_proba(_local_pixels(files))


def _local_pixels(files: dict[str, bytes]) -> np.ndarray:
    from breast_cancer_pipeline.imaging import decode_image, resize_image

    params = base_params("inference")
    pixels = [
        resize_image(
            decode_image(
                data,
                name,
                max_pixels=params["max_pixels"],
                window_percentiles=tuple(params["window_percentiles"]),
            ),
            CONFIG["image_size"],
        )
        for name, data in files.items()
    ]
    return np.stack(pixels)


@dataclass
class _Served:
    root: Path
    base: str
    server: subprocess.Popen


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The tiny model, logged, registered and served by `mlflow models serve` for the module."""
    root = tmp_path_factory.mktemp("served")
    port = free_port()
    # `mlflow models serve` starts its web server by name: the venv's bin must be on PATH.
    bin_dir = str(Path(sys.executable).parent)
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
            patch.delenv(key)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        log_and_register(root)
        env = {
            **os.environ,
            "KEDRO_LOGGING_CONFIG": str(PROJECT / "conf" / "logging_serving.yml"),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    mlflow_cli = str(Path(sys.executable).with_name("mlflow"))
    server = subprocess.Popen(
        [mlflow_cli, "models", "serve", "-m", "models:/breast-cancer-classifier/latest"]
        + ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start:\n{server.stdout.read().decode()[-3000:]}")
            time.sleep(1)
        yield _Served(root, base, server)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.mark.slow
def test_mlflow_models_serve_answers_images_rejects_garbage_and_stays_up(served, tmp_path):
    base, server = served.base, served.server
    files = every_format(tmp_path)
    cells = [base64.b64encode(v).decode() for v in files.values()]
    cells += [base64.b64encode(b"<html>not found</html>").decode(), "%%% not base64"]
    status, body = post(f"{base}/invocations", request_body(cells))
    assert status == 200, body
    rows = pd.DataFrame(body["predictions"])
    assert len(rows) == 6
    good, bad = rows.iloc[:4], rows.iloc[4:]
    assert (good["error"] == "").all()
    p = good[["p_benign", "p_malignant", "p_normal"]].astype(float).to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-4)
    # Same gradient in four formats: the same decoded pixels, the same probabilities.
    np.testing.assert_allclose(p, np.repeat(p[:1], 4, axis=0), atol=0.02)
    # And what the saved model gives in this process for the same decoded images.
    np.testing.assert_allclose(p, _local_proba(served.root, files), atol=1e-4)
    names = np.array(CONFIG["class_names"])
    assert good["label"].tolist() == names[p.argmax(axis=1)].tolist()
    assert (rows["threshold"] == 0.2).all()
    # The conformal set as a JSON list of class names (null for a row that was not scored).
    assert good["prediction_set"].tolist() == [names[row >= 0.3].tolist() for row in p]
    assert bad["prediction_set"].isna().all()
    assert "not an image" in bad.iloc[0]["error"]
    assert "not valid base64" in bad.iloc[1]["error"]
    assert all(
        body["predictions"][i][key] is None
        for i in (4, 5)
        for key in ("label", "p_malignant", "ood_score", "in_distribution")
    )
    # ood.npz travelled with the registered model: the served score is the local one.
    from breast_cancer_pipeline.datasets.serving_model import ServingModelDataset

    local = ServingModelDataset(str(served.root / "serving_model")).load()
    features, _ = local.forward(_local_pixels(files))
    np.testing.assert_allclose(
        good["ood_score"].astype(float), local.ood_score(features), rtol=1e-4
    )
    assert set(good["in_distribution"]) <= {True, False}

    status, body = post(f"{base}/invocations", b"{not json")
    assert 400 <= status < 500, body

    one = {"dataframe_split": {"columns": ["image", "id"], "data": [[cells[0], "case-7"]]}}
    for _ in range(10):  # bounded: the server keeps answering after the bad requests
        status, body = post(f"{base}/invocations", json.dumps(one).encode())
        assert status == 200, body
    assert body["predictions"][0]["id"] == "case-7"
    assert server.poll() is None


def _memory_kb(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def _reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _at_once(url: str, payloads: list[bytes]) -> tuple[list[tuple[int, dict]], float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        answers = list(pool.map(lambda payload: post(url, payload), payloads))
    return answers, time.perf_counter() - start


@dataclass
class _AtRest:
    """The served model's web process after one ordinary request, and its RSS then (kB)."""

    url: str
    pid: int
    ordinary: bytes
    rss_kb: int


@pytest.fixture
def at_rest(served) -> _AtRest:
    import psutil

    url = f"{served.base}/invocations"
    (web,) = psutil.Process(served.server.pid).children()  # bash exec'd into uvicorn
    ordinary = request_body([base64.b64encode(dark_png16(300, 300)).decode()])
    assert post(url, ordinary)[0] == 200
    return _AtRest(url, web.pid, ordinary, _memory_kb(web.pid)["VmRSS"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_hostile_requests_cost_the_server_little_and_get_answers_for_a_caller(
    served, bomb_png, at_rest
):
    url, web_pid, normal, before = at_rest.url, at_rest.pid, at_rest.ordinary, at_rest.rss_kb

    _reset_peak(web_pid)
    answers, bomb_seconds = _at_once(url, [request_body([base64.b64encode(bomb_png).decode()])] * 8)
    bomb_peak = _memory_kb(web_pid)["VmHWM"] - before
    limit = base_params("inference")["max_pixels"]
    for status, body in answers:
        assert status == 200, body
        error = body["predictions"][0]["error"]
        assert error.startswith(
            f"cannot decode 'row 0': image too large: 13000 × 13000 px exceeds "
            f"inference.max_pixels={limit}."
        )

    # Eight images just under the pixel limit at once: they share the decode budget.
    _reset_peak(web_pid)
    near = request_body([base64.b64encode(dark_png16(6_000, 6_000)).decode()])
    answers, near_seconds = _at_once(url, [near] * 8)
    near_peak = _memory_kb(web_pid)["VmHWM"] - before
    assert all(status == 200 and body["predictions"][0]["error"] == "" for status, body in answers)
    print(
        f"server RSS {before / 1024:.0f} MB; 8 bombs at once: peak +{bomb_peak / 1024:.0f} MB in "
        f"{bomb_seconds:.2f} s; 8 x 36 MP at once: peak +{near_peak / 1024:.0f} MB in "
        f"{near_seconds:.2f} s"
    )
    assert bomb_peak < 100 * 1024  # refused from the header: nothing decoded
    assert near_peak < 700 * 1024  # within inference.serving.decode_memory_mb, and a margin

    # The node's own message when it sees the request; MLflow's schema check's when the model
    # has a signature requiring `image`. Either way: names it, no trace, no server path.
    status, body = post(url, request_body(["x"], columns=("picture",)))
    text = json.dumps(body)
    assert status == 400 and "'image'" in body["message"], body
    assert "no 'image' column" in text or "missing inputs ['image']" in text, body
    for leak in ("Traceback", "stack_trace", 'File "', str(PROJECT), "site-packages"):
        assert leak not in text, body
    status, body = post(url, request_body(["x"] * 33))
    assert status == 413 and "more than inference.serving.max_images = 32" in body["message"]
    assert post(url, normal)[0] == 200
    assert served.server.poll() is None


#: Eight copies of each sent at once. An RGBA PNG of zeros just under inference.max_pixels
#: (6300 x 6300: 0.15 MB, 159 MB of RGBA pixels) is decoded; a DICOM of 64 x 64 pixels whose
#: deflated data set inflates to 256 MiB (0.26 MB) is refused while its size is measured.
_HOSTILE_FILES = {
    "RGBA PNG of zeros": (lambda: zeros_png(6300, 6300, 6), ""),
    "deflated DICOM": (lambda: deflated_dicom(256 * 2**20), "more than max_decoded_bytes"),
}


@pytest.mark.slow
def test_hostile_files_of_other_kinds_cost_the_server_little_and_it_gives_memory_back(at_rest):
    url, web_pid, rest = at_rest.url, at_rest.pid, at_rest.rss_kb
    figures = {}
    for kind, (build, expected) in _HOSTILE_FILES.items():
        _reset_peak(web_pid)
        answers, seconds = _at_once(url, [request_body([base64.b64encode(build()).decode()])] * 8)
        figures[kind] = (_memory_kb(web_pid)["VmHWM"] - rest, seconds)
        for status, body in answers:
            assert status == 200, body
            assert expected in body["predictions"][0]["error"], body
            assert bool(expected) == (body["predictions"][0]["label"] is None), body
    after = _memory_kb(web_pid)["VmRSS"] - rest
    print(
        f"server RSS {rest / 1024:.0f} MB; "
        + "; ".join(
            f"8 x {k}: peak +{p / 1024:.0f} MB in {t:.2f} s" for k, (p, t) in figures.items()
        )
        + f"; RSS after +{after / 1024:.0f} MB"
    )
    for kind, (peak, seconds) in figures.items():
        assert peak < 700 * 1024, kind
        assert seconds < 60, kind  # every answer came (within post's timeout)
    assert after < 200 * 1024  # the memory of the decodes is given back


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_mixed_hostile_set_and_a_long_tiff_leave_ordinary_requests_answered(bomb_png, at_rest):
    """Issue 26's acceptance: the mixed set at once; a 50,000-page TIFF beside an ordinary PNG."""
    from tests.payloads import chained_tiff

    url, web_pid, ordinary, rest = at_rest.url, at_rest.pid, at_rest.ordinary, at_rest.rss_kb
    mixed = [
        zeros_png(6300, 6300, 6),
        deflated_dicom(256 * 2**20),
        dark_png16(6_000, 6_000),
        bomb_png,
    ] * 2
    _reset_peak(web_pid)
    answers, seconds = _at_once(url, [request_body([base64.b64encode(f).decode()]) for f in mixed])
    peak = _memory_kb(web_pid)["VmHWM"] - rest
    errors = [body["predictions"][0]["error"] for _, body in answers]
    assert all(status == 200 for status, _ in answers)
    assert [bool(e) for e in errors] == [False, True, False, True] * 2, errors

    tiff = request_body([base64.b64encode(chained_tiff(50_000)).decode()])
    timed = _at_once_timed(url, [tiff, ordinary])
    after = _memory_kb(web_pid)["VmRSS"] - rest
    print(
        f"server RSS {rest / 1024:.0f} MB; 8 mixed at once: peak +{peak / 1024:.0f} MB in "
        f"{seconds:.2f} s; 50,000-page TIFF {timed[0][1]:.2f} s beside an ordinary PNG "
        f"{timed[1][1]:.2f} s; RSS after +{after / 1024:.0f} MB"
    )
    assert peak < 700 * 1024 and seconds < 60
    for (status, body), _ in timed:
        assert status == 200 and body["predictions"][0]["error"] == "", body
    assert timed[0][1] < 10 and timed[1][1] < 4  # the 5 s and 2 s, with a 2x margin
    assert after < 200 * 1024


def _at_once_timed(url: str, payloads: list[bytes]) -> list[tuple[tuple[int, dict], float]]:
    """Send ``payloads`` at once; each answer with its own time."""

    def timed(payload: bytes) -> tuple[tuple[int, dict], float]:
        start = time.perf_counter()
        answer = post(url, payload)
        return answer, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        return list(pool.map(timed, payloads))
