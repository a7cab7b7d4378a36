"""The model server of `make serve`: MLflow's /invocations and the page, one process.

The slow tests serve a tiny model logged and registered as a training run does (in a
throw-away store) on a free port once for the module, and drive the page in a real headless
Chromium (Debian's ``chromium``, which ``.ci/run`` installs when absent; the test skips,
saying so, when there is none).
"""

import base64
import json
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from breast_cancer_pipeline.serving import DEFAULT_MODEL_URI, REGISTERED_MODEL_NAME
from tests.params import base_params
from tests.pipelines.inference._files import every_format, pillow_file
from tests.serving._served import (
    CONFIG,
    LEVEL_OPERATING_POINTS,
    free_port,
    log_and_register,
    post,
    tiny_tile_model,
)

LIMITS = [
    "Research use only: <not> a *medical* device | see `notes`.",
    "The figures hold for images like the test split.",
]


def _model_card() -> str:
    from breast_cancer_pipeline.templating import markdown_text

    items = "\n".join(f"- {markdown_text(line)}" for line in LIMITS)
    return (
        f"# Model card: x\n\n## Model\n\n- a\n\n## Intended use and limits\n\n{items}\n\n## Data\n"
    )


def test_intended_use_is_the_first_limit_of_the_model_card_as_plain_text():
    from breast_cancer_pipeline.serving.server import intended_use

    card = _model_card()
    assert "\\*medical\\*" in card and "&lt;not&gt;" in card  # escaped for Markdown
    assert intended_use(card) == LIMITS[0]
    assert intended_use("# Model card\n\n## Data\n\n- a\n") is None


def test_no_model_or_no_champion_says_what_to_run(mlflow_store, tmp_path, monkeypatch):
    import mlflow

    from breast_cancer_pipeline.serving.server import ModelNotFoundError, load_served_model, main

    # `make serve` with the default registry, sqlite:///mlflow.db: this empty folder's.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == (
        f"make serve: no model {REGISTERED_MODEL_NAME!r} is registered in sqlite:///mlflow.db: "
        "run `make demo` (it trains on synthetic images and registers one), or point "
        "MLFLOW_TRACKING_URI at your registry or MODEL_URI at a model"
    )

    client = mlflow.MlflowClient()
    client.create_registered_model(REGISTERED_MODEL_NAME)
    client.create_model_version(REGISTERED_MODEL_NAME, source=str(tmp_path))
    with pytest.raises(ModelNotFoundError, match=r"no alias @champion \(the champion gate") as info:
        load_served_model(DEFAULT_MODEL_URI)
    assert (
        f"versions are 1: serve one with MODEL_URI=models:/{REGISTERED_MODEL_NAME}/<version>"
        in (str(info.value))
    )


@dataclass
class _Server:
    base: str
    model_uri: str
    thread: threading.Thread


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    """The tiny model registered as ``@champion`` with a model card, served by the project's server.

    What ``make serve`` runs (``load_served_model``, ``create_app``, uvicorn on a free port), in a
    thread of this process: TensorFlow is imported once for the module.
    """
    import mlflow
    import uvicorn

    from breast_cancer_pipeline.serving.server import create_app, load_served_model

    root = tmp_path_factory.mktemp("page_server")
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
            patch.delenv(key)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        log_and_register(root)
        client = mlflow.MlflowClient()
        run_id = client.get_model_version(REGISTERED_MODEL_NAME, "1").run_id
        client.log_text(run_id, _model_card(), "model_card.md")
        client.set_model_version_tag(
            REGISTERED_MODEL_NAME, "1", "model_card", f"runs:/{run_id}/model_card.md"
        )
        client.set_registered_model_alias(REGISTERED_MODEL_NAME, "champion", "1")
        app = create_app(*load_served_model(DEFAULT_MODEL_URI))
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    pytest.fail("the server did not start")
                time.sleep(0.1)
            yield _Server(base, uri, thread)
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            # MLflow's scoring app marks the process as a server: not for the next tests.
            patch.delenv("MLFLOW_IS_IN_SERVING_ENVIRONMENT", raising=False)


def _pyfunc_answer(tracking_uri: str, image: str, name: str) -> pd.Series:
    """What the registered pyfunc answers in this process for one image."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL_NAME}@champion")
    return model.predict(pd.DataFrame({"image": [image], "id": [name]})).iloc[0]


def _test_png(path: Path) -> Path:
    """A 48-px grey gradient with a bright square: something for the model to look at."""
    x = np.tile(np.linspace(20, 160, 48, dtype=np.uint8), (48, 1))
    x[10:22, 26:38] = 250
    path.write_bytes(pillow_file(x, "PNG"))
    return path


def _slide(height: int, width: int) -> np.ndarray:
    """An RGB image with colour ramps and a bright square, for the tile model."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + 3 * y) % 256], axis=-1)
    image[100:140, 60:100] = 255
    return image.astype(np.uint8)


