"""A fault proxy in front of moto: forwards every request, counts calls, injects faults, rewrites.

Every request is identified as (service, action): the service from the SigV4 credential scope
(``Authorization`` header or the ``X-Amz-Credential`` query parameter of a presigned URL), the action
from ``X-Amz-Target`` (JSON APIs), ``Action=`` (query/EC2 APIs, query string or form body), the
``/service/<svc>/operation/<Op>`` path (RPC v2 CBOR), or for REST APIs (S3…) by matching method, path,
query and headers against botocore's own service model.

Faults (each with a match on (service, action) and a count; ``times=None`` means forever):

* ``drop_after_forward`` forwards to moto (the call takes effect there), then closes the connection
  without a response: the client never heard. botocore retries connection errors by itself (legacy
  mode: up to 5 attempts, standard mode: 3 by default), so with ``times=1`` the SAME call is sent again
  and that retry DOES reach moto: a test of "the client never heard" must count on the retry landing
  (it is what makes ClientToken idempotency matter).
* ``throttle`` answers without forwarding with the service's throttling error (EC2: 503
  ``RequestLimitExceeded``; query APIs: 400 ``Throttling``; JSON: 400 ``ThrottlingException``; S3: 503
  ``SlowDown``; REST-JSON: 429 ``ThrottlingException``).
* ``fail`` answers without forwarding with an error of the given code (EC2 XML error format for EC2,
  the protocol's own format elsewhere), status 400 unless told.

Moto gap handled here: EC2 ``ClientToken`` idempotency. moto creates a second reservation for a
repeated RunInstances with the same ClientToken; AWS returns the first one. The proxy remembers the
successful response of every EC2 call that carries a ClientToken and replays it for a repeat with the
same parameters (``IdempotentParameterMismatch`` for a repeat with different ones), as EC2 does.
And moto's thread races: a read that moto crashed on (its HTML 500 page) is sent again (RACE_RETRIES).
"""
from __future__ import annotations

import functools
import http.client
import json
import re
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union
from xml.sax.saxutils import escape

Match = Union[str, tuple, Callable[[str, str], bool], None]
Observer = Callable[[str, str, dict], None]
Rewriter = Callable[[str, str, dict, int, bytes], Union[bytes, tuple, None]]

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "trailers", "transfer-encoding", "upgrade", "expect", "content-length"}
# SigV4 signing names that differ from boto3 client names.
SIGNING_ALIASES = {"monitoring": "cloudwatch", "email": "ses", "states": "stepfunctions",
                   "execute-api": "apigateway", "elasticloadbalancing": "elbv2", "cognito-idp": "cognito-idp"}
# moto's threaded server shares its backends' dicts without locks: a List/Describe that serialises a
# dict view while another thread creates or deletes in it raises "dictionary changed size during
# iteration", and werkzeug answers an HTML 500 that botocore cannot parse (so does not retry). AWS
# never answers that way; a read is safe to send again, a mutation is not (it may have landed).
RACE_RETRIES = 3
READ_PREFIXES = ("List", "Describe", "Get", "Head")
CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


@dataclass
class Call:
    """One request the proxy received (faulted or not)."""

    service: str
    action: str
    params: dict[str, Any]
    access_key: str | None
    method: str
    path: str
    body: bytes = b""  # as the client sent it (the policy evaluator reads S3 DeleteObjects and policies)
    host: str = ""
    region: str | None = None  # the region the request was signed for (SigV4 credential scope)


@dataclass
class Fault:
    """A programmed fault: ``kind`` is drop_after_forward, throttle or fail."""

    kind: str
    matcher: Callable[[str, str], bool]
    remaining: int | None
    code: str | None = None
    message: str | None = None
    status: int | None = None
    hits: int = 0


@dataclass
class _Request:
    method: str
    path: str  # without query
    query: dict[str, list[str]]
    raw_path: str  # path with query, as received
    headers: list[tuple[str, str]]
    body: bytes
    service: str = "unknown"
    action: str = "unknown"
    protocol: str = "unknown"  # ec2 | query | json | cbor | rest-xml | rest-json | unknown
    params: dict[str, Any] = field(default_factory=dict)
    access_key: str | None = None
    region: str | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


