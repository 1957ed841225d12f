"""The Open Inference Protocol (KServe V2) request and response, with the binary tensor extension.

Reference: kserve/open-inference-protocol, ``specification/protocol/inference_rest.md``, and
Triton's ``binary_tensor_data`` extension (``docs/protocol/extension_binary_data.md``): the body is
the JSON header followed by raw little-endian tensor bytes, the JSON length is given by the
``Inference-Header-Content-Length`` header, each binary input carries
``parameters.binary_data_size`` and no ``data``; BYTES elements have a 4-byte length prefix.

Two ways to send a table are accepted: one 2-D tensor ``[rows, columns]`` whose columns follow
the signature's order, or one tensor per column named after the signature's columns.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shipyard.errors import InvalidInput, SchemaViolation
from shipyard.registry.signature import NUMERIC, Signature

DTYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
KIND_TO_V2 = {"f": "FP64", "i": "INT64", "u": "UINT64", "b": "BOOL"}
SIGNATURE_TO_V2 = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
}
OUTPUTS = ("predict", "predict_proba")


@dataclass
class V2Request:
    id: str | None
    x: np.ndarray[Any, Any]
    outputs: list[str]
    binary_outputs: set[str] = field(default_factory=set)


def _decode_bytes_tensor(raw: bytes, name: str) -> list[str]:
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise SchemaViolation(f"input {name!r}: truncated BYTES element", field=name)
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        out.append(raw[pos : pos + n].decode("utf-8", "replace"))
        pos += n
    return out


def _encode_bytes_tensor(values: np.ndarray[Any, Any]) -> bytes:
    parts = []
    for v in values.ravel().tolist():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


def _tensor(
    spec: dict[str, Any], binary: memoryview, offset: int
) -> tuple[np.ndarray[Any, Any], int]:
    name = spec.get("name")
    if not isinstance(name, str):
        raise InvalidInput("every input needs a 'name'")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SchemaViolation(f"input {name!r}: 'shape' must be a list of sizes", field=name)
    datatype = spec.get("datatype")
    count = int(np.prod(shape)) if shape else 1
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise SchemaViolation(
                f"input {name!r}: binary_data_size {size!r} runs past the body", field=name
            )
        raw = bytes(binary[offset : offset + size])
        offset += size
        if datatype == "BYTES":
            values: Any = _decode_bytes_tensor(raw, name)
            arr = np.asarray(values, dtype=object)
        elif datatype in DTYPES:
            dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
            if size != count * dtype.itemsize:
                raise SchemaViolation(
                    f"input {name!r}: {size} bytes do not hold {count} {datatype} values",
                    field=name,
                )
            arr = np.frombuffer(raw, dtype=dtype)
        else:
            raise SchemaViolation(f"input {name!r}: unknown datatype {datatype!r}", field=name)
    else:
        if "data" not in spec:
            raise SchemaViolation(f"input {name!r} has no 'data'", field=name)
        if datatype == "BYTES":
            arr = np.asarray(spec["data"], dtype=object).ravel()
        elif datatype in DTYPES:
            try:
                arr = np.asarray(spec["data"], dtype=DTYPES[datatype]).ravel()
            except (ValueError, TypeError):
                raise SchemaViolation(
                    f"input {name!r}: data is not all {datatype} values", field=name
                ) from None
        else:
            raise SchemaViolation(f"input {name!r}: unknown datatype {datatype!r}", field=name)
    if arr.size != count:
        raise SchemaViolation(
            f"input {name!r}: shape {shape} needs {count} values, got {arr.size}", field=name
        )
    return arr.reshape(shape) if shape else arr, offset


def parse_request(body: bytes, header_length: int | None, signature: Signature) -> V2Request:
    """Parse and validate an inference request into a 2-D array in signature order."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise InvalidInput("Inference-Header-Content-Length is larger than the body")
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        head, binary = body, memoryview(b"")
    try:
        req = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the request is not valid JSON: {exc}") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise InvalidInput("the request needs a non-empty 'inputs' list")
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for spec in req["inputs"]:
        if not isinstance(spec, dict):
            raise InvalidInput("every input must be an object")
        arr, offset = _tensor(spec, binary, offset)
        tensors[spec["name"]] = arr
    x = _to_table(tensors, signature)
    params = req.get("parameters") or {}
    binary_all = isinstance(params, dict) and bool(params.get("binary_data_output"))
    wanted = req.get("outputs")
    outputs, binary_outputs = [], set()
    if wanted:
        if not isinstance(wanted, list):
            raise InvalidInput("'outputs' must be a list")
        for out in wanted:
            name = out.get("name") if isinstance(out, dict) else None
            if name not in OUTPUTS:
                raise InvalidInput(f"unknown output {name!r}; this model has {list(OUTPUTS)}")
            outputs.append(name)
            if binary_all or (out.get("parameters") or {}).get("binary_data"):
                binary_outputs.add(name)
    else:
        outputs = ["predict"]
        if binary_all:
            binary_outputs.add("predict")
    rid = req.get("id")
    return V2Request(str(rid) if rid is not None else None, x, outputs, binary_outputs)


