"""kind ``key_pair``: an ed25519 EC2 key pair whose private key lives only in ``<key_dir>/<name>.pem`` (0600).

AWS returns the private key once, in the create reply. A key pair found without its local file is useless,
so ``find`` reports it missing and ``create`` replaces it (only when it carries this entity's tag).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mcc.errors import ProviderError
from mcc.providers.aws.clients import AwsContext, epoch, tag_dict, tag_specifications
from mcc.providers.aws.errors import AwsNotFound, call
from mcc.providers.aws.instance import ownership, tag_filters
from mcc.providers.base import TAG_ENTITY, TAG_LEDGER, Found, ResourceSpec


def key_path(key_dir: str | Path, name: str) -> Path:
    return Path(key_dir) / f"{name}.pem"


def write_private_key(path: Path, material: str) -> None:
    """Write the key with mode 0600 from the first byte (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, material.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class KeyPairProvider:
    """kind ``key_pair``: physical id is the key name; ``key_dir`` is the default for adopted key pairs."""

    kind = "key_pair"

    def __init__(self, ctx: AwsContext, key_dir: str | Path | None = None) -> None:
        self.ctx, self.ec2, self.key_dir = ctx, ctx.client("ec2"), key_dir

    def create(self, spec: ResourceSpec) -> Found:
        name, path = spec.params["name"], key_path(spec.params["key_dir"], spec.params["name"])
        existing = self._by_name(name)
        if existing is not None:  # its private key was lost with the reply of an earlier create
            if tag_dict(existing.get("Tags")).get(TAG_ENTITY) != spec.idempotency_key:
                raise ProviderError(f"an EC2 key pair named {name} already exists and is not this mcc's; "
                                    "delete it or choose another name")
            call(self.ec2.delete_key_pair, KeyName=name)
        reply = call(self.ec2.create_key_pair, KeyName=name, KeyType="ed25519",
                     TagSpecifications=tag_specifications(["key-pair"], spec.tags))
        write_private_key(path, reply["KeyMaterial"])
        return Found(name, {"key_name": name, "key_pair_id": reply.get("KeyPairId"), "key_path": str(path)},
                     dict(spec.tags))

    def find(self, spec: ResourceSpec) -> Found | None:
        name, path = spec.params["name"], key_path(spec.params["key_dir"], spec.params["name"])
        pair = self._by_name(name)
        if pair is None or not path.exists():
            return None
        tags = tag_dict(pair.get("Tags"))
        if tags.get(TAG_LEDGER) != spec.tags[TAG_LEDGER] or tags.get(TAG_ENTITY) != spec.idempotency_key:
            return None
        return _found(pair, str(path))

    def describe(self, physical_id: str, attrs: dict[str, Any]) -> Found | None:
        pair = self._by_name(physical_id)
        return None if pair is None else _found(pair, attrs.get("key_path"))

    def delete(self, physical_id: str, attrs: dict[str, Any]) -> None:
        try:
            call(self.ec2.delete_key_pair, KeyName=physical_id)
        except AwsNotFound:
            pass
        path = attrs.get("key_path") or (key_path(self.key_dir, physical_id) if self.key_dir else None)
        if path:
            Path(path).unlink(missing_ok=True)

    def sweep(self, ledger_uuid: str, run_id: str | None = None) -> list[Found]:
        # describe_key_pairs with a tag filter: moto's tagging API does not list key pairs
        pairs = call(self.ec2.describe_key_pairs, Filters=tag_filters(ownership(ledger_uuid, run_id)))["KeyPairs"]
        return [_found(p, str(key_path(self.key_dir, p["KeyName"])) if self.key_dir else None) for p in pairs]

    def _by_name(self, name: str) -> dict[str, Any] | None:
        try:
            pairs = call(self.ec2.describe_key_pairs, KeyNames=[name])["KeyPairs"]
        except AwsNotFound:
            return None
        return pairs[0] if pairs else None


def _found(pair: dict[str, Any], path: str | None) -> Found:
    attrs = {"key_name": pair["KeyName"], "key_pair_id": pair.get("KeyPairId"), "key_path": path}
    return Found(pair["KeyName"], attrs, tag_dict(pair.get("Tags")), epoch(pair.get("CreateTime")))
