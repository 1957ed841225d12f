"""Hostile requests over a real socket: every one a 4xx naming its field, none a 5xx, none taken.

The payloads of issue #20 (a boolean shape, 2**62×4 and 2**32×2**32 with no data, 70 dimensions,
10**400, 2**63 in INT64, −1 in UINT64, numeric strings and booleans in FP64, a BYTES tensor of
many empty elements) are here by name; hypothesis generates many more, in two ways: a valid
request with one defect (which must be refused, naming the defective field) and requests drawn
from the whole space of shapes, types and values (which must never be a 5xx, and are accepted
only when they hold what the model takes).
"""

from __future__ import annotations

import json
import math
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.conftest import fit_classifier, free_port, start
from shipyard.registry import Registry, Signature
from shipyard.serving.server import build_app
from shipyard.workspace import Workspace

SMALL_LIMITS = {
    "max_rows": 50,
    "max_elements": 600,
    "max_body_bytes": 65536,
    "max_depth": 6,
    "max_dims": 3,
    "max_string_bytes": 64,
}
TEXT_SIGNATURE = Signature.from_json({"inputs": [{"name": "s", "type": "string"}]})
FP_TYPES = ("FP16", "FP32", "FP64")
INT_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
DATATYPES = (*FP_TYPES, *INT_TYPES, "BOOL", "BYTES")
NUMBER_RANGE = {
    **{t: (int(np.iinfo(t.lower()).min), int(np.iinfo(t.lower()).max)) for t in INT_TYPES},
}
QUICK = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def lengths(x: np.ndarray) -> np.ndarray:
    """A python-flavor model of one string column: each string's length."""
    return np.asarray([len(v) for v in x[:, 0]])


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module: ``iris`` (default limits), ``small`` (the same model with
    ``SMALL_LIMITS``), ``text`` (strings) and ``text_small`` (strings, at most 1000 values)."""
    ws = Workspace.open(home=Path(tmp_path_factory.mktemp("limits")) / "home")
    registry = Registry.of(ws)
    clf, x = fit_classifier()
    registry.register("iris", clf, training_data=x, alias="champion")
    tag = {"serving.limits": json.dumps(SMALL_LIMITS)}
    registry.register("small", clf, training_data=x, alias="champion", tags=tag)
    registry.register("text", lengths, flavor="python", signature=TEXT_SIGNATURE, alias="champion")
    registry.register(
        "text_small", lengths, flavor="python", signature=TEXT_SIGNATURE, alias="champion",
        tags={"serving.limits": {"max_elements": 1000, "max_body_bytes": 8 * 2**20}},
    )  # fmt: skip
    app = build_app(ws, monitoring=False, refresh_interval_s=0.2)
    port = free_port()
    server, thread = start(app, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        ws.store.dispose()


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as c:
        yield c


def _post(c: httpx.Client, path: str, doc: Any, headers: dict[str, str] | None = None) -> Any:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return c.post(
        path, content=body, headers={"content-type": "application/json", **(headers or {})}
    )


def _refused(r: httpx.Response, status: int | tuple[int, ...], field: str | None) -> str:
    """The message of a refusal with ``status`` whose body names ``field``."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, r.text
    doc = r.json()
    message = doc.get("error") or doc.get("message")
    assert isinstance(message, str) and message
    if field is not None:
        assert doc.get("field") == field, doc
        assert field.lower() in message.lower(), doc
    return message


def tensor(name: str, shape: Any, datatype: str, data: Any = None, **params: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "shape": shape, "datatype": datatype}
    if data is not None:
        spec["data"] = data
    if params:
        spec["parameters"] = params
    return spec


