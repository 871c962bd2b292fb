"""TLS for a queue server: a throwaway certificate authority and one server certificate it signs (openssl CLI).

The manager instance makes both at start-up for its own address (and 127.0.0.1/localhost), then deletes the
CA's private key: nothing can sign another certificate for that CA afterwards, and the server key (0600, in a
0700 directory) never leaves the machine. Clients trust the CA certificate (``ssl_ca_certs``) and check the
address they dial against the certificate's names.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mcc.errors import ProviderError
from mcc.providers.local.processes import run_bounded

OPENSSL_TIMEOUT = 120.0
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the CA certificate (public), the server certificate and the server's private key."""

    ca_cert: Path
    cert: Path
    key: Path


def fingerprint(pem: str | bytes) -> str:
    """SHA-256 (hex) of a PEM text: how a client checks it holds the CA the server was started with."""
    return hashlib.sha256(pem.encode() if isinstance(pem, str) else pem).hexdigest()


def subject_alt_names(names: list[str]) -> str:
    """``IP:…``/``DNS:…`` entries for a certificate's subjectAltName, in order, without repeats."""
    out: list[str] = []
    for name in names:
        try:
            entry = f"IP:{ipaddress.ip_address(name)}"
        except ValueError:
            entry = f"DNS:{name}"
        if entry not in out:
            out.append(entry)
    return ",".join(out)


def make_server_tls(directory: Path, names: list[str], *, days: int = 90, keep_ca_key: bool = False) -> TlsFiles:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` (valid for ``names``: IP addresses or host names)
    into ``directory`` (made 0700); the CA's key is deleted once it has signed, unless ``keep_ca_key``."""
    if not names:
        raise ValueError("a server certificate needs at least one name")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    try:
        _openssl("req", "-x509", *EC_KEY, "-keyout", "ca.key", "-out", "ca.pem", "-days", str(days),
                 "-subj", "/CN=mcc queue CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        _openssl("req", *EC_KEY, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={names[0]}", cwd=d)
        (d / "server.ext").write_text(
            f"subjectAltName={subject_alt_names(names)}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n")
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "server.pem", "-days", str(days), "-extfile", "server.ext", cwd=d)
    finally:
        if not keep_ca_key:
            (d / "ca.key").unlink(missing_ok=True)
    os.chmod(d / "server.key", 0o600)
    if keep_ca_key:
        os.chmod(d / "ca.key", 0o600)
    return TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")


def _openssl(*args: str, cwd: Path) -> None:
    try:
        proc = run_bounded(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=OPENSSL_TIMEOUT)
    except FileNotFoundError:
        raise ProviderError("the queue's TLS certificate needs the `openssl` command, which is not installed "
                            "(e.g. `dnf install openssl` or `apt-get install openssl`)") from None
    except subprocess.TimeoutExpired:
        raise ProviderError(f"openssl {args[0]} did not finish within {OPENSSL_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        raise ProviderError(f"openssl {args[0]} failed: {proc.stderr.strip()[-1000:]}")
