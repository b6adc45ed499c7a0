"""Running Terraform offline for the deploy tests: a copy of deploy/terraform, the provider
mirror CLI config, fake credentials for plans, and botocore's RegisterTaskDefinition shape."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TF_DIR = ROOT / "deploy" / "terraform"
CLI_CONFIG = TF_DIR / "terraformrc.offline"
MIRROR = Path("/opt/tf-plugins/registry.terraform.io/hashicorp/aws/5.100.0")
MODULES = ("ecs-server", "ecs-client", "ec2-cluster")
EXAMPLES = ("fargate-dev", "fargate-cluster", "ec2-cluster")

# Merged into an example's provider block for `terraform plan` without AWS (an override file).
OFFLINE_PROVIDER = """
provider "aws" {
  access_key                  = "offline"
  secret_key                  = "offline"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}
"""


def terraform_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    env.update(
        TF_CLI_CONFIG_FILE=str(CLI_CONFIG),
        CHECKPOINT_DISABLE="1",
        TF_IN_AUTOMATION="1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def tf(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        ["terraform", *args, "-no-color"], cwd=cwd, env=terraform_env(), capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise AssertionError(
            f"terraform {' '.join(args)} in {cwd} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
        )
    return out


def copy_tree(dest: Path) -> Path:
    """deploy/terraform copied without any .terraform state, so tests never write to the checkout."""
    target = dest / "terraform"
    shutil.copytree(
        TF_DIR, target, ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfplan", "*.tfstate*")
    )
    return target


def plan_json(example: Path, variables: dict[str, str]) -> dict[str, Any]:
    (example / "zz_offline_override.tf").write_text(OFFLINE_PROVIDER)
    args = ["plan", "-refresh=false", "-input=false", "-lock=false", "-out=offline.tfplan"]
    for k, v in variables.items():
        args += ["-var", f"{k}={v}"]
    tf(example, *args)
    return json.loads(tf(example, "show", "-json", "offline.tfplan").stdout)


def task_definitions(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """address -> the RegisterTaskDefinition request each planned aws_ecs_task_definition makes."""
    out = {}
    for rc in plan.get("resource_changes", []):
        if rc["type"] != "aws_ecs_task_definition":
            continue
        after = rc["change"]["after"]
        if "container_definitions" not in after:
            raise AssertionError(
                f"{rc['address']}: container_definitions unknown at plan time "
                f"({rc['change'].get('after_unknown', {}).get('container_definitions')})"
            )
        request: dict[str, Any] = {
            "family": after["family"],
            "containerDefinitions": json.loads(after["container_definitions"]),
        }
        for key, name in (
            ("network_mode", "networkMode"),
            ("cpu", "cpu"),
            ("memory", "memory"),
            ("requires_compatibilities", "requiresCompatibilities"),
            ("execution_role_arn", "executionRoleArn"),
            ("task_role_arn", "taskRoleArn"),
        ):
            if after.get(key) not in (None, []):
                request[name] = sorted(after[key]) if isinstance(after[key], list) else after[key]
        if after.get("volume"):
            request["volumes"] = [{"name": v["name"]} for v in after["volume"]]
        if after.get("runtime_platform"):
            rp = after["runtime_platform"][0]
            request["runtimePlatform"] = {
                "operatingSystemFamily": rp["operating_system_family"],
                "cpuArchitecture": rp["cpu_architecture"],
            }
        if after.get("tags"):
            request["tags"] = [{"key": k, "value": v} for k, v in after["tags"].items()]
        out[rc["address"]] = request
    return out


def _enum_errors(value: Any, shape: Any, where: str) -> list[str]:
    """What botocore's ParamValidator leaves out: enum values (it checks types, not enums)."""
    errors: list[str] = []
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                errors += _enum_errors(item, shape.members[key], f"{where}.{key}")
    elif kind == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            errors += _enum_errors(item, shape.member, f"{where}[{i}]")
    elif kind == "map" and isinstance(value, dict):
        for key, item in value.items():
            errors += _enum_errors(item, shape.value, f"{where}.{key}")
    elif kind == "string" and getattr(shape, "enum", None) and value not in shape.enum:
        errors.append(f"{where}: {value!r} is not one of {shape.enum}")
    return errors


def register_task_definition_errors(request: dict[str, Any]) -> str:
    """botocore's own check of a RegisterTaskDefinition request, plus enums and a few ECS rules
    it does not encode; "" when valid."""
    import botocore.session
    from botocore.validate import ParamValidator

    shape = (
        botocore.session.get_session().get_service_model("ecs").operation_model("RegisterTaskDefinition").input_shape
    )
    report = ParamValidator().validate(request, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    problems += _enum_errors(request, shape, "request")
    containers = request.get("containerDefinitions", [])
    names = [c.get("name") for c in containers]
    if len(set(names)) != len(names):
        problems.append(f"container names repeat: {names}")
    if not any(c.get("essential", True) for c in containers):
        problems.append("no essential container")
    for c in containers:
        for dep in c.get("dependsOn", []):
            if dep.get("containerName") not in names:
                problems.append(f"{c.get('name')} depends on a missing container {dep.get('containerName')}")
        if request.get("networkMode") == "awsvpc":
            for p in c.get("portMappings", []):
                if "hostPort" in p and p["hostPort"] != p["containerPort"]:
                    problems.append(f"{c.get('name')}: awsvpc needs hostPort == containerPort ({p})")
        volumes = {v["name"] for v in request.get("volumes", [])}
        for mp in c.get("mountPoints", []):
            if mp.get("sourceVolume") not in volumes:
                problems.append(f"{c.get('name')}: mount of a missing volume {mp.get('sourceVolume')}")
    return "\n".join(problems)