def _raw_request(base: str, head: str) -> tuple[int, dict]:
    """Send the request line and headers only (no body); the status and JSON answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(head.encode())
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    header, _, body = data.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(body)


@pytest.mark.slow
def test_one_server_answers_invocations_the_model_and_the_page(page_server, tmp_path):
    base = page_server.base
    with urllib.request.urlopen(f"{base}/", timeout=30) as response:
        policy = response.headers["Content-Security-Policy"]
        page = response.read().decode()
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert '<dd id="model-version">1</dd>' in page and '<dd id="model-alias">champion</dd>' in page
    # The intended-use line, autoescaped in the page.
    assert "Research use only: &lt;not&gt; a *medical* device | see `notes`." in page
    assert "http://" not in page.replace(base, "") and "https://" not in page  # nothing external
    with urllib.request.urlopen(f"{base}/static/page.js", timeout=30) as response:
        script = response.read().decode()
    assert "innerHTML" not in script and 'fetch("invocations"' in script
    with urllib.request.urlopen(f"{base}/model", timeout=30) as response:
        info = json.loads(response.read())
    assert (info["name"], info["version"], info["alias"]) == (
        REGISTERED_MODEL_NAME,
        "1",
        "champion",
    )
    assert info["intended_use"] == LIMITS[0] and info["threshold"] == CONFIG["threshold"]
    assert info["level_thresholds"] == {"patient": 0.41, "breast": 0.37, "exam": 0.33}

    image = base64.b64encode(_test_png(tmp_path / "case.png").read_bytes()).decode()
    request = {
        "columns": ["image", "id", "explain"],
        "data": [[image, "a", True], [image, "b", False]],
    }
    status, body = post(f"{base}/invocations", json.dumps({"dataframe_split": request}).encode())
    assert status == 200, body
    explained, plain = body["predictions"]
    expected = _pyfunc_answer(page_server.model_uri, image, "a")
    for name in CONFIG["class_names"]:
        assert explained[f"p_{name}"] == pytest.approx(expected[f"p_{name}"], abs=1e-5)
    assert explained["thresholded_label"] == expected["thresholded_label"]
    assert base64.b64decode(explained["gradcam_png"]).startswith(b"\x89PNG")
    assert plain["gradcam_png"] is None
    # MLflow's answers to a bad request, and the body limit before any byte is read.
    status, body = post(f"{base}/invocations", b"{not json")
    assert 400 <= status < 500, body
    status, body = _raw_request(
        base,
        "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 999999999999\r\nConnection: close\r\n\r\n",
    )
    assert status == 413 and "inference.serving.max_request_bytes" in body["message"], body
    assert page_server.thread.is_alive()


@pytest.mark.slow
def test_client_mistakes_get_a_4xx_and_the_explorer_is_off(page_server, tmp_path):
    """No 500 for what a caller can send (issue 26, items 6 and 10)."""
    base = page_server.base
    head = urllib.request.Request(f"{base}/", method="HEAD")
    with urllib.request.urlopen(head, timeout=30) as response:
        assert response.status == 200 and response.read() == b""
    for path in ("/openapi.json", "/docs", "/redoc"):
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}{path}", timeout=30)
        assert missing.value.code == 404
    for head_lines, status, words in [
        ("Host: 127.0.0.1\r\nContent-Length: 2", 415, "Content-Type"),
        (
            "Host: rebound.example\r\nContent-Type: application/json\r\nContent-Length: 2",
            400,
            "inference.serving.allowed_hosts",
        ),
    ]:
        answer = _raw_request(
            base, f"POST /invocations HTTP/1.1\r\n{head_lines}\r\nConnection: close\r\n\r\n{{}}"
        )
        assert answer[0] == status and words in answer[1]["message"], answer
    image = base64.b64encode(_test_png(tmp_path / "case.png").read_bytes()).decode()
    csv_request = urllib.request.Request(
        f"{base}/invocations",
        data=f"image,id\n{image},csv-1\n".encode(),
        headers={"Content-Type": "text/csv"},
        method="POST",
    )
    with urllib.request.urlopen(csv_request, timeout=60) as response:
        (row,) = json.loads(response.read())["predictions"]
    assert row["id"] == "csv-1" and row["error"] == "" and 0.0 <= row["p_malignant"] <= 1.0
    deep = b"[" * 100_000 + b"]" * 100_000
    status, body = post(f"{base}/invocations", deep)
    assert status == 400 and "nested too deeply" in body["message"]
    status, body = post(f"{base}/invocations", os.urandom(1 << 20))
    assert status == 400 and len(json.dumps(body)) < 64 * 1024
    assert page_server.thread.is_alive()


def test_a_model_folder_on_disk_is_served_without_a_registry(page_server, tmp_path, monkeypatch):
    """What the Docker image runs: ``MODEL_URI=/opt/model``, its model card copied beside it."""
    import mlflow

    from breast_cancer_pipeline.serving.server import create_app, load_served_model

    monkeypatch.setenv("MLFLOW_TRACKING_URI", page_server.model_uri)  # the champion's store
    mlflow.set_tracking_uri(page_server.model_uri)
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{REGISTERED_MODEL_NAME}@champion", dst_path=str(tmp_path / "model")
    )
    (Path(folder) / "model_card.md").write_text(_model_card())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'empty.db'}")  # no registry at all

    model, info = load_served_model(folder)

    assert (info.name, info.version, info.alias) == (None, None, None)
    assert info.intended_use == LIMITS[0] and info.threshold == CONFIG["threshold"]
    assert create_app(model, info) is not None  # the page and /invocations, limits included


def _browser():
    """Debian's Chromium through Playwright, or a skip that says what is missing."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip(
            "no Chromium on PATH: install Debian's package (apt-get update && apt-get install "
            "-y chromium), as .ci/run does"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is a dev dependency: run `make install`"
    )
    return sync_api, executable


