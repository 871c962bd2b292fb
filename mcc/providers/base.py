"""The provider protocol and the typed records that cross it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

TAG_LEDGER = "mcc:ledger"
TAG_RUN = "mcc:run"
TAG_ENTITY = "mcc:entity"
TAG_NAME = "Name"


@dataclass(frozen=True)
class ResourceSpec:
    """Everything needed to create a resource, recorded in the ledger before the call is made."""

    kind: str
    name: str
    idempotency_key: str
    tags: dict[str, str]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Found:
    """A resource as it exists in the world: its physical id and what describe tells about it.

    ``created_at`` (UNIX seconds) is a time the resource already existed at, no earlier than its creation (its
    creation or launch time, or a last-modified one); None for kinds whose API tells none.
    """

    physical_id: str
    attrs: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created_at: float | None = None


class Provider(Protocol):
    """One resource kind. Every method is idempotent; delete of a missing resource succeeds."""

    kind: str

    def create(self, spec: ResourceSpec) -> Found: ...

    def find(self, spec: ResourceSpec) -> Found | None: ...

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None: ...

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None: ...

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]: ...


def ownership_tags(ledger_uuid: str, run_id: str | None, entity: str, name: str) -> dict[str, str]:
    """The tags every mcc resource carries (DESIGN.md, write-ahead rule)."""
    tags = {TAG_LEDGER: ledger_uuid, TAG_ENTITY: entity, TAG_NAME: name}
    if run_id:
        tags[TAG_RUN] = run_id
    return tags
