"""The model registry: models, immutable versions, aliases with a full history.

>>> reg = Registry.of(workspace)                                     # doctest: +SKIP
>>> v = reg.register("churn", clf, training_data=X_train, alias="champion")  # doctest: +SKIP
>>> reg.load("churn", alias="champion").predict(X)                   # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from shipyard import audit
from shipyard.clock import SYSTEM_CLOCK, Clock
from shipyard.errors import ArtifactError, InvalidInput, NotFound
from shipyard.pipelines import context
from shipyard.registry import flavors
from shipyard.registry.model_files import PickleTrust
from shipyard.registry.signature import Signature
from shipyard.registry.views import require_model_in
from shipyard.store.registry import AliasEvent, ModelAlias, ModelVersion, RegisteredModel
from shipyard.store.tables import Lineage, Run, StepRun

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from shipyard.artifacts import ArtifactStore
    from shipyard.store import Store
    from shipyard.workspace import Workspace

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,99}$")


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version, as read from the store."""

    model: str
    version: int
    flavor: str
    artifact_digest: str
    signature: Signature
    metrics: dict[str, Any]
    tags: dict[str, Any]
    lineage: dict[str, Any]
    reference_profile: dict[str, Any] | None
    run_id: str | None
    created_at: float
    created_by: str

    @classmethod
    def of(cls, row: ModelVersion) -> VersionInfo:
        return cls(
            row.model,
            row.version,
            row.flavor,
            row.artifact_digest,
            Signature.from_json(row.signature),
            dict(row.metrics),
            dict(row.tags),
            dict(row.lineage),
            row.reference_profile,
            row.run_id,
            row.created_at,
            row.created_by,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "flavor": self.flavor,
            "artifact_digest": self.artifact_digest,
            "signature": self.signature.to_json(),
            "metrics": self.metrics,
            "tags": self.tags,
            "lineage": self.lineage,
            "has_reference_profile": self.reference_profile is not None,
            "run_id": self.run_id,
            "created_at": self.created_at,
            "created_by": self.created_by,
        }


@dataclass(frozen=True)
class AliasMove:
    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    ts: float


PREDICTION_COLUMN = "__prediction__"


def reference_profile_of(frame: Any, model: Any = None) -> dict[str, Any] | None:
    """The profile of the training data and, when the model can predict, of its predictions.

    The predictions become the column :data:`PREDICTION_COLUMN`: serving windows bin their own
    predictions on its edges, so that prediction drift is comparable across windows and workers.
    """
    import numpy as np
    import pandas as pd

    from shipyard.stats import DatasetProfile

    if not isinstance(frame, pd.DataFrame):
        return None
    data = frame.copy()
    predict = getattr(model, "predict", None) or (model if callable(model) else None)
    if predict is not None:
        features = frame if hasattr(model, "feature_names_in_") else frame.to_numpy()
        try:
            data[PREDICTION_COLUMN] = np.asarray(predict(features)).reshape(len(frame), -1)[:, 0]
        except Exception:  # a model that cannot predict its own training data: inputs only
            data = frame
    profile: dict[str, Any] = DatasetProfile.from_frame(data).to_json()
    return profile