def _read_result(page) -> dict:
    """What the page shows for the last file scored."""
    rows = page.locator("#probabilities tbody tr")
    shown = {
        "p": {
            rows.nth(i).locator("th").inner_text(): rows.nth(i).locator("td.value").inner_text()
            for i in range(rows.count())
        },
        "gradcam_width": page.locator("#gradcam").evaluate("img => img.naturalWidth"),
        "error": page.locator("#error").inner_text() if page.locator("#error").is_visible() else "",
    }
    for key in ("label", "decision", "prediction-set", "ood", "file-name", "model-alias"):
        shown[key] = page.locator(f"#{key}").inner_text()
    return shown


def _check_shown(shown: dict, expected: pd.Series, name: str) -> None:
    assert shown["error"] == ""
    assert list(shown["p"]) == CONFIG["class_names"]
    for label, text in shown["p"].items():
        assert float(text) == pytest.approx(expected[f"p_{label}"], abs=1.01e-4), label
    assert shown["label"] == expected["label"]
    assert shown["decision"] == expected["thresholded_label"]
    assert shown["file-name"] == name and shown["model-alias"] == "champion"
    for key, column in (("prediction-set", "prediction_set"), ("ood", "in_distribution")):
        assert (shown[key] == "not available") == (column not in expected.index), key
    assert shown["gradcam_width"] == CONFIG["image_size"]  # the overlay of what the model saw


def _tiled_answers(answers: list[dict]):
    """A route answering /invocations with a tile model's answer (the scoring node's), kept."""
    from breast_cancer_pipeline.pipelines.inference.nodes import predict_requests

    tile_model = tiny_tile_model()
    gradcam = base_params("reporting")["gradcam"]

    def answer(route) -> None:
        split = json.loads(route.request.post_data)["dataframe_split"]
        frame = pd.DataFrame(split["data"], columns=split["columns"])
        rows = predict_requests(frame, tile_model, base_params("inference"), gradcam)
        answers.extend(rows.to_dict("records"))
        body = json.dumps({"predictions": rows.to_dict("records")})
        route.fulfill(status=200, content_type="application/json", body=body)

    return answer


def _tile_outlines(page) -> dict:
    """The outlined tiles over the thumbnail: boxes relative to the image, in its pixels."""
    boxes = page.locator(".tile-box")
    found = []
    for i in range(boxes.count()):
        image = page.locator("#gradcam").bounding_box()
        scale = page.locator("#gradcam").evaluate("img => img.naturalWidth") / image["width"]
        box = boxes.nth(i).bounding_box()
        found.append(
            [
                (box["y"] - image["y"]) * scale,
                (box["x"] - image["x"]) * scale,
                box["height"] * scale,
                box["width"] * scale,
            ]
        )
    return {
        "boxes": found,
        "ranks": [boxes.nth(i).inner_text() for i in range(boxes.count())],
        "caption": not page.locator("#tiles-caption").evaluate("span => span.hidden"),
        "whole caption": not page.locator("#whole-caption").evaluate("span => span.hidden"),
    }


