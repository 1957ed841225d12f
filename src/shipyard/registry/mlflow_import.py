"""Importing MLflow model folders without MLflow.

An MLflow model folder holds an ``MLmodel`` YAML file. Its ``flavors.sklearn`` section names the
file (``pickled_model``) and its ``serialization_format``: ``skops`` (MLflow 3's default),
``cloudpickle`` or ``pickle``; a ``python_function`` section with
``loader_module: mlflow.sklearn`` points at the same file. The signature sits under
``signature.inputs`` as a JSON string of ``{"type", "name", "required"}`` objects.

A skops model is imported as it is, after its types are checked. A pickled model is refused:
loading it would run the code it carries. Under the trust flag
(:data:`~shipyard.registry.model_files.TRUST_FLAG`) it is loaded once, here, re-saved as skops
(:func:`~shipyard.registry.model_files.resave`), and the version records the decision. Every
file the folder names must stay inside the folder, symlinks resolved. ONNX models are not
imported: converting one needs onnxruntime, which Shipyard does not depend on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shipyard.config import yaml_error_line
from shipyard.errors import InvalidInput
from shipyard.registry import flavors
from shipyard.registry.model_files import (
    ModelFile,
    inside,
    load_trusted_pickle,
    refuse_pickle,
    resave,
)
from shipyard.registry.models import Registry, VersionInfo
from shipyard.registry.signature import Signature


@dataclass(frozen=True)
class MlflowModel:
    """What an MLflow folder holds: the model file as Shipyard stores it, its signature, MLmodel."""

    file: ModelFile
    signature: Signature | None
    meta: dict[str, Any]


def read_mlmodel(folder: Path) -> dict[str, Any]:
    if not (folder / "MLmodel").exists():
        raise InvalidInput(f"{folder} is not an MLflow model folder: it has no MLmodel file")
    path = inside(folder, "MLmodel")
    if not path.is_file():
        raise InvalidInput(f"{folder}/MLmodel is not a file")
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid YAML: {yaml_error_line(exc)}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("flavors"), dict):
        raise InvalidInput(f"{path} has no 'flavors' section")
    return meta


def _sklearn_section(meta: dict[str, Any], folder: Path) -> tuple[str, str]:
    fl = meta["flavors"]
    if isinstance(fl.get("sklearn"), dict):
        section = fl["sklearn"]
        return str(section.get("pickled_model", "model.pkl")), str(
            section.get("serialization_format", "cloudpickle")
        )
    pyfunc = fl.get("python_function")
    if isinstance(pyfunc, dict) and pyfunc.get("loader_module") == "mlflow.sklearn":
        name = str(pyfunc.get("model_path") or pyfunc.get("data") or "model.pkl")
        return name, "skops" if name.endswith(".skops") else "cloudpickle"
    raise InvalidInput(
        f"{folder}/MLmodel has flavors {sorted(fl)}: only sklearn (or python_function with "
        "loader_module mlflow.sklearn) can be imported without MLflow"
    )


def load_mlflow_folder(folder: Path, *, trust_pickle: bool = False) -> MlflowModel:
    """The scikit-learn model of an MLflow folder, as skops bytes; a pickle only under trust."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder")
    meta = read_mlmodel(folder)
    filename, fmt = _sklearn_section(meta, folder)
    if fmt not in ("skops", "pickle", "cloudpickle"):
        raise InvalidInput(f"{folder}/MLmodel: unknown serialization_format {fmt!r}")
    model_file = inside(folder, filename)
    if not model_file.is_file():
        raise InvalidInput(f"{folder}/MLmodel names {filename}, which is not in the folder")
    if fmt != "skops" and not trust_pickle:
        raise refuse_pickle(f"{folder}/{filename} ({fmt})")
    raw = model_file.read_bytes()
    if fmt == "skops":
        file = ModelFile(flavors.load_skops(raw), "sklearn", (raw, flavors.SKOPS))
    else:
        file = resave(*load_trusted_pickle(model_file, raw))
    signature = None
    sig = meta.get("signature") or {}
    if isinstance(sig, dict) and sig.get("inputs"):
        signature = Signature.from_mlflow(sig["inputs"], sig.get("outputs"))
    return MlflowModel(file, signature, meta)


def import_mlflow(
    registry: Registry,
    folder: Path,
    name: str,
    alias: str | None = None,
    *,
    trust_pickle: bool = False,
) -> VersionInfo:
    """Register the scikit-learn model of an MLflow folder as a new version of ``name``."""
    imported = load_mlflow_folder(folder, trust_pickle=trust_pickle)
    model, signature = imported.file.model, imported.signature
    if signature is None:
        names = getattr(model, "feature_names_in_", None)
        width = getattr(model, "n_features_in_", None)
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
        model,
        flavor=imported.file.flavor,
        signature=signature,
        tags={"imported_from": "mlflow", "mlflow_run_id": imported.meta.get("run_id")},
        alias=alias,
        artifact=imported.file.artifact,
        trust=imported.file.trust,
    )