# -- the payloads of the issue -----------------------------------------------------------------
ISSUE_V2: list[tuple[str, dict[str, Any], int, str]] = [
    ("boolean shape", tensor("x", [True, 3], "FP64", [1, 2, 3]), 400, "x"),
    ("2**62 x 4, no data", tensor("x", [2**62, 4], "FP64", []), 413, "x"),
    ("2**32 x 2**32, no data", tensor("x", [2**32, 2**32], "FP64", []), 413, "x"),
    ("70 dimensions", tensor("x", [1] * 70, "FP64", [1]), 413, "x"),
    ("negative shape", tensor("x", [-1, 3], "FP64", [1, 2, 3]), 400, "x"),
    ("10**400 in FP64", tensor("x", [1, 3], "FP64", [10**400, 1, 2]), 400, "x"),
    ("10**400 in INT64", tensor("x", [1, 3], "INT64", [10**400, 1, 2]), 400, "x"),
    ("2**63 in INT64", tensor("x", [1, 3], "INT64", [2**63, 1, 2]), 400, "x"),
    ("-1 in UINT64", tensor("x", [1, 3], "UINT64", [-1, 1, 2]), 400, "x"),
    ("2**64 in UINT64", tensor("x", [1, 3], "UINT64", [2**64, 1, 2]), 400, "x"),
    ("300 in INT8", tensor("x", [1, 3], "INT8", [300, 1, 2]), 400, "x"),
    ("1.5 in INT64", tensor("x", [1, 3], "INT64", [1.5, 1, 2]), 400, "x"),
    ("numeric strings in FP64", tensor("x", [1, 3], "FP64", ["1.5", "2", "3"]), 400, "x"),
    ("booleans in FP64", tensor("x", [1, 3], "FP64", [True, False, True]), 400, "x"),
    ("one boolean among numbers", tensor("x", [1, 3], "FP64", [1.5, True, 2.0]), 400, "x"),
    ("a BOOL tensor for numbers", tensor("x", [1, 3], "BOOL", [True, False, True]), 400, "x"),
    ("numbers in a BOOL tensor", tensor("x", [1, 3], "BOOL", [1, 0, 1]), 400, "x"),
    ("null in FP64", tensor("x", [1, 3], "FP64", [None, 1, 2]), 400, "x"),
    ("an object as data", tensor("x", [1, 3], "FP64", {"a": 1}), 400, "x"),
    ("a string as datatype", tensor("x", [1, 3], "FP64e", [1, 2, 3]), 400, "x"),
    ("a number as datatype", tensor("x", [1, 3], 64, [1, 2, 3]), 400, "x"),  # type: ignore[arg-type]
    ("a float in a shape", tensor("x", [1.0, 3], "FP64", [1, 2, 3]), 400, "x"),
    ("a string in a shape", tensor("x", ["1", 3], "FP64", [1, 2, 3]), 400, "x"),
    ("data nested deeper than shape", tensor("x", [1, 3], "FP64", [[[1, 2, 3]]]), 400, "x"),
    ("ragged nesting", tensor("x", [2, 3], "FP64", [[1, 2, 3], 4, 5, 6]), 400, "x"),
    ("a list as parameters", tensor("x", [1, 3], "FP64", [1, 2, 3]) | {"parameters": []}, 400, "x"),
    ("binary size a boolean", tensor("x", [1, 3], "FP64", binary_data_size=True), 400, "x"),
    ("binary size past the body", tensor("x", [1, 3], "FP64", binary_data_size=2**40), 400, "x"),
]


@pytest.mark.parametrize(
    ("spec", "status", "field"), [pytest.param(*c[1:], id=c[0]) for c in ISSUE_V2]
)
def test_issue_payloads_over_v2_are_4xx_naming_the_input(
    client: httpx.Client, spec: dict[str, Any], status: int, field: str
) -> None:
    r = _post(client, "/v2/models/iris/infer", {"inputs": [spec]})
    _refused(r, status, field)


def test_issue_payloads_over_v2_per_column_name_the_column(client: httpx.Client) -> None:
    columns = [tensor(n, [1], "FP64", [1.0]) for n in "ab"]
    for datatype, bad in (("FP64", ["2.5"]), ("FP64", [True]), ("FP64", [10**400]),
                          ("FP64", [None]), ("BOOL", [True]), ("BYTES", ["2.5"])):  # fmt: skip
        doc = {"inputs": [*columns, tensor("c", [1], datatype, bad)]}
        _refused(_post(client, "/v2/models/iris/infer", doc), 400, "c")
    twice = [*columns, tensor("a", [1], "FP64", [2.0])]
    _refused(_post(client, "/v2/models/iris/infer", {"inputs": twice}), 400, "a")


