"""Model files handed in from outside: what Shipyard reads from them, and how.

A pickle (``.pkl``, ``.pickle``, ``.joblib``; an MLflow model saved with ``pickle`` or
``cloudpickle``) runs whatever code it carries the moment it is loaded, before any check can
look at the model. Shipyard never loads one unless the person registering it passes
:data:`TRUST_FLAG`. The version then records the decision: ``lineage["trust"]`` holds the flag,
who passed it, when, the file and its sha256 (:meth:`PickleTrust.record`), and the audit log
gets a ``model.trust_pickle`` event in the registering transaction.

A trusted pickle is re-saved in a safe format when one holds it (skops for scikit-learn), so
that no server unpickles it again; only a model skops cannot hold stays a pickle, and it is
served because its record shows the trust decision (:meth:`Registry.load`).

Names written inside a model folder (``MLmodel``'s ``pickled_model``, symlinks in the folder)
are resolved, symlinks followed, and must stay inside the folder (:func:`inside`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.errors import ArtifactError, InvalidInput
from shipyard.registry import flavors

TRUST_FLAG = "--unsafe-trust-pickle"
"""The command-line flag that lets a pickle be loaded (and so lets it run its code)."""

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


class UnsafeModelFile(InvalidInput):
    """A model file that would run code when loaded, or a path that leaves its model folder."""

    def __init__(self, message: str, path: Path | str) -> None:
        self.path = str(path)
        super().__init__(message)


@dataclass(frozen=True)
class PickleTrust:
    """One person's decision, taken with :data:`TRUST_FLAG`, to load one pickle file."""

    source: str
    sha256: str

    def record(self, actor: str, at: float) -> dict[str, Any]:
        """What the version and the audit event keep of the decision."""
        return {"flag": TRUST_FLAG, "by": actor, "at": at, "source": self.source,
                "sha256": self.sha256}  # fmt: skip


@dataclass(frozen=True)
class ModelFile:
    """A model read from a file: the object, its flavor, the bytes to store and the trust taken."""

    model: Any
    flavor: str
    artifact: tuple[bytes, str]
    trust: PickleTrust | None = None


def inside(folder: Path, name: str) -> Path:
    """``folder/name`` with symlinks resolved, refused unless it stays inside ``folder``."""
    try:
        root = Path(folder).resolve()
        target = (root / name).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL in the name
        raise UnsafeModelFile(f"{folder}: cannot resolve {name!r}: {exc}", folder) from None
    if not target.is_relative_to(root):
        raise UnsafeModelFile(
            f"{folder}: {name!r} resolves to {target}, outside the model folder; refusing it",
            target,
        )
    return target


def refuse_pickle(path: Path | str) -> UnsafeModelFile:
    return UnsafeModelFile(
        f"{path} is a pickle: loading it runs any code it carries, so Shipyard does not load it. "
        "Save the model with skops (skops.io.dump(model, 'model.skops')) and register that file; "
        f"or, only if you made this file yourself, pass {TRUST_FLAG} (recorded on the version)",
        path,
    )


def load_trusted_pickle(path: Path, data: bytes) -> tuple[Any, PickleTrust]:
    """Unpickle ``data`` (read from ``path``): only call this under :data:`TRUST_FLAG`."""
    try:
        model = flavors.unpickle(data)
    except Exception as exc:
        raise InvalidInput(f"cannot unpickle {path}: {exc}") from None
    return model, PickleTrust(str(path), hashlib.sha256(data).hexdigest())


def resave(model: Any, trust: PickleTrust) -> ModelFile:
    """A trusted, loaded model in the safest format that holds it: skops for scikit-learn; a
    pickle (python flavor) only when skops cannot hold it."""
    if flavors.guess_flavor(model) == "sklearn":
        try:
            return ModelFile(model, "sklearn", flavors.dump("sklearn", model), trust)
        except ArtifactError:
            pass  # types skops will not load: it stays the pickle its owner trusted
    return ModelFile(model, "python", flavors.dump("python", model), trust)


def read_model_file(path: Path, *, trust_pickle: bool = False) -> ModelFile:
    """The model in ``path`` (``.skops``, ``.onnx``, or a pickle under :data:`TRUST_FLAG`)."""
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".skops", ".onnx", *PICKLE_SUFFIXES):
        raise InvalidInput(f"{path}: use a .skops, .onnx, or .joblib/.pkl file")
    if suffix in PICKLE_SUFFIXES and not trust_pickle:
        raise refuse_pickle(path)
    data = path.read_bytes()
    if suffix == ".skops":
        return ModelFile(flavors.load_skops(data), "sklearn", (data, flavors.SKOPS))
    if suffix == ".onnx":
        return ModelFile(data, "onnx", (data, flavors.ONNX))
    model, trust = load_trusted_pickle(path, data)
    return resave(model, trust)