def _moto_race(req: "_Request", status: int, body: bytes) -> bool:
    """moto crashed serving a read (its HTML error page, not an AWS error body): see RACE_RETRIES."""
    return (status == 500 and body.lstrip()[:15].lower() == b"<!doctype html>"
            and (req.action or "").startswith(READ_PREFIXES))


def make_matcher(match: Match) -> Callable[[str, str], bool]:
    """``"ec2:RunInstances"``, ``"RunInstances"``, ``"ec2:*"``, ``("ec2", None)``, a callable, or None (all)."""
    if match is None:
        return lambda s, a: True
    if callable(match):
        return match
    if isinstance(match, tuple):
        svc, act = match
    elif ":" in match:
        svc, act = match.split(":", 1)
    else:
        svc, act = None, match
    svc = None if svc in (None, "", "*") else svc
    act = None if act in (None, "", "*") else act
    return lambda s, a: (svc is None or s == svc) and (act is None or a == act)


class FaultProxy:
    """Threaded HTTP proxy to moto on a free loopback port; see the module docstring."""

    def __init__(self, target_url: str, *, errors: list | None = None, idempotency: bool = True) -> None:
        parsed = urllib.parse.urlsplit(target_url)
        self.target_host, self.target_port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.calls: list[tuple[str, str]] = []
        self.requests: list[Call] = []
        self.faults: list[Fault] = []
        self.errors = errors if errors is not None else []
        self.idempotency = idempotency
        self._observers: list[Observer] = []
        self._hooks: list[Callable[[Call, str], bool]] = []
        self._rewriters: list[Rewriter] = []
        self._request_filters: list[Callable[[_Request], None]] = []
        self._signer: Any = None  # set_signer: under moto's IAM enforcement (harness/enforce.py)
        self._tokens: dict[tuple[str, str], tuple[dict, int, list, bytes]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        handler = functools.partial(_Handler, self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server, "proxy not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- faults ------------------------------------------------------------------------------
    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def drop_after_forward(self, match: Match, times: int | None = 1) -> Fault:
        """Forward to moto, then close the connection without answering (botocore will retry)."""
        return self._add(Fault("drop_after_forward", make_matcher(match), times))

    def throttle(self, match: Match, times: int | None = 1) -> Fault:
        """Answer with the service's throttling error, without forwarding."""
        return self._add(Fault("throttle", make_matcher(match), times))

    def fail(self, match: Match, code: str, times: int | None = 1, *, message: str | None = None,
             status: int = 400) -> Fault:
        """Answer with an error of ``code`` (e.g. InstanceLimitExceeded), without forwarding."""
        return self._add(Fault("fail", make_matcher(match), times, code=code,
                               message=message or f"{code} (injected by the test harness)", status=status))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def _take_fault(self, service: str, action: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matcher(service, action):
                    fault.hits += 1
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self.faults.remove(fault)
                    return fault
        return None

    # -- counting ----------------------------------------------------------------------------
    def count(self, service: str | None = None, action: str | None = None) -> int:
        """How many requests matched (service, action) since the last ``reset_counts``."""
        with self._lock:
            return sum(1 for s, a in self.calls
                       if (service is None or s == service) and (action is None or a == action))

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.requests.clear()

    # -- hooks -------------------------------------------------------------------------------
    def add_observer(self, fn: Observer) -> None:
        """``fn(service, action, request_params)`` after every request moto answered with success."""
        self._observers.append(fn)

    def add_hook(self, fn: Callable[[Call, str], bool]) -> None:
        """``fn(call, phase)`` with phase "before" (not yet forwarded) or "after" (moto answered, the
        client not yet): returning True closes the connection there — with "before" the call never
        reaches moto, with "after" it succeeded but the client never hears. For crash tests."""
        self._hooks.append(fn)

    def add_request_filter(self, fn: Callable[["_Request"], None]) -> None:
        """``fn(request)`` before forwarding: it may rewrite ``request.body`` (moto gaps, tests/aws/harness/gaps.py).
        ``request.params`` stay what the client sent: hooks, observers and counts see the original call."""
        self._request_filters.append(fn)

    def set_signer(self, signer: Any) -> None:
        """``signer.sign(request, changed)`` right before each forward (``changed``: a request filter rewrote the
        body), ``signer.retry(request, status, body)`` after moto answered: True forwards the (re-signed) request
        once more. For a moto that enforces IAM and verifies signatures (tests/aws/harness/enforce.py)."""
        self._signer = signer

    def add_rewriter(self, fn: Rewriter) -> None:
        """``fn(service, action, params, status, body)`` → new body, ``(status, body)``, or None (keep)."""
        self._rewriters.append(fn)

    # -- request handling --------------------------------------------------------------------
    def _forward(self, req: _Request) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.target_host, self.target_port, timeout=120)
        try:
            conn.putrequest(req.method, req.raw_path, skip_host=True, skip_accept_encoding=True)
            for k, v in req.headers:
                if k.lower() not in HOP_BY_HOP:
                    conn.putheader(k, v)
            conn.putheader("Content-Length", str(len(req.body)))
            conn.endheaders(req.body if req.body else None)
            resp = conn.getresponse()
            body = b"" if req.method == "HEAD" else resp.read()
            return resp.status, resp.reason, list(resp.getheaders()), body
        finally:
            conn.close()

    def _send(self, req: _Request, changed: bool) -> tuple[int, list[tuple[str, str]], bytes]:
        """Forward (signed by the signer, if any; once more if it asks)."""
        if self._signer is not None:
            self._signer.sign(req, changed)
        status, _reason, headers, body = self._forward(req)
        if self._signer is not None and self._signer.retry(req, status, body):
            status, _reason, headers, body = self._forward(req)
        for _ in range(RACE_RETRIES):
            if not _moto_race(req, status, body):
                break
            status, _reason, headers, body = self._forward(req)
        return status, headers, body

    def _idempotent_replay(self, req: _Request) -> tuple[int, list, bytes] | None:
        token = req.params.get("ClientToken") if req.protocol == "ec2" else None
        if not (self.idempotency and token):
            return None
        with self._lock:
            seen = self._tokens.get((req.action, token))
        if seen is None:
            return None
        params, status, headers, body = seen
        if params != req.params:
            return 400, [("Content-Type", "text/xml")], _error_body(
                "ec2", "IdempotentParameterMismatch",
                f"Client token {token} was already used with different parameters.")
        return status, headers, body

    def _remember_token(self, req: _Request, status: int, headers: list, body: bytes) -> None:
        token = req.params.get("ClientToken") if req.protocol == "ec2" else None
        if self.idempotency and token and status < 300:
            with self._lock:
                self._tokens.setdefault((req.action, token), (dict(req.params), status, headers, body))

    def handle(self, req: _Request) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """The response to send, or None to close the connection without one."""
        identify(req)
        call = Call(req.service, req.action, req.params, req.access_key, req.method, req.path, req.body,
                    req.header("Host") or "", req.region)
        with self._lock:
            self.calls.append((req.service, req.action))
            self.requests.append(call)
        if any(hook(call, "before") for hook in list(self._hooks)):
            return None
        fault = self._take_fault(req.service, req.action)
        if fault and fault.kind == "throttle":
            return throttling_response(req)
        if fault and fault.kind == "fail":
            return error_response(req, fault.code or "InternalError", fault.message or "", fault.status or 400)
        replay = self._idempotent_replay(req)
        if replay is not None:
            status, headers, body = replay
        else:
            sent = req.body
            for request_filter in list(self._request_filters):
                request_filter(req)
            try:
                status, headers, body = self._send(req, changed=req.body != sent)
            except OSError as exc:
                return 502, [("Content-Type", "text/plain")], f"fault proxy: moto unreachable: {exc}".encode()
            self._remember_token(req, status, headers, body)
            if status < 300:
                for observer in list(self._observers):
                    try:
                        observer(req.service, req.action, req.params)
                    except Exception as exc:  # noqa: BLE001 - reported by the fixture
                        self.errors.append(f"proxy observer {observer!r}: {type(exc).__name__}: {exc}")
        for rewriter in list(self._rewriters):
            try:
                out = rewriter(req.service, req.action, req.params, status, body)
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"proxy rewriter {rewriter!r}: {type(exc).__name__}: {exc}")
                continue
            if isinstance(out, tuple):
                status, body = out
            elif out is not None:
                body = out
        if fault and fault.kind == "drop_after_forward":
            return None
        if status < 300 and any(hook(call, "after") for hook in list(self._hooks)):
            return None
        return status, headers, body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, proxy: FaultProxy, *args: Any, **kwargs: Any) -> None:
        self.proxy = proxy
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        pass

    def _read_body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        req = _Request(self.command, split.path, urllib.parse.parse_qs(split.query, keep_blank_values=True),
                       self.path, list(self.headers.items()), self._read_body())
        result = self.proxy.handle(req)
        if result is None:  # drop: close without a response
            self.close_connection = True
            return
        status, headers, body = result
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP_BY_HOP and k.lower() not in ("server", "date"):
                self.send_header(k, v)
        if self.command == "HEAD":
            length = next((v for k, v in headers if k.lower() == "content-length"), "0")
            self.send_header("Content-Length", length)
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _serve


