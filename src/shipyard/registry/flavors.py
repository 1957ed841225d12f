"""Flavors: how a model becomes bytes and how bytes become a model that predicts.

- ``sklearn``: saved with **skops** (``skops.io``), not pickle. Loading a pickle runs whatever
  code it carries; loading skops only rebuilds objects of types we trust. Shipyard trusts the
  types that come from scikit-learn, NumPy and SciPy (and skops' own), and refuses any other
  type with a clear error, so a tampered or foreign artifact cannot run code at load.
- ``python``: a generic callable ``f(X) -> predictions`` (optionally with ``predict_proba``),
  saved with joblib (pickle). It is loaded only after its sha256 matches the registered digest,
  i.e. only bytes someone registered on purpose; still, register only code you trust.
- ``onnx``: ONNX bytes run by onnxruntime, when onnxruntime is installed.
"""

from __future__ import annotations

import importlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shipyard.errors import ArtifactError, InvalidInput

SKOPS = "application/x-skops"
JOBLIB = "application/x-joblib"
ONNX = "application/x-onnx"
FLAVORS = ("sklearn", "python", "onnx")
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "skops.", "builtins.", "collections.")


@dataclass
class Predictor:
    """A loaded model: ``predict(X)`` and, for classifiers, ``predict_proba(X)``.

    ``X`` is a 2-D array in signature order (float64 when every input is numeric). When the
    estimator was fitted on a DataFrame (it has ``feature_names_in_``), rows are wrapped into a
    DataFrame with those names, which costs more per request than the array path.
    """

    predict_fn: Callable[[Any], Any]
    proba_fn: Callable[[Any], Any] | None = None
    classes: list[Any] | None = None
    feature_names: list[str] | None = None
    raw: Any = field(default=None, repr=False)

    def _frame(self, x: np.ndarray[Any, Any]) -> Any:
        if self.feature_names is None:
            return x
        import pandas as pd

        return pd.DataFrame(x, columns=self.feature_names)

    def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.asarray(self.predict_fn(self._frame(x)))

    def predict_proba(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
        if self.proba_fn is None:
            return None
        return np.asarray(self.proba_fn(self._frame(x)))


def dump(flavor: str, model: Any) -> tuple[bytes, str]:
    """The bytes and media type of ``model`` in ``flavor``."""
    if flavor == "sklearn":
        import skops.io as sio

        try:
            return sio.dumps(model), SKOPS
        except Exception as exc:
            raise ArtifactError(f"cannot save {type(model).__name__} with skops: {exc}") from None
    if flavor == "python":
        if not callable(model) and not hasattr(model, "predict"):
            raise InvalidInput("a python-flavor model must be callable or have .predict")
        import joblib

        buf = io.BytesIO()
        try:
            joblib.dump(model, buf)
        except Exception as exc:
            raise ArtifactError(f"cannot pickle {type(model).__name__}: {exc}") from None
        return buf.getvalue(), JOBLIB
    if flavor == "onnx":
        if not isinstance(model, bytes):
            raise InvalidInput("an onnx-flavor model is given as the bytes of the .onnx file")
        return model, ONNX
    raise InvalidInput(f"unknown flavor {flavor!r}; use one of {list(FLAVORS)}")


def guess_flavor(model: Any) -> str:
    module = type(model).__module__
    if module.startswith("sklearn.") or (
        hasattr(model, "fit") and hasattr(model, "predict") and hasattr(model, "get_params")
    ):
        return "sklearn"
    if isinstance(model, bytes):
        return "onnx"
    return "python"


def load_skops(data: bytes) -> Any:
    """Rebuild a scikit-learn object from skops bytes, trusting only known-safe modules."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ArtifactError(f"not a readable skops file: {exc}") from None
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise ArtifactError(
            f"refusing to load a model that needs untrusted types {refused[:5]}: "
            "only scikit-learn, NumPy and SciPy types are loaded from skops files"
        )
    try:
        return sio.loads(data, trusted=untrusted)
    except Exception as exc:
        raise ArtifactError(f"cannot load the skops model: {exc}") from None


def load(flavor: str, data: bytes) -> Predictor:
    """A predictor from verified bytes."""
    if flavor == "sklearn":
        return _wrap(load_skops(data))
    if flavor == "python":
        import joblib

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                obj = joblib.load(io.BytesIO(data))
        except Exception as exc:
            raise ArtifactError(f"cannot load the python model: {exc}") from None
        return _wrap(obj)
    if flavor == "onnx":
        return _load_onnx(data)
    raise ArtifactError(f"unknown flavor {flavor!r}")


def _wrap(obj: Any) -> Predictor:
    names = getattr(obj, "feature_names_in_", None)
    if hasattr(obj, "predict"):
        proba = getattr(obj, "predict_proba", None)
        classes = getattr(obj, "classes_", None)
        return Predictor(
            obj.predict,
            proba,
            None if classes is None else list(np.asarray(classes).tolist()),
            None if names is None else [str(n) for n in names],
            obj,
        )
    if callable(obj):
        return Predictor(obj, raw=obj)
    raise ArtifactError(f"a {type(obj).__name__} is neither callable nor has .predict")


def _load_onnx(data: bytes) -> Predictor:
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        raise ArtifactError("the onnx flavor needs onnxruntime: pip install onnxruntime") from None
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]

    def predict(x: Any) -> Any:
        return session.run(output_names[:1], {input_name: np.asarray(x, dtype=np.float32)})[0]

    proba = None
    if len(output_names) > 1:

        def proba(x: Any) -> Any:
            return session.run(output_names[1:2], {input_name: np.asarray(x, dtype=np.float32)})[0]

    return Predictor(predict, proba, raw=session)
