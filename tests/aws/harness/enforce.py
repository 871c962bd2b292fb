"""moto's own IAM enforcement behind the fault proxy: the laptop signs as a moto user holding exactly README's
policy, each instance as a moto STS session of its role, and moto refuses what their policies do not allow.

moto enforces IAM once ``INITIAL_NO_AUTH_ACTION_COUNT`` requests have passed unauthenticated: every later
request must be signed (SigV4, verified) by an access key moto issued, and is judged by action name against
the key's user or role policies (moto/iam/access_control.py). :func:`bootstrap` spends that count on the
harness's admin user and the laptop user (README's policy as a customer managed policy, attached).

Who signs what:

* the laptop (``mcc`` and the test's own boto3 calls): the laptop user's key, untouched — moto verifies the
  client's own signature; a request whose body a gap filter rewrote (tests/aws/harness/gaps.py) is signed
  again with the same key;
* instances: IMDS hands out an STS session moto issued for the instance's role (:meth:`Enforcement.session`),
  so moto judges an instance's calls by the role's policies, live, as mcc wrote them;
* the harness: its direct clients reach moto through an admin front (:func:`admin_front`: a proxy that signs
  every request as the admin user), and ``tagging.HARNESS_KEY`` calls through the fault proxy are signed as
  the admin there.

moto gaps closed here (never by widening a policy):

* Resources: moto judges a call against ``Resource: "*"`` unless it is S3 (bucket/object ARN) or an IAM call
  with a ``RoleName`` of an existing role (that role's ARN, even where AWS authorises the instance profile:
  ``AddRoleToInstanceProfile``), so an Allow scoped to the ARNs AWS authorises does not match and moto
  refuses every EC2, SSM, ElastiCache and instance-profile call a scoped policy allows. When moto's
  AccessDenied names an action that an Allow statement of the caller's policies names (and no Deny does),
  the call is sent again signed by the admin user and counted in ``Enforcement.resource_gap``: whether AWS
  would allow it on its real ARNs and condition keys is the policy evaluator's judgement
  (tests/aws/harness/authz.py), made on every call. An action no statement names stays an AccessDenied, to
  the client, recorded in ``Enforcement.denied``. S3 ``DeleteObjects`` alike: moto judges ``s3:DeleteObject``
  on the bucket's ARN, AWS on each object's.
* Conditions: moto evaluates none (an Allow with a Condition holds whatever the request): a false allow,
  left to the evaluator.
* AssumeRole of a role whose trust policy names a service principal (``ec2.amazonaws.com``) raises
  TypeError in moto 5.2 (``_check_principal``: ``principal in None``) once IAM is enforced. The session is
  assumed on ``arn:aws:iam::<account>:role/harness-imds/<role name>``, a path moto does not know: moto skips
  the trust check of a role it does not know, and judges a session by the last segment of its role ARN, the
  role's name — so the session holds exactly the role's policies (EC2 itself assumes the role for IMDS).
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from tests.aws.harness.authz_policy import glob_match
from tests.aws.harness.proxy import CREDENTIAL_RE, FaultProxy

ADMIN_USER, LAPTOP_USER, LAPTOP_POLICY = "harness-admin", "mcc-laptop", "mcc-user"
BOOTSTRAP_CALLS = 7  # the unauthenticated requests bootstrap() makes (moto enforces IAM after them)
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
ASSUME_PATH = "harness-imds"
DENIED_RE = re.compile(rb"is not authorized to perform: ([A-Za-z0-9-]+:[A-Za-z0-9]+)")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Key:
    """Credentials moto issued: an IAM user's access key, or an STS session (``token``)."""

    access_key: str
    secret_key: str
    token: str | None = None


@dataclass(frozen=True)
class Identities:
    admin: Key  # the harness's own calls (Action "*")
    laptop: Key  # README's user policy, exactly, as a customer managed policy


