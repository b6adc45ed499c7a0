"""Where this agent runs on AWS: the ECS task metadata endpoint v4 and EC2's IMDSv2.

How it works
------------
* ECS: every container gets `ECS_CONTAINER_METADATA_URI_V4`. `GET $URI` describes the container
  (its `Networks[0].IPv4Addresses[0]` is the task's ENI address on awsvpc, which Fargate always
  uses), `GET $URI/task` the task (`TaskARN`, whose fourth field is the region).
* EC2: IMDSv2 only. `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`, then
  `GET /latest/meta-data/local-ipv4` or `/latest/dynamic/instance-identity/document` (its
  `region`) with `X-aws-ec2-metadata-token`. The endpoint is `http://169.254.169.254` or
  `AWS_EC2_METADATA_SERVICE_ENDPOINT` (botocore's variable); `AWS_EC2_METADATA_DISABLED=true`
  turns it off. IMDS is asked only when that variable is set or the machine's firmware says it
  is an EC2 instance (`/sys/devices/virtual/dmi/id/{sys,board}_vendor` = "Amazon EC2", or a
  Xen `/sys/hypervisor/uuid` starting with "ec2"), so an agent elsewhere never waits on a
  link-local address that does not answer.

`advertise_addr()` is what the config builder asks when neither `-bind` nor `-advertise` names
an address: (address, where it came from) or (None, why not). `region()` is what `provider=aws`
asks when the join string and botocore's configuration name no region. The parsers
(`container_ipv4`, `task_ipv4`, `region_from_arn`, `identity_region`) are pure; the fetches
use urllib with short timeouts (1 s, two tries) and never raise.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

IMDS_DEFAULT = "http://169.254.169.254"
TOKEN_TTL_S = 21600
TIMEOUT_S = 1.0
TRIES = 2
DMI_FILES = ("/sys/devices/virtual/dmi/id/sys_vendor", "/sys/devices/virtual/dmi/id/board_vendor")
XEN_UUID = "/sys/hypervisor/uuid"


# --------------------------------------------------------------------------------------------
# pure parsers


def _ipv4(value: Any) -> str | None:
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        return None


def container_ipv4(doc: Any) -> str | None:
    """A container document's awsvpc address (`Networks[0].IPv4Addresses[0]`)."""
    if not isinstance(doc, Mapping):
        return None
    for network in doc.get("Networks") or []:
        if not isinstance(network, Mapping):
            continue
        if network.get("NetworkMode", "awsvpc") != "awsvpc":
            return None  # bridge/host: the container's address is not the one peers reach
        for addr in network.get("IPv4Addresses") or []:
            if _ipv4(addr):
                return _ipv4(addr)
    return None


def task_ipv4(doc: Any) -> str | None:
    """A task document's awsvpc address: the first NORMAL container's (internal containers such
    as CNI_PAUSE skipped)."""
    if not isinstance(doc, Mapping):
        return None
    for container in doc.get("Containers") or []:
        if isinstance(container, Mapping) and container.get("Type", "NORMAL") == "NORMAL":
            addr = container_ipv4(container)
            if addr:
                return addr
    return None


def region_from_arn(arn: Any) -> str | None:
    """The region field of an ARN (`arn:aws:ecs:eu-west-1:123456789012:task/...`)."""
    parts = str(arn or "").split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[3]:
        return parts[3]
    return None


def identity_region(doc: Any) -> str | None:
    if isinstance(doc, Mapping) and isinstance(doc.get("region"), str) and doc["region"]:
        return str(doc["region"])
    return None


# --------------------------------------------------------------------------------------------
# fetches


def _http(req: urllib.request.Request, timeout: float | None = None) -> bytes:
    timeout = TIMEOUT_S if timeout is None else timeout
    if not req.full_url.startswith(("http://", "https://")):  # the endpoints come from the environment
        raise OSError(f"{req.full_url}: not an http:// URL")
    last: Exception | None = None
    for _ in range(TRIES):
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - fixed metadata URLs
                return resp.read(1 << 20)
        except urllib.error.HTTPError as err:
            raise OSError(f"HTTP {err.code} from {req.full_url}") from None
        except (OSError, ValueError) as err:
            last = err
    raise OSError(f"{req.full_url}: {getattr(last, 'reason', last)}")


def _json(url: str) -> Any:
    try:
        return json.loads(_http(urllib.request.Request(url)))  # noqa: S310 - _http opens http(s) only
    except ValueError as err:
        raise OSError(f"{url}: not JSON ({err})") from None


