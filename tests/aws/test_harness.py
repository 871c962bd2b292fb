"""The emulated cloud itself: proxy, faults, ElastiCache stand-in, IMDS and the instance runner."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from tests.aws.harness import Cloud, wait_for
from tests.aws.harness.imds import Imds, InstanceIdentity

NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1})  # one attempt, no retry



@pytest.fixture(autouse=True)
def _harness_calls_are_not_judged(cloud: Cloud) -> None:
    """These tests drive the harness with raw, untagged calls of their own, not mcc's: the policy evaluator
    (tests/aws/harness/authz.py) judges mcc's calls only."""
    cloud.authz.enabled = False

def default_ami(cloud: Cloud) -> str:
    ssm = boto3.client("ssm")
    return ssm.get_parameter(Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")[
        "Parameter"]["Value"]


def launch(cloud: Cloud, user_data: str, **kwargs) -> str:
    ec2 = boto3.client("ec2")
    resp = ec2.run_instances(ImageId=default_ami(cloud), InstanceType="t3.micro", MinCount=1, MaxCount=1,
                             UserData=user_data, **kwargs)
    return resp["Instances"][0]["InstanceId"]


def state(cloud: Cloud, instance_id: str) -> str:
    resp = cloud.client("ec2").describe_instances(InstanceIds=[instance_id])
    return resp["Reservations"][0]["Instances"][0]["State"]["Name"]


IMDS_PY = """
import json, os, sys, time, urllib.error, urllib.request
BASE = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
def token():
    req = urllib.request.Request(BASE + "/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    return urllib.request.urlopen(req, timeout=5).read().decode()
def get(path):
    req = urllib.request.Request(BASE + path, headers={"X-aws-ec2-metadata-token": token()})
    return urllib.request.urlopen(req, timeout=5).read().decode()
"""


# -- proxy ---------------------------------------------------------------------------------
def test_proxy_forwards_and_counts_calls(cloud: Cloud) -> None:
    s3 = boto3.client("s3")
    assert s3.meta.endpoint_url == cloud.url
    s3.create_bucket(Bucket="harness-bucket")
    s3.put_object(Bucket="harness-bucket", Key="a/b.txt", Body=b"hello")
    assert s3.get_object(Bucket="harness-bucket", Key="a/b.txt")["Body"].read() == b"hello"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="harness-bucket")["Contents"]] == ["a/b.txt"]
    assert "harness-bucket" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert [b["Name"] for b in cloud.client("s3").list_buckets()["Buckets"]] == ["harness-bucket"]
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "harness-bucket", "Key": "a/b.txt"})
    assert url.startswith(cloud.url) and urllib.request.urlopen(url, timeout=10).read() == b"hello"
    boto3.client("ec2").describe_instances()
    boto3.client("sts").get_caller_identity()

    p = cloud.proxy
    assert p.count("s3", "CreateBucket") == 1
    assert p.count("s3", "PutObject") == 1
    assert p.count("s3", "GetObject") == 2  # one signed call, one presigned URL
    assert p.count("s3", "ListObjectsV2") == 1
    assert p.count("s3", "ListBuckets") == 1
    assert p.count("ec2", "DescribeInstances") == 1
    assert p.count("sts", "GetCallerIdentity") == 1
    assert p.count("ssm") == 0  # the fixture's own checks go direct to moto
    assert p.count(action="CreateBucket") == 1
    assert all(r.access_key == "testing" for r in p.requests)
    p.reset_counts()
    assert p.count() == 0


