"""The model registry: models, versions, flavors, signatures, aliases and their history."""

from shipyard.registry.flavors import Predictor
from shipyard.registry.mlflow_import import MlflowModel, import_mlflow, load_mlflow_folder
from shipyard.registry.model_files import (
    TRUST_FLAG,
    ModelFile,
    PickleTrust,
    UnsafeModelFile,
    read_model_file,
)
from shipyard.registry.models import (
    PREDICTION_COLUMN,
    AliasMove,
    Registry,
    VersionInfo,
    register_model,
)
from shipyard.registry.signature import ColumnSpec, Signature

__all__ = [
    "PREDICTION_COLUMN",
    "TRUST_FLAG",
    "AliasMove",
    "ColumnSpec",
    "MlflowModel",
    "ModelFile",
    "PickleTrust",
    "Predictor",
    "Registry",
    "Signature",
    "UnsafeModelFile",
    "VersionInfo",
    "import_mlflow",
    "load_mlflow_folder",
    "read_model_file",
    "register_model",
]
