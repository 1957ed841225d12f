"""The model registry: models, versions, flavors, signatures, aliases and their history."""

from shipyard.registry.flavors import Predictor
from shipyard.registry.mlflow_import import import_mlflow, load_mlflow_folder
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
    "AliasMove",
    "ColumnSpec",
    "Predictor",
    "Registry",
    "Signature",
    "VersionInfo",
    "import_mlflow",
    "load_mlflow_folder",
    "register_model",
]