def test_outputs_and_parameters_of_the_wrong_type_are_400(client: httpx.Client) -> None:
    good = [tensor("x", [1, 3], "FP64", [1, 2, 3])]
    for doc, field in (
        ({"inputs": good, "parameters": [1]}, "parameters"),
        ({"inputs": good, "outputs": {"name": "predict"}}, "outputs"),
        ({"inputs": good, "outputs": [{"name": "predict", "parameters": 5}]}, "outputs"),
        ({"inputs": good, "id": {"a": 1}}, "id"),
    ):
        _refused(_post(client, "/v2/models/iris/infer", doc), 400, field)


ISSUE_MLFLOW: list[tuple[str, dict[str, Any], int, str]] = [
    ("a boolean among numbers", {"instances": [[1.5, True, 2.0]]}, 400, "b"),
    ("booleans only", {"instances": [[True, False, True]]}, 400, "a"),
    ("a numeric string", {"instances": [[1.5, "2", 2.0]]}, 400, "b"),
    ("10**400", {"instances": [[1.5, 10**400, 2.0]]}, 400, "b"),
    ("10**400 in records", {"dataframe_records": [{"a": 1, "b": 2, "c": 10**400}]}, 400, "c"),
    ("a boolean in records", {"dataframe_records": [{"a": 1, "b": 2, "c": False}]}, 400, "c"),
    ("a boolean in columns", {"inputs": {"a": [1], "b": [True], "c": [2]}}, 400, "b"),
    (
        "a boolean in split",
        {"dataframe_split": {"columns": ["c", "b", "a"], "data": [[True, 1, 2]]}},
        400,
        "c",
    ),
    ("a boolean in split without columns", {"dataframe_split": {"data": [[1, 2, True]]}}, 400, "c"),
]


@pytest.mark.parametrize(
    ("doc", "status", "field"), [pytest.param(*c[1:], id=c[0]) for c in ISSUE_MLFLOW]
)
def test_issue_payloads_over_mlflow_are_4xx_naming_the_column(
    client: httpx.Client, doc: dict[str, Any], status: int, field: str
) -> None:
    _refused(_post(client, "/models/iris/invocations", doc), status, field)


def test_csv_problems_are_400_naming_the_column(client: httpx.Client) -> None:
    csv_headers = {"content-type": "text/csv"}
    for body, field in (
        (b"a,b,c\n1,2,\x003\n", "c"),
        (b"a,b,c\n1," + b"9" * 200_000 + b",3\n", "csv"),
        (b"\xff\xfe", "csv"),
    ):
        _refused(_post(client, "/models/iris/invocations", body, csv_headers), 400, field)


def test_a_bytes_tensor_of_many_empty_elements_is_refused_by_the_bound(
    client: httpx.Client,
) -> None:
    raw = b"\x00\x00\x00\x00" * 1_000_000  # a million empty strings, 4 MB
    head = json.dumps(
        {"inputs": [tensor("s", [1_000_000], "BYTES", binary_data_size=len(raw))]}
    ).encode()
    headers = {"inference-header-content-length": str(len(head))}
    r = _post(client, "/v2/models/text_small/infer", head + raw, headers)
    assert "max_elements=1000" in _refused(r, 413, "s")
    # the shape says one element: the million that follow are refused, not decoded
    head = json.dumps({"inputs": [tensor("s", [1], "BYTES", binary_data_size=len(raw))]}).encode()
    headers = {"inference-header-content-length": str(len(head))}
    r = _post(client, "/v2/models/text_small/infer", head + raw, headers)
    _refused(r, 400, "s")
    # the default bound: 12.5 million elements (50 MB) are over the body's 1 MiB
    r = _post(client, "/v2/models/text/infer", head + raw * 13, headers)
    assert "max_body_bytes" in _refused(r, 413, "body")


