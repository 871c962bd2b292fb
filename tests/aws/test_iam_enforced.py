"""A whole emulated sweep with moto's own IAM enforcement on (issue 15 §2): the laptop holds exactly README's
policy, as a customer managed policy of a moto user, so an action README lacks is an AccessDenied here, not a
surprise in a user's account. Its own moto_server (the default suite's is unenforced); harness/enforce.py."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from tests.aws.conftest import REGION, aws_toml, emulated_cloud
from tests.aws.harness import Cloud
from tests.aws.harness.authz import readme_policy
from tests.aws.harness.enforce import BOOTSTRAP_CALLS, LAPTOP_POLICY, LAPTOP_USER, Identities, bootstrap
from tests.aws.harness.moto_server import MotoServer
from tests.aws.harness.tls import TlsFiles
from tests.aws.test_run_aws import tagged_counts
from tests.conftest import mcc_json


@pytest.fixture(scope="module")
def enforcing_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoServer, Identities]]:
    """A moto_server that enforces IAM after the bootstrap's calls, and the identities they made."""
    if not shutil.which("moto_server"):
        pytest.skip("the emulated cloud needs moto_server (pip install 'moto[server]')")
    server = MotoServer(tmp_path_factory.mktemp("moto-iam"),
                        env={"INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_CALLS)}).start()
    try:
        yield server, bootstrap(server.url, readme_policy(), REGION)
    finally:
        server.stop()


@pytest.fixture
def enforced_cloud(enforcing_moto: tuple[MotoServer, Identities], tls_files: TlsFiles, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    """The ``cloud`` fixture on the enforcing moto (not reset between tests: ledgers keep them apart)."""
    server, ids = enforcing_moto
    with emulated_cloud(server.url, tls_files, tmp_path / "cloud", monkeypatch, ids) as c:
        yield c


def laptop(cloud: Cloud, service: str) -> Any:
    """A client as the laptop user, through the fault proxy (as mcc's own clients are)."""
    import boto3

    return boto3.session.Session().client(service, endpoint_url=cloud.url, region_name=REGION,
                                          aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                                          aws_secret_access_key=cloud.secret_key)


def test_moto_refuses_what_readme_does_not_grant_and_the_evaluator_judges_the_rest(enforced_cloud: Cloud) -> None:
    cloud = enforced_cloud
    iam = cloud.client("iam")  # the admin (through the front): the laptop user holds README's policy, attached
    [attached] = iam.list_attached_user_policies(UserName=LAPTOP_USER)["AttachedPolicies"]
    assert attached["PolicyName"] == LAPTOP_POLICY and not iam.list_user_policies(UserName=LAPTOP_USER)["PolicyNames"]
    version = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]["DefaultVersionId"]
    doc = iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"]
    assert (doc if isinstance(doc, dict) else json.loads(doc)) == readme_policy()

    ec2, ssm = laptop(cloud, "ec2"), laptop(cloud, "ssm")
    assert ec2.describe_vpcs()["Vpcs"]  # README's Read statement, on "*": moto allows it itself
    cloud.authz.enabled = False  # the calls below are this test's, not mcc's: the evaluator's table lacks them
    with pytest.raises(ClientError, match="AccessDenied"):
        ec2.delete_vpc(VpcId=ec2.describe_vpcs()["Vpcs"][0]["VpcId"])  # no statement names it
    assert cloud.enforcement.denied == [
        "laptop (README's user policy): AccessDenied ec2:DeleteVpc (call ec2:DeleteVpc)"]
    cloud.enforcement.denied.clear()
    cloud.authz.enabled = True
    # a statement scoped to ARNs: moto judges on "*" and refuses (its gap); the harness sends it again as the
    # admin, and the evaluator judges the real ARN: /mcc/… allowed, /elsewhere/… an implicit deny
    ssm.put_parameter(Name="/mcc/enforced-test", Value="x", Type="String")
    ssm.put_parameter(Name="/elsewhere/enforced-test", Value="x", Type="String")
    assert cloud.enforcement.resource_gap[("laptop (README's user policy)", "ssm:PutParameter")] == 2
    assert [f for f in cloud.authz.failures if "/elsewhere/enforced-test" in f]
    cloud.authz.failures.clear()
    # a body the harness rewrites (the TLS-only bucket policy, gaps.py) is signed again with the laptop's key
    s3 = laptop(cloud, "s3")
    s3.create_bucket(Bucket="mcc-enforced-test")
    tls_only = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::mcc-enforced-test/*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}
    s3.put_bucket_policy(Bucket="mcc-enforced-test", Policy=json.dumps(tls_only))
    s3.delete_bucket(Bucket="mcc-enforced-test")
    assert cloud.enforcement.denied == []
    for name in ("/mcc/enforced-test", "/elsewhere/enforced-test"):
        cloud.client("ssm").delete_parameter(Name=name)


def test_a_sweep_and_clean_as_the_user_holding_readmes_policy(enforced_cloud: Cloud, mcc_home: Path,
                                                                make_project) -> None:
    cloud = enforced_cloud
    project = make_project(8, toml=aws_toml(run={"chunk_size": 4, "workers": 1}))
    try:
        out = mcc_json("run", str(project), home=mcc_home, timeout=240)
        assert out["state"] == "completed" and out["done"] == 8
        assert mcc_json("clean", "--all", "--yes", home=mcc_home, timeout=240)["survivors"] == []
    finally:
        for iid in cloud.runner.booted():
            print(f"===== {iid}\n{cloud.runner.console(iid)[-3000:]}")
        print("moto allowed on its own:", dict(cloud.enforcement.moto_allowed))
        print("moto's resource gap (sent again as the admin):", dict(cloud.enforcement.resource_gap))
    assert tagged_counts(mcc_home) == {}
    assert cloud.enforcement.denied == [], "moto refused:\n" + "\n".join(cloud.enforcement.denied)
    signed = {r.access_key for r in cloud.proxy.requests}
    sessions = {k for k, role in cloud.runner.credentials.items() if role}
    assert os.environ["AWS_ACCESS_KEY_ID"] in signed  # the laptop user's key signed mcc's calls
    assert sessions and sessions <= signed  # and the instances' STS sessions
    judged = {who for who, _ in cloud.authz.allowed}
    assert "laptop (README's user policy)" in judged and any(w.startswith("role mcc-") for w in judged)
    # moto's own check passed the laptop's reads, S3 on mcc-* and IAM on mcc roles, and the roles' calls
    assert cloud.enforcement.moto_allowed["laptop (README's user policy)"] > 0
    assert any(w.startswith("role mcc-") for w in cloud.enforcement.moto_allowed)
