"""The Terraform modules and examples, offline: `terraform fmt -check`, `init` from the provider
mirror (deploy/terraform/terraformrc.offline), `validate`, the modules' `terraform test` suites
(mock_provider "aws": rendered task definitions, IAM policies, security group rules, user data,
validation messages), plans of the examples with fake credentials whose task definitions are
checked against botocore's RegisterTaskDefinition input shape, and README tables in sync with
variables.tf / outputs.tf.

Skipped only when terraform is not installed. Everything runs in a copy of deploy/terraform.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.terraform_helpers import (
    CLI_CONFIG,
    EXAMPLES,
    MIRROR,
    MODULES,
    TF_DIR,
    copy_tree,
    plan_json,
    register_task_definition_errors,
    task_definitions,
    terraform_env,
    tf,
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed"),
]

EXAMPLE_VARS = {
    "fargate-dev": {"cairn_image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cairn:0.1.0"},
    "fargate-cluster": {"cairn_image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cairn:0.1.0"},
    "ec2-cluster": {"ami_id": "ami-0123456789abcdef0", "package_repo_url": "https://repo.example.org/cairn"},
}
# ARNs (of the ECS cluster, of secrets) exist only after apply; an override file gives the server
# modules existing ones, as a second plan would see them, so every container definition is known.
KNOWN = (
    '  gossip_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cairn-gossip-AbCdEf"\n'
    '  ecs_cluster_arn       = "arn:aws:ecs:eu-west-1:123456789012:cluster/cairn"\n'
)
EXAMPLE_OVERRIDES = {
    "fargate-dev": f'module "server" {{\n{KNOWN}}}\n',
    "fargate-cluster": f'module "servers" {{\n{KNOWN}}}\n',
    "ec2-cluster": "",
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert MIRROR.is_dir(), (
        f"terraform is installed but the provider mirror {MIRROR} named in {CLI_CONFIG} is "
        "missing: install hashicorp/aws 5.100.0 there"
    )
    return copy_tree(tmp_path_factory.mktemp("tf"))


def _module_run(tree: Path, module: str) -> tuple[str, str, str]:
    path = tree / "modules" / module
    init = tf(path, "init", "-backend=false", "-input=false").stdout
    return init, tf(path, "validate").stdout, tf(path, "test").stdout


def _example_plan(tree: Path, example: str) -> dict:
    path = tree / "examples" / example
    tf(path, "init", "-backend=false", "-input=false")  # plan validates the configuration too
    (path / "zz_known_secrets_override.tf").write_text(EXAMPLE_OVERRIDES[example])
    return plan_json(path, EXAMPLE_VARS[example])


@pytest.fixture(scope="module")
def runs(tree: Path) -> dict[str, concurrent.futures.Future]:
    """Every module's init/validate/test and every example's plan, run side by side (each is a
    few terraform processes, mostly waiting on the provider plugin); the tests read the results."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)))
    futures = {f"module:{m}": pool.submit(_module_run, tree, m) for m in MODULES}
    futures.update({f"example:{e}": pool.submit(_example_plan, tree, e) for e in EXAMPLES})
    pool.shutdown(wait=False)
    return futures


def test_fmt() -> None:
    out = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", "-no-color", str(TF_DIR)],
        env=terraform_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"terraform fmt would change:\n{out.stdout}{out.stderr}"


@pytest.mark.parametrize("module", MODULES)
def test_module_validate_and_test(runs: dict, module: str) -> None:
    init, validate, test = runs[f"module:{module}"].result(timeout=280)
    assert "hashicorp/aws v5.100.0" in init
    assert "Success! The configuration is valid." in validate
    assert "0 failed" in test and "Success!" in test, test


