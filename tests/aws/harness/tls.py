"""A throwaway certificate authority and a server certificate for 127.0.0.1/localhost (mcc's own maker,
mcc/providers/local/tls.py), plus a bundle of the system's CAs and this one for SSL_CERT_FILE."""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from mcc.providers.local.tls import make_server_tls


@dataclass(frozen=True)
class TlsFiles:
    """Paths: ``ca_cert`` (the CA alone), ``bundle`` (system CAs + ours: what SSL_CERT_FILE points at)."""

    ca_cert: Path
    cert: Path
    key: Path
    bundle: Path


def make_tls(directory: Path) -> TlsFiles:
    """Write ca.pem, server.pem, server.key and bundle.pem into ``directory``; return their paths."""
    d = Path(directory)
    made = make_server_tls(d, ["127.0.0.1", "localhost"], days=3)
    system = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    system_pem = Path(system).read_text() if system and Path(system).is_file() else ""
    (d / "bundle.pem").write_text(system_pem.rstrip("\n") + "\n" + made.ca_cert.read_text())
    return TlsFiles(made.ca_cert, made.cert, made.key, d / "bundle.pem")
