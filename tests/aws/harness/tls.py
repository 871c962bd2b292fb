"""A throwaway certificate authority and a server certificate for 127.0.0.1/localhost (openssl CLI)."""
from __future__ import annotations

import os
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    """Paths: ``ca_cert`` (the CA alone), ``bundle`` (system CAs + ours: what SSL_CERT_FILE points at)."""

    ca_cert: Path
    cert: Path
    key: Path
    bundle: Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def make_tls(directory: Path) -> TlsFiles:
    """Write ca.pem, server.pem, server.key and bundle.pem into ``directory``; return their paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3",
             "-subj", "/CN=mcc test harness CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "3", "-extfile", "server.ext", cwd=d)
    os.chmod(d / "server.key", 0o600)
    os.chmod(d / "ca.key", 0o600)
    system = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    system_pem = Path(system).read_text() if system and Path(system).is_file() else ""
    (d / "bundle.pem").write_text(system_pem.rstrip("\n") + "\n" + (d / "ca.pem").read_text())
    return TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key", d / "bundle.pem")