# -- identification ------------------------------------------------------------------------
def identify(req: _Request) -> None:
    """Fill in service, action, protocol, params and access_key of ``req``."""
    auth = req.header("Authorization") or ""
    m = CREDENTIAL_RE.search(auth)
    if not m and "X-Amz-Credential" in req.query:
        m = CREDENTIAL_RE.search("Credential=" + req.query["X-Amz-Credential"][0])
    if m:
        req.access_key, req.region = m.group(1), m.group(2)
        req.service = SIGNING_ALIASES.get(m.group(3), m.group(3))
    elif "AWSAccessKeyId" in req.query or auth.startswith("AWS "):  # SigV2: only S3 still takes it
        req.service = "s3"
        req.access_key = (req.query.get("AWSAccessKeyId") or [auth[4:].split(":")[0]])[0]
    elif req.path.startswith("/moto-api"):
        req.service = "moto-api"
    target = req.header("X-Amz-Target")
    ctype = (req.header("Content-Type") or "").lower()
    form: dict[str, list[str]] = {}
    if ctype.startswith("application/x-www-form-urlencoded") and req.body:
        form = urllib.parse.parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True)
    action_values = form.get("Action") or req.query.get("Action")
    cbor = re.match(r"^/service/([^/]+)/operation/([^/]+)$", req.path)
    if target:
        req.protocol, req.action = "json", target.rsplit(".", 1)[-1]
        try:
            req.params = json.loads(req.body or b"{}")
        except ValueError:
            req.params = {}
    elif cbor:
        req.protocol, req.action = "cbor", cbor.group(2)
    elif action_values:
        req.protocol = "ec2" if req.service == "ec2" else "query"
        merged = {**req.query, **form}
        req.params = {k: v[0] for k, v in merged.items()}
        req.action = action_values[0]
    else:
        req.params = {k: v[0] for k, v in req.query.items()}
        req.protocol, req.action = rest_operation(req)


