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
from shipyard.registry.views import (
    AliasPointer,
    ModelInfo,
    default_aliases_in,
    model_in,
    models_in,
    require_model_in,
)

__all__ = [
    "PREDICTION_COLUMN",
    "TRUST_FLAG",
    "AliasMove",
    "AliasPointer",
    "ColumnSpec",
    "MlflowModel",
    "ModelFile",
    "ModelInfo",
    "PickleTrust",
    "Predictor",
    "Registry",
    "Signature",
    "UnsafeModelFile",
    "VersionInfo",
    "default_aliases_in",
    "import_mlflow",
    "load_mlflow_folder",
    "model_in",
    "models_in",
    "read_model_file",
    "register_model",
    "require_model_in",
]
