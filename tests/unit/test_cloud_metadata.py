"""ECS task metadata v4 and IMDSv2: the pure parsers on AWS's documented shapes, and the fetches
against small metadata servers on 127.0.0.1 (IMDSv2 answers 401 without a token, as EC2 does
when `http_tokens = "required"`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from appliance.cloud import metadata
from appliance.cloud.metadata import (
    advertise_addr,
    advertise_for_config,
    container_ipv4,
    identity_region,
    on_ec2,
    region,
    region_from_arn,
    task_ipv4,
)

CONTAINER = {
    "DockerId": "ea32192c8553fbff06c9340478a2ff089b2bb5646fb718b4ee206641c9086d66",
    "Name": "cairn",
    "Labels": {"com.amazonaws.ecs.cluster": "arn:aws:ecs:us-west-2:111122223333:cluster/default"},
    "Type": "NORMAL",
    "Networks": [
        {
            "NetworkMode": "awsvpc",
            "IPv4Addresses": ["10.0.2.106"],
            "AttachmentIndex": 0,
            "MACAddress": "12:89:ef:94:51:56",
            "IPv4SubnetCIDRBlock": "10.0.2.0/24",
            "PrivateDNSName": "ip-10-0-2-106.us-west-2.compute.internal",
        }
    ],
}
TASK = {
    "Cluster": "default",
    "TaskARN": "arn:aws:ecs:us-west-2:111122223333:task/default/158d1c8083dd49d6b527399fd6414f5c",
    "Family": "cairn-server",
    "Revision": "3",
    "LaunchType": "EC2",
    "Containers": [
        {
            "Name": "~internal~ecs~pause",
            "Type": "CNI_PAUSE",
            "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.0.2.61"]}],
        },
        CONTAINER,
    ],
}
IDENTITY = {
    "accountId": "111122223333",
    "availabilityZone": "eu-central-1b",
    "instanceId": "i-0123456789abcdef0",
    "privateIp": "10.1.2.3",
    "region": "eu-central-1",
}


def test_parsers() -> None:
    assert container_ipv4(CONTAINER) == "10.0.2.106"
    assert task_ipv4(TASK) == "10.0.2.106"  # the pause container is skipped
    assert container_ipv4({"Networks": [{"NetworkMode": "bridge", "IPv4Addresses": ["172.17.0.2"]}]}) is None
    assert container_ipv4({"Networks": [{"IPv4Addresses": ["not-an-ip"]}]}) is None
    assert container_ipv4(["junk"]) is None and task_ipv4(None) is None
    assert region_from_arn(TASK["TaskARN"]) == "us-west-2"
    assert region_from_arn("task/xyz") is None and region_from_arn(None) is None
    assert identity_region(IDENTITY) == "eu-central-1" and identity_region({}) is None


def test_on_ec2_reads_firmware_only() -> None:
    files = {"/sys/devices/virtual/dmi/id/sys_vendor": "Amazon EC2\n"}
    assert on_ec2({}, read=lambda p: files.get(p, ""))
    assert on_ec2({}, read=lambda p: "ec2e1916-9099-7caf\n" if p == metadata.XEN_UUID else "")
    assert not on_ec2({}, read=lambda p: "QEMU\n")
    assert not on_ec2({"AWS_EC2_METADATA_DISABLED": "true"}, read=lambda p: "Amazon EC2")
    assert on_ec2({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:1"}, read=lambda p: "")


class Fake(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {}
    token = "tok-123"
    seen: list[tuple[str, str, dict]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        self.seen.append(("PUT", self.path, {k.lower(): v for k, v in self.headers.items()}))
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if self.path == "/latest/api/token" and ttl.isdigit() and 1 <= int(ttl) <= 21600:
            self._answer(200, self.token.encode())
        else:
            self._answer(400, b"")

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.startswith("/latest/") and self.headers.get("X-aws-ec2-metadata-token") != self.token:
            self._answer(401, b"")
            return
        status, body = self.routes.get(self.path, (404, b"not found"))
        self._answer(status, body)


@pytest.fixture
def fake() -> Iterator[str]:
    Fake.seen = []
    Fake.routes = {
        "/latest/meta-data/local-ipv4": (200, b"10.1.2.3"),
        "/latest/dynamic/instance-identity/document": (200, json.dumps(IDENTITY).encode()),
        "/v4/abc": (200, json.dumps(CONTAINER).encode()),
        "/v4/abc/task": (200, json.dumps(TASK).encode()),
        "/v4/bridge": (
            200,
            json.dumps({"Networks": [{"NetworkMode": "bridge", "IPv4Addresses": ["172.17.0.2"]}]}).encode(),
        ),
        "/v4/bridge/task": (200, json.dumps({"Containers": []}).encode()),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_ecs_metadata(fake: str) -> None:
    env = {"ECS_CONTAINER_METADATA_URI_V4": fake + "/v4/abc"}
    assert advertise_addr(env) == ("10.0.2.106", f"ECS task metadata ({fake}/v4/abc)")
    assert region(env) == ("us-west-2", "ECS task ARN")
    addr, why = advertise_addr({"ECS_CONTAINER_METADATA_URI_V4": fake + "/v4/bridge"})
    assert addr is None and "no awsvpc IPv4 address" in why


def test_imdsv2_uses_a_token(fake: str) -> None:
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": fake}
    assert advertise_addr(env) == ("10.1.2.3", "EC2 instance metadata (IMDSv2 local-ipv4)")
    assert region(env) == ("eu-central-1", "EC2 instance identity document")
    puts = [s for s in Fake.seen if s[0] == "PUT"]
    gets = [s for s in Fake.seen if s[0] == "GET"]
    assert puts and all(s[2].get("x-aws-ec2-metadata-token-ttl-seconds") == "21600" for s in puts)
    assert gets and all(s[2].get("x-aws-ec2-metadata-token") == Fake.token for s in gets)


def test_metadata_failures_are_reasons_not_crashes(fake: str) -> None:
    Fake.routes["/latest/meta-data/local-ipv4"] = (500, b"")
    addr, why = advertise_addr({"AWS_EC2_METADATA_SERVICE_ENDPOINT": fake})
    assert addr is None and "IMDSv2: HTTP 500" in why
    Fake.routes["/latest/dynamic/instance-identity/document"] = (200, b"{not json")
    assert region({"AWS_EC2_METADATA_SERVICE_ENDPOINT": fake})[0] is None
    addr, why = advertise_addr({"ECS_CONTAINER_METADATA_URI_V4": fake + "/v4/missing"})
    assert addr is None and "HTTP 404" in why


def test_metadata_endpoint_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts, never answers: the read times out
    monkeypatch.setattr(metadata, "TIMEOUT_S", 0.2)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        addr, why = advertise_addr({"ECS_CONTAINER_METADATA_URI_V4": url})
        assert addr is None and "ECS task metadata" in why
    finally:
        listener.close()


def test_builder_question(fake: str) -> None:
    warnings: list[str] = []
    # not on ECS, no aws join: nothing asked at all
    assert advertise_for_config(["10.0.0.1"], warnings, environ={}) == ""
    assert Fake.seen == []
    assert (
        advertise_for_config([], warnings, environ={"ECS_CONTAINER_METADATA_URI_V4": fake + "/v4/abc"}) == "10.0.2.106"
    )
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": fake}
    assert advertise_for_config(["provider=aws tag_key=a tag_value=b"], warnings, environ=env) == "10.1.2.3"
    assert warnings == []
    assert advertise_for_config([], warnings, environ={"ECS_CONTAINER_METADATA_URI_V4": fake + "/v4/bridge"}) == ""
    assert warnings and "Could not read the advertise address from cloud metadata" in warnings[0]