@functools.lru_cache(maxsize=None)
def _service_model(service: str) -> Any:
    import botocore.session

    try:
        return botocore.session.get_session().get_service_model(service)
    except Exception:  # noqa: BLE001 - unknown to botocore: no model
        return None


@functools.lru_cache(maxsize=None)
def _rest_table(service: str) -> list[tuple[str, str, list[str], dict[str, str | None], list[str], list[str]]]:
    """(op, method, path segments, literal query, required query keys, required headers) per operation."""
    model = _service_model(service)
    table = []
    if model is None:
        return table
    for name in model.operation_names:
        op = model.operation_model(name)
        uri = op.http.get("requestUri", "/")
        path, _, query = uri.partition("?")
        literal: dict[str, str | None] = {}
        for part in filter(None, query.split("&")):
            k, eq, v = part.partition("=")
            literal[k] = v if eq else None
        req_query, req_headers = [], []
        shape = op.input_shape
        if shape is not None:
            required = set(shape.required_members)
            for mname, member in shape.members.items():
                loc = member.serialization.get("location")
                if mname in required and loc == "querystring":
                    req_query.append(member.serialization.get("name", mname))
                elif mname in required and loc == "header":
                    req_headers.append(member.serialization.get("name", mname).lower())
        table.append((name, op.http.get("method", "POST"), [s for s in path.split("/") if s],
                      literal, req_query, req_headers))
    return table


