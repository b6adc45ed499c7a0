# cairn servers on ECS Fargate: one ECS service of server_count tasks, found by clients through a
# Cloud Map private DNS name and by each other through cloud auto-join (provider=aws service=ecs).

locals {
  arn_parts = split(":", var.ecs_cluster_arn)
  partition = local.arn_parts[1]
  region    = local.arn_parts[3]
  account   = local.arn_parts[4]

  container_name = "cairn-server"
  data_dir       = "/var/lib/cairn"
  group_tag_key  = "cairn-server-group"
  tags           = merge(var.tags, { "cairn-server-group" = var.name })

  namespace_id   = var.cloudmap_namespace_id != null ? var.cloudmap_namespace_id : aws_service_discovery_private_dns_namespace.this[0].id
  namespace_name = var.cloudmap_namespace_id != null ? data.aws_service_discovery_dns_namespace.existing[0].name : aws_service_discovery_private_dns_namespace.this[0].name
  server_dns     = "${var.name}.${local.namespace_name}"

  # The servers find each other by the tag ECS copies from the service onto each task.
  server_join = "provider=aws service=ecs region=${local.region} ecs_cluster=${var.ecs_cluster_arn} ecs_family=${var.name} tag_key=${local.group_tag_key} tag_value=${var.name}"

  gossip_key_arn = var.gossip_key_secret_arn != null ? var.gossip_key_secret_arn : (var.create_gossip_key ? aws_secretsmanager_secret.gossip[0].arn : null)
  acl_token_arn  = !var.acl_enabled ? null : (var.acl_bootstrap_token_secret_arn != null ? var.acl_bootstrap_token_secret_arn : aws_secretsmanager_secret.acl[0].arn)
  # Which secrets exist is known at plan time (their ARNs may not be).
  use_gossip  = var.gossip_key_secret_arn != null || var.create_gossip_key
  use_secrets = local.use_gossip || var.acl_enabled || var.tls_ca_secret_arn != null
  secret_arns = concat(local.use_gossip ? [local.gossip_key_arn] : [], var.acl_enabled ? [local.acl_token_arn] : [], var.tls_ca_secret_arn != null ? [var.tls_ca_secret_arn] : [])

  agent_config = merge(
    {
      datacenter         = var.datacenter
      server             = true
      bootstrap_expect   = var.server_count
      retry_join         = [local.server_join]
      retry_interval     = "10s"
      leave_on_terminate = true # ECS stops a task with SIGTERM: leave, so Raft drops the old server
      ui_config          = { enabled = true }
      autopilot          = { cleanup_dead_servers = true }
    },
    var.acl_enabled ? { acl = { enabled = true, default_policy = "deny", enable_token_persistence = true } } : {},
  )

  # Shared by ecs-client: the configuration arrives as JSON in the environment, secrets as
  # environment variables from Secrets Manager; everything is written under the data directory
  # (the root filesystem is read-only) and cairn replaces the shell.
  entrypoint_script = <<-EOT
    umask 077
    mkdir -p "$CAIRN_DATA_DIR"
    printf '%s' "$CAIRN_CONFIG_JSON" > "$CAIRN_DATA_DIR/ecs-agent.json"
    set -- -config-file "$CAIRN_DATA_DIR/ecs-agent.json" -data-dir "$CAIRN_DATA_DIR" -bind "$CAIRN_BIND_ADDR" -client "$CAIRN_CLIENT_ADDR"
    if [ -n "$${CAIRN_NODE_NAME:-}" ]; then set -- "$@" -node "$CAIRN_NODE_NAME"; fi
    if [ -n "$${CAIRN_GOSSIP_KEY:-}" ]; then set -- "$@" -encrypt "$CAIRN_GOSSIP_KEY"; fi
    if [ -n "$${CAIRN_ACL_TOKEN:-}" ]; then
      printf 'acl { tokens { initial_management = "%s" } }\n' "$CAIRN_ACL_TOKEN" > "$CAIRN_DATA_DIR/ecs-acl.hcl"
      set -- "$@" -config-file "$CAIRN_DATA_DIR/ecs-acl.hcl"
    fi
    if [ -n "$${CAIRN_CA_PEM:-}" ]; then
      printf '%s\n' "$CAIRN_CA_PEM" > "$CAIRN_DATA_DIR/ca.pem"
      set -- "$@" -hcl "tls { defaults { ca_file = \"$CAIRN_DATA_DIR/ca.pem\" } }"
    fi
    exec cairn agent "$@"
  EOT

  ports = [
    { containerPort = 8300, hostPort = 8300, protocol = "tcp" },
    { containerPort = 8301, hostPort = 8301, protocol = "tcp" },
    { containerPort = 8301, hostPort = 8301, protocol = "udp" },
    { containerPort = 8302, hostPort = 8302, protocol = "tcp" },
    { containerPort = 8302, hostPort = 8302, protocol = "udp" },
    { containerPort = 8500, hostPort = 8500, protocol = "tcp" },
    { containerPort = 8600, hostPort = 8600, protocol = "tcp" },
    { containerPort = 8600, hostPort = 8600, protocol = "udp" },
  ]

  secrets = concat(
    local.use_gossip ? [{ name = "CAIRN_GOSSIP_KEY", valueFrom = local.gossip_key_arn }] : [],
    var.acl_enabled ? [{ name = "CAIRN_ACL_TOKEN", valueFrom = local.acl_token_arn }] : [],
    var.tls_ca_secret_arn != null ? [{ name = "CAIRN_CA_PEM", valueFrom = var.tls_ca_secret_arn }] : [],
  )

  # Every field ECS would otherwise fill in is given, so plans show no perpetual diff.
  container = {
    name       = local.container_name
    image      = var.image
    essential  = true
    cpu        = 0
    entryPoint = ["/bin/sh", "-ec"]
    command    = [local.entrypoint_script]
    environment = [
      { name = "CAIRN_BIND_ADDR", value = "0.0.0.0" },
      { name = "CAIRN_CLIENT_ADDR", value = "0.0.0.0" },
      { name = "CAIRN_CONFIG_JSON", value = jsonencode(local.agent_config) },
      { name = "CAIRN_DATA_DIR", value = local.data_dir },
    ]
    secrets                = local.secrets
    portMappings           = local.ports
    mountPoints            = [{ sourceVolume = "cairn-data", containerPath = local.data_dir, readOnly = false }]
    volumesFrom            = []
    systemControls         = []
    readonlyRootFilesystem = true
    stopTimeout            = 30
    linuxParameters        = { initProcessEnabled = true }
    healthCheck = {
      command     = ["CMD", "cairn", "members"]
      interval    = 30
      timeout     = 5
      retries     = 3
      startPeriod = 60
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.this.name
        "awslogs-region"        = local.region
        "awslogs-stream-prefix" = "cairn"
      }
    }
  }
}

