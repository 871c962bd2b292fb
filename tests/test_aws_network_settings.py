"""`public_ip` and `egress` under [aws]: what is accepted, what is refused (and how), and what a private launch asks
EC2 for (pure functions: the emulated runs are tests/aws/test_private_network_aws.py); and `permissions_boundary`."""
from __future__ import annotations

import pytest

from mcc.backends.aws_settings import aws_settings
from mcc.errors import ConfigError
from mcc.providers.aws.instance import launch_overrides
from mcc.providers.aws.launch_template import template_data
from mcc.providers.aws.network import internet_route

SOURCE = "proj/mcc.toml [aws]"


def test_default_is_a_public_address_and_private_needs_a_way_to_install() -> None:
    s = aws_settings({})
    assert s.public_ip and s.egress == "endpoints" and not s.private_endpoints
    assert aws_settings({"public_ip": False, "custom_image": True}).private_endpoints
    assert aws_settings({"public_ip": False, "image_id": "ami-0abc"}).private_endpoints
    assert not aws_settings({"public_ip": False, "egress": "nat", "subnets": ["subnet-a"]}).private_endpoints


@pytest.mark.parametrize("table, needle", [
    ({"public_ip": False}, "`public_ip = false` with egress = \"endpoints\" leaves instances no way to PyPI"),
    ({"public_ip": False, "egress": "nat"}, '`egress = "nat"` needs the subnets'),
    ({"egress": "igw"}, "`egress` must be one of endpoints, nat, got 'igw'"),
    ({"public_ip": "no"}, "`public_ip` must be bool"),
    ({"permissions_boundary": "arn:aws:iam::123456789012:policy/mcc/x"},
     "`permissions_boundary` must be the name of a managed policy under the path /mcc/"),
])
def test_bad_private_settings_name_the_file_the_key_and_the_fix(table: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        aws_settings(table, SOURCE)
    message = str(info.value)
    assert message.startswith(SOURCE) and needle in message, message
    if table.get("public_ip") is False:
        assert "Fix:" in message


def test_private_launches_ask_for_no_public_address_with_the_group_inside_the_interface() -> None:
    params = {"launch_template_id": "lt-1", "public_ip": False, "security_group_id": "sg-1"}
    extra = launch_overrides(params)
    assert extra["NetworkInterfaces"] == [{"DeviceIndex": 0, "AssociatePublicIpAddress": False,
                                           "Groups": ["sg-1"], "DeleteOnTermination": True}]
    builder = launch_overrides({"image_id": "ami-1", "security_group_id": "sg-1", "public_ip": False})
    assert "SecurityGroupIds" not in builder and builder["NetworkInterfaces"][0]["Groups"] == ["sg-1"]
    assert launch_overrides({"image_id": "ami-1", "security_group_id": "sg-1"})["SecurityGroupIds"] == ["sg-1"]
    assert "NetworkInterfaces" not in launch_overrides({"launch_template_id": "lt-1", "security_group_id": "sg-1"})

    base = {"image_id": "ami-1", "instance_type": "t3.micro", "instance_profile_arn": "arn:p", "security_group_id": "sg-1"}
    assert template_data(base, {})["SecurityGroupIds"] == ["sg-1"]
    private = template_data({**base, "public_ip": False}, {})
    assert "SecurityGroupIds" not in private and private["NetworkInterfaces"][0]["AssociatePublicIpAddress"] is False


def test_internet_route_is_a_default_route_not_through_an_internet_gateway() -> None:
    def table(**target: str) -> dict:
        return {"Routes": [{"DestinationCidrBlock": "172.31.0.0/16", "GatewayId": "local"},
                           {"DestinationCidrBlock": "0.0.0.0/0", "State": "active", **target}]}

    assert internet_route(table(NatGatewayId="nat-1")) == "nat-1"
    assert internet_route(table(TransitGatewayId="tgw-1")) == "tgw-1"
    assert internet_route(table(GatewayId="igw-1")) is None
    assert internet_route({"Routes": [{"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": "nat-1",
                                       "State": "blackhole"}]}) is None


def test_permissions_boundary_defaults_to_mccs_and_may_be_turned_off() -> None:
    assert aws_settings({}).permissions_boundary == "mcc-boundary"
    assert aws_settings({"permissions_boundary": ""}).permissions_boundary == ""
    assert aws_settings({"permissions_boundary": "team-mcc-boundary"}).permissions_boundary == "team-mcc-boundary"


KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_a_customer_kms_key_reaches_every_root_volume_and_a_bad_one_is_named() -> None:
    """`ebs_kms_key` (issue 15 §4): the launch template's, the builder's and a template-less launch's root
    volume are encrypted with it; without it with the account's aws/ebs key (Encrypted, no KmsKeyId)."""
    assert aws_settings({"ebs_kms_key": KEY}).ebs_kms_key == KEY
    assert aws_settings({}).ebs_kms_key is None
    with pytest.raises(ConfigError, match="`ebs_kms_key` must be a KMS key ARN"):
        aws_settings({"ebs_kms_key": "alias/my-key"})
    base = {"image_id": "ami-1", "instance_type": "t3.micro", "instance_profile_arn": "arn:p", "security_group_id": "sg-1",
            "root_device": "/dev/xvda", "root_size": 8}
    for mappings in (template_data({**base, "kms_key_id": KEY}, {})["BlockDeviceMappings"],
                     launch_overrides({**base, "kms_key_id": KEY})["BlockDeviceMappings"]):
        assert mappings == [{"DeviceName": "/dev/xvda",
                             "Ebs": {"Encrypted": True, "DeleteOnTermination": True, "VolumeSize": 8, "KmsKeyId": KEY}}]
    default = template_data(base, {})["BlockDeviceMappings"][0]["Ebs"]
    assert default["Encrypted"] is True and "KmsKeyId" not in default