class Registry:
    """Registers, reads, aliases and loads models. Every change is one transaction."""

    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        clock: Clock = SYSTEM_CLOCK,
        actor: str = "",
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.clock = clock
        self.actor = actor

    @classmethod
    def of(cls, ws: Workspace) -> Registry:
        return cls(ws.store, ws.artifacts, ws.clock, ws.actor)

    @classmethod
    def here(cls, ws: Workspace | None = None) -> Registry:
        """The registry of ``ws``; inside a running step, the step's workspace, acting as the
        user who started the run; elsewhere, the workspace of the current settings."""
        if ws is not None:
            return cls.of(ws)
        ctx = context.current()
        if ctx is None:
            from shipyard.workspace import Workspace

            return cls.of(Workspace.open())
        with ctx.store.session(readonly=True) as s:
            run = s.get(Run, ctx.run_id)
            actor = run.created_by if run is not None else ""
        return cls(ctx.store, ctx.artifacts, SYSTEM_CLOCK, actor)

    # -- writing -------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        model: Any,
        *,
        flavor: str | None = None,
        signature: Signature | None = None,
        training_data: Any = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, Any] | None = None,
        run_id: str | None = None,
        data_digests: list[str] | None = None,
        reference_profile: dict[str, Any] | None = None,
        alias: str | None = None,
        description: str = "",
        artifact: tuple[bytes, str] | None = None,
        trust: PickleTrust | None = None,
    ) -> VersionInfo:
        """Store the model's bytes and record a new version (and move ``alias`` to it).

        ``training_data`` (a DataFrame) gives the signature when none is given and the
        reference profile that serving inputs are later compared with. ``artifact`` gives the
        bytes to store instead of saving ``model``; pickle bytes are accepted only with
        ``trust``, the decision taken with :data:`~shipyard.registry.model_files.TRUST_FLAG`,
        which the version's lineage and the audit log record.
        """
        if not NAME.match(name):
            raise InvalidInput(
                f"model name {name!r}: use letters, digits, '_', '.', '-' (at most 200)"
            )
        flavor = flavor or flavors.guess_flavor(model)
        if signature is None:
            if training_data is None:
                raise InvalidInput(
                    f"model {name!r}: give a signature or the training data to infer it from"
                )
            signature = Signature.infer(training_data)
        if reference_profile is None and training_data is not None:
            reference_profile = reference_profile_of(training_data, model)
        data, media_type = artifact if artifact is not None else flavors.dump(flavor, model)
        if artifact is not None and media_type == flavors.SKOPS:
            flavors.check_skops(data, f"model {name!r}")
        now = self.clock.time()
        lineage: dict[str, Any] = {"run_id": run_id, "data": list(data_digests or [])}
        lineage.update(self._provenance(name, flavor, media_type, artifact is None, trust, now))
        with self.store.session(immediate=True) as s:
            ref = self.artifacts.put_bytes(
                data, media_type, {"model": name, "flavor": flavor}, session=s
            )
            if s.get(RegisteredModel, name) is None:
                s.add(RegisteredModel(name=name, created_at=now, created_by=self.actor))
                s.flush()
            latest = s.scalar(
                select(func.max(ModelVersion.version)).where(ModelVersion.model == name)
            )
            row = ModelVersion(
                model=name,
                version=(latest or 0) + 1,
                flavor=flavor,
                artifact_digest=ref.digest,
                signature=signature.to_json(),
                metrics=dict(metrics or {}),
                tags=dict(tags or {}),
                lineage=lineage,
                reference_profile=reference_profile,
                run_id=run_id,
                description=description,
                created_at=now,
                created_by=self.actor,
            )
            s.add(row)
            subject = ("model_version", f"{name}/{row.version}")
            self._audit(s, now, "model.register", subject, {"digest": ref.digest, "flavor": flavor})
            if trust is not None:
                self._audit(s, now, "model.trust_pickle", subject, lineage["trust"])
            s.flush()
            if alias:
                self._move_alias(s, name, alias, row.version, "registered")
            return VersionInfo.of(row)

    def _provenance(
        self,
        name: str,
        flavor: str,
        media_type: str,
        saved_here: bool,
        trust: PickleTrust | None,
        now: float,
    ) -> dict[str, Any]:
        """Where a version's bytes come from, as far as loading them safely depends on it.

        ``pickle``: ``"object"`` when the registry pickled a live object of the registering
        process (its code already runs there), ``"trusted-file"`` when the pickle was loaded under
        the trust flag; pickle bytes handed in any other way are refused.
        """
        expected = flavors.MEDIA_TYPES.get(flavor)
        if expected is None:
            raise InvalidInput(f"unknown flavor {flavor!r}; use one of {list(flavors.FLAVORS)}")
        if media_type != expected:
            raise ArtifactError(
                f"model {name!r}: a {flavor}-flavor artifact is {expected}, not {media_type}"
            )
        out: dict[str, Any] = {}
        if trust is not None:
            out["trust"] = trust.record(self.actor, now)
        if media_type == flavors.JOBLIB:
            if trust is None and not saved_here:
                raise InvalidInput(
                    f"model {name!r}: pickle bytes are stored only under the trust flag; "
                    "give the object itself, or a skops file"
                )
            out["pickle"] = "trusted-file" if trust is not None else "object"
        return out

    def set_alias(self, name: str, alias: str, version: int | None, reason: str = "") -> AliasMove:
        """Point ``alias`` at ``version`` (None removes it); recorded with who, when, from, to.

        This moves the alias whatever serves the model; the ``models alias`` command goes through
        :func:`shipyard.serving.live.move_alias`, which first checks that the move takes effect.
        """
        with self.store.session(immediate=True) as s:
            return self.set_alias_in(s, name, alias, version, reason)

    def set_alias_in(
        self, s: Session, name: str, alias: str, version: int | None, reason: str = ""
    ) -> AliasMove:
        """:meth:`set_alias` inside the caller's transaction (which checks what it must first)."""
        if not ALIAS.match(alias):
            raise InvalidInput(f"alias {alias!r}: start with a letter; letters, digits, '_', '-'")
        if s.get(RegisteredModel, name) is None:
            raise NotFound("model", name, candidates=s.scalars(select(RegisteredModel.name)))
        if version is not None and self._version_row(s, name, version) is None:
            raise NotFound("model version", f"{name}/{version}")
        return self._move_alias(s, name, alias, version, reason)

    def _move_alias(
        self, s: Any, name: str, alias: str, version: int | None, reason: str
    ) -> AliasMove:
        now = self.clock.time()
        current = s.get(ModelAlias, (name, alias), with_for_update=True)
        before = current.version if current is not None else None
        if version is None:
            if current is not None:
                s.delete(current)
        elif current is None:
            s.add(
                ModelAlias(
                    model=name, alias=alias, version=version, updated_at=now, updated_by=self.actor
                )
            )
        else:
            current.version = version
            current.updated_at = now
            current.updated_by = self.actor
        move = AliasMove(name, alias, before, version, self.actor, reason, now)
        s.add(
            AliasEvent(
                model=name,
                alias=alias,
                from_version=before,
                to_version=version,
                actor=self.actor,
                reason=reason,
                ts=now,
            )
        )
        detail = {"alias": alias, "from": before, "to": version, "reason": reason}
        self._audit(s, now, "model.alias", ("model", name), detail)
        return move

    def _audit(
        self, s: Session, now: float, action: str, subject: tuple[str, str], detail: dict[str, Any]
    ) -> None:
        """One audit event by this registry's actor, in the caller's transaction."""
        audit.record(s, actor=self.actor, action=action, subject=subject, details=detail, now=now)

    # -- reading -------------------------------------------------------------------------------
    @staticmethod
    def _version_row(s: Any, name: str, version: int) -> ModelVersion | None:
        row: ModelVersion | None = s.scalar(
            select(ModelVersion).where(ModelVersion.model == name, ModelVersion.version == version)
        )
        return row

    def models(self) -> list[dict[str, Any]]:
        with self.store.session(readonly=True) as s:
            models = s.scalars(select(RegisteredModel).order_by(RegisteredModel.name)).all()
            out = []
            for m in models:
                latest = s.scalar(
                    select(func.max(ModelVersion.version)).where(ModelVersion.model == m.name)
                )
                aliases = {
                    a.alias: a.version
                    for a in s.scalars(select(ModelAlias).where(ModelAlias.model == m.name))
                }
                out.append(
                    {
                        "name": m.name,
                        "latest_version": latest,
                        "aliases": aliases,
                        "default_alias": m.default_alias,
                        "created_at": m.created_at,
                    }
                )
            return out

    def versions(self, name: str) -> list[VersionInfo]:
        with self.store.session(readonly=True) as s:
            if s.get(RegisteredModel, name) is None:
                raise NotFound("model", name)
            rows = s.scalars(
                select(ModelVersion)
                .where(ModelVersion.model == name)
                .order_by(ModelVersion.version)
            ).all()
            return [VersionInfo.of(r) for r in rows]

    def get(self, name: str, version: int | None = None, alias: str | None = None) -> VersionInfo:
        """A version by number, by alias, or (neither) the one the default alias names."""
        with self.store.session(readonly=True) as s:
            model = require_model_in(s, name)
            if version is None:
                alias = alias or model.default_alias
                pointer = s.get(ModelAlias, (name, alias))
                if pointer is None:
                    raise NotFound(
                        "alias", f"{name}@{alias}", "set it with `shipyard models alias`"
                    )
                version = pointer.version
            row = self._version_row(s, name, version)
            if row is None:
                raise NotFound("model version", f"{name}/{version}")
            return VersionInfo.of(row)

    def aliases(self, name: str) -> dict[str, int]:
        with self.store.session(readonly=True) as s:
            return {
                a.alias: a.version
                for a in s.scalars(select(ModelAlias).where(ModelAlias.model == name))
            }

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        with self.store.session(readonly=True) as s:
            q = select(AliasEvent).where(AliasEvent.model == name)
            if alias is not None:
                q = q.where(AliasEvent.alias == alias)
            return [
                AliasMove(e.model, e.alias, e.from_version, e.to_version, e.actor, e.reason, e.ts)
                for e in s.scalars(q.order_by(AliasEvent.ts, AliasEvent.id))
            ]

    def load(
        self, name: str, version: int | None = None, alias: str | None = None
    ) -> tuple[VersionInfo, flavors.Predictor]:
        """The version and its predictor; the artifact's sha256 is verified before it is read.

        A pickle (python flavor) is unpickled only when the version's lineage shows where it came
        from (:meth:`_provenance`); the digest check makes sure these are the very bytes the
        registry wrote then.
        """
        info = self.get(name, version, alias)
        trusted = info.lineage.get("pickle") in ("object", "trusted-file")
        if info.flavor == "python" and not trusted:
            raise ArtifactError(
                f"{info.model} v{info.version} is a pickle of unrecorded origin (registered "
                "before Shipyard recorded where pickles come from): refusing to load it; "
                "register it again from your code or a skops file"
            )
        data = self.artifacts.get_bytes(info.artifact_digest)  # raises ArtifactTampered
        return info, flavors.load(info.flavor, data, pickle_trusted=trusted)


