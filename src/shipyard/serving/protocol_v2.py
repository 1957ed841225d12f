"""The Open Inference Protocol (KServe V2) request and response, with the binary tensor extension.

Reference: kserve/open-inference-protocol, ``specification/protocol/inference_rest.md``, and
Triton's ``binary_tensor_data`` extension (``docs/protocol/extension_binary_data.md``): the body is
the JSON header followed by raw little-endian tensor bytes, the JSON length is given by the
``Inference-Header-Content-Length`` header, each binary input carries
``parameters.binary_data_size`` and no ``data``; BYTES elements have a 4-byte length prefix.

Two ways to send a table are accepted: one 2-D tensor ``[rows, columns]`` whose columns follow
the signature's order, or one tensor per column named after the signature's columns.

Types are strict: a tensor's values must be of its datatype — a boolean or a string is not a
number, a number is not a BOOL, a float is not an integer — and an integer out of its datatype's
range (``2**63`` in INT64, ``-1`` in UINT64) is refused rather than wrapped; a BOOL or BYTES
tensor is not a numeric column. A shape is checked against the request's limits
(:mod:`shipyard.serving.limits`) before any array exists; BYTES elements are decoded up to the
shape's count and no further. Every refusal is a :class:`~shipyard.errors.SchemaViolation`
naming its field.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import pydantic_core

from shipyard.errors import SchemaViolation
from shipyard.registry.signature import NUMERIC, Signature
from shipyard.serving.limits import RequestLimits, load_json

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
_NUMBERS = {int, float}
_ALLOWED: dict[str, set[type]] = {
    **{t: _NUMBERS for t in ("FP16", "FP32", "FP64")},
    **{t: {int} for t in DTYPES if t.startswith(("INT", "UINT"))},
    "BOOL": {bool},
    "BYTES": {str},
}


@dataclass
class V2Request:
    id: str | None
    x: np.ndarray[Any, Any]
    outputs: list[str]
    binary_outputs: set[str] = field(default_factory=set)


def _decode_bytes_tensor(
    raw: memoryview, name: str, count: int, limits: RequestLimits
) -> list[str]:
    """Exactly ``count`` length-prefixed elements; each prefix is checked before its slice."""
    out, pos, end = [], 0, len(raw)
    for _ in range(count):
        if pos + 4 > end:
            raise SchemaViolation(f"input {name!r}: truncated BYTES element", field=name)
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        limits.check_string(n, name)
        if pos + n > end:
            raise SchemaViolation(f"input {name!r}: truncated BYTES element", field=name)
        out.append(bytes(raw[pos : pos + n]).decode("utf-8", "replace"))
        pos += n
    if pos != end:
        raise SchemaViolation(
            f"input {name!r}: binary_data_size holds more than the {count} BYTES elements "
            "of its shape",
            field=name,
        )
    return out


def _encode_bytes_tensor(values: np.ndarray[Any, Any]) -> bytes:
    parts = []
    for v in values.ravel().tolist():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


def _flatten(data: Any, name: str, max_depth: int) -> list[Any]:
    """V2's ``data``, flat or nested row-major, as one flat list (lists within the outer list
    at most ``max_depth`` deep: one less than the tensor's number of dimensions)."""
    if not isinstance(data, list):
        return [data]
    flat = data
    for _ in range(max_depth):
        kinds = set(map(type, flat))
        if list not in kinds:
            return flat
        if kinds != {list}:
            raise SchemaViolation(
                f"input {name!r}: 'data' mixes lists and values at one level", field=name
            )
        flat = list(chain.from_iterable(flat))
    if any(type(v) is list for v in flat):
        raise SchemaViolation(
            f"input {name!r}: 'data' nests deeper than its shape has dimensions", field=name
        )
    return flat


def _strict_values(values: list[Any], datatype: str, name: str) -> np.ndarray[Any, Any]:
    """``values`` as a ``datatype`` array, refusing what is not that type: a boolean or a string
    is not a number, a number is not a boolean, a float is not an integer, and an integer out of
    the type's range is an error rather than a wrapped or rounded value."""
    kinds = set(map(type, values))
    allowed = _ALLOWED[datatype]
    if not kinds <= allowed:
        bad = next(v for v in values if type(v) not in allowed)
        raise SchemaViolation(
            f"input {name!r}: {type(bad).__name__} {_short(bad)} is not a {datatype} value",
            field=name,
        )
    if datatype == "BYTES":
        return np.asarray(values, dtype=object)
    try:
        with np.errstate(over="ignore"):  # FP16/FP32 overflow becomes inf, refused as not finite
            return np.asarray(values, dtype=DTYPES[datatype])
    except OverflowError:
        low, high = _range(datatype)
        bad = next(v for v in values if not low <= v <= high)
        raise SchemaViolation(
            f"input {name!r}: {_short(bad)} is out of range for {datatype}", field=name
        ) from None