@pytest.mark.skipif(importlib.util.find_spec("botocore") is None, reason="botocore is a runtime dependency")
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_plans_offline(runs: dict, example: str) -> None:
    plan = runs[f"example:{example}"].result(timeout=280)
    assert plan["resource_changes"], "the plan creates resources"
    requests = task_definitions(plan)
    if example.startswith("fargate"):
        assert requests, "Fargate examples render task definitions"
    for address, request in requests.items():
        errors = register_task_definition_errors(request)
        assert not errors, f"{address} is not a valid RegisterTaskDefinition request:\n{errors}"
    if example == "fargate-dev":
        client = requests['module.app["client-app"].aws_ecs_task_definition.this[0]']
        by_name = {c["name"]: c for c in client["containerDefinitions"]}  # the provider orders them by name
        assert sorted(by_name) == ["cairn-agent", "client-app"]
        assert by_name["client-app"]["dependsOn"] == [{"containerName": "cairn-agent", "condition": "HEALTHY"}]
    if example == "ec2-cluster":
        lts = [rc for rc in plan["resource_changes"] if rc["type"] == "aws_launch_template"]
        assert len(lts) == 2 and all(
            rc["change"]["after"]["metadata_options"][0]["http_tokens"] == "required" for rc in lts
        )


def test_the_validator_catches_what_ecs_would_refuse() -> None:
    pytest.importorskip("botocore")
    good = {
        "family": "x",
        "networkMode": "awsvpc",
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [
            {
                "name": "a",
                "image": "i",
                "essential": True,
                "portMappings": [{"containerPort": 8301, "hostPort": 8301, "protocol": "udp"}],
            }
        ],
    }
    assert register_task_definition_errors(good) == ""
    bad = json.loads(json.dumps(good))
    bad["cpu"] = 256
    bad["containerDefinitions"][0]["entrypoint"] = ["/bin/sh"]
    bad["containerDefinitions"][0]["dependsOn"] = [{"containerName": "b", "condition": "HEALTHYY"}]
    bad["containerDefinitions"][0]["portMappings"][0]["hostPort"] = 18301
    errors = register_task_definition_errors(bad)
    for text in (
        "Invalid type for parameter cpu",
        'Unknown parameter in containerDefinitions[0]: "entrypoint"',
        "'HEALTHYY' is not one of",
        "depends on a missing container b",
        "hostPort == containerPort",
    ):
        assert text in errors


@pytest.mark.parametrize("module", MODULES)
def test_readme_tables_match_the_variables(module: str) -> None:
    spec = importlib.util.spec_from_file_location("tfdoc", TF_DIR / "tfdoc.py")
    tfdoc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tfdoc)
    path = TF_DIR / "modules" / module
    assert tfdoc.render(path) == (path / "README.md").read_text(), (
        f"{path}/README.md is out of date: run "
        f"python3 deploy/terraform/tfdoc.py --write {path.relative_to(TF_DIR.parents[1])}"
    )
    for name, attrs in tfdoc.blocks((path / "variables.tf").read_text(), "variable"):
        assert attrs.get("description") and attrs.get("type"), f"variable {name} needs a description and a type"
    for name, attrs in tfdoc.blocks((path / "outputs.tf").read_text(), "output"):
        assert attrs.get("description"), f"output {name} needs a description"


CHECKOV = "checkov==3.3.30"


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed (it runs checkov in its own environment)")
def test_checkov_clean(tmp_path: Path) -> None:
    """checkov from PyPI, in its own environment (its python-hcl2 fork must not meet the project's
    packages): no failed check; every skipped one carries its reason inline (#checkov:skip=ID:why)."""
    tree = copy_tree(tmp_path)
    out = subprocess.run(
        [
            "uv",
            "tool",
            "run",
            "--from",
            CHECKOV,
            "checkov",
            "-d",
            str(tree),
            "--framework",
            "terraform",
            "--compact",
            "--skip-download",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**terraform_env(), "LOG_LEVEL": "ERROR"},
    )
    assert out.stdout.strip(), f"checkov printed nothing:\n{out.stderr[-3000:]}"
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports), [r["summary"] for r in reports]
    assert sum(r["summary"]["passed"] for r in reports) > 100
    failed = [
        f"{c['check_id']} {c['resource']} {c['file_path']}"
        for r in reports
        for c in r["results"].get("failed_checks", [])
    ]
    assert not failed, "checkov failures:\n" + "\n".join(failed)
    for r in reports:
        for c in r["results"].get("skipped_checks", []):
            why = (c.get("check_result") or {}).get("suppress_comment", "")
            assert why.strip() not in ("", "No comment provided"), f"{c['check_id']} skipped without a reason"
    for path in tree.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                assert line.count(":") >= 2 and len(line.split(":", 2)[2].strip()) > 10, f"{path}: {line.strip()}"