BINARY: list[tuple[str, dict[str, Any], bytes, int, str]] = [
    ("fine", tensor("x", [1, 3], "FP64"), np.array([1.0, 2, 3]).tobytes(), 200, ""),
    ("2**32 x 2**32", tensor("x", [2**32, 2**32], "FP64"), b"\0" * 24, 413, "x"),
    ("boolean shape", tensor("x", [True, 3], "FP64"), b"\0" * 24, 400, "x"),
    ("70 dimensions", tensor("x", [1] * 70, "FP64"), b"\0" * 8, 413, "x"),
    ("BOOL byte 2", tensor("x", [1, 3], "BOOL"), b"\x01\x02\x00", 400, "x"),
    ("NaN", tensor("x", [1, 3], "FP64"), np.array([1.0, np.nan, 3]).tobytes(), 400, "b"),
    ("too few bytes", tensor("x", [1, 3], "FP64"), b"\0" * 16, 400, "x"),
    ("data and binary", tensor("x", [1, 3], "FP64", [1, 2, 3]), b"\0" * 24, 400, "x"),
]


@pytest.mark.parametrize(
    ("spec", "raw", "status", "field"), [pytest.param(*c[1:], id=c[0]) for c in BINARY]
)
def test_binary_tensors_are_held_to_the_same_rules(
    client: httpx.Client, spec: dict[str, Any], raw: bytes, status: int, field: str
) -> None:
    spec = {**spec, "parameters": {"binary_data_size": len(raw)}}
    head = json.dumps({"inputs": [spec]}).encode()
    headers = {"inference-header-content-length": str(len(head))}
    r = _post(client, "/v2/models/iris/infer", head + raw, headers)
    if status == 200:
        assert r.status_code == 200, r.text
    else:
        _refused(r, status, field)


def test_a_bytes_element_longer_than_the_string_bound_is_413(client: httpx.Client) -> None:
    word = b"x" * 70_000
    raw = struct.pack("<I", len(word)) + word
    head = json.dumps({"inputs": [tensor("s", [1], "BYTES", binary_data_size=len(raw))]}).encode()
    headers = {"inference-header-content-length": str(len(head))}
    r = _post(client, "/v2/models/text/infer", head + raw, headers)
    assert "max_string_bytes" in _refused(r, 413, "s")
    ok = struct.pack("<I", 3) + b"abc"
    head = json.dumps({"inputs": [tensor("s", [1], "BYTES", binary_data_size=len(ok))]}).encode()
    headers = {"inference-header-content-length": str(len(head))}
    r = _post(client, "/v2/models/text/infer", head + ok, headers)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [3]


def test_a_version_tag_sets_its_limits(client: httpx.Client) -> None:
    rows = np.ones((51, 3)).tolist()
    r = _post(client, "/models/small/invocations", {"instances": rows})
    assert "max_rows=50" in _refused(r, 413, "instances")
    assert _post(client, "/models/small/invocations", {"instances": rows[:50]}).status_code == 200
    assert _post(client, "/models/iris/invocations", {"instances": rows}).status_code == 200
    v2 = {"inputs": [tensor("x", [51, 3], "FP64", np.ones(153).tolist())]}
    assert "max_rows=50" in _refused(_post(client, "/v2/models/small/infer", v2), 413, "x")
    deep = {"instances": [[[[[[[1.0]]]]]]]}
    assert "max_depth=6" in _refused(_post(client, "/models/small/invocations", deep), 413, "body")
    long_key = {"dataframe_records": [{"a" * 100: 1.0}]}
    r = _post(client, "/models/small/invocations", long_key)
    assert "max_string_bytes=64" in _refused(r, 413, "body")


