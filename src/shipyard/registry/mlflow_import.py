"""Importing MLflow model folders without MLflow.

An MLflow model folder holds an ``MLmodel`` YAML file. Its ``flavors.sklearn`` section names the
file (``pickled_model``) and its ``serialization_format``: ``skops`` (MLflow 3's default),
``cloudpickle`` or ``pickle``; a ``python_function`` section with
``loader_module: mlflow.sklearn`` points at the same file. The signature sits under
``signature.inputs`` as a JSON string of ``{"type", "name", "required"}`` objects.

Pickled models are loaded once here, at import, which runs the code they carry: importing is the
decision to trust the folder. They are re-saved as skops, so every later load is safe.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import yaml

from shipyard.errors import InvalidInput
from shipyard.registry import flavors
from shipyard.registry.models import Registry, VersionInfo
from shipyard.registry.signature import Signature


def read_mlmodel(folder: Path) -> dict[str, Any]:
    path = folder / "MLmodel"
    if not path.is_file():
        raise InvalidInput(f"{folder} is not an MLflow model folder: it has no MLmodel file")
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("flavors"), dict):
        raise InvalidInput(f"{path} has no 'flavors' section")
    return meta


def _sklearn_section(meta: dict[str, Any], folder: Path) -> tuple[str, str]:
    fl = meta["flavors"]
    if "sklearn" in fl:
        section = fl["sklearn"]
        return section.get("pickled_model", "model.pkl"), section.get(
            "serialization_format", "cloudpickle"
        )
    pyfunc = fl.get("python_function") or {}
    if pyfunc.get("loader_module") == "mlflow.sklearn":
        name = str(pyfunc.get("model_path") or pyfunc.get("data") or "model.pkl")
        return name, "skops" if name.endswith(".skops") else "cloudpickle"
    raise InvalidInput(
        f"{folder}/MLmodel has flavors {sorted(fl)}: only sklearn (or python_function with "
        "loader_module mlflow.sklearn) can be imported without MLflow"
    )


def load_mlflow_folder(folder: Path) -> tuple[Any, bytes, Signature | None, dict[str, Any]]:
    """(estimator, skops bytes, signature or None, MLmodel metadata) of an MLflow folder."""
    folder = Path(folder)
    meta = read_mlmodel(folder)
    filename, fmt = _sklearn_section(meta, folder)
    model_file = folder / filename
    if not model_file.is_file():
        raise InvalidInput(f"{folder}/MLmodel names {filename}, which is not in the folder")
    raw = model_file.read_bytes()
    if fmt == "skops":
        estimator = flavors.load_skops(raw)
        data = raw
    elif fmt in ("pickle", "cloudpickle"):
        try:
            estimator = pickle.load(io.BytesIO(raw))
        except Exception as exc:
            raise InvalidInput(f"cannot unpickle {model_file}: {exc}") from None
        data, _ = flavors.dump("sklearn", estimator)
    else:
        raise InvalidInput(f"{folder}/MLmodel: unknown serialization_format {fmt!r}")
    signature = None
    sig = meta.get("signature") or {}
    if sig.get("inputs"):
        signature = Signature.from_mlflow(sig["inputs"], sig.get("outputs"))
    return estimator, data, signature, meta


def import_mlflow(
    registry: Registry, folder: Path, name: str, alias: str | None = None
) -> VersionInfo:
    """Register the scikit-learn model of an MLflow folder as a new version of ``name``."""
    estimator, data, signature, meta = load_mlflow_folder(folder)
    if signature is None:
        names = getattr(estimator, "feature_names_in_", None)
        width = getattr(estimator, "n_features_in_", None)
        if names is None and width is None:
            raise InvalidInput(f"{folder}/MLmodel has no signature and the model names no inputs")
        cols = (
            [str(n) for n in names]
            if names is not None
            else [f"x{i}" for i in range(int(width or 0))]
        )
        signature = Signature.from_json({"inputs": [{"name": c, "type": "double"} for c in cols]})
    return registry.register(
        name,
        estimator,
        flavor="sklearn",
        signature=signature,
        tags={"imported_from": "mlflow", "mlflow_run_id": meta.get("run_id")},
        alias=alias,
        artifact=(data, flavors.SKOPS),
    )
