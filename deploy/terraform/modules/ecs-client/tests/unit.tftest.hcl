# Offline unit tests: the real aws provider's schema, mocked answers (no AWS calls).
mock_provider "aws" {
  mock_resource "aws_ecs_task_definition" {
    defaults = { arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:1" }
  }
}

variables {
  image      = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/cairn:0.1.0"
  retry_join = ["cairn-servers.cairn.internal"]
  services = [{
    name   = "web"
    port   = 9090
    tags   = ["v1"]
    checks = [{ http = "http://127.0.0.1:9090/health", interval = "10s" }]
  }]
}

run "agent_container" {
  command = plan

  assert {
    condition     = local.container.name == "cairn-agent" && local.container.essential
    error_message = "the agent is essential: a task without its agent is stopped, not left out of discovery"
  }
  assert {
    condition     = jsondecode([for e in local.container.environment : e.value if e.name == "CAIRN_CONFIG_JSON"][0]).retry_join == ["cairn-servers.cairn.internal"]
    error_message = "retry_join rendered"
  }
  assert {
    condition     = jsondecode([for e in local.container.environment : e.value if e.name == "CAIRN_CONFIG_JSON"][0]).services[0].checks[0].http == "http://127.0.0.1:9090/health"
    error_message = "the app's services and checks are registered by the agent"
  }
  assert {
    condition     = jsondecode([for e in local.container.environment : e.value if e.name == "CAIRN_CONFIG_JSON"][0]).leave_on_terminate
    error_message = "leave on SIGTERM"
  }
  assert {
    condition     = [for e in local.container.environment : e.value if e.name == "CAIRN_CLIENT_ADDR"][0] == "127.0.0.1"
    error_message = "HTTP and DNS on the task's loopback only"
  }
  assert {
    condition     = local.container.healthCheck.command == ["CMD", "cairn", "members"]
    error_message = "health check"
  }
  assert {
    condition     = length(local.container.secrets) == 0 && !can(local.container.logConfiguration)
    error_message = "no secrets and no log configuration unless asked"
  }
  assert {
    condition     = local.app_dependency == { containerName = "cairn-agent", condition = "HEALTHY" }
    error_message = "apps wait for a healthy agent"
  }
  assert {
    condition     = length(aws_ecs_task_definition.this) == 0
    error_message = "no task definition unless one is wrapped"
  }
}

run "wraps_a_task" {
  command = plan

  variables {
    gossip_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:gossip-AbCdEf"
    acl_token_secret_arn  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:agent-token-AbCdEf"
    log_configuration     = { logDriver = "awslogs", options = { "awslogs-group" = "/ecs/web", "awslogs-region" = "eu-west-1", "awslogs-stream-prefix" = "web" } }
    task_definition = {
      family             = "web"
      cpu                = 256
      memory             = 512
      execution_role_arn = "arn:aws:iam::123456789012:role/web-execution"
      container_definitions = [
        { name = "web", image = "nginx:1.27", essential = true, portMappings = [{ containerPort = 9090, protocol = "tcp" }] },
        { name = "sidecar", image = "busybox:1.36", essential = false, dependsOn = [{ containerName = "web", condition = "START" }] },
      ]
    }
  }

  assert {
    condition     = [for c in jsondecode(aws_ecs_task_definition.this[0].container_definitions) : c.name] == ["web", "sidecar", "cairn-agent"]
    error_message = "app containers first, the agent last"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.this[0].container_definitions)[0].dependsOn == [{ containerName = "cairn-agent", condition = "HEALTHY" }]
    error_message = "each app waits for the agent"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.this[0].container_definitions)[1].dependsOn == [{ containerName = "web", condition = "START" }, { containerName = "cairn-agent", condition = "HEALTHY" }]
    error_message = "existing dependencies are kept"
  }
  assert {
    condition     = [for s in local.container.secrets : s.name] == ["CAIRN_GOSSIP_KEY", "CAIRN_ACL_TOKEN"]
    error_message = "gossip key and agent token from Secrets Manager"
  }
  assert {
    condition     = local.container.logConfiguration.logDriver == "awslogs"
    error_message = "log configuration passed through"
  }
  assert {
    condition     = aws_ecs_task_definition.this[0].network_mode == "awsvpc" && aws_ecs_task_definition.this[0].cpu == "256"
    error_message = "awsvpc task, cpu as a string"
  }
}

run "rejects_empty_retry_join" {
  command = plan
  variables {
    retry_join = []
  }
  expect_failures = [var.retry_join]
}

run "rejects_nameless_service" {
  command = plan
  variables {
    services = [{ port = 80 }]
  }
  expect_failures = [var.services]
}

run "rejects_container_without_image" {
  command = plan
  variables {
    task_definition = {
      family                = "web"
      cpu                   = 256
      memory                = 512
      execution_role_arn    = "arn:aws:iam::123456789012:role/web-execution"
      container_definitions = [{ name = "web" }]
    }
  }
  expect_failures = [var.task_definition]
}
