"""The AWS backend: a bucket and a security group per ledger and region (and, with ``custom_image``, the
baked image: mcc/backends/aws_image.py); per run two IAM roles scoped to the run's prefix (the manager's,
which launches workers, and the workers', which only reads inputs and writes outputs) with their instance
profiles, a launch template (encrypted root volume), the queue password in SSM, and either the queue's CA
parameter in SSM (the queue on the manager: TLS with a per-run CA the manager makes and writes there) or an
ElastiCache cluster (TLS), with ``public_ip = false`` and ``egress = "endpoints"`` the run's VPC endpoints
(mcc/backends/aws_network.py), and the manager instance. Workers are launched by the manager (remote/ec2_fleet)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mcc.backends.aws_settings import AwsSettings, aws_settings
from mcc.driver.engine import Engine
from mcc.errors import MccError
from mcc.ledger import models
from mcc.providers.aws.clients import AwsContext
from mcc.providers.aws.errors import call
from mcc.remote.bootstrap import render_user_data
from mcc.work.stores import Store, open_store

SKIP_UPLOAD = {"results", ".git", "__pycache__", ".venv", "venv", ".mcc"}
MAX_PROJECT_FILE = 50 * 1024 * 1024


class AwsBackend:
    name = "aws"

    def __init__(self, home: Path, ledger_uuid: str, settings: AwsSettings) -> None:
        from mcc.providers.aws.sweep import KIND_CLASSES

        self.home, self.ledger_uuid, self.settings = home, ledger_uuid, settings
        self.tick_seconds = settings.tick_seconds
        self.poll_seconds = (min(1.0, settings.tick_seconds), settings.tick_seconds)
        self.manager_boot_seconds = settings.boot_seconds  # installs mcc on a plain image: minutes
        self.manager_silence_seconds = max(120.0, 20 * settings.tick_seconds)
        self.ctx = AwsContext.create(ledger_uuid, region=settings.region, profile=settings.profile)
        self.region = self.ctx.region
        self.providers: dict[str, Any] = {}
        for kind, cls in KIND_CLASSES.items():
            self.providers[kind] = cls(self.ctx, key_dir=home / "keys") if kind == "key_pair" else cls(self.ctx)
        self.providers["image"] = KIND_CLASSES["image"](self.ctx, poll=min(10.0, settings.tick_seconds))
        self._identity: dict[str, str] | None = None
        self._wheel: Path | None = None

    # -- identity and names ------------------------------------------------------------------------
    def identity(self) -> dict[str, str]:
        """The caller's account (checked before anything is created: missing credentials fail here)."""
        if self._identity is None:
            self._identity = call(self.ctx.client("sts").get_caller_identity)
        return self._identity

    def preflight(self) -> None:
        """Credentials and region work, the roles' permissions boundary exists, and a NAT named for a private run
        routes (before any resource is created)."""
        self.identity()
        boundary = self.boundary()
        if boundary:
            from mcc.providers.aws.iam import require_boundary

            require_boundary(self.ctx, boundary)
        if not self.settings.public_ip and self.settings.egress == "nat":
            from mcc.providers.aws.network import require_nat

            require_nat(self.ctx, [n for n in self.settings.candidate_subnets if n])

    def boundary(self) -> str | None:
        """The ARN of the permissions boundary every role mcc creates carries (None: ``permissions_boundary = ""``)."""
        from mcc.providers.aws.policy import boundary_arn

        name = self.settings.permissions_boundary
        return boundary_arn(self.identity()["Account"], name) if name else None

    def _short(self) -> str:
        return self.ledger_uuid.replace("-", "")[:12]

    def store(self, url: str) -> Store:
        return open_store(url, client=self.ctx.client("s3"))

    def wheel(self) -> Path:
        """The mcc wheel instances install (built once per backend)."""
        from mcc.driver.wheel import build_wheel, cache_dir

        if self._wheel is None:
            self._wheel = build_wheel(cache_dir())
        return self._wheel

    # -- shared per ledger and region --------------------------------------------------------------
    def provision_shared(self, engine: Engine) -> dict[str, models.Resource]:
        from mcc.providers.aws.bucket import bucket_name

        s, r = self.settings, self.region
        rows = {
            "bucket": engine.ensure(None, "bucket", bucket_name(self.ledger_uuid, r), f"aws:{r}:bucket",
                                    {"name": bucket_name(self.ledger_uuid, r)}),
            "security_group": engine.ensure(None, "security_group", f"mcc-{self._short()}", f"aws:{r}:security_group", {
                "name": f"mcc-{self._short()}", "vpc_id": s.vpc_id, "queue_port": 6379, "ssh_cidr": s.ssh_cidr}),
        }
        if s.ssh_cidr:
            rows["key_pair"] = engine.ensure(None, "key_pair", f"mcc-{self._short()}", f"aws:{r}:key_pair",
                                             {"name": f"mcc-{self._short()}", "key_dir": str(self.home / "keys")})
        if s.custom_image:
            from mcc.backends.aws_image import ensure_image
            from mcc.providers.aws.images import base_image_id, root_volume
            from mcc.work.stores import S3Store

            bucket = rows["bucket"].attrs.get("name") or rows["bucket"].physical_id
            base = base_image_id(self.ctx)
            rows["image"] = ensure_image(
                engine, store=S3Store(bucket, client=self.ctx.client("s3")), wheel=self.wheel(),
                requirements=list(s.requirements), region=r, short=self._short(), account=self.identity()["Account"],
                security_group_id=rows["security_group"].physical_id, instance_type=s.manager_type,
                base_image_id=base, root=root_volume(self.ctx, base), kms_key_id=s.ebs_kms_key,
                network=self._builder_network(), boundary=self.boundary())
        return rows

    def _builder_network(self) -> dict[str, Any]:
        """Where the image builder goes: it installs from PyPI, so it keeps a public address unless the run's
        subnets reach the internet through the user's NAT (``egress = "nat"``)."""
        s = self.settings
        if s.public_ip or s.egress != "nat":
            return {}
        return {"public_ip": False, "subnet_id": s.candidate_subnets[0]}

    # -- per run -----------------------------------------------------------------------------------
    def provision(self, engine: Engine, run: models.Run) -> dict[str, Any]:
        from mcc.providers.aws.iam import role_params
        from mcc.providers.aws.images import base_image_id, root_volume
        from mcc.providers.aws.policy import manager_policy, worker_policy

        s, r = self.settings, self.region
        account = self.identity()["Account"]
        own = {kind: ledger_part(kind, pid) for kind, pid in (("bucket", s.bucket), ("security_group", s.security_group_id),
                                                             ("cache", s.cache_id)) if pid}
        shared = self.provision_shared(engine) if not ("bucket" in own and "security_group" in own) else {}
        bucket_row = own.get("bucket") or shared["bucket"]
        bucket = bucket_row.attrs.get("name") or bucket_row.physical_id
        group = own.get("security_group") or shared["security_group"]
        group_id = group.physical_id
        subnets = self._network(engine, run, group)
        prefix = f"runs/{run.id}/"
        param_path = f"/mcc/{self.ledger_uuid}/{run.id}/"
        cache = own.get("cache")
        # a cache made beforehand brings its AUTH token parameter: the run's roles read that one, nothing else
        secret_path = cache.spec["auth_token_parameter"].rsplit("/", 1)[0] + "/" if cache else param_path
        name, worker_name = f"mcc-{run.id}", f"mcc-{run.id}-worker"
        # Two identities: workers (the user's code runs there) read inputs and write outputs, nothing else;
        # only the manager launches and terminates, only this ledger's instances, passing the worker role.
        worker_role = engine.ensure(run.id, "role", worker_name, f"{run.id}/worker/role", role_params(worker_name, self.boundary()))
        engine.ensure(run.id, "role_policy", f"{worker_name}/worker-access", f"{run.id}/worker/role_policy", {
            "role_name": worker_name, "policy_name": "worker-access",
            "policy": worker_policy(bucket, prefix, r, account, secret_path)})
        worker_profile = engine.ensure(run.id, "instance_profile", worker_name, f"{run.id}/worker/instance_profile",
                                       {"name": worker_name, "role_name": worker_name})
        # the queue on the manager speaks TLS: its CA certificate goes to workers through this parameter,
        # which the manager writes at start-up (the private keys never leave the manager)
        ca_name = f"{param_path}queue-ca" if cache is None and s.queue == "manager" else None
        engine.ensure(run.id, "role", name, f"{run.id}/role", role_params(name, self.boundary()))
        engine.ensure(run.id, "role_policy", f"{name}/run-access", f"{run.id}/role_policy", {
            "role_name": name, "policy_name": "run-access",
            "policy": manager_policy(bucket, prefix, self.ledger_uuid, r, account, worker_role.attrs.get("arn", ""),
                                     secret_path, s.ebs_kms_key, queue_ca_parameter=ca_name)})
        profile = engine.ensure(run.id, "instance_profile", name, f"{run.id}/instance_profile",
                                {"name": name, "role_name": name})
        # the secret and the cache go with the run's compute at its end (teardown): a resumed run (a retry,
        # a larger budget) gets new ones under new keys (engine.current), as a relaunched manager does
        if cache is None:
            password = engine.current(run, "parameter", f"{run.id}/parameter",
                                      {"name": f"{param_path}queue-password", "value_bytes": 32},
                                      name=f"{param_path}queue-password").physical_id
        else:
            password = cache.spec["auth_token_parameter"]
        image_id = s.image_id or (shared["image"].physical_id if "image" in shared else base_image_id(self.ctx))
        key_name = s.key_name or (shared["key_pair"].physical_id if "key_pair" in shared else None)
        template = engine.ensure(run.id, "launch_template", name, f"{run.id}/launch_template", {
            "name": name, "image_id": image_id, "instance_type": s.candidate_types[0],
            "security_group_id": group_id, "public_ip": s.public_ip,
            "instance_profile_arn": worker_profile.attrs.get("arn"),
            **root_volume(self.ctx, image_id), "kms_key_id": s.ebs_kms_key,
            "key_name": key_name,
            "max_lifetime_hours": s.max_lifetime_hours})
        queue: dict[str, Any] = {"mode": s.queue, "password_parameter": password, "tls": True}
        if ca_name:
            queue["ca_parameter"] = engine.current(run, "parameter", f"{run.id}/queue_ca",
                                                   {"name": ca_name, "value_bytes": 32}, name=ca_name).physical_id
        if cache is not None:
            cache = self.wait_cache(engine, cache)
            queue.update(mode="elasticache", host=cache.attrs["host"], port=cache.attrs["port"])
        elif s.queue == "elasticache":
            cache = engine.current(run, "cache", f"{run.id}/cache", name=name, params={
                "cluster_id": name[:40], "node_type": s.cache_node_type,
                "security_group_id": group_id,
                "auth_token_parameter": password})
            cache = self.wait_cache(engine, cache)
            queue.update(host=cache.attrs["host"], port=cache.attrs["port"])
        store_url = f"s3://{bucket}/{prefix}"
        wheel = self._upload_inputs(self.store(store_url), run)
        aws = {"region": r, "launch_template_id": template.physical_id, "worker_type": s.worker_type,
               "manager_type": s.manager_type, "spot": s.spot, "subnet_id": subnets[0], "wheel": wheel,
               "public_ip": s.public_ip, "security_group_id": group_id,
               "requirements": list(s.requirements), "max_lifetime_seconds": int(s.max_lifetime_hours * 3600),
               "instance_profile_arn": worker_profile.attrs.get("arn"),
               "manager_profile_arn": profile.attrs.get("arn"), **self._fleet_options(subnets)}
        extra = {"backend": "aws", "queue": queue, "aws": aws, "worker_boot_seconds": s.boot_seconds,
                 "seconds_per_point": run.spec.get("seconds_per_point")}
        return {"store_url": store_url, "extra": extra,
                "tick_seconds": self.tick_seconds}

    def _network(self, engine: Engine, run: models.Run, group: models.Resource) -> list[str | None]:
        """The run's subnets in order; with ``public_ip = false`` and ``egress = "endpoints"``, its VPC endpoints
        made first (mcc/backends/aws_network.py)."""
        from mcc.backends.aws_network import ensure_endpoints, run_subnets
        from mcc.providers.aws.security_group import default_vpc_id

        s = self.settings
        if s.public_ip:
            return s.candidate_subnets
        vpc_id = group.attrs.get("vpc_id") or s.vpc_id or default_vpc_id(self.ctx)
        subnets = run_subnets(self.ctx, s, vpc_id)
        if s.private_endpoints:
            ensure_endpoints(engine, run, self.ctx, vpc_id=vpc_id, subnets=[n for n in subnets if n],
                             short=self._short())
        return subnets

    def _fleet_options(self, subnets: list[str | None]) -> dict[str, Any]:
        """What the manager's fleet needs to diversify and to price: the worker types in order, the subnets,
        the spot cap, SMT on or off, and the on-demand $/h of every type it may launch (recorded now, so the manager prices
        its workers as the laptop does, with the laptop gone)."""
        from mcc.report import pricing

        s, table = self.settings, pricing.load_table()
        types = s.candidate_types
        prices = {t: table["regions"].get(self.region, {}).get(t) for t in [*types, s.manager_type]}
        return {"worker_types": types, "subnets": [n for n in subnets if n],
                "max_spot_price": s.max_spot_price, "on_demand_prices": prices, "hyperthreading": s.hyperthreading}

    def wait_cache(self, engine: Engine, row: models.Resource, timeout: float = 1800.0) -> models.Resource:
        """The cache row once its cluster has an endpoint (attrs ``host``, ``port`` recorded)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = engine.describe(row)
            if found is not None and found.attrs.get("host"):
                models.Resource.update(attrs=found.attrs).where(models.Resource.id == row.id).execute()
                row.attrs = found.attrs
                return row
            time.sleep(5.0)
        raise MccError(f"the ElastiCache cluster {row.physical_id} has no endpoint after {timeout:.0f} s")

    def _upload_inputs(self, store: Store, run: models.Run) -> str:
        wheel = self.wheel()
        if not store.exists(f"dist/{wheel.name}"):
            store.put_file(f"dist/{wheel.name}", wheel)
        root = Path(run.project_dir)
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not (set(rel.parts) & SKIP_UPLOAD) and path.stat().st_size <= MAX_PROJECT_FILE:
                store.put_file(f"project/{rel.as_posix()}", path)
        return wheel.name

    def launch_manager(self, engine: Engine, run: models.Run, urls: dict[str, Any]) -> models.Resource:
        aws = urls["extra"]["aws"]
        user_data = render_user_data(role="manager", store_url=urls["store_url"], run_id=run.id, region=self.region,
                                     wheel=aws["wheel"], requirements=aws["requirements"],
                                     max_lifetime_seconds=aws["max_lifetime_seconds"],
                                     queue_server=urls["extra"]["queue"]["mode"] == "manager")
        return engine.current(run, "instance", f"{run.id}/manager", {
            "launch_template_id": aws["launch_template_id"], "instance_type": self.settings.manager_type,
            "user_data": user_data, "count": 1, "spot": False,
            "subnet_id": (aws.get("subnets") or [self.settings.candidate_subnets[0]])[0],
            "public_ip": aws.get("public_ip", True), "security_group_id": aws.get("security_group_id"),
            # a run provisioned before the manager had its own role: its one profile
            "instance_profile_arn": aws.get("manager_profile_arn", aws["instance_profile_arn"]),
        }, name="manager")

    def teardown(self, engine: Engine, run: models.Run) -> None:
        """Stop the run's compute and queue: manager, workers (found by tags), cache, secret, VPC endpoints (billed
        per hour)."""
        rows = models.Resource.select().where(
            (models.Resource.run == run.id) & models.Resource.kind.in_(["instance", "cache", "parameter", "vpc_endpoint"])
            & models.Resource.state.not_in(["deleted"]))
        engine.destroy_all(list(rows), "run finished")
        for row in engine.sweep(run.id):
            if row.kind in ("instance", "cache", "vpc_endpoint"):
                engine.destroy(row, "run finished")


def ledger_part(kind: str, physical_id: str) -> models.Resource:
    """The live ledger row of ``kind`` with this physical id (a part named in [aws]); a clear error otherwise."""
    row = (models.Resource.select().where((models.Resource.kind == kind) & (models.Resource.physical_id == physical_id)
                                          & models.Resource.state.in_(["active", "adopted"]))
           .order_by(models.Resource.id.desc()).first())
    if row is None:
        raise MccError(f"{kind} {physical_id} is not a live resource of this mcc ledger: only parts mcc made "
                       f"(mcc.templates, mcc.storage) can be named; create it with them, or leave it out.")
    return row


def make_aws_backend(home: Path, ledger_uuid: str, settings_table: dict[str, Any] | None) -> AwsBackend:
    return AwsBackend(home, ledger_uuid, aws_settings(settings_table))
