"""The server's front door, in-process: what a request meets before MLflow (issue 26, items 3, 4,
6 and 10). The served app's own answers are checked over HTTP in test_server.py."""

import io
import json
import os

import pandas as pd
import pytest

from breast_cancer_pipeline.serving.front_door import (
    LOOPBACK_NAMES,
    MAX_MESSAGE,
    RequestRefused,
    allowed_hosts,
    front_door,
    read_request,
)
from tests.serving._served import asgi_request

LIMITS = {"max_request_bytes": 64 << 20, "max_images": 4}


class Answer:
    def __init__(self, response: str, status: int = 200) -> None:
        self.response, self.status = response, status


def _door(invoke=None, hosts=frozenset({"127.0.0.1", "localhost"}), timeout=30.0):
    calls = {"app": [], "invoke": []}

    async def app(scope, receive, send):
        calls["app"].append((scope["method"], scope["path"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def recorded(data, content_type):
        calls["invoke"].append(data)
        return (invoke or (lambda d, c: Answer('{"predictions": []}')))(data, content_type)

    door = front_door(app, invoke=recorded, limits=LIMITS, hosts=hosts, timeout=timeout)
    return door, calls


def _split(rows: int) -> bytes:
    data = [["x", str(i)] for i in range(rows)]
    return json.dumps({"dataframe_split": {"columns": ["image", "id"], "data": data}}).encode()


def test_the_default_hosts_are_the_bind_address_and_loopback():
    assert allowed_hosts([], "127.0.0.1") == frozenset(LOOPBACK_NAMES)
    assert allowed_hosts(None, "10.1.2.3") == frozenset({"10.1.2.3", *LOOPBACK_NAMES})
    assert allowed_hosts([], "0.0.0.0") is None  # listening everywhere: any name
    assert allowed_hosts(["Scanner.Lan"], "0.0.0.0") == frozenset({"scanner.lan"})
    assert allowed_hosts(["*"], "127.0.0.1") is None


@pytest.mark.parametrize(
    ("host", "status"),
    [("127.0.0.1:5001", 200), ("localhost", 200), ("[::1]:5001", 200), ("rebound.example", 400)],
)
def test_a_host_outside_the_list_gets_a_400_naming_the_parameter(host, status):
    door, calls = _door(hosts=allowed_hosts([], "127.0.0.1"))
    answered, body = asgi_request(door, method="GET", path="/", headers={"host": host})
    assert answered == status
    if status == 400:
        assert "inference.serving.allowed_hosts" in json.loads(body)["message"]
        assert calls["app"] == []


def test_no_content_type_is_a_415_and_other_paths_reach_the_app():
    door, calls = _door()
    status, body = asgi_request(door, _split(1), headers={"host": "localhost"})
    assert status == 415 and "Content-Type" in json.loads(body)["message"]
    assert calls["invoke"] == []
    assert asgi_request(door, method="GET", path="/ping", headers={"host": "localhost"})[0] == 200
    assert calls["app"] == [("GET", "/ping")]


def test_random_bytes_get_a_short_400_that_does_not_echo_them():
    door, calls = _door()
    garbage = os.urandom(32 << 20)
    status, body = asgi_request(door, garbage)
    assert status == 400 and len(body) < 64 * 1024
    message = json.loads(body)["message"]
    assert message.startswith("the body is not valid JSON") and calls["invoke"] == []


def test_json_nested_100000_deep_is_a_400():
    door, calls = _door()
    status, body = asgi_request(door, b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nested too deeply" in json.loads(body)["message"]
    assert calls["invoke"] == []


def test_rows_are_counted_before_mlflow_builds_a_dataframe():
    door, calls = _door()
    status, body = asgi_request(door, _split(5))
    assert status == 413 and "inference.serving.max_images = 4" in json.loads(body)["message"]
    assert calls["invoke"] == []
    assert asgi_request(door, _split(4))[0] == 200
    assert calls["invoke"][0]["dataframe_split"]["data"][3] == ["x", "3"]  # parsed once, handed on


@pytest.mark.parametrize(
    ("content_type", "body", "rows"),
    [
        ("text/csv", b"image,id\nx,1\nx,2\n", 2),
        ("text/csv; charset=utf-8", b"image,id\nx,1\nx,2", 2),
        ("application/json", b'{"dataframe_records": [{"image": "x"}, {"image": "y"}]}', 2),
        ("application/json", b'{"inputs": {"image": ["x"]}}', 1),
    ],
)
def test_rows_of_each_content_type(content_type, body, rows):
    data, read_as = read_request(body, content_type, {**LIMITS, "max_images": rows})
    assert read_as == "application/json" and isinstance(data, dict)
    with pytest.raises(RequestRefused, match=f"holds {rows} rows"):
        read_request(body, content_type, {**LIMITS, "max_images": rows - 1})


def test_csv_and_parquet_are_read_into_the_json_request_they_stand_for():
    """A valid CSV request scores like its JSON twin (MLflow's own CSV path fails on AnyType)."""
    csv = b"image,id,explain\niVBORw0KGgo=,case-1,true\n00112233,0042,\n"
    data, _ = read_request(csv, "text/csv", LIMITS)
    assert data == {
        "dataframe_split": {
            "columns": ["image", "id", "explain"],
            "data": [["iVBORw0KGgo=", "case-1", "true"], ["00112233", "0042", ""]],
        }
    }
    buffer = io.BytesIO()
    pd.DataFrame({"image": ["a", "b"], "id": [7, None]}).to_parquet(buffer)
    data, _ = read_request(buffer.getvalue(), "application/vnd.apache.parquet", LIMITS)
    assert data["dataframe_split"]["data"] == [["a", 7.0], ["b", None]]


def test_parquet_is_refused_from_its_footer():
    buffer = io.BytesIO()
    pd.DataFrame({"image": ["x"] * 7}).to_parquet(buffer)
    parquet = "application/vnd.apache.parquet"
    with pytest.raises(RequestRefused, match="holds 7 rows") as refused:
        read_request(buffer.getvalue(), parquet, {**LIMITS, "max_images": 6})
    assert refused.value.status == 413
    with pytest.raises(RequestRefused, match="not a parquet table"):
        read_request(b"PAR1 nonsense", parquet, LIMITS)


def test_a_parquet_dictionary_bomb_is_refused_before_it_inflates():
    """1 row whose one value is 4 MB of one byte: a few kB on the wire."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    table = pa.table({"image": pa.array(["A" * (4 << 20)]).dictionary_encode()})
    pq.write_table(table, buffer, compression="zstd")
    assert len(buffer.getvalue()) < 64 * 1024
    with pytest.raises(RequestRefused, match="inflates to") as refused:
        read_request(
            buffer.getvalue(),
            "application/vnd.apache.parquet",
            {**LIMITS, "max_request_bytes": 1 << 20},
        )
    assert refused.value.status == 413


def test_mlflow_errors_are_answered_without_the_request_or_a_trace():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST

    def failing(data, content_type):
        raise MlflowException(
            "Failed to predict data '  image\n0  "
            + "A" * 100_000
            + "'. \nError: no 'image' column",
            error_code=BAD_REQUEST,
        )

    door, _ = _door(invoke=failing)
    status, body = asgi_request(door, _split(1))
    assert status == 400 and len(body) <= MAX_MESSAGE + 200
    assert json.loads(body)["message"] == "no 'image' column"

    def crashing(data, content_type):
        raise RuntimeError("/srv/secret/path.py exploded")

    door, _ = _door(invoke=crashing)
    status, body = asgi_request(door, _split(1))
    assert status == 500 and b"/srv" not in body and b"Traceback" not in body


def test_a_slow_prediction_is_a_504():
    import time

    door, _ = _door(invoke=lambda d, c: time.sleep(1.0) or Answer("{}"), timeout=0.1)
    status, body = asgi_request(door, _split(1))
    assert status == 504 and "0.1 s" in json.loads(body)["message"]


def test_the_level_columns_of_an_exam_pass_the_door_and_count_no_extra_rows():
    """A request's ``group``/``laterality``/``study`` columns (issue 27): rows are still rows."""
    rows = [["x", f"view {i}", "007", "L", "s1"] for i in range(LIMITS["max_images"])]
    split = {"columns": ["image", "id", "group", "laterality", "study"], "data": rows}
    data, _ = read_request(
        json.dumps({"dataframe_split": split}).encode(), "application/json", LIMITS
    )
    assert data == {"dataframe_split": split}
    csv = "image,id,group,laterality,study\n" + "".join(f"{','.join(r)}\n" for r in rows)
    data, _ = read_request(csv.encode(), "text/csv", LIMITS)
    assert data["dataframe_split"]["data"][0] == ["x", "view 0", "007", "L", "s1"]  # as text
    one_more = {"inputs": {"image": ["x"] * 5, "group": ["p1"] * 5, "study": ["s"] * 5}}
    with pytest.raises(RequestRefused, match="holds 5 rows"):
        read_request(json.dumps(one_more).encode(), "application/json", LIMITS)
    with pytest.raises(RequestRefused, match="holds 5 rows"):
        read_request((csv + "x,view 4,007,L,s1\n").encode(), "text/csv", LIMITS)