@pytest.mark.slow
def test_a_file_dropped_on_the_page_shows_what_the_model_answers(page_server, tmp_path):
    sync_api, executable = _browser()
    png = _test_png(tmp_path / "case 1.png")
    dicom = tmp_path / "case 2.dcm"
    dicom.write_bytes(every_format(tmp_path)["d.dcm"])
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"<b>not an image</b>")
    slide = tmp_path / "slide.png"  # answered by a tile model: 8 x 6 tiles of 32 px
    slide.write_bytes(pillow_file(_slide(192, 256), "PNG"))
    tiled: list[dict] = []
    expected = {
        path.name: _pyfunc_answer(
            page_server.model_uri, base64.b64encode(path.read_bytes()).decode(), path.name
        )
        for path in (png, dicom)
    }
    requested, shown = [], {}
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.on("request", lambda r: requested.append(r.url))
            page.goto(f"{page_server.base}/")
            for n, path in enumerate((png, dicom, junk), start=1):
                page.set_input_files("#file", str(path))
                page.wait_for_selector(f"body[data-scored='{n}']", timeout=120_000)
                shown[path.name] = _read_result(page)
                if path == png:
                    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            whole_image_outlines = _tile_outlines(page)
            page.route("**/invocations", _tiled_answers(tiled))
            page.set_input_files("#file", str(slide))
            page.wait_for_selector("body[data-scored='4']", timeout=120_000)
            outlines = _tile_outlines(page)
            page.screenshot(path=str(tmp_path / "tiles.png"), full_page=True)
        finally:
            browser.close()

    for name, answer in expected.items():
        _check_shown(shown[name], answer, name)
    assert shown[junk.name]["error"].startswith("cannot decode 'notes.png': not an image")
    assert all(url.startswith(page_server.base) or url.startswith("data:") for url in requested)
    assert (tmp_path / "page.png").stat().st_size > 10_000
    print(f"screenshot: {tmp_path / 'page.png'}")
    # A tile model's answer: its top tiles outlined over the thumbnail, numbered by rank.
    assert whole_image_outlines == {
        "boxes": [],
        "ranks": [],
        "caption": False,
        "whole caption": True,
    }
    (answer,) = tiled
    assert answer["error"] == "" and len(answer["top_tiles"]) == 3
    assert outlines["ranks"] == ["1", "2", "3"] and outlines["caption"]
    assert not outlines["whole caption"]
    for drawn, tile in zip(outlines["boxes"], answer["top_tiles"], strict=True):
        expected = [tile[key] for key in ("top", "left", "height", "width")]
        np.testing.assert_allclose(drawn, expected, atol=1.5)
    print(f"screenshot: {tmp_path / 'tiles.png'}")


def _read_exam(page) -> dict:
    """The levels the page shows above the images: ``{level: (decision, p, n, threshold)}``."""
    rows = page.locator("#levels tbody tr")
    shown = {}
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td")
        shown[rows.nth(i).locator("th").inner_text()] = tuple(
            cells.nth(j).inner_text() for j in range(4)
        )
    return shown


@pytest.mark.slow
def test_two_files_are_scored_as_one_exam_and_its_answer_is_shown_above_the_images(
    page_server, tmp_path
):
    sync_api, executable = _browser()
    png = _test_png(tmp_path / "left CC.png")
    dicom = tmp_path / "left MLO.dcm"
    dicom.write_bytes(every_format(tmp_path)["d.dcm"])
    images = [base64.b64encode(p.read_bytes()).decode() for p in (png, dicom)]
    import mlflow

    mlflow.set_tracking_uri(page_server.model_uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL_NAME}@champion")
    # The files of one exam share a key: any value, the page's own included.
    expected = pyfunc.predict(
        pd.DataFrame({"image": images, "id": [png.name, dicom.name], "group": "x", "study": "x"})
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1200})
            page.goto(f"{page_server.base}/")
            page.set_input_files("#file", [str(png), str(dicom)])
            page.wait_for_selector("body[data-scored='1']", timeout=120_000)
            exam, first = _read_exam(page), _read_result(page)
            above = (
                page.locator("#exam").bounding_box()["y"]
                < page.locator("#result").bounding_box()["y"]
            )
            listed = page.locator("#images tbody tr").count()
            page.screenshot(path=str(tmp_path / "exam.png"), full_page=True)
            page.set_input_files("#file", str(png))  # one file again: as before, no exam
            page.wait_for_selector("body[data-scored='2']", timeout=120_000)
            single_hides_exam = page.locator("#exam").is_hidden()
        finally:
            browser.close()

    # The fixture's levels keyed by group (patient) and group + study (exam); not breast,
    # whose laterality the page cannot fill.
    assert list(exam) == ["patient", "exam"]
    for level, (decision, p, n, threshold) in exam.items():
        assert float(threshold) == LEVEL_OPERATING_POINTS["levels"][level]["threshold"]
        assert decision == expected.loc[0, f"{level}_label"]
        assert float(p) == pytest.approx(expected.loc[0, f"{level}_p_malignant"], abs=1.01e-4)
        assert int(n) == 2
    mean = expected["p_malignant"].astype(float).mean()
    assert expected.loc[0, "patient_p_malignant"] == pytest.approx(mean, abs=1e-6)
    _check_shown(first, expected.iloc[0], png.name)  # the first image's details below
    assert above and listed == 2 and single_hides_exam
    print(f"screenshot: {tmp_path / 'exam.png'}")
