# A cairn client agent as a container of an ECS task (awsvpc): it advertises the task's address,
# joins the servers, registers the task's services and leaves the cluster when ECS stops the task.

locals {
  data_dir    = "/var/lib/cairn"
  volume_name = "cairn-agent-data"

  agent_config = merge(
    {
      datacenter         = var.datacenter
      server             = false
      retry_join         = var.retry_join
      retry_interval     = "10s"
      leave_on_terminate = true # ECS sends SIGTERM: leave, so the node does not linger as failed
      services           = var.services
    },
    var.acl_token_secret_arn != null ? { acl = { enabled = true, default_policy = "deny" } } : {},
  )

  # The same entrypoint as ecs-server's (the config comes as JSON in the environment).
  entrypoint_script = <<-EOT
    umask 077
    mkdir -p "$CAIRN_DATA_DIR"
    printf '%s' "$CAIRN_CONFIG_JSON" > "$CAIRN_DATA_DIR/ecs-agent.json"
    set -- -config-file "$CAIRN_DATA_DIR/ecs-agent.json" -data-dir "$CAIRN_DATA_DIR" -bind "$CAIRN_BIND_ADDR" -client "$CAIRN_CLIENT_ADDR"
    if [ -n "$${CAIRN_NODE_NAME:-}" ]; then set -- "$@" -node "$CAIRN_NODE_NAME"; fi
    if [ -n "$${CAIRN_GOSSIP_KEY:-}" ]; then set -- "$@" -encrypt "$CAIRN_GOSSIP_KEY"; fi
    if [ -n "$${CAIRN_ACL_TOKEN:-}" ]; then
      printf 'acl { tokens { agent = "%s" default = "%s" } }\n' "$CAIRN_ACL_TOKEN" "$CAIRN_ACL_TOKEN" > "$CAIRN_DATA_DIR/ecs-acl.hcl"
      set -- "$@" -config-file "$CAIRN_DATA_DIR/ecs-acl.hcl"
    fi
    exec cairn agent "$@"
  EOT

  secrets = concat(
    var.gossip_key_secret_arn != null ? [{ name = "CAIRN_GOSSIP_KEY", valueFrom = var.gossip_key_secret_arn }] : [],
    var.acl_token_secret_arn != null ? [{ name = "CAIRN_ACL_TOKEN", valueFrom = var.acl_token_secret_arn }] : [],
  )

  # HTTP and DNS listen on the task's loopback only: the task's containers share it (awsvpc).
  container = merge(
    {
      name              = var.container_name
      image             = var.image
      essential         = true
      cpu               = 0
      memoryReservation = var.memory_reservation
      entryPoint        = ["/bin/sh", "-ec"]
      command           = [local.entrypoint_script]
      environment = [
        { name = "CAIRN_BIND_ADDR", value = "0.0.0.0" },
        { name = "CAIRN_CLIENT_ADDR", value = "127.0.0.1" },
        { name = "CAIRN_CONFIG_JSON", value = jsonencode(local.agent_config) },
        { name = "CAIRN_DATA_DIR", value = local.data_dir },
      ]
      secrets = local.secrets
      portMappings = [
        { containerPort = 8301, hostPort = 8301, protocol = "tcp" },
        { containerPort = 8301, hostPort = 8301, protocol = "udp" },
      ]
      mountPoints            = [{ sourceVolume = local.volume_name, containerPath = local.data_dir, readOnly = false }]
      volumesFrom            = []
      systemControls         = []
      readonlyRootFilesystem = true
      stopTimeout            = 20
      linuxParameters        = { initProcessEnabled = true }
      healthCheck = {
        command     = ["CMD", "cairn", "members"]
        interval    = 10
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
    },
    var.log_configuration != null ? { logConfiguration = var.log_configuration } : {},
  )

  # What an application container adds to its dependsOn: start once the agent is healthy.
  app_dependency = { containerName = var.container_name, condition = "HEALTHY" }

  wrapped_apps = [
    for c in try(var.task_definition.container_definitions, []) : merge(c, {
      dependsOn = concat([for d in try(c.dependsOn, []) : d if d.containerName != var.container_name], [local.app_dependency])
    })
  ]
  wrapped_containers = concat(local.wrapped_apps, [local.container])
}

resource "aws_ecs_task_definition" "this" {
  count                    = var.task_definition == null ? 0 : 1
  family                   = var.task_definition.family
  network_mode             = "awsvpc"
  requires_compatibilities = var.task_definition.requires_compatibilities
  cpu                      = tostring(var.task_definition.cpu)
  memory                   = tostring(var.task_definition.memory)
  execution_role_arn       = var.task_definition.execution_role_arn
  task_role_arn            = var.task_definition.task_role_arn
  container_definitions    = jsonencode(local.wrapped_containers)

  volume {
    name = local.volume_name
  }

  tags = var.tags
}