def test_a_read_moto_crashed_on_is_sent_again_a_mutation_is_not() -> None:
    """moto's race (an HTML 500 while another thread changes the dict a List serialises) is the
    emulator's, not AWS's: the proxy sends a read again, never a mutation (it may have landed)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from botocore.parsers import ResponseParserError

    from tests.aws.harness.proxy import FaultProxy

    seen: list[str] = []
    listing = (b"<ListInstanceProfilesResponse><ListInstanceProfilesResult><InstanceProfiles/>"
               b"<IsTruncated>false</IsTruncated></ListInstanceProfilesResult></ListInstanceProfilesResponse>")

    class Crashy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            action = body.split("Action=")[1].split("&")[0]
            seen.append(action)
            ok = action == "ListInstanceProfiles" and seen.count(action) == 2
            out = listing if ok else b"<!doctype html>\n<title>500 Internal Server Error</title>"
            self.send_response(200 if ok else 500)
            self.send_header("Content-Type", "text/xml" if ok else "text/html")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Crashy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = FaultProxy(f"http://127.0.0.1:{server.server_address[1]}").start()
    try:
        iam = boto3.client("iam", endpoint_url=proxy.url, region_name="us-east-1", config=NO_RETRY,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        assert iam.list_instance_profiles()["InstanceProfiles"] == []
        assert seen == ["ListInstanceProfiles", "ListInstanceProfiles"]
        with pytest.raises(ResponseParserError):  # the HTML page reaches the client, sent once
            iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")
        assert seen.count("CreateRole") == 1
    finally:
        proxy.stop()
        server.shutdown()
        server.server_close()


def test_throttle_returns_each_protocols_throttling_error(cloud: Cloud) -> None:
    p = cloud.proxy
    p.throttle("ec2:DescribeInstances", times=1)
    ec2 = boto3.client("ec2", config=NO_RETRY)
    with pytest.raises(ClientError) as err:
        ec2.describe_instances()
    assert err.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    ec2.describe_instances()  # the fault is used up

    p.throttle("ssm:GetParameter", times=1)
    with pytest.raises(ClientError) as err:
        boto3.client("ssm", config=NO_RETRY).get_parameter(Name="/aws/service/ami-amazon-linux-latest/"
                                                               "al2023-ami-kernel-default-x86_64")
    assert err.value.response["Error"]["Code"] == "ThrottlingException"

    p.throttle("s3:ListBuckets", times=1)
    with pytest.raises(ClientError) as err:
        boto3.client("s3", config=NO_RETRY).list_buckets()
    assert err.value.response["Error"]["Code"] == "SlowDown"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503

    p.throttle("elasticache:DescribeCacheClusters", times=1)
    with pytest.raises(ClientError) as err:
        boto3.client("elasticache", config=NO_RETRY).describe_cache_clusters()
    assert err.value.response["Error"]["Code"] == "Throttling"

    # botocore's own retries ride through a short throttle: every attempt is counted.
    p.reset_counts()
    p.throttle("ec2:DescribeInstances", times=1)
    boto3.client("ec2", config=Config(retries={"mode": "standard", "total_max_attempts": 2})).describe_instances()
    assert p.count("ec2", "DescribeInstances") == 2


def test_fail_injects_ec2_error_without_forwarding(cloud: Cloud) -> None:
    fault = cloud.proxy.fail("ec2:RunInstances", "InstanceLimitExceeded", times=1)
    with pytest.raises(ClientError) as err:
        launch(cloud, "")
    assert err.value.response["Error"]["Code"] == "InstanceLimitExceeded"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert fault.hits == 1
    assert cloud.client("ec2").describe_instances()["Reservations"] == []

    cloud.proxy.fail("RunInstances", "InsufficientInstanceCapacity", times=None)
    for _ in range(2):
        with pytest.raises(ClientError, match="InsufficientInstanceCapacity"):
            launch(cloud, "")
    cloud.proxy.clear_faults()
    launch(cloud, "")
    assert len(cloud.client("ec2").describe_instances()["Reservations"]) == 1


def test_drop_after_forward_creates_the_resource_the_client_never_heard_of(cloud: Cloud) -> None:
    p = cloud.proxy
    p.drop_after_forward("ec2:RunInstances", times=1)
    with pytest.raises(ConnectionClosedError):
        boto3.client("ec2", config=NO_RETRY).run_instances(ImageId=default_ami(cloud), InstanceType="t3.micro",
                                                           MinCount=1, MaxCount=1)
    assert len(cloud.client("ec2").describe_instances()["Reservations"]) == 1

    # With retries (botocore's default) the retry reaches moto too; a ClientToken keeps it to one
    # reservation, as on EC2 (the proxy supplies the idempotency moto lacks).
    p.reset_counts()
    p.drop_after_forward("ec2:RunInstances", times=1)
    resp = boto3.client("ec2").run_instances(ImageId=default_ami(cloud), InstanceType="t3.micro", MinCount=1,
                                             MaxCount=1, ClientToken="harness-token-1")
    assert p.count("ec2", "RunInstances") == 2
    reservations = cloud.client("ec2").describe_instances()["Reservations"]
    assert len(reservations) == 2
    assert resp["Instances"][0]["InstanceId"] in {r["Instances"][0]["InstanceId"] for r in reservations}
    with pytest.raises(ClientError, match="IdempotentParameterMismatch"):
        boto3.client("ec2").run_instances(ImageId=default_ami(cloud), InstanceType="t3.small", MinCount=1,
                                          MaxCount=1, ClientToken="harness-token-1")


# -- ElastiCache ---------------------------------------------------------------------------
def test_elasticache_stand_in_serves_tls_redis_and_completes_deletion(cloud: Cloud) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if not cloud.elasticache.available():
        pytest.skip("needs /usr/bin/redis-server 7 with TLS (apt-get install redis-server)")
    ec = boto3.client("elasticache")
    token = "harness-auth-token-0123456789"
    ec.create_cache_cluster(CacheClusterId="mcc-queue", Engine="redis", CacheNodeType="cache.t3.micro",
                            NumCacheNodes=1, AuthToken=token, TransitEncryptionEnabled=True)
    cluster = ec.describe_cache_clusters(CacheClusterId="mcc-queue", ShowCacheNodeInfo=True)["CacheClusters"][0]
    assert cluster["CacheClusterStatus"] == "available"
    endpoint = cluster["CacheNodes"][0]["Endpoint"]
    assert endpoint["Address"] == "127.0.0.1"

    client = redis.Redis(host=endpoint["Address"], port=endpoint["Port"], password=token, ssl=True,
                         ssl_ca_certs=cloud.ca_file)
    assert client.ping()
    client.close()
    # SSL_CERT_FILE alone makes the harness CA trusted (no product knob needed).
    assert redis.Redis(host="127.0.0.1", port=endpoint["Port"], password=token, ssl=True).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=endpoint["Port"], password="wrong-password-000", ssl=True,
                    retry=Retry(NoBackoff(), 0)).ping()

    srv = cloud.elasticache.server("mcc-queue")
    assert token not in open(f"/proc/{srv.proc.pid}/cmdline", "rb").read().decode(errors="replace")
    assert oct(os.stat(srv.directory / "secret.conf").st_mode & 0o777) == "0o600"

    assert ec.delete_cache_cluster(CacheClusterId="mcc-queue")["CacheCluster"]["CacheClusterStatus"] == "deleting"
    with pytest.raises(ClientError) as err:
        ec.describe_cache_clusters(CacheClusterId="mcc-queue")
    assert err.value.response["Error"]["Code"] == "CacheClusterNotFound"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert ec.describe_cache_clusters()["CacheClusters"] == []
    assert srv.proc.poll() is not None

    ec.create_replication_group(ReplicationGroupId="mcc-rg", ReplicationGroupDescription="queue",
                                Engine="redis", CacheNodeType="cache.t3.micro", NumCacheClusters=1,
                                AuthToken=token, TransitEncryptionEnabled=True)
    group = ec.describe_replication_groups(ReplicationGroupId="mcc-rg")["ReplicationGroups"][0]
    primary = group["NodeGroups"][0]["PrimaryEndpoint"]
    assert primary["Address"] == "127.0.0.1"
    assert redis.Redis(host=primary["Address"], port=primary["Port"], password=token, ssl=True).ping()
    ec.delete_replication_group(ReplicationGroupId="mcc-rg")
    with pytest.raises(ClientError) as err:
        ec.describe_replication_groups(ReplicationGroupId="mcc-rg")
    assert err.value.response["Error"]["Code"] == "ReplicationGroupNotFoundFault"
    assert cloud.elasticache.server("mcc-rg") is None


# -- IMDS ----------------------------------------------------------------------------------
def test_imds_requires_a_token_and_hands_out_role_credentials(cloud: Cloud, tmp_path) -> None:
    identity = InstanceIdentity(instance_id="i-0123456789abcdef0", role="mcc-instance-role")
    imds = Imds(identity, secret_key=cloud.secret_key, tags=lambda: {"mcc:role": "worker"}).start()
    try:
        base = imds.endpoint.rstrip("/")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/latest/meta-data/instance-id", timeout=5)
        assert err.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as err:  # a token needs a TTL
            urllib.request.urlopen(urllib.request.Request(base + "/latest/api/token", method="PUT"), timeout=5)
        assert err.value.code == 400
        token = urllib.request.urlopen(urllib.request.Request(
            base + "/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}),
            timeout=5).read().decode()

        def get(path: str) -> str:
            req = urllib.request.Request(base + path, headers={"X-aws-ec2-metadata-token": token})
            return urllib.request.urlopen(req, timeout=5).read().decode()

        assert get("/latest/meta-data/instance-id") == "i-0123456789abcdef0"
        assert get("/latest/meta-data/placement/region") == "us-east-1"
        assert get("/latest/meta-data/tags/instance/mcc:role") == "worker"
        assert get("/latest/meta-data/iam/security-credentials/") == "mcc-instance-role"
        creds = json.loads(get("/latest/meta-data/iam/security-credentials/mcc-instance-role"))
        assert creds["Code"] == "Success" and creds["SecretAccessKey"] == cloud.secret_key
        with pytest.raises(urllib.error.HTTPError) as err:
            get("/latest/meta-data/spot/instance-action")
        assert err.value.code == 404

        # A process with no AWS keys in its env gets them from IMDS, like an instance profile.
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint,
               "AWS_ENDPOINT_URL": cloud.url, "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
        code = ("import boto3; c = boto3.session.Session().get_credentials(); print(c.method, c.access_key); "
                "print(boto3.client('sts').get_caller_identity()['Account'])")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["iam-role", imds.access_key, "123456789012"]
        calls = [r for r in cloud.proxy.requests if r.action == "GetCallerIdentity"]
        assert [r.access_key for r in calls] == [imds.access_key]
    finally:
        imds.stop()


# -- instance runner -----------------------------------------------------------------------
def test_runner_boots_user_data_with_imds_and_no_keys_and_kills_on_terminate(cloud: Cloud) -> None:
    user_data = "#!/bin/bash\n\"$MCC_PYTHON\" - <<'EOF'\n" + IMDS_PY + textwrap.dedent("""
        print("hello", get("/latest/meta-data/instance-id"), flush=True)
        print("keys in env:", sorted(k for k in os.environ if k.startswith("AWS_")), flush=True)
        """) + "EOF\nsleep 600\n"
    iid = launch(cloud, user_data)
    runner = cloud.runner
    wait_for(lambda: f"hello {iid}" in runner.console(iid), 20, "the user data to print its instance id")
    console = runner.console(iid)
    assert "AWS_SECRET_ACCESS_KEY" not in console and "AWS_ACCESS_KEY_ID" not in console
    assert cloud.secret_key not in runner.user_data(iid)
    pid = runner.processes()[iid]
    environ = open(f"/proc/{pid}/environ", "rb").read().decode()
    assert cloud.secret_key not in environ and "PYTHONPATH" not in environ

    runner.terminate(iid)
    assert iid not in runner.processes()
    assert state(cloud, iid) in ("shutting-down", "terminated")
    # Terminating through the API (as product code does) kills the processes too.
    iid2 = launch(cloud, "#!/bin/bash\nsleep 600\n")
    wait_for(lambda: iid2 in runner.processes(), 20, "the second instance to boot")
    boto3.client("ec2").terminate_instances(InstanceIds=[iid2])
    wait_for(lambda: iid2 not in runner.processes(), 20, "the terminated instance's processes to die")


def test_instance_role_credentials_come_from_imds(cloud: Cloud) -> None:
    iam = cloud.client("iam")
    iam.create_role(RoleName="mcc-worker", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17",
                                                                                "Statement": []}))
    iam.create_instance_profile(InstanceProfileName="mcc-worker-profile")
    iam.add_role_to_instance_profile(InstanceProfileName="mcc-worker-profile", RoleName="mcc-worker")
    user_data = textwrap.dedent("""\
        #!/bin/bash
        "$MCC_PYTHON" -c 'import boto3; print("caller", boto3.client("sts").get_caller_identity()["Account"])'
        sleep 600
        """)
    iid = launch(cloud, user_data, IamInstanceProfile={"Name": "mcc-worker-profile"})
    wait_for(lambda: "caller 123456789012" in cloud.runner.console(iid), 30, "the instance to call STS")
    imds = cloud.runner.imds(iid)
    assert imds.identity.role == "mcc-worker"
    keys = [r.access_key for r in cloud.proxy.requests if r.action == "GetCallerIdentity"]
    assert keys == [imds.access_key]


def test_shutdown_in_user_data_powers_the_instance_off(cloud: Cloud) -> None:
    terminated = launch(cloud, "#!/bin/bash\necho going down\nshutdown -h now\nsleep 600\n",
                        InstanceInitiatedShutdownBehavior="terminate")
    stopped = launch(cloud, "#!/bin/bash\npoweroff\nsleep 600\n")  # EC2's default behaviour is stop
    wait_for(lambda: state(cloud, terminated) == "terminated", 30, "shutdown to terminate the instance")
    wait_for(lambda: state(cloud, stopped) == "stopped", 30, "poweroff to stop the instance")
    wait_for(lambda: not {terminated, stopped} & set(cloud.runner.processes()), 10, "their processes to die")
    assert "going down" in cloud.runner.console(terminated)


def test_spot_interruption_notice_then_termination(cloud: Cloud) -> None:
    user_data = "#!/bin/bash\n\"$MCC_PYTHON\" - <<'EOF'\n" + IMDS_PY + textwrap.dedent("""
        print("up", flush=True)
        while True:
            try:
                print("notice", get("/latest/meta-data/spot/instance-action"), flush=True)
                break
            except urllib.error.HTTPError as exc:
                assert exc.code == 404
                time.sleep(0.05)
        """) + "EOF\nsleep 600\n"
    iid = launch(cloud, user_data, InstanceMarketOptions={"MarketType": "spot"})
    runner = cloud.runner
    wait_for(lambda: "up" in runner.console(iid), 20, "the instance to start watching for notices")
    runner.interrupt(iid, notice_seconds=1.0)
    wait_for(lambda: "notice" in runner.console(iid), 10, "the interruption notice")
    notice = json.loads(runner.console(iid).split("notice", 1)[1].strip().splitlines()[0])
    assert notice["action"] == "terminate" and notice["time"].endswith("Z")
    assert state(cloud, iid) == "running"  # still within the notice period
    wait_for(lambda: state(cloud, iid) == "terminated", 10, "the spot instance to be terminated")
    wait_for(lambda: iid not in runner.processes(), 10, "the spot instance's processes to die")
    runner.wait_idle()


def test_every_instance_of_a_multi_instance_launch_gets_the_profile(cloud: Cloud) -> None:
    """moto gives the IamInstanceProfile of a MinCount>1 launch to the first instance only; the runner
    gives it to every instance of the reservation, as EC2 does."""
    iam = cloud.client("iam")
    iam.create_role(RoleName="mcc-fleet", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17",
                                                                               "Statement": []}))
    iam.create_instance_profile(InstanceProfileName="mcc-fleet-profile")
    iam.add_role_to_instance_profile(InstanceProfileName="mcc-fleet-profile", RoleName="mcc-fleet")
    resp = boto3.client("ec2").run_instances(
        ImageId=default_ami(cloud), InstanceType="t3.micro", MinCount=3, MaxCount=3, UserData="#!/bin/bash\nsleep 600\n",
        IamInstanceProfile={"Name": "mcc-fleet-profile"})
    ids = [i["InstanceId"] for i in resp["Instances"]]
    wait_for(lambda: set(ids) <= set(cloud.runner.processes()), 30, "the three instances to boot")
    assert [cloud.runner.imds(i).identity.role for i in ids] == ["mcc-fleet"] * 3


def test_runner_kills_only_its_own_instances(cloud: Cloud, tmp_path) -> None:
    """A process marked by another runner (another pytest session) survives this runner's stop()."""
    from tests.aws.harness.runner import InstanceRunner

    other = InstanceRunner(cloud.moto_url, cloud.url, tmp_path / "other", secret_key=cloud.secret_key,
                           ca_bundle=cloud.ca_file)
    assert other.marker != cloud.runner.marker
    foreign = subprocess.Popen(["sleep", "600"], env={other.marker: "i-foreign", "PATH": os.environ["PATH"]})
    try:
        wait_for(lambda: other.marked_pids() == {foreign.pid: "i-foreign"}, 10, "the foreign process to be marked")
        iid = launch(cloud, "#!/bin/bash\nsleep 600\n")
        wait_for(lambda: iid in cloud.runner.processes(), 20, "this runner's instance to boot")
        assert foreign.pid not in cloud.runner.marked_pids()
        cloud.runner.stop()
        assert cloud.runner.marked_pids() == {} and foreign.poll() is None
    finally:
        foreign.kill()
        foreign.wait(timeout=60)
