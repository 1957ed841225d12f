"""Content-addressed artifact store.

An artifact's name is the sha256 of its bytes. Bytes live under ``ROOT/sha256/ab/abcdef…`` in a
local folder or any fsspec URL (``s3://…``, ``gs://…``, ``memory://…``). Every read re-hashes the
content and refuses bytes that do not match their name (:class:`ArtifactTampered`).

Objects are encoded by type: DataFrames as Parquet, scikit-learn estimators (and any other
picklable object) with joblib, JSON-able values as JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import ArtifactError, ArtifactTampered, NotFound

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shipyard.store import Store

PARQUET = "application/vnd.apache.parquet"
JOBLIB = "application/x-joblib"
JSON = "application/json"
BYTES = "application/octet-stream"


@dataclass(frozen=True)
class ArtifactRef:
    digest: str
    uri: str
    size_bytes: int
    media_type: str

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "uri": self.uri,
            "size_bytes": self.size_bytes,
            "media_type": self.media_type,
        }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Writes and verifies artifacts; records them in the metadata store when given one."""

    def __init__(self, root: str, store: Store | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.root = root.rstrip("/")
        self.store = store
        self.clock = clock
        import fsspec  # not at the top: a command that only reads records needs no file system

        try:
            self.fs, self._base = fsspec.core.url_to_fs(self.root)
        except (ValueError, ImportError) as exc:
            raise ArtifactError(f"cannot use artifact root {root!r}: {exc}") from None
        self._local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )

    def _path(self, digest: str) -> str:
        return f"{self._base}/sha256/{digest[:2]}/{digest}"

    def uri(self, digest: str) -> str:
        path = self._path(digest)
        return path if self._local else self.fs.unstrip_protocol(path)

    # -- bytes ---------------------------------------------------------------------------------
    def put_bytes(
        self,
        data: bytes,
        media_type: str = BYTES,
        meta: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> ArtifactRef:
        digest = sha256(data)
        path = self._path(digest)
        try:
            if not self.fs.exists(path):
                self._write_atomic(path, data)
        except OSError as exc:
            raise ArtifactError(f"cannot write artifact to {self.root}: {exc}") from None
        ref = ArtifactRef(digest, self.uri(digest), len(data), media_type)
        self._record(ref, meta or {}, session)
        return ref

    def _write_atomic(self, path: str, data: bytes) -> None:
        if self._local:
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        else:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(path, "wb") as fh:
                fh.write(data)

    def get_bytes(self, digest: str) -> bytes:
        """The artifact's bytes, verified against its digest."""
        path = self._path(digest)
        try:
            with self.fs.open(path, "rb") as fh:
                data: bytes = fh.read()
        except FileNotFoundError:
            raise NotFound("artifact", digest, f"looked in {self.root}") from None
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {digest[:12]}: {exc}") from None
        actual = sha256(data)
        if actual != digest:
            raise ArtifactTampered(digest, actual, self.uri(digest))
        return data

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self._path(digest)))

    # -- objects -------------------------------------------------------------------------------
    def put_object(
        self, obj: Any, meta: dict[str, Any] | None = None, session: Session | None = None
    ) -> ArtifactRef:
        data, media_type, extra = encode(obj)
        return self.put_bytes(data, media_type, {**extra, **(meta or {})}, session)

    def get_object(self, digest: str, media_type: str) -> Any:
        return decode(self.get_bytes(digest), media_type)

    # -- records -------------------------------------------------------------------------------
    def _record(self, ref: ArtifactRef, meta: dict[str, Any], session: Session | None) -> None:
        if session is not None:
            record_artifact(session, ref, meta, self.clock.time())
        elif self.store is not None:
            with self.store.session() as s:
                record_artifact(s, ref, meta, self.clock.time())


def record_artifact(session: Session, ref: ArtifactRef, meta: dict[str, Any], now: float) -> None:
    """The artifact's row, written once: the first writer of a digest records it (with its
    ``meta`` and time), later writers of the same bytes add nothing. Every artifact row is
    written here, by the artifact store and by the runner recording a step's outputs."""
    from shipyard.store.tables import ArtifactRecord

    if session.get(ArtifactRecord, ref.digest) is None:
        session.add(
            ArtifactRecord(
                digest=ref.digest,
                uri=ref.uri,
                size_bytes=ref.size_bytes,
                media_type=ref.media_type,
                meta=meta,
                created_at=now,
            )
        )
        session.flush()


def encode(obj: Any) -> tuple[bytes, str, dict[str, Any]]:
    """Bytes, media type and descriptive metadata (rows, columns) for an object."""
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        buf = io.BytesIO()
        obj.to_parquet(buf, index=False)
        return buf.getvalue(), PARQUET, {"rows": len(obj), "columns": [str(c) for c in obj.columns]}
    if isinstance(obj, bytes):
        return obj, BYTES, {}
    try:
        return (
            json.dumps(obj, sort_keys=True, allow_nan=False).encode(),
            JSON,
            {"python_type": type(obj).__name__},
        )
    except (TypeError, ValueError):
        pass
    import joblib

    buf = io.BytesIO()
    try:
        joblib.dump(obj, buf)
    except Exception as exc:
        raise ArtifactError(f"cannot store a {type(obj).__name__}: {exc}") from None
    return buf.getvalue(), JOBLIB, {"python_type": f"{type(obj).__module__}.{type(obj).__name__}"}


def decode(data: bytes, media_type: str) -> Any:
    if media_type == PARQUET:
        import pandas as pd

        return pd.read_parquet(io.BytesIO(data))
    if media_type == JSON:
        return json.loads(data)
    if media_type == JOBLIB:
        import joblib

        return joblib.load(io.BytesIO(data))
    return data


def record_lineage(
    session: Session, digest: str, step_run_id: str, direction: str, name: str
) -> None:
    """Record that a step run ``produced`` or ``consumed`` an artifact."""
    from shipyard.store.tables import Lineage

    if direction not in ("produced", "consumed"):
        raise ValueError(f"direction must be produced or consumed, not {direction!r}")
    session.add(Lineage(digest=digest, step_run_id=step_run_id, direction=direction, name=name))
