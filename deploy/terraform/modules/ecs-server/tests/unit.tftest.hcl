# Offline unit tests: the real aws provider's schema, mocked answers (no AWS calls).
mock_provider "aws" {
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/cairn/mock" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/ecs/cairn-servers" }
  }
  mock_resource "aws_secretsmanager_secret" {
    defaults = { arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cairn-gossip-key-AbCdEf" }
  }
  mock_resource "aws_service_discovery_private_dns_namespace" {
    defaults = { id = "ns-mock", name = "cairn.internal" }
  }
  mock_resource "aws_service_discovery_service" {
    defaults = { arn = "arn:aws:servicediscovery:eu-west-1:123456789012:service/srv-mock" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = { arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/cairn-servers:1" }
  }
  mock_resource "aws_security_group" {
    defaults = { id = "sg-0000000000000000a" }
  }
}

variables {
  name            = "cairn-servers"
  image           = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cairn:0.1.0"
  ecs_cluster_arn = "arn:aws:ecs:eu-west-1:123456789012:cluster/main"
  vpc_id          = "vpc-0123456789abcdef0"
  subnet_ids      = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
}

run "server_container" {
  command = plan

  assert {
    condition     = local.container.name == "cairn-server" && local.container.essential
    error_message = "the server container is cairn-server and essential"
  }
  assert {
    condition     = local.container.entryPoint == ["/bin/sh", "-ec"] && strcontains(local.container.command[0], "exec cairn agent \"$@\"")
    error_message = "the entrypoint script ends by exec'ing cairn agent"
  }
  assert {
    condition     = jsondecode([for e in local.container.environment : e.value if e.name == "CAIRN_CONFIG_JSON"][0]).bootstrap_expect == 3
    error_message = "bootstrap_expect follows server_count"
  }
  assert {
    condition     = jsondecode([for e in local.container.environment : e.value if e.name == "CAIRN_CONFIG_JSON"][0]).retry_join == ["provider=aws service=ecs region=eu-west-1 ecs_cluster=arn:aws:ecs:eu-west-1:123456789012:cluster/main ecs_family=cairn-servers tag_key=cairn-server-group tag_value=cairn-servers"]
    error_message = "servers join each other through ECS cloud auto-join"
  }
  assert {
    condition     = [for p in local.container.portMappings : "${p.containerPort}/${p.protocol}"] == ["8300/tcp", "8301/tcp", "8301/udp", "8302/tcp", "8302/udp", "8500/tcp", "8600/tcp", "8600/udp"]
    error_message = "port mappings"
  }
  assert {
    condition     = local.container.healthCheck.command == ["CMD", "cairn", "members"] && local.container.healthCheck.startPeriod == 60
    error_message = "health check runs cairn members"
  }
  assert {
    condition     = [for s in local.container.secrets : s.name] == ["CAIRN_GOSSIP_KEY"]
    error_message = "the gossip key comes from Secrets Manager by default, nothing else"
  }
  assert {
    condition     = local.container.readonlyRootFilesystem && local.container.mountPoints[0].containerPath == "/var/lib/cairn"
    error_message = "read-only root, data volume at /var/lib/cairn"
  }
  assert {
    condition     = aws_ecs_service.this.deployment_maximum_percent == 100 && aws_ecs_service.this.deployment_minimum_healthy_percent == 66
    error_message = "one server replaced at a time"
  }
  assert {
    condition     = aws_ecs_service.this.propagate_tags == "SERVICE" && aws_ecs_service.this.tags["cairn-server-group"] == "cairn-servers"
    error_message = "the service tags its tasks for auto-join"
  }
  assert {
    condition     = aws_service_discovery_service.this.dns_config[0].dns_records[0].ttl == 10
    error_message = "Cloud Map A records with TTL 10"
  }
  assert {
    condition     = aws_iam_role.execution.name == "cairn-servers-execution" && length(aws_iam_role.execution.name) <= 64
    error_message = "IAM role names"
  }
}

run "least_privilege" {
  command = plan

  assert {
    condition     = jsondecode(local.task_policy).Statement[0].Action == ["ecs:ListTasks", "ecs:DescribeTasks"] && length(jsondecode(local.task_policy).Statement) == 1
    error_message = "the task role may only list and describe tasks"
  }
  assert {
    condition     = jsondecode(local.task_policy).Statement[0].Condition.ArnEquals["ecs:cluster"] == "arn:aws:ecs:eu-west-1:123456789012:cluster/main"
    error_message = "and only in its cluster"
  }
  assert {
    condition     = length(local.ingress_rules) == 8 && alltrue([for r in values(local.ingress_rules) : r.cidr == null])
    error_message = "without allowed sources only the servers reach each other"
  }
}

run "clients_and_cidrs" {
  command = plan

  variables {
    allowed_security_group_ids = ["sg-0aaaaaaaaaaaaaaa1"]
    allowed_cidr_blocks        = ["10.0.0.0/16"]
    enable_execute_command     = true
    acl_enabled                = true
    server_count               = 5
  }

  assert {
    condition     = length(local.ingress_rules) == 8 + 6 + 6
    error_message = "clients get RPC, LAN gossip (tcp+udp), HTTP and DNS (tcp+udp), no WAN gossip"
  }
  assert {
    condition     = !contains([for r in values(local.ingress_rules) : r.port if r.cidr != null], 8302)
    error_message = "WAN gossip is not open to CIDRs"
  }
  assert {
    condition     = length(jsondecode(local.task_policy).Statement) == 2
    error_message = "ECS Exec adds its statement"
  }
  assert {
    condition     = [for s in local.container.secrets : s.name] == ["CAIRN_GOSSIP_KEY", "CAIRN_ACL_TOKEN"]
    error_message = "ACL bootstrap token from Secrets Manager"
  }
  assert {
    condition     = aws_secretsmanager_secret.acl[0].recovery_window_in_days == 0
    error_message = "secrets can be destroyed and re-created at once"
  }
  assert {
    condition     = aws_ecs_service.this.deployment_minimum_healthy_percent == 80
    error_message = "five servers: one at a time"
  }
}

run "dev_single_server" {
  command = plan

  variables {
    server_count      = 1
    create_gossip_key = false
  }

  assert {
    condition     = aws_ecs_service.this.deployment_minimum_healthy_percent == 0 && length(local.container.secrets) == 0
    error_message = "a single server may be stopped for a deployment; no secrets without a gossip key"
  }
}

run "rejects_even_server_count" {
  command = plan
  variables {
    server_count = 2
  }
  expect_failures = [var.server_count]
}

run "rejects_bad_name" {
  command = plan
  variables {
    name = "Cairn_Servers"
  }
  expect_failures = [var.name]
}

run "rejects_bad_fargate_size" {
  command = plan
  variables {
    cpu    = 256
    memory = 4096
  }
  expect_failures = [var.memory]
}

run "rejects_bad_cluster_arn" {
  command = plan
  variables {
    ecs_cluster_arn = "main"
  }
  expect_failures = [var.ecs_cluster_arn]
}

run "apply_with_mocks" {
  command = apply

  assert {
    condition     = output.server_dns == "cairn-servers.cairn.internal" && output.retry_join == ["cairn-servers.cairn.internal"]
    error_message = "clients join the Cloud Map name"
  }
  assert {
    condition     = output.task_role_arn == "arn:aws:iam::123456789012:role/cairn/mock"
    error_message = "mocked role ARN"
  }
}