def _path_matches(template: list[str], segments: list[str]) -> bool:
    for i, part in enumerate(template):
        if part.startswith("{") and part.endswith("+}"):
            return len(segments) > i
        if i >= len(segments):
            return False
        if not (part.startswith("{") and part.endswith("}")) and part != segments[i]:
            return False
    return len(segments) == len(template)


def rest_operation(req: _Request) -> tuple[str, str]:
    """(protocol, operation name) of a REST request from botocore's model; ``"METHOD /path"`` if none."""
    model = _service_model(req.service) if req.service != "unknown" else None
    protocol = model.protocol if model is not None else "unknown"
    segments = [urllib.parse.unquote(s) for s in req.path.split("/") if s]
    headers = {k.lower() for k, _ in req.headers}
    best, best_score = None, -1
    for name, method, template, literal, req_query, req_headers in _rest_table(req.service):
        if method != req.method or not _path_matches(template, segments):
            continue
        if any(k not in req.query or (v is not None and req.query[k][0] != v) for k, v in literal.items()):
            continue
        if any(k not in req.query for k in req_query) or any(h not in headers for h in req_headers):
            continue
        literal_path = sum(1 for p in template if not p.startswith("{"))
        score = 100 * (len(literal) + len(req_query) + len(req_headers)) + literal_path
        if score > best_score:
            best, best_score = name, score
    return protocol, best or f"{req.method} {req.path}"


# -- error responses -----------------------------------------------------------------------
def _request_id() -> str:
    return str(uuid.uuid4())


def _error_body(protocol: str, code: str, message: str) -> bytes:
    rid = _request_id()
    if protocol == "ec2":
        return (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>"
                f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{rid}</RequestID></Response>"
                ).encode()
    if protocol == "s3":
        return (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{escape(code)}</Code>"
                f"<Message>{escape(message)}</Message><RequestId>{rid}</RequestId></Error>").encode()
    return (f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>").encode()


def _cbor_text(s: str) -> bytes:
    data = s.encode()
    n = len(data)
    head = bytes([0x60 | n]) if n < 24 else bytes([0x78, n]) if n < 256 else bytes([0x79]) + n.to_bytes(2, "big")
    return head + data


def error_response(req: _Request, code: str, message: str, status: int) -> tuple[int, list, bytes]:
    """An error in the protocol of ``req`` (EC2 XML, query XML, S3 XML, JSON, REST-JSON or CBOR)."""
    rid = _request_id()
    if req.protocol in ("ec2", "query") or (req.protocol == "unknown" and req.service == "ec2"):
        proto = "ec2" if req.service == "ec2" else "query"
        return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid)], _error_body(proto, code, message)
    if req.protocol == "rest-xml":
        proto = "s3" if req.service == "s3" else "query"
        return status, [("Content-Type", "application/xml"), ("x-amz-request-id", rid)], _error_body(proto, code, message)
    if req.protocol == "cbor":
        body = bytes([0xA2]) + _cbor_text("__type") + _cbor_text(code) + _cbor_text("message") + _cbor_text(message)
        return status, [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor"),
                        ("x-amzn-RequestId", rid)], body
    body = json.dumps({"__type": code, "message": message}).encode()
    ctype = "application/x-amz-json-1.1" if req.protocol == "json" else "application/json"
    return status, [("Content-Type", ctype), ("x-amzn-ErrorType", code), ("x-amzn-RequestId", rid)], body


def throttling_response(req: _Request) -> tuple[int, list, bytes]:
    """The throttling error the real service would send for ``req``."""
    if req.service == "ec2":
        return error_response(req, "RequestLimitExceeded", "Request limit exceeded.", 503)
    if req.service == "s3":
        return error_response(req, "SlowDown", "Please reduce your request rate.", 503)
    if req.protocol == "query":
        return error_response(req, "Throttling", "Rate exceeded", 400)
    if req.protocol == "rest-json":
        return error_response(req, "ThrottlingException", "Rate exceeded", 429)
    return error_response(req, "ThrottlingException", "Rate exceeded", 400)