def bootstrap(moto_url: str, user_policy: dict[str, Any], region: str = "us-east-1") -> Identities:
    """Make the admin and laptop users with their keys (``BOOTSTRAP_CALLS`` requests), then check that moto
    now refuses an unknown key: its enforcement is on."""
    import boto3
    from botocore.exceptions import ClientError

    def iam(key: Key) -> Any:
        return boto3.session.Session().client("iam", endpoint_url=moto_url, region_name=region,
                                              aws_access_key_id=key.access_key, aws_secret_access_key=key.secret_key)

    anyone = iam(Key("bootstrap", "bootstrap"))
    anyone.create_user(UserName=ADMIN_USER)
    anyone.put_user_policy(UserName=ADMIN_USER, PolicyName="everything", PolicyDocument=json.dumps(ADMIN_POLICY))
    admin = _new_key(anyone, ADMIN_USER)
    anyone.create_user(UserName=LAPTOP_USER)
    arn = anyone.create_policy(PolicyName=LAPTOP_POLICY, PolicyDocument=json.dumps(user_policy))["Policy"]["Arn"]
    anyone.attach_user_policy(UserName=LAPTOP_USER, PolicyArn=arn)
    laptop = _new_key(anyone, LAPTOP_USER)
    try:
        anyone.list_users()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "InvalidClientTokenId", exc.response
    else:
        raise AssertionError(f"moto does not enforce IAM after {BOOTSTRAP_CALLS} calls")
    iam(admin).get_user(UserName=LAPTOP_USER)
    return Identities(admin, laptop)


def _new_key(iam: Any, user: str) -> Key:
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return Key(key["AccessKeyId"], key["SecretAccessKey"])


