"""`provider=aws`: EC2 instances or ECS tasks carrying a tag, as go-discover finds them.

How it works
------------
Keys (go-discover's, plus `session_token`): `tag_key`, `tag_value` (both required), `region`,
`addr_type` (`private_v4` default, `public_v4`, `public_v6`), `service` (`ec2` default, or
`ecs`), `ecs_cluster` (name or ARN; default every cluster), `ecs_family`, `endpoint` (a custom
API endpoint URL), `access_key_id` + `secret_access_key` (+ `session_token`).

* EC2: DescribeInstances with the filters `tag:<tag_key>=<tag_value>` and
  `instance-state-name=running`, every page followed (go-discover reads only the first page).
  The address is the instance's `PrivateIpAddress`, `PublicIpAddress`, or every IPv6 address of
  its network interfaces, by `addr_type`. Needs `ec2:DescribeInstances` only.
* ECS: ListClusters (unless `ecs_cluster`), ListTasks (desired status RUNNING, `ecs_family` if
  set) and DescribeTasks with their tags, 100 at a time; a task counts when it carries the tag
  `tag_key=tag_value` exactly, and its address is the `privateIPv4Address` of its network
  attachment (awsvpc). Tasks only have tags when their service sets `propagate_tags`. Needs
  `ecs:ListClusters`, `ecs:ListTasks`, `ecs:DescribeTasks`.
* Region: the `region` key, else botocore's configuration (AWS_REGION, AWS_DEFAULT_REGION, the
  profile), else the ECS task ARN from the task metadata endpoint, else the EC2 instance
  identity document (IMDSv2); see metadata.py.
* Credentials: the static keys when given, else botocore's normal chain (environment, shared
  files, ECS task role, EC2 instance role over IMDSv2).

`settings`, `ec2_filters`, `instance_addresses`, `task_address` and `format_address` are pure;
`discover` is the driver: botocore clients (cached per region, endpoint and keys), called
synchronously (the agent runs it in a worker thread). botocore is imported only here, only when a
`provider=aws` entry is resolved, so agents without cloud auto-join never load it.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from appliance.cloud import DiscoverError

KEYS = ("provider", "region", "tag_key", "tag_value", "addr_type", "access_key_id", "secret_access_key",
        "session_token", "service", "ecs_cluster", "ecs_family", "endpoint")
ADDR_TYPES = ("private_v4", "public_v4", "public_v6")
SERVICES = ("ec2", "ecs")
REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+-[0-9]+$")
DESCRIBE_TASKS_BATCH = 100  # DescribeTasks takes at most 100 tasks
EC2_PAGE_SIZE = 1000  # DescribeInstances' largest MaxResults


@dataclass(frozen=True)
class Settings:
    tag_key: str
    tag_value: str
    region: str = ""
    addr_type: str = "private_v4"
    service: str = "ec2"
    ecs_cluster: str = ""
    ecs_family: str = ""
    endpoint: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""


def settings(config: Mapping[str, str]) -> Settings:
    """The checked settings of a parsed `provider=aws` entry; DiscoverError names the first mistake."""
    for key in config:
        if key not in KEYS:
            raise DiscoverError(f'discover-aws: unknown key "{key}" (known keys: {", ".join(KEYS)})')
    for key in ("tag_key", "tag_value"):
        if not config.get(key):
            raise DiscoverError(f"discover-aws: {key} is required")
    addr_type = config.get("addr_type") or "private_v4"
    if addr_type not in ADDR_TYPES:
        raise DiscoverError(f'discover-aws: addr_type "{addr_type}" is not one of {", ".join(ADDR_TYPES)}')
    service = config.get("service") or "ec2"
    if service not in SERVICES:
        raise DiscoverError(f'discover-aws: service "{service}" is not one of {", ".join(SERVICES)}')
    if service == "ecs" and addr_type != "private_v4":
        raise DiscoverError(f"discover-aws: addr_type {addr_type} is not available with service=ecs "
                            "(tasks are found by their private IPv4 address)")
    for key in ("ecs_cluster", "ecs_family"):
        if config.get(key) and service != "ecs":
            raise DiscoverError(f"discover-aws: {key} needs service=ecs")
    region = config.get("region", "")
    if region and not REGION.match(region):
        raise DiscoverError(f'discover-aws: region "{region}" is not an AWS region name (e.g. eu-west-1)')
    endpoint = config.get("endpoint", "")
    if endpoint:
        parts = urlsplit(endpoint)
        try:
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            port_ok = False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
            raise DiscoverError(f'discover-aws: endpoint "{endpoint}" is not an http:// or https:// URL')
    key_id, secret, token = (config.get(k, "") for k in ("access_key_id", "secret_access_key", "session_token"))
    if bool(key_id) != bool(secret):
        raise DiscoverError("discover-aws: access_key_id and secret_access_key go together")
    if token and not key_id:
        raise DiscoverError("discover-aws: session_token needs access_key_id and secret_access_key")
    return Settings(tag_key=config["tag_key"], tag_value=config["tag_value"], region=region, addr_type=addr_type,
                    service=service, ecs_cluster=config.get("ecs_cluster", ""), ecs_family=config.get("ecs_family", ""),
                    endpoint=endpoint, access_key_id=key_id, secret_access_key=secret, session_token=token)


# --------------------------------------------------------------------------------------------
# responses to addresses (pure)


def ec2_filters(s: Settings) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{s.tag_key}", "Values": [s.tag_value]},
            {"Name": "instance-state-name", "Values": ["running"]}]


def format_address(addr: str) -> str:
    """An address as the join loop takes it: IPv6 in brackets (the gossip port is added later)."""
    return f"[{addr}]" if ":" in addr else addr


def instance_addresses(pages: Iterable[Mapping[str, Any]], addr_type: str) -> list[str]:
    """The addresses of the instances in DescribeInstances pages (go-discover's choice per
    addr_type; instances without such an address are skipped)."""
    out: list[str] = []
    for page in pages:
        for reservation in page.get("Reservations") or []:
            for instance in reservation.get("Instances") or []:
                state = (instance.get("State") or {}).get("Name")
                if state not in (None, "running"):
                    continue  # the filter already asks for running ones; a lagging answer is not trusted
                if addr_type == "public_v6":
                    for eni in instance.get("NetworkInterfaces") or []:
                        for v6 in eni.get("Ipv6Addresses") or []:
                            if v6.get("Ipv6Address"):
                                out.append(format_address(v6["Ipv6Address"]))
                else:
                    key = "PublicIpAddress" if addr_type == "public_v4" else "PrivateIpAddress"
                    if instance.get(key):
                        out.append(instance[key])
    return list(dict.fromkeys(out))


def task_address(task: Mapping[str, Any], tag_key: str, tag_value: str) -> str | None:
    """A DescribeTasks task's private IPv4 when it is running and carries the tag; else None."""
    if task.get("desiredStatus") != "RUNNING":
        return None
    if not any(t.get("key") == tag_key and t.get("value") == tag_value for t in task.get("tags") or []):
        return None
    for attachment in task.get("attachments") or []:
        for detail in attachment.get("details") or []:
            if detail.get("name") == "privateIPv4Address" and detail.get("value"):
                try:
                    ipaddress.IPv4Address(detail["value"])
                except ValueError:
                    continue
                return str(detail["value"])
    return None


def chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# --------------------------------------------------------------------------------------------
# the driver: botocore


_clients: dict[tuple[str, ...], Any] = {}
_clients_lock = threading.Lock()


def _client(service: str, s: Settings, region: str) -> Any:
    """A botocore client, kept between attempts (its credentials refresh themselves)."""
    key = (service, region, s.endpoint, s.access_key_id, s.secret_access_key, s.session_token)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import botocore.config
            import botocore.session

            session = botocore.session.get_session()
            config = botocore.config.Config(connect_timeout=2, read_timeout=5, user_agent_extra="cairn-auto-join",
                                            retries={"max_attempts": 3, "mode": "standard"})
            client = session.create_client(
                service, region_name=region, endpoint_url=s.endpoint or None, config=config,
                aws_access_key_id=s.access_key_id or None, aws_secret_access_key=s.secret_access_key or None,
                aws_session_token=s.session_token or None)
            _clients[key] = client
        return client


def _region(s: Settings) -> str:
    if s.region:
        return s.region
    import botocore.session

    configured = botocore.session.get_session().get_config_variable("region")
    if configured:
        return str(configured)
    from appliance.cloud import metadata

    region, why = metadata.region()
    if not region:
        raise DiscoverError(f"discover-aws: no region: set region= in the join string or AWS_REGION ({why})")
    return region


def discover(config: Mapping[str, str], page_size: int = EC2_PAGE_SIZE) -> list[str]:
    """The addresses a checked `provider=aws` config finds now (blocking)."""
    import botocore.exceptions

    s = settings(config)
    try:
        region = _region(s)
        if s.service == "ecs":
            return _ecs(s, region)
        client = _client("ec2", s, region)
        pages = client.get_paginator("describe_instances").paginate(
            Filters=ec2_filters(s), PaginationConfig={"PageSize": page_size})
        return instance_addresses(pages, s.addr_type)
    except botocore.exceptions.ClientError as err:
        raise DiscoverError(f"discover-aws: {err}") from None
    except botocore.exceptions.BotoCoreError as err:
        raise DiscoverError(f"discover-aws: {type(err).__name__}: {err}") from None


def _ecs(s: Settings, region: str) -> list[str]:
    client = _client("ecs", s, region)
    if s.ecs_cluster:
        clusters = [s.ecs_cluster]
    else:
        pages = client.get_paginator("list_clusters").paginate()
        clusters = [arn for page in pages for arn in page.get("clusterArns", [])]
    out: list[str] = []
    for cluster in clusters:
        args: dict[str, Any] = {"cluster": cluster, "desiredStatus": "RUNNING"}
        if s.ecs_family:
            args["family"] = s.ecs_family
        arns = [arn for page in client.get_paginator("list_tasks").paginate(**args) for arn in page.get("taskArns", [])]
        for batch in chunks(arns, DESCRIBE_TASKS_BATCH):
            answer = client.describe_tasks(cluster=cluster, tasks=batch, include=["TAGS"])
            for task in answer.get("tasks") or []:
                addr = task_address(task, s.tag_key, s.tag_value)
                if addr:
                    out.append(addr)
    return list(dict.fromkeys(out))
