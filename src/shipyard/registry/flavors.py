"""Flavors: how a model becomes bytes and how bytes become a model that predicts.

- ``sklearn``: saved with **skops** (``skops.io``), not pickle. Loading a pickle runs whatever
  code it carries; loading skops only rebuilds objects of types we trust: skops' own defaults
  (primitives, containers, NumPy ufuncs, scikit-learn estimators) and, beyond them, *classes*
  defined in scikit-learn, NumPy, SciPy or skops (e.g. ``sklearn.tree._tree.Tree``). A function
  is never trusted beyond skops' defaults (``FunctionTransformer(func=eval)`` would run request
  data as code), nor a type from any other module. The same rule is checked when a model is
  saved, so a model that could not be served is refused when it is registered, not at serve time.
- ``python``: a generic callable ``f(X) -> predictions`` (optionally with ``predict_proba``),
  saved with joblib (pickle). :func:`load` unpickles it only when the caller says the bytes are
  trusted (``pickle_trusted=True``); the registry says so only for a version whose record shows
  that it pickled the object itself in the registering process, or that a person loaded the
  pickle under the trust flag (:mod:`shipyard.registry.model_files`).
- ``onnx``: ONNX bytes run by onnxruntime, when onnxruntime is installed (it is not a
  dependency of Shipyard: install it to serve ONNX models).
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
MEDIA_TYPES = {"sklearn": SKOPS, "python": JOBLIB, "onnx": ONNX}
TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy", "skops")
"""Packages whose classes a skops file may name beyond skops' own trusted defaults."""


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
            data = sio.dumps(model)
        except Exception as exc:
            raise ArtifactError(f"cannot save {type(model).__name__} with skops: {exc}") from None
        check_skops(
            data,
            f"a {type(model).__name__} saved with skops",
            "; register it with flavor='python' from your own code if you trust it",
        )
        return data, SKOPS
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


def trusted_skops_type(name: str) -> bool:
    """Whether ``name`` (``module.Class``) is a class defined under :data:`TRUSTED_PACKAGES`.

    Importing the module runs only the code of an installed, trusted library; nothing of the
    file itself. Functions and other objects are refused: skops would hand them to the model.
    """
    module, _, attr = name.rpartition(".")
    if module.split(".", 1)[0] not in TRUSTED_PACKAGES or not attr:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = getattr(importlib.import_module(module), attr)
    except Exception:  # any module that cannot be imported names no trusted class
        return False
    return isinstance(obj, type)


def refused_skops_types(data: bytes) -> list[str]:
    """The types a skops file needs that Shipyard will not load (empty: safe to load)."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ArtifactError(f"not a readable skops file: {exc}") from None
    return [t for t in untrusted if not trusted_skops_type(t)]


def check_skops(data: bytes, what: str = "the skops model", hint: str = "") -> None:
    """Refuse skops bytes that need a type :func:`trusted_skops_type` does not trust."""
    refused = refused_skops_types(data)
    if refused:
        raise ArtifactError(
            f"refusing {what}: it needs untrusted types {refused[:5]}; only scikit-learn, "
            f"NumPy and SciPy classes are loaded from skops files{hint}"
        )


def load_skops(data: bytes) -> Any:
    """Rebuild a scikit-learn object from skops bytes, trusting only known-safe classes."""
    import skops.io as sio

    check_skops(data)
    try:
        return sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    except Exception as exc:
        raise ArtifactError(f"cannot load the skops model: {exc}") from None


def load(flavor: str, data: bytes, *, pickle_trusted: bool = False) -> Predictor:
    """A predictor from verified bytes.

    The ``python`` flavor is a pickle: it is loaded only with ``pickle_trusted=True``, which the
    caller may pass only for bytes whose origin it knows (see :meth:`Registry.load`).
    """
    if flavor == "sklearn":
        return _wrap(load_skops(data))
    if flavor == "python":
        if not pickle_trusted:
            raise ArtifactError(
                "refusing to unpickle a python-flavor model of unknown origin: loading a pickle "
                "runs the code it carries"
            )
        try:
            obj = unpickle(data)
        except Exception as exc:
            raise ArtifactError(f"cannot load the python model: {exc}") from None
        return _wrap(obj)
    if flavor == "onnx":
        return _load_onnx(data)
    raise ArtifactError(f"unknown flavor {flavor!r}")


def unpickle(data: bytes) -> Any:
    """Load joblib or pickle bytes. This runs the code they carry: only for trusted bytes."""
    import joblib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return joblib.load(io.BytesIO(data))


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
