"""Cloud auto-join against moto's server over real HTTP on loopback (botocore unmodified).

moto plays EC2 and ECS at http://127.0.0.1:<port>. Its "instances" live in a VPC 127.0.0.0/16
with the loopback addresses 127.0.0.21-23, so the addresses cairn discovers are ones this machine
answers on: three real `cairn agent -server -bootstrap-expect 3` processes, each bound to its own
127.0.0.x with the same ports, join with nothing but a `provider=aws ...` string and elect a
leader. Also shown: a stopped instance and an instance with another tag are not returned, more
than one page of DescribeInstances is followed, ECS tasks are found by their tag (moto gives
them 10.x addresses: they are only compared, never contacted), AWS errors become a clear
DiscoverError, and a bad join string stops `cairn validate`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, free_ports, http, wait_until

moto_server = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
boto3 = pytest.importorskip("boto3")

from appliance.cloud import aws  # noqa: E402
from appliance.cloud.discover import DiscoverError, addresses  # noqa: E402

pytestmark = pytest.mark.timeout(150)

TAG = ("cairn-cluster", "moto-test")
IPS = ("127.0.0.21", "127.0.0.22", "127.0.0.23")
STOPPED_IP = "127.0.0.24"
OTHER_IP = "127.0.0.25"
KEYS = "access_key_id=testing secret_access_key=testing"
# no AWS endpoint, profile or instance metadata may be reached from these tests
AWS_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


@pytest.fixture(scope="module")
def moto() -> Iterator[dict]:
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    kw = dict(
        region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    ec2 = boto3.client("ec2", **kw)
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # moto's ECS awsvpc needs it
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="cairn", Description="cairn", VpcId=vpc)["GroupId"]

    def run(ip: str, tags: list[tuple[str, str]]) -> str:
        spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags]}]
        reply = ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            SubnetId=subnet,
            PrivateIpAddress=ip,
            TagSpecifications=spec,
        )
        return reply["Instances"][0]["InstanceId"]

    for ip in IPS:
        run(ip, [TAG, ("Name", ip)])
    stopped = run(STOPPED_IP, [TAG])
    ec2.stop_instances(InstanceIds=[stopped])
    run(OTHER_IP, [(TAG[0], "another-cluster")])
    yield {"endpoint": endpoint, "kw": kw, "ec2": ec2, "subnet": subnet, "sg": sg, "vpc": vpc}
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def join_string(endpoint: str, extra: str = "") -> str:
    return (
        f"provider=aws region=us-east-1 tag_key={TAG[0]} tag_value={TAG[1]} endpoint={endpoint} {KEYS} {extra}".strip()
    )


def test_running_tagged_instances_only(moto: dict) -> None:
    found = addresses(join_string(moto["endpoint"]))
    assert sorted(found) == list(IPS)  # not the stopped one, not the other cluster's


def test_every_page_is_followed(moto: dict) -> None:
    ec2 = moto["ec2"]
    tag = ("cairn-paged", "yes")
    ips = [f"127.0.0.{n}" for n in range(101, 113)]  # 12 instances
    for ip in ips:
        ec2.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            SubnetId=moto["subnet"],
            PrivateIpAddress=ip,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": tag[0], "Value": tag[1]}]}],
        )
    first = ec2.describe_instances(Filters=[{"Name": f"tag:{tag[0]}", "Values": [tag[1]]}], MaxResults=5)
    assert first.get("NextToken"), "one page of 5 does not hold 12 instances"
    config = {
        "provider": "aws",
        "region": "us-east-1",
        "tag_key": tag[0],
        "tag_value": tag[1],
        "endpoint": moto["endpoint"],
        "access_key_id": "testing",
        "secret_access_key": "testing",
    }
    assert sorted(aws.discover(config, page_size=5)) == sorted(ips)


def test_ecs_tasks_by_tag(moto: dict) -> None:
    ecs = boto3.client("ecs", **moto["kw"])
    ecs.create_cluster(clusterName="cairn")
    ecs.register_task_definition(
        family="cairn-server",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": "cairn", "image": "cairn:1", "memory": 256}],
    )
    net = {"awsvpcConfiguration": {"subnets": [moto["subnet"]], "securityGroups": [moto["sg"]]}}
    servers = ecs.run_task(
        cluster="cairn",
        taskDefinition="cairn-server",
        count=3,
        launchType="FARGATE",
        networkConfiguration=net,
        tags=[{"key": "cairn-role", "value": "server"}],
    )["tasks"]
    ecs.run_task(
        cluster="cairn",
        taskDefinition="cairn-server",
        count=2,
        launchType="FARGATE",
        networkConfiguration=net,
        tags=[{"key": "cairn-role", "value": "client"}],
    )

    def ip(task: dict) -> str:
        return next(d["value"] for a in task["attachments"] for d in a["details"] if d["name"] == "privateIPv4Address")

    want = sorted(ip(t) for t in servers)
    base = (f"provider=aws service=ecs region=us-east-1 tag_key=cairn-role tag_value=server "
            f"endpoint={moto['endpoint']} {KEYS}")
    assert sorted(addresses(base + " ecs_cluster=cairn")) == want
    assert sorted(addresses(base)) == want  # every cluster (ListClusters)
    assert addresses(base + " ecs_cluster=cairn ecs_family=another-family") == []


def test_aws_errors_are_clear(moto: dict) -> None:
    with pytest.raises(DiscoverError, match=r"discover-aws: EndpointConnectionError|discover-aws: .*Could not connect"):
        port = free_ports(1, udp=False)[0]
        addresses(f"provider=aws region=us-east-1 tag_key=a tag_value=b endpoint=http://127.0.0.1:{port} {KEYS}")
    with pytest.raises(DiscoverError, match="ClusterNotFoundException"):
        addresses(
            f"provider=aws service=ecs ecs_cluster=nope region=us-east-1 tag_key=a tag_value=b "
            f"endpoint={moto['endpoint']} {KEYS}"
        )


def test_no_region_anywhere_is_named() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AWS_REGION", "AWS_DEFAULT_REGION", "ECS_CONTAINER_METADATA_URI_V4")
    }
    env.update(AWS_ENV)
    code = (
        "from appliance.cloud.discover import addresses, DiscoverError\n"
        "try:\n addresses('provider=aws tag_key=a tag_value=b access_key_id=x secret_access_key=y')\n"
        "except DiscoverError as e:\n print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30
    )
    assert "discover-aws: no region: set region= in the join string or AWS_REGION" in out.stdout, out.stderr


class Server:
    def __init__(self, tmp_path: Path, ip: str, ports: list[int]) -> None:
        self.ip, self.ports = ip, ports
        self.url = f"http://{ip}:{ports[0]}"
        self.log = tmp_path / f"{ip}.log"
        self.data = tmp_path / ip
        self.proc: subprocess.Popen | None = None

    def start(self, join: str) -> None:
        http_port, dns_port, server_port, lan, wan = self.ports
        args = [
            sys.executable,
            "-m",
            "appliance",
            "agent",
            "-server",
            "-bootstrap-expect",
            "3",
            "-node",
            f"srv-{self.ip.rsplit('.', 1)[1]}",
            "-data-dir",
            str(self.data),
            "-bind",
            self.ip,
            "-client",
            self.ip,
            "-http-port",
            str(http_port),
            "-dns-port",
            str(dns_port),
            "-server-port",
            str(server_port),
            "-serf-lan-port",
            str(lan),
            "-serf-wan-port",
            str(wan),
            "-retry-join",
            join,
            "-retry-interval",
            "1s",
            "-hcl",
            "performance { raft_multiplier = 1 }",
        ]
        env = {**os.environ, **AWS_ENV}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env=env, start_new_session=True
            )

    def leader(self) -> str:
        try:
            status, _, body = http("GET", self.url + "/v1/status/leader", timeout=1)
            return json.loads(body) if status == 200 else ""
        except (OSError, ValueError):
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def test_three_servers_find_each_other_through_ec2_tags(moto: dict, tmp_path: Path) -> None:
    ports = free_ports(5)
    servers = [Server(tmp_path, ip, ports) for ip in IPS]
    join = join_string(moto["endpoint"])
    try:
        for s in servers:
            s.start(join)
        leaders = wait_until(
            lambda: (ls := {s.leader() for s in servers}) and len(ls) == 1 and "" not in ls and ls,
            timeout=60,
            interval=0.3,
            what="one leader known to all three servers",
        )
        assert next(iter(leaders)).rsplit(":", 1)[0] in IPS
        status, _, body = http("GET", servers[0].url + "/v1/status/peers", timeout=2)
        assert status == 200 and sorted(p.rsplit(":", 1)[0] for p in json.loads(body)) == list(IPS)
        logs = [s.log.read_text(errors="replace") for s in servers]
        for text in logs:
            assert "Discovered servers: cluster=LAN" in text
            assert STOPPED_IP not in text and OTHER_IP not in text
            assert "secret_access_key=testing" not in text  # the join string is never logged in clear
    finally:
        for s in servers:
            s.stop()


def test_validate_refuses_a_bad_join_string(tmp_path: Path) -> None:
    cfg = tmp_path / "aws.json"
    cfg.write_text(
        json.dumps(
            {"retry_join": ['provider=aws tag_key=cairn secret_access_key="hush"'], "data_dir": str(tmp_path / "d")}
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "appliance", "validate", str(cfg)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    assert (
        'retry_join: invalid cloud auto-join entry "provider=aws secret_access_key=<hidden> tag_key=cairn": '
        "discover-aws: tag_value is required"
    ) in out.stdout + out.stderr
    assert "hush" not in out.stdout + out.stderr