def on_ec2(environ: Mapping[str, str] | None = None, read: Callable[[str], str] | None = None) -> bool:
    """Whether IMDS should be asked at all (see the module docstring)."""
    env = os.environ if environ is None else environ
    if env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return False
    if env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT"):
        return True

    def _read(path: str) -> str:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.read(256)
        except OSError:
            return ""

    read = read or _read
    if any(read(path).strip() == "Amazon EC2" for path in DMI_FILES):
        return True
    return read(XEN_UUID).strip().lower().startswith("ec2")


class Imds:
    """An IMDSv2 session: a token, then GETs with it."""

    def __init__(self, endpoint: str | None = None, timeout: float | None = None) -> None:
        self.endpoint = (endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or IMDS_DEFAULT).rstrip("/")
        self.timeout = timeout
        self._token = ""

    def token(self) -> str:
        if not self._token:
            req = urllib.request.Request(f"{self.endpoint}/latest/api/token", method="PUT", data=b"",  # noqa: S310
                                         headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)})
            self._token = _http(req, self.timeout).decode("ascii", "replace").strip()
        return self._token

    def get(self, path: str) -> bytes:
        req = urllib.request.Request(f"{self.endpoint}/latest/{path.lstrip('/')}",  # noqa: S310
                                     headers={"X-aws-ec2-metadata-token": self.token()})
        return _http(req, self.timeout)


def region(environ: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(region, source) from ECS task metadata or the EC2 identity document; (None, why not)."""
    env = os.environ if environ is None else environ
    uri = env.get("ECS_CONTAINER_METADATA_URI_V4", "")
    if uri:
        try:
            task = _json(uri.rstrip("/") + "/task")
        except OSError as err:
            return None, f"ECS task metadata: {err}"
        found = region_from_arn(task.get("TaskARN") if isinstance(task, Mapping) else None)
        return (found, "ECS task ARN") if found else (None, "ECS task metadata has no TaskARN")
    if not on_ec2(env):
        return None, "not on ECS or EC2: no task or instance metadata"
    try:
        doc = json.loads(Imds(env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")).get("dynamic/instance-identity/document"))
    except (OSError, ValueError) as err:
        return None, f"IMDSv2: {err}"
    found = identity_region(doc)
    return (found, "EC2 instance identity document") if found else (None, "IMDSv2 identity document has no region")


def advertise_addr(environ: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(address, source) this agent should advertise on ECS (awsvpc) or EC2; (None, why not)."""
    env = os.environ if environ is None else environ
    uri = env.get("ECS_CONTAINER_METADATA_URI_V4", "")
    if uri:
        problems = []
        for url, pick in ((uri, container_ipv4), (uri.rstrip("/") + "/task", task_ipv4)):
            try:
                addr = pick(_json(url))
            except OSError as err:
                problems.append(str(err))
                continue
            if addr:
                return addr, f"ECS task metadata ({url})"
            problems.append(f"{url}: no awsvpc IPv4 address")
        return None, "ECS task metadata: " + "; ".join(problems)
    if not on_ec2(env):
        return None, "not on ECS or EC2"
    try:
        raw = Imds(env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")).get("meta-data/local-ipv4")
        addr = _ipv4(raw.decode("ascii", "replace").strip())
    except OSError as err:
        return None, f"IMDSv2: {err}"
    if not addr:
        return None, "IMDSv2: local-ipv4 is not an IPv4 address"
    return addr, "EC2 instance metadata (IMDSv2 local-ipv4)"


def advertise_for_config(join_entries: list[str] | tuple[str, ...], warnings: list[str],
                         environ: Mapping[str, str] | None = None) -> str:
    """The config builder's question when no bind or advertise address is set: the ECS task's
    address whenever the task metadata endpoint is there; on EC2, the instance's private address
    from IMDSv2 when the agent joins with `provider=aws` (or an IMDS endpoint is configured).
    "" means "use the host's interfaces"; a metadata endpoint that fails adds a warning."""
    import logging

    env = os.environ if environ is None else environ
    aws_join = any("provider=aws" in entry for entry in join_entries)
    if not env.get("ECS_CONTAINER_METADATA_URI_V4") and not (
            (aws_join or env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")) and on_ec2(env)):
        return ""
    addr, source = advertise_addr(env)
    if addr:
        logging.getLogger("agent").info("advertise address %s from %s", addr, source)
        return addr
    warnings.append(f"Could not read the advertise address from cloud metadata ({source}); using the host's "
                    "interfaces. Set advertise_addr (-advertise).")
    return ""
