"""Who made a model version, for four-eyes approval: nobody approves their own work.

A version's authors are the identity that registered it (the registry's ``created_by``) and,
when its lineage names the run that trained it, the identity that started that run (the run's
``created_by``). Inside a pipeline step the two are the same person (the step registers as the
run's author); a version registered by hand, or by a service account, against someone's run has
both, and neither may approve it.
"""

from __future__ import annotations

from contextlib import suppress

from shipyard.errors import InvalidInput, NotFound
from shipyard.pipelines.records import get_run
from shipyard.registry import Registry


def version_authors(registry: Registry, model: str, version: int) -> tuple[str, ...]:
    """The authors of ``model``/``version``, registrant first, each once (empty names left out).

    :class:`~shipyard.errors.NotFound` when the version does not exist."""
    info = registry.get(model, version)
    authors = [info.created_by]
    run_id = info.lineage.get("run_id") or info.run_id
    if isinstance(run_id, str) and run_id:
        # no such run (gone, or not one of Shipyard's): the registrant is all the store knows
        with suppress(NotFound, InvalidInput):
            authors.append(str(get_run(registry.store, run_id).get("created_by") or ""))
    return tuple(dict.fromkeys(a for a in authors if a))