def register_model(
    name: str, model: Any, *, ws: Workspace | None = None, **kwargs: Any
) -> VersionInfo:
    """One call from a training step: ``register_model("churn", clf, training_data=X)``.

    Inside a step the version's lineage is filled in: the run that trained it, the data
    artifacts that run has read so far (its ``consumed`` lineage, e.g. the data pipeline's
    split), the pipeline and step as tags, and the run's author as the version's author (so
    four-eyes approval knows who may not approve it). ``kwargs`` are :meth:`Registry.register`'s.
    """
    registry = Registry.here(ws)
    ctx = context.current() if ws is None else None
    if ctx is not None:
        kwargs.setdefault("run_id", ctx.run_id)
        if "data_digests" not in kwargs:
            kwargs["data_digests"] = _consumed_by_run(registry.store, ctx)
        kwargs["tags"] = {"pipeline": ctx.pipeline, "step": ctx.step, **(kwargs.get("tags") or {})}
    return registry.register(name, model, **kwargs)


def _consumed_by_run(store: Store, ctx: context.StepContext) -> list[str]:
    """Digests of the artifacts from outside the run that its steps have read, in order.

    A step's input from an earlier step of the same run is recorded as consumed under the
    name ``STEP:OUTPUT``; that is the run's own data, not where its data came from.
    """
    with store.session(readonly=True) as s:
        rows = s.execute(
            select(Lineage.digest, Lineage.name, StepRun.step)
            .join(StepRun, StepRun.id == Lineage.step_run_id)
            .where(StepRun.run_id == ctx.run_id, Lineage.direction == "consumed")
            .order_by(Lineage.id)
        ).all()
        steps = set(s.scalars(select(StepRun.step).where(StepRun.run_id == ctx.run_id)))
    read = [digest for digest, name, _ in rows if name.split(":", 1)[0] not in steps]
    digests = [*read, *(c["digest"] for c in ctx.consumed)]
    return list(dict.fromkeys(digests))
