"""The write-ahead rule over providers: every resource is recorded before it is touched.

ensure():  planned → creating (spec, key and tags recorded) → provider call → active (physical id).
           On resume a row found in ``creating`` is looked up first (find-before-create): found → adopted
           into ``active``; not found → created again with the same key.
destroy(): → deleting → provider delete ("not found" counts as deleted) → deleted.
sweep():   resources carrying this ledger's tag that the ledger does not know → rows in ``adopted``, except
           those made before the ledger existed (``predates``): refused, never adopted or deleted.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Mapping

from mcc.errors import MccError, ProviderError
from mcc.ledger import create_row, fire, models, queries
from mcc.providers.base import Found, Provider, ResourceSpec, ownership_tags

# How far the cloud's clock (it stamps creation times) may be from the laptop's, which stamped the ledger's
# creation. AWS refuses a signed request whose time is more than 5 minutes off its own (SigV4), so a machine that
# can call AWS at all is within it. Too small a margin would refuse mcc's own first resources; too large lets a
# resource made just before the ledger be adopted, as every one was before this check.
CLOCK_SKEW_S = 300.0

# Resource kinds in the order clean deletes them (DESIGN.md "Guaranteed cleanup").
DELETE_ORDER = [
    "job", "instance", "cache", "parameter", "launch_template", "image", "snapshot", "vpc_endpoint",
    "security_group", "key_pair",
    "instance_profile", "role_policy", "role", "bucket", "directory", "setup_group",
]


class Engine:
    """Drives providers under the write-ahead rule; the only code that pairs a world call with a ledger write."""

    def __init__(self, ledger_uuid: str, backend: str, providers: Mapping[str, Provider], actor: str = "local",
                 region: str | None = None, not_before: float | None = None) -> None:
        """``not_before``: when the ledger that owns ``ledger_uuid`` was made (None: unknown, no bound)."""
        self.ledger_uuid, self.backend, self.actor, self.region = ledger_uuid, backend, actor, region
        self.providers = dict(providers)
        self.not_before = not_before

    def provider(self, kind: str) -> Provider:
        try:
            return self.providers[kind]
        except KeyError:
            raise MccError(f"the {self.backend} backend has no provider for resource kind {kind!r}") from None

    def spec_of(self, row: models.Resource) -> ResourceSpec:
        return ResourceSpec(row.kind, row.name, row.idempotency_key, dict(row.tags), dict(row.spec))

    def ensure(self, run_id: str | None, kind: str, name: str, key: str, params: dict[str, Any]) -> models.Resource:
        """The resource named by ``key``, created if needed; idempotent and resumable at every step."""
        row = queries.resource_by_key(key)
        if row is None:
            tags = ownership_tags(self.ledger_uuid, run_id, key, name)
            row = create_row(
                models.Resource, actor=self.actor, run=run_id, kind=kind, name=name, backend=self.backend,
                idempotency_key=key, spec=params, tags=tags, attrs={}, state="planned", region=self.region,
            )
        if row.state in ("active", "adopted"):
            return row
        if row.state in ("deleting", "deleted"):
            raise MccError(f"resource {key} is {row.state}; it cannot be reused")
        if row.state in ("planned", "failed"):
            fire(row, "begin_create", actor=self.actor)
        spec = self.spec_of(row)
        provider = self.provider(kind)
        found = provider.find(spec)
        if found is not None:
            return fire(row, "adopt", actor=self.actor, reason="found by its tags on resume",
                        physical_id=found.physical_id, attrs=found.attrs, active_at=time.time())
        try:
            found = provider.create(spec)
        except MccError as exc:
            fire(row, "create_failed", actor=self.actor, reason=str(exc))
            raise
        except Exception as exc:
            fire(row, "create_failed", actor=self.actor, reason=f"{type(exc).__name__}: {exc}")
            raise ProviderError(f"creating {kind} {name} failed: {exc}") from exc
        return fire(row, "created", actor=self.actor, physical_id=found.physical_id, attrs=found.attrs,
                    active_at=time.time())

    def current(self, run: models.Run | None, kind: str, base_key: str, params: dict[str, Any],
                name: str | None = None) -> models.Resource:
        """The live resource in this role (of ``run``, or shared by the ledger when None), replaced under a
        new key if the previous one died.

        Keys are ``base_key``, ``base_key-2``, …: one row per physical resource, ever. A row whose create
        failed keeps its key: the failure may have come after the call went out (RunInstances answered, the
        wait for it to run did not), and ``ensure`` adopts what its tags find before it creates again. A row
        whose delete failed (it has its physical id) is not brought back: a new key replaces it, and clean
        finishes its delete.
        """
        run_id = run.id if run is not None else None
        owner = models.Resource.run.is_null() if run_id is None else models.Resource.run == run_id
        rows = list(
            models.Resource.select().where(owner & models.Resource.idempotency_key.startswith(base_key))
            .order_by(models.Resource.id)
        )
        current = rows[-1] if rows else None
        failed_delete = current is not None and current.state == "failed" and bool(current.physical_id)
        if current is not None and current.state not in ("deleting", "deleted") and not failed_delete:
            if current.state == "active" and self.describe(current) is None:
                self.destroy(current, "found dead")
            else:  # a failed create may have gone out (a wait after the call failed): ensure finds before it creates
                return self.ensure(run_id, kind, current.name, current.idempotency_key, params)
        elif current is not None and current.state == "deleting":
            self.destroy(current, "found dead")
        key = base_key if not rows else f"{base_key}-{len(rows) + 1}"
        return self.ensure(run_id, kind, name or base_key.split("/")[-1], key, params)

    def describe(self, row: models.Resource) -> Found | None:
        """The resource as it is now, or None if it is gone."""
        if not row.physical_id:
            return None
        return self.provider(row.kind).describe(row.physical_id, dict(row.attrs))

    def destroy(self, row: models.Resource, reason: str | None = None) -> models.Resource:
        """Delete the resource (idempotent; a missing resource counts as deleted)."""
        if row.state == "deleted":
            return row
        if row.state != "deleting":
            row = fire(row, "begin_delete", actor=self.actor, reason=reason)
        provider = self.provider(row.kind)
        physical_id, attrs = row.physical_id, dict(row.attrs)
        if not physical_id:  # died between begin_create and created: look it up by its tags
            found = provider.find(self.spec_of(row))
            physical_id, attrs = (found.physical_id, found.attrs) if found else (None, {})
        try:
            if physical_id:
                provider.delete(physical_id, attrs)
        except Exception as exc:
            fire(row, "delete_failed", actor=self.actor, reason=f"{type(exc).__name__}: {exc}")
            raise ProviderError(f"deleting {row.kind} {row.name} ({physical_id}) failed: {exc}") from exc
        return fire(row, "deleted", actor=self.actor, reason=reason, deleted_at=time.time())

    def destroy_all(self, rows: Iterable[models.Resource], reason: str) -> list[tuple[models.Resource, str]]:
        """Delete rows in dependency order; returns (row, error) for every one that failed."""
        errors = []
        for row in sorted(rows, key=lambda r: _order(r.kind)):
            try:
                self.destroy(row, reason)
            except MccError as exc:
                errors.append((row, str(exc)))
        return errors

    def predates(self, found: Found) -> bool:
        """True when ``found`` existed before this engine's ledger did (by more than ``CLOCK_SKEW_S``): the ledger
        cannot have made it, so its ledger tag was put on afterwards, elsewhere. False when either time is
        unknown (kinds whose API tells no creation time: security groups, local resources)."""
        return (self.not_before is not None and found.created_at is not None
                and found.created_at < self.not_before - CLOCK_SKEW_S)

    def sweep(self, run_id: str | None = None,
              refused: list[tuple[str, Found]] | None = None) -> list[models.Resource]:
        """Find resources tagged with this ledger that no live row accounts for; record them as ``adopted``.

        One that ``predates`` the ledger is left alone (not adopted, so nothing deletes it) and appended to
        ``refused`` as ``(kind, found)``. Kinds without a creation time are adopted as their tags say.
        """
        adopted = []
        for kind in sorted(self.providers, key=_order):
            for found in self.provider(kind).sweep(self.ledger_uuid, run_id):
                row = models.Resource.get_or_none(
                    (models.Resource.physical_id == found.physical_id) & (models.Resource.kind == kind)
                )
                if row is not None and row.state != "deleted":
                    continue
                if self.predates(found):
                    if refused is not None:
                        refused.append((kind, found))
                    continue
                key = f"sweep:{kind}:{found.physical_id}:{time.time_ns()}"
                adopted.append(create_row(
                    models.Resource, actor=self.actor, reason="found by the sweep", run=_run_of(found, run_id),
                    kind=kind, name=found.tags.get("Name") or found.tags.get("NAME") or found.physical_id,
                    backend=self.backend, idempotency_key=key, spec={}, tags=found.tags, region=self.region,
                    physical_id=found.physical_id, attrs=found.attrs, state="adopted",
                ))
        return adopted


def _order(kind: str) -> int:
    return DELETE_ORDER.index(kind) if kind in DELETE_ORDER else len(DELETE_ORDER)


def _run_of(found: Found, run_id: str | None) -> str | None:
    run = run_id or found.tags.get("mcc:run") or found.tags.get("MCC_RUN")
    if run and models.Run.get_or_none(models.Run.id == run) is not None:
        return run
    return None
