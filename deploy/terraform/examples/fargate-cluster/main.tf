# Three cairn servers on Fargate, and a Prometheus task that finds its scrape targets through
# consul_sd_configs against the servers (every service registered in cairn, and cairn's own
# metrics on each server).

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]
}

resource "aws_security_group" "prometheus" {
  name_prefix = "${var.name}-prometheus-"
  description = "Prometheus"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_egress_rule" "prometheus" {
  security_group_id = aws_security_group.prometheus.id
  description       = "scrapes, image pulls"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "prometheus_ui" {
  count             = var.ui_ingress_cidr == null ? 0 : 1
  security_group_id = aws_security_group.prometheus.id
  description       = "Prometheus UI"
  ip_protocol       = "tcp"
  from_port         = 9090
  to_port           = 9090
  cidr_ipv4         = var.ui_ingress_cidr
}

module "servers" {
  source = "../../modules/ecs-server"

  name                       = "${var.name}-server"
  image                      = var.cairn_image
  ecs_cluster_arn            = aws_ecs_cluster.this.arn
  vpc_id                     = aws_vpc.this.id
  subnet_ids                 = aws_subnet.public[*].id
  assign_public_ip           = true
  server_count               = 3
  cpu                        = 512
  memory                     = 1024
  cloudmap_namespace_name    = "${var.name}.cairn.internal"
  allowed_security_group_ids = [aws_security_group.prometheus.id]
  allowed_cidr_blocks        = var.ui_ingress_cidr == null ? [] : [var.ui_ingress_cidr]
  wait_for_steady_state      = true
}

resource "aws_cloudwatch_log_group" "prometheus" {
  #checkov:skip=CKV_AWS_158:Prometheus' own logs; CloudWatch's default encryption at rest
  #checkov:skip=CKV_AWS_338:a week is enough for an example
  name              = "/ecs/${var.name}-prometheus"
  retention_in_days = 7
}

resource "aws_iam_role" "prometheus_execution" {
  name = "${var.name}-prometheus-execution"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "ecs-tasks.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy" "prometheus_execution" {
  name = "logs"
  role = aws_iam_role.prometheus_execution.id
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Action = ["logs:CreateLogStream", "logs:PutLogEvents"], Resource = "${aws_cloudwatch_log_group.prometheus.arn}:*" }]
  })
}

locals {
  prometheus_config = yamlencode({
    global = { scrape_interval = "30s" }
    scrape_configs = [
      {
        job_name = "cairn-services"
        consul_sd_configs = [{
          server     = "${module.servers.server_dns}:8500"
          datacenter = "dc1"
        }]
        relabel_configs = [
          { source_labels = ["__meta_consul_service"], target_label = "job" },
          { source_labels = ["__meta_consul_service"], regex = "consul", action = "drop" },
        ]
      },
      {
        job_name     = "cairn-servers"
        metrics_path = "/v1/agent/metrics"
        params       = { format = ["prometheus"] }
        consul_sd_configs = [{
          server   = "${module.servers.server_dns}:8500"
          services = ["consul"]
        }]
        relabel_configs = [
          { source_labels = ["__meta_consul_address"], target_label = "__address__", replacement = "$1:8500" },
        ]
      },
    ]
  })
}

resource "aws_ecs_task_definition" "prometheus" {
  family                   = "${var.name}-prometheus"
  network_mode             = "awsvpc"
  requires_compatibilities = ["FARGATE"]
  cpu                      = "256"
  memory                   = "512"
  execution_role_arn       = aws_iam_role.prometheus_execution.arn
  container_definitions = jsonencode([{
    name       = "prometheus"
    image      = var.prometheus_image
    essential  = true
    cpu        = 0
    user       = "0"
    entryPoint = ["/bin/sh", "-ec"]
    command = [<<-EOT
      printf '%s' "$PROMETHEUS_CONFIG" > /tmp/prometheus.yml
      exec prometheus --config.file=/tmp/prometheus.yml --storage.tsdb.path=/tmp/prometheus --web.listen-address=:9090
    EOT
    ]
    environment    = [{ name = "PROMETHEUS_CONFIG", value = local.prometheus_config }]
    portMappings   = [{ containerPort = 9090, hostPort = 9090, protocol = "tcp" }]
    mountPoints    = []
    volumesFrom    = []
    systemControls = []
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.prometheus.name
        "awslogs-region"        = var.region
        "awslogs-stream-prefix" = "prometheus"
      }
    }
  }])
}

resource "aws_ecs_service" "prometheus" {
  #checkov:skip=CKV_AWS_333:public subnets without a NAT gateway keep the example cheap; use private subnets in production
  name            = "${var.name}-prometheus"
  cluster         = aws_ecs_cluster.this.arn
  task_definition = aws_ecs_task_definition.prometheus.arn
  desired_count   = 1
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = aws_subnet.public[*].id
    security_groups  = [aws_security_group.prometheus.id]
    assign_public_ip = true
  }

  depends_on = [module.servers]
}