data "aws_service_discovery_dns_namespace" "existing" {
  count = var.cloudmap_namespace_id != null ? 1 : 0
  name  = var.cloudmap_namespace_name
  type  = "DNS_PRIVATE"
}

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_338:retention is the log_retention_days variable (30 days by default); a year of agent logs is the operator's choice
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn # null: CloudWatch's own encryption at rest
  tags              = local.tags
}

# --- secrets (created only when no ARN is given; deleted at once on destroy) ------------------

resource "aws_secretsmanager_secret" "gossip" {
  #checkov:skip=CKV2_AWS_57:a gossip key is rotated with cairn keyring (install, use, remove on every agent), which a rotation Lambda cannot do
  count                   = var.gossip_key_secret_arn == null && var.create_gossip_key ? 1 : 0
  name_prefix             = "${var.name}-gossip-key-"
  description             = "cairn gossip encryption key of ${var.name}"
  recovery_window_in_days = var.secret_recovery_window_days
  kms_key_id              = var.secrets_kms_key_arn # null: the account's aws/secretsmanager key
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "gossip" {
  count     = length(aws_secretsmanager_secret.gossip)
  secret_id = aws_secretsmanager_secret.gossip[0].id
  # 32 random hex characters are 32 bytes: a valid AES-256 key with 128 bits of randomness. For a
  # full-entropy key, store the output of `cairn keygen` and pass gossip_key_secret_arn.
  secret_string = base64encode(substr(replace("${uuid()}${uuid()}", "-", ""), 0, 32))

  lifecycle {
    ignore_changes = [secret_string]
  }
}

resource "aws_secretsmanager_secret" "acl" {
  #checkov:skip=CKV2_AWS_57:the initial management token is only read at bootstrap; rotate it through cairn's ACL API, not by rewriting the secret
  count                   = var.acl_enabled && var.acl_bootstrap_token_secret_arn == null ? 1 : 0
  name_prefix             = "${var.name}-acl-bootstrap-"
  description             = "cairn ACL initial management token of ${var.name}"
  recovery_window_in_days = var.secret_recovery_window_days
  kms_key_id              = var.secrets_kms_key_arn # null: the account's aws/secretsmanager key
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "acl" {
  count         = length(aws_secretsmanager_secret.acl)
  secret_id     = aws_secretsmanager_secret.acl[0].id
  secret_string = uuid()

  lifecycle {
    ignore_changes = [secret_string]
  }
}

# --- IAM ---------------------------------------------------------------------------------------

locals {
  ecs_tasks_trust = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })

  execution_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [{
        Sid      = "Logs"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = "${aws_cloudwatch_log_group.this.arn}:*"
      }],
      local.use_secrets ? [{
        Sid      = "Secrets"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = local.secret_arns
      }] : [],
      var.secrets_kms_key_arn != null ? [{
        Sid      = "SecretsKey"
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [var.secrets_kms_key_arn]
      }] : [],
    )
  })

  # Cloud auto-join in ECS mode calls ListTasks and DescribeTasks in this cluster only.
  task_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [{
        Sid       = "CloudAutoJoin"
        Effect    = "Allow"
        Action    = ["ecs:ListTasks", "ecs:DescribeTasks"]
        Resource  = "*"
        Condition = { ArnEquals = { "ecs:cluster" = var.ecs_cluster_arn } }
      }],
      var.enable_execute_command ? [{
        Sid      = "EcsExec"
        Effect   = "Allow"
        Action   = ["ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"]
        Resource = "*"
      }] : [],
    )
  })
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  path               = "/cairn/"
  assume_role_policy = local.ecs_tasks_trust
  tags               = local.tags
}