def sign(req: Any, key: Key) -> None:
    """Sign the proxy request ``req`` again with ``key``, the way moto verifies a signature: the headers it
    signed (less a session token, plus ``key``'s), its date, scope and path; a hex payload hash header is
    that of the body as it now is. Unsigned and presigned requests are left alone."""
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth_header = req.header("Authorization") or ""
    scope = CREDENTIAL_RE.search(auth_header)
    if not scope or not auth_header.startswith("AWS4-HMAC-SHA256"):
        return
    region, service = scope.group(2), scope.group(3)
    signed = set(auth_header.partition("SignedHeaders=")[2].partition(",")[0].split(";"))
    headers = [(k, v) for k, v in req.headers if k.lower() not in ("authorization", "x-amz-security-token")]
    if key.token:
        headers.append(("X-Amz-Security-Token", key.token))
        signed.add("x-amz-security-token")
    else:
        signed.discard("x-amz-security-token")
    digest = hashlib.sha256(req.body).hexdigest()
    headers = [(k, digest if k.lower() == "x-amz-content-sha256" and HEX64.match(v) else v) for k, v in headers]
    present = {k.lower() for k, _ in headers}
    to_sign = {k: v for k, v in headers if k.lower() in signed & present}
    request = AWSRequest(method=req.method, url=req.raw_path, data=req.body, headers=to_sign)
    request.context["timestamp"] = request.headers["X-Amz-Date"]
    signer = (S3SigV4Auth if service == "s3" else SigV4Auth)(
        Credentials(key.access_key, key.secret_key, key.token), service, region)
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    names = signer.signed_headers(signer.headers_to_sign(request))
    credential = f"{key.access_key}/{request.context['timestamp'][:8]}/{region}/{service}/aws4_request"
    headers.append(("Authorization",
                    f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={names}, Signature={signature}"))
    req.headers = headers


def refused_action(req: Any, status: int, body: bytes) -> str | None:
    """The action moto's IAM check refused ``req`` for, or None. A DeleteObjects moto judged on the bucket's
    ARN answers 200 with every object refused and none deleted (moto/s3/responses.py); S3's own 403s name no
    action (moto judged the real bucket or object ARN: the refusal stands)."""
    if status == 403:
        m = DENIED_RE.search(body)
        return m.group(1).decode() if m else None
    if req.service == "s3" and req.action == "DeleteObjects" and status == 200:
        refused = len(re.findall(rb"<Code>AccessDenied</Code>\s*<Message>Access Denied</Message>", body))
        if refused and refused == len(re.findall(rb"<Object>", req.body)):
            return "s3:DeleteObject"
    return None


class AdminSigner:
    """For :func:`admin_front`: every signed request is signed again as the admin."""

    def __init__(self, admin: Key) -> None:
        self.admin = admin

    def sign(self, req: Any, changed: bool) -> None:
        sign(req, self.admin)

    def retry(self, req: Any, status: int, body: bytes) -> bool:
        return False


def admin_front(moto_url: str, admin: Key, errors: list | None = None) -> FaultProxy:
    """A proxy to moto that signs every request as the admin: what the harness's direct clients (keys
    ``testing``) reach moto through under enforcement. No faults, no idempotency replay, no hooks."""
    front = FaultProxy(moto_url, errors=errors, idempotency=False)
    front.set_signer(AdminSigner(admin))
    return front.start()


class Enforcement:
    """The fault proxy's signer under enforcement (see the module docstring).

    ``who(access_key)`` is the policy evaluator's (authz.PolicyEvaluator.who): (identity, its policies) or
    None; ``roles`` maps an IMDS session's access key to its role (the instance runner's ``credentials``)."""

    def __init__(self, ids: Identities, iam_client: Callable[[], Any], sts_client: Callable[[], Any],
                 who: Callable[[str | None], tuple[str, list[dict[str, Any]]] | None],
                 account: str = "123456789012", harness_keys: tuple[str, ...] = ()) -> None:
        self.ids, self.account = ids, account
        self._iam, self._sts, self._who = iam_client, sts_client, who
        self._keys: dict[str, Key] = {ids.laptop.access_key: ids.laptop}
        self._keys.update({k: ids.admin for k in harness_keys})
        self._lock = threading.Lock()
        self.resource_gap: Counter[tuple[str, str]] = Counter()  # (identity, action) moto refused on "*" only
        self.denied: list[str] = []  # AccessDenied moto returned and the harness passed on
        self.moto_allowed: Counter[str] = Counter()  # identity → calls moto's own check let through

    def attach(self, proxy: FaultProxy) -> "Enforcement":
        proxy.set_signer(self)
        return self

    def session(self, role: str, instance_id: str) -> Key:
        """An STS session for ``role`` (see the module docstring's third gap), known to :meth:`sign`."""
        arn = f"arn:aws:iam::{self.account}:role/{ASSUME_PATH}/{role}"
        creds = self._sts().assume_role(RoleArn=arn, RoleSessionName=instance_id)["Credentials"]
        key = Key(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
        with self._lock:
            self._keys[key.access_key] = key
        return key

    # -- the proxy's signer interface ----------------------------------------------------------
    def sign(self, req: Any, changed: bool) -> None:
        """Sign again what the client's own signature no longer covers (a rewritten body), or a harness key."""
        with self._lock:
            key = self._keys.get(req.access_key or "")
        if key is not None and (changed or key is self.ids.admin):
            sign(req, key)

    def retry(self, req: Any, status: int, body: bytes) -> bool:
        """After moto answered: True (signed again as the admin) for a refusal that is moto's resource gap."""
        action = refused_action(req, status, body)
        identity = self._who(req.access_key)
        name = identity[0] if identity else f"key {req.access_key}"
        if action is None:
            with self._lock:
                if status == 403 and b"AccessDenied" in body:  # S3's: judged on the real ARN, it stands
                    self.denied.append(f"{name}: AccessDenied (call {req.service}:{req.action})")
                elif status < 300 and identity:
                    self.moto_allowed[name] += 1
            return False
        if identity and self._named(identity[1], action):
            with self._lock:
                self.resource_gap[(name, action)] += 1
            sign(req, self.ids.admin)
            return True
        with self._lock:
            self.denied.append(f"{name}: AccessDenied {action} (call {req.service}:{req.action})")
        return False

    @staticmethod
    def _named(policies: list[dict[str, Any]], action: str) -> bool:
        """An Allow statement names ``action`` and no Deny does: moto refused it on its resource alone (it
        evaluates no condition), which is the evaluator's to judge."""
        effects = set()
        for policy in policies:
            statements = policy.get("Statement", [])
            for st in statements if isinstance(statements, list) else [statements]:
                actions = st.get("Action", [])
                if any(glob_match(a, action, case=False) for a in (actions if isinstance(actions, list) else [actions])):
                    effects.add(st.get("Effect"))
        return effects == {"Allow"}