def _range(datatype: str) -> tuple[float, float]:
    dtype = np.dtype(DTYPES[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return int(info.min), int(info.max)
    return -float(np.finfo(dtype).max), float(np.finfo(dtype).max)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _tensor(
    spec: Any, binary: memoryview, offset: int, limits: RequestLimits
) -> tuple[str, np.ndarray[Any, Any], int]:
    if not isinstance(spec, dict):
        raise SchemaViolation("every input must be an object", field="inputs")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaViolation("every input needs a 'name'", field="inputs")
    if len(name) > 200:
        raise SchemaViolation(f"input {name[:20]!r}…: a name of {len(name)} characters", "name")
    shape, count = limits.check_shape(spec.get("shape"), name)
    datatype = spec.get("datatype")
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in DTYPES):
        raise SchemaViolation(
            f"input {name!r}: unknown datatype {_short(datatype)}; use one of {[*DTYPES, 'BYTES']}",
            field=name,
        )
    params = spec.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise SchemaViolation(f"input {name!r}: 'parameters' must be an object", field=name)
    size = (params or {}).get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise SchemaViolation(
                f"input {name!r}: binary_data_size {_short(size)} runs past the body", field=name
            )
        if "data" in spec:
            raise SchemaViolation(
                f"input {name!r} has both 'data' and binary_data_size", field=name
            )
        raw = binary[offset : offset + size]
        offset += size
        if datatype == "BYTES":
            arr = np.asarray(_decode_bytes_tensor(raw, name, count, limits), dtype=object)
        else:
            dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
            if size != count * dtype.itemsize:
                raise SchemaViolation(
                    f"input {name!r}: {size} bytes do not hold {count} {datatype} values",
                    field=name,
                )
            arr = np.frombuffer(raw, dtype=dtype)
            if datatype == "BOOL" and arr.size and arr.view(np.uint8).max() > 1:
                raise SchemaViolation(f"input {name!r}: BOOL bytes must be 0 or 1", field=name)
    else:
        if "data" not in spec:
            raise SchemaViolation(f"input {name!r} has no 'data'", field=name)
        values = _flatten(spec["data"], name, len(shape) - 1)
        if len(values) != count:
            raise SchemaViolation(
                f"input {name!r}: shape {shape} needs {count} values, got {len(values)}",
                field=name,
            )
        arr = _strict_values(values, datatype, name)
    if arr.size != count:
        raise SchemaViolation(
            f"input {name!r}: shape {shape} needs {count} values, got {arr.size}", field=name
        )
    return name, arr.reshape(shape) if shape else arr, offset


def _outputs(req: dict[str, Any]) -> tuple[list[str], set[str]]:
    params = req.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise SchemaViolation("'parameters' must be an object", field="parameters")
    binary_all = bool((params or {}).get("binary_data_output"))
    wanted = req.get("outputs")
    if not wanted:
        return ["predict"], {"predict"} if binary_all else set()
    if not isinstance(wanted, list):
        raise SchemaViolation("'outputs' must be a list", field="outputs")
    outputs, binary_outputs = [], set()
    for out in wanted:
        name = out.get("name") if isinstance(out, dict) else None
        if name not in OUTPUTS:
            raise SchemaViolation(
                f"unknown output {_short(name)} in 'outputs'; this model has {list(OUTPUTS)}",
                field="outputs",
            )
        out_params = out.get("parameters")
        if out_params is not None and not isinstance(out_params, dict):
            raise SchemaViolation(
                f"outputs: the parameters of {name!r} must be an object", field="outputs"
            )
        outputs.append(name)
        if binary_all or (out_params or {}).get("binary_data"):
            binary_outputs.add(name)
    return outputs, binary_outputs


def parse_request(
    body: bytes, header_length: int | None, signature: Signature, limits: RequestLimits
) -> V2Request:
    """Parse and validate an inference request into a 2-D array in signature order, within
    ``limits`` (:mod:`shipyard.serving.limits`)."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise SchemaViolation(
                "Inference-Header-Content-Length is larger than the body",
                field="Inference-Header-Content-Length",
            )
        head, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        head, binary = body, memoryview(b"")
    req, _ = load_json(head, limits)
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise SchemaViolation("the request needs a non-empty 'inputs' list", field="inputs")
    if len(req["inputs"]) > max(1, len(signature.names)):
        raise SchemaViolation(
            f"{len(req['inputs'])} inputs for a model of {len(signature.names)} columns "
            f"{list(signature.names)[:20]}",
            field="inputs",
        )
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for spec in req["inputs"]:
        name, arr, offset = _tensor(spec, binary, offset, limits)
        if name in tensors:
            raise SchemaViolation(f"input {name!r} is given twice", field=name)
        tensors[name] = arr
    outputs, binary_outputs = _outputs(req)
    x = _to_table(tensors, signature)
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str | int):
        raise SchemaViolation("'id' must be a string", field="id")
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
        if spec.type in NUMERIC and arr.dtype.kind not in "fiu":
            raise SchemaViolation(
                f"input {spec.name!r}: the model expects {spec.type} values, "
                f"not {_v2_datatype(arr)}",
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
    if arr.dtype.kind not in "fiu":
        raise SchemaViolation(
            f"input {name!r}: the model expects numbers for {list(signature.names)}, "
            f"not {_v2_datatype(arr)}",
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
    head = pydantic_core.to_json(  # as MLflow's answers are (protocol_mlflow.encode_predictions)
        {"model_name": model, "model_version": str(version), "id": request_id, "outputs": outputs}
    )
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