def test_a_body_declared_too_large_is_refused_before_it_is_read(url: str) -> None:
    """A Content-Length over the bound is answered at once, with no byte of the body sent."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 104857600\r\n\r\n"
        )
        answer = b""
        while b"max_body_bytes" not in answer:
            chunk = s.recv(65536)
            assert chunk, f"the server closed without saying why: {answer!r}"
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


# -- generated: a valid request with one defect ------------------------------------------------
DEFECTS: dict[str, Any] = {
    "bool": True,
    "numeric string": "1.5",
    "null": None,
    "huge": 10**400,
    "list": [1.0],
    "object": {"v": 1},
}


@st.composite
def defective_v2(draw: st.DrawFn) -> tuple[dict[str, Any], str | None, int]:
    """A request for ``small`` as one 2-D tensor or three columns, valid or with one defect;
    with the field that the answer must name (None when it is valid) and the rows."""
    rows = draw(st.integers(1, 50))
    datatype = draw(st.sampled_from(("FP32", "FP64", "INT32", "INT64", "UINT16")))
    if datatype.startswith("FP"):
        cell = st.floats(-1e6, 1e6) | st.integers(-1000, 1000)
    else:
        cell = st.integers(0, 100)
    values = draw(st.lists(cell, min_size=rows * 3, max_size=rows * 3))
    per_column = draw(st.booleans())
    if per_column:
        inputs = [tensor(n, [rows], datatype, values[i::3]) for i, n in enumerate("abc")]
    else:
        nested = draw(st.booleans())
        data = [values[i : i + 3] for i in range(0, len(values), 3)] if nested else values
        inputs = [tensor("x", [rows, 3], datatype, data)]
    defect = draw(st.sampled_from((None, *DEFECTS, "shape", "datatype", "too many rows")))
    target = draw(st.integers(0, len(inputs) - 1))
    spec = inputs[target]
    if defect is None:
        return {"inputs": inputs}, None, rows
    if defect in DEFECTS:
        flat = spec["data"] if not isinstance(spec["data"][0], list) else spec["data"][0]
        flat[draw(st.integers(0, len(flat) - 1))] = DEFECTS[defect]
    elif defect == "shape":
        spec["shape"] = draw(
            st.sampled_from([[True, 3], [-rows], [rows + 1, 3], [2**62, 4], [1] * 9, ["1"], [1.5]])
        )
    elif defect == "datatype":
        spec["datatype"] = draw(st.sampled_from(["FP128", "", "fp64", "BOOL", "BYTES", 3]))
    else:
        spec["shape"] = [51, 3] if not per_column else [51]
        spec["data"] = [1.0] * (153 if not per_column else 51)
        for other in inputs:
            if other is not spec:
                other["shape"], other["data"] = [51], [1.0] * 51
        return {"inputs": inputs}, inputs[0]["name"], rows  # every input is over: the first
    return {"inputs": inputs}, spec["name"], rows


@QUICK
@given(case=defective_v2())
def test_generated_v2_requests_are_answered_or_refused_naming_the_defect(
    client: httpx.Client, case: tuple[dict[str, Any], str | None, int]
) -> None:
    doc, field, rows = case
    r = _post(client, "/v2/models/small/infer", doc)
    if field is None:
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["shape"] == [rows]
    else:
        _refused(r, (400, 413), field)


@st.composite
def defective_mlflow(draw: st.DrawFn) -> tuple[dict[str, Any], str | None, int]:
    rows = draw(st.integers(1, 50))
    table = draw(
        st.lists(
            st.lists(st.floats(-1e6, 1e6) | st.integers(-1000, 1000), min_size=3, max_size=3),
            min_size=rows,
            max_size=rows,
        )
    )
    defect = draw(st.sampled_from((None, "bool", "numeric string", "null", "huge")))
    column = draw(st.integers(0, 2))
    if defect is not None:
        table[draw(st.integers(0, rows - 1))][column] = DEFECTS[defect]
    form = draw(st.sampled_from(("instances", "records", "split", "columns")))
    names = ["a", "b", "c"]
    if form == "instances":
        doc: dict[str, Any] = {"instances": table}
    elif form == "records":
        doc = {"dataframe_records": [dict(zip(names, row, strict=True)) for row in table]}
    elif form == "split":
        doc = {"dataframe_split": {"columns": names, "data": table}}
    else:
        doc = {"inputs": {n: [row[j] for row in table] for j, n in enumerate(names)}}
    return doc, None if defect is None else names[column], rows


@QUICK
@given(case=defective_mlflow())
def test_generated_mlflow_requests_are_answered_or_refused_naming_the_column(
    client: httpx.Client, case: tuple[dict[str, Any], str | None, int]
) -> None:
    doc, field, rows = case
    r = _post(client, "/models/small/invocations", doc)
    if field is None:
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == rows
    else:
        _refused(r, 400, field)


# -- generated: anything at all ----------------------------------------------------------------
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**62, 2**63, 2**64, -(2**63) - 1, 10**400, -1])
    | st.floats()
    | st.text(max_size=4)
    | st.sampled_from(["1.5", "NaN", "true"])
)
ANY_JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)
SHAPES = st.lists(
    st.integers(-2, 6) | st.sampled_from([2**62, 2**32, 2**64, True, False, 1.0, "2", None]),
    max_size=5,
) | st.sampled_from([[1] * 70, [2**32, 2**32], [2**62, 4]])


@st.composite
def any_v2(draw: st.DrawFn) -> dict[str, Any]:
    inputs = []
    for _ in range(draw(st.integers(1, 4))):
        spec: dict[str, Any] = {}
        if draw(st.integers(0, 9)):
            spec["name"] = draw(st.sampled_from(["x", "a", "b", "c", "zz"]) | ANY_JSON)
        if draw(st.integers(0, 9)):
            spec["shape"] = draw(SHAPES | ANY_JSON)
        if draw(st.integers(0, 9)):
            spec["datatype"] = draw(st.sampled_from(DATATYPES) | ANY_JSON)
        if draw(st.integers(0, 9)):
            spec["data"] = draw(st.lists(SCALARS, max_size=20) | ANY_JSON)
        if draw(st.integers(0, 4)) == 0:
            spec["parameters"] = draw(ANY_JSON)
        inputs.append(spec)
    doc: dict[str, Any] = {"inputs": inputs}
    if draw(st.integers(0, 4)) == 0:
        doc["outputs"] = draw(ANY_JSON)
    return doc


def _acceptable(doc: dict[str, Any]) -> bool:
    """What the numeric model ``small`` may take: every tensor named, a list of non-negative
    integer sizes whose product is its number of values, numbers of its datatype in range."""
    for spec in doc["inputs"]:
        shape, datatype, data = spec.get("shape"), spec.get("datatype"), spec.get("data")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            return False
        if datatype not in (*FP_TYPES, *INT_TYPES):
            return False
        flat = data if isinstance(data, list) else [data]
        while any(isinstance(v, list) for v in flat):
            if not all(isinstance(v, list) for v in flat):
                return False
            flat = [v for inner in flat for v in inner]
        if len(flat) != math.prod(shape):
            return False
        for v in flat:
            if datatype in FP_TYPES:
                if type(v) not in (int, float) or (type(v) is float and not math.isfinite(v)):
                    return False
            elif (
                type(v) is not int
                or not NUMBER_RANGE[datatype][0] <= v <= NUMBER_RANGE[datatype][1]
            ):
                return False
    return True


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(doc=any_v2())
def test_any_v2_request_is_never_a_5xx_and_is_taken_only_when_valid(
    client: httpx.Client, doc: dict[str, Any]
) -> None:
    r = _post(client, "/v2/models/small/infer", doc)
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        assert _acceptable(doc), doc
    else:
        assert r.status_code in (400, 413), r.text
        body = r.json()
        assert body["error"] and body.get("field"), body


@QUICK
@given(doc=st.dictionaries(st.sampled_from(["instances", "inputs", "dataframe_records",
                                             "dataframe_split", "params", "x"]),
                           ANY_JSON, max_size=2))  # fmt: skip
def test_any_mlflow_request_is_never_a_5xx_and_takes_only_numbers(
    client: httpx.Client, doc: dict[str, Any]
) -> None:
    r = _post(client, "/models/small/invocations", doc)
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        data = {k: v for k, v in doc.items() if k != "params"}
        split = data.get("dataframe_split")
        if isinstance(split, dict):
            data = split.get("data")
        assert not _scalars(data) & {bool, str}, doc  # a numeric model took only numbers
    else:
        assert r.status_code in (400, 413), r.text
        assert r.json()["message"], r.text


def _scalars(value: Any) -> set[type]:
    if isinstance(value, dict):
        return set().union(set(), *(_scalars(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(set(), *(_scalars(v) for v in value))
    return {type(value)}