resource "aws_iam_role_policy" "execution" {
  name   = "cairn-execution"
  role   = aws_iam_role.execution.id
  policy = local.execution_policy
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  path               = "/cairn/"
  assume_role_policy = local.ecs_tasks_trust
  tags               = local.tags
}

resource "aws_iam_role_policy" "task" {
  name   = "cairn-auto-join"
  role   = aws_iam_role.task.id
  policy = local.task_policy
}

# --- network -----------------------------------------------------------------------------------

locals {
  # port, protocol, description; 8301-8302 are gossip (LAN, WAN), 8300 server RPC.
  server_ports = {
    "rpc-tcp"     = { port = 8300, protocol = "tcp", what = "server RPC" }
    "serflan-tcp" = { port = 8301, protocol = "tcp", what = "LAN gossip" }
    "serflan-udp" = { port = 8301, protocol = "udp", what = "LAN gossip" }
    "serfwan-tcp" = { port = 8302, protocol = "tcp", what = "WAN gossip" }
    "serfwan-udp" = { port = 8302, protocol = "udp", what = "WAN gossip" }
    "http-tcp"    = { port = 8500, protocol = "tcp", what = "HTTP API" }
    "dns-tcp"     = { port = 8600, protocol = "tcp", what = "DNS" }
    "dns-udp"     = { port = 8600, protocol = "udp", what = "DNS" }
  }
  # WAN gossip only between servers; clients and CIDRs get RPC, LAN gossip, HTTP and DNS.
  client_ports = { for k, v in local.server_ports : k => v if v.port != 8302 }

  rules_self = { for k, v in local.server_ports : "self-${k}" => merge(v, { sg = aws_security_group.this.id, cidr = null }) }
  # Keys by position: security group IDs may be unknown until apply, for_each keys may not.
  rules_sg = merge([for i, sg in var.allowed_security_group_ids : {
    for k, v in local.client_ports : "sg${i}-${k}" => merge(v, { sg = sg, cidr = null })
  }]...)
  rules_cidr = merge([for i, c in var.allowed_cidr_blocks : {
    for k, v in local.client_ports : "cidr${i}-${k}" => merge(v, { sg = null, cidr = c })
  }]...)
  ingress_rules = merge(local.rules_self, local.rules_sg, local.rules_cidr)
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-"
  description = "cairn servers ${var.name}"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = var.name })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "this" {
  for_each                     = local.ingress_rules
  security_group_id            = aws_security_group.this.id
  description                  = "cairn ${each.value.what}"
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = each.value.sg
  cidr_ipv4                    = each.value.cidr
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "all" {
  security_group_id = aws_security_group.this.id
  description       = "image pulls, AWS APIs (ECS, Secrets Manager, logs) and other agents"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

# --- discovery ---------------------------------------------------------------------------------

resource "aws_service_discovery_private_dns_namespace" "this" {
  count       = var.cloudmap_namespace_id == null ? 1 : 0
  name        = var.cloudmap_namespace_name
  description = "cairn servers"
  vpc         = var.vpc_id
  tags        = local.tags
}

resource "aws_service_discovery_service" "this" {
  name = var.name

  dns_config {
    namespace_id   = local.namespace_id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  health_check_custom_config {
    failure_threshold = 1
  }

  tags = local.tags
}

# --- task and service --------------------------------------------------------------------------

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  network_mode             = "awsvpc"
  requires_compatibilities = ["FARGATE"]
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode([local.container])

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # Task storage: a replaced server starts empty, leaves the old one behind (leave_on_terminate,
  # autopilot's dead-server cleanup) and copies the state from the leader.
  volume {
    name = "cairn-data"
  }

  tags = local.tags
}

resource "aws_ecs_service" "this" {
  #checkov:skip=CKV_AWS_333:assign_public_ip is a variable, false by default; the examples use public subnets to spare a NAT gateway
  name                   = var.name
  cluster                = var.ecs_cluster_arn
  task_definition        = aws_ecs_task_definition.this.arn
  desired_count          = var.server_count
  launch_type            = "FARGATE"
  platform_version       = "LATEST"
  propagate_tags         = "SERVICE" # the cairn-server-group tag reaches the tasks: auto-join finds them
  enable_execute_command = var.enable_execute_command
  wait_for_steady_state  = var.wait_for_steady_state

  # One server at a time: never more than server_count tasks, never more than one missing.
  deployment_maximum_percent         = 100
  deployment_minimum_healthy_percent = var.server_count == 1 ? 0 : floor(100 * (var.server_count - 1) / var.server_count)

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = concat([aws_security_group.this.id], var.additional_security_group_ids)
    assign_public_ip = var.assign_public_ip
  }

  service_registries {
    registry_arn   = aws_service_discovery_service.this.arn
    container_name = local.container_name
  }

  tags = local.tags

  depends_on = [aws_iam_role_policy.execution, aws_iam_role_policy.task]
}