def _to_table(
    tensors: dict[str, np.ndarray[Any, Any]], signature: Signature
) -> np.ndarray[Any, Any]:
    names = signature.names
    if len(tensors) == 1:
        ((name, arr),) = tensors.items()
        if name not in names or len(names) == 1:
            if arr.ndim == 1 and len(names) == 1:
                arr = arr.reshape(-1, 1)
            if arr.ndim != 2 or arr.shape[1] != len(names):
                raise SchemaViolation(
                    f"input {name!r}: shape {list(arr.shape)} must be [rows, {len(names)}] "
                    f"with columns {list(names)}",
                    field=name,
                )
            return _checked(arr, signature, name)
    unknown = [n for n in tensors if n not in names]
    if unknown:
        raise SchemaViolation(
            f"unknown input {unknown[0]!r}; the model expects {list(names)}", field=unknown[0]
        )
    missing = [c.name for c in signature.inputs if c.required and c.name not in tensors]
    if missing:
        raise SchemaViolation(f"missing required input {missing[0]!r}", field=missing[0])
    rows = {arr.shape[0] if arr.ndim else 1 for arr in tensors.values()}
    if len(rows) != 1:
        raise SchemaViolation("inputs have different numbers of rows", field="inputs")
    n = rows.pop()
    cols = []
    for spec in signature.inputs:
        if spec.name not in tensors:
            cols.append(np.full(n, np.nan))
            continue
        arr = tensors[spec.name]
        if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[1] != 1):
            raise SchemaViolation(
                f"input {spec.name!r}: shape {list(arr.shape)} must be [rows] or [rows, 1]",
                field=spec.name,
            )
        cols.append(arr.reshape(n))
    if signature.numeric:
        return _checked(np.column_stack(cols), signature, "inputs")
    return signature.rows_to_array(np.column_stack(cols).astype(object).tolist())


def _checked(arr: np.ndarray[Any, Any], signature: Signature, name: str) -> np.ndarray[Any, Any]:
    if arr.shape[0] == 0:
        raise SchemaViolation(f"input {name!r} has no rows", field=name)
    if not signature.numeric:
        return signature.rows_to_array(arr.astype(object).tolist())
    if arr.dtype.kind not in "fiub":
        raise SchemaViolation(
            f"input {name!r}: the model expects numbers for {list(signature.names)}, not BYTES",
            field=name,
        )
    return signature.check_numeric(arr.astype(np.float64, copy=False))


def _v2_datatype(arr: np.ndarray[Any, Any]) -> str:
    return KIND_TO_V2.get(arr.dtype.kind, "BYTES")


def encode_response(
    model: str,
    version: int,
    request_id: str,
    results: dict[str, np.ndarray[Any, Any]],
    binary_outputs: set[str],
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    outputs, tail = [], []
    for name, arr in results.items():
        datatype = _v2_datatype(arr)
        entry: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": datatype}
        if name in binary_outputs:
            if datatype == "BYTES":
                raw = _encode_bytes_tensor(arr)
            else:
                raw = np.ascontiguousarray(
                    arr, dtype=np.dtype(DTYPES[datatype]).newbyteorder("<")
                ).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            entry["data"] = (
                arr.ravel().tolist()
                if datatype != "BYTES"
                else [str(v) for v in arr.ravel().tolist()]
            )
        outputs.append(entry)
    head = json.dumps(
        {"model_name": model, "model_version": str(version), "id": request_id, "outputs": outputs}
    ).encode()
    if tail:
        return head + b"".join(tail), len(head)
    return head, None


def metadata(model: str, versions: list[int], flavor: str, signature: Signature) -> dict[str, Any]:
    """``GET /v2/models/{m}``: names, versions, platform, inputs and outputs (−1 is variable)."""
    outputs = [{"name": "predict", "datatype": "BYTES", "shape": [-1]}]
    if signature.outputs:
        outputs[0]["datatype"] = SIGNATURE_TO_V2.get(signature.outputs[0].type, "BYTES")
    return {
        "name": model,
        "versions": [str(v) for v in versions],
        "platform": f"shipyard-{flavor}",
        "inputs": [
            {"name": c.name, "datatype": SIGNATURE_TO_V2[c.type], "shape": [-1]}
            for c in signature.inputs
        ],
        "outputs": outputs,
        "parameters": {"numeric": all(c.type in NUMERIC for c in signature.inputs)},
    }
