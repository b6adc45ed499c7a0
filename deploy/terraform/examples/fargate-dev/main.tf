# The seed setup on Fargate: one cairn server, and two application tasks each with a cairn client
# agent beside it. "server-app" answers HTTP on 9090; "client-app" finds healthy server-app
# instances through its local agent (http://127.0.0.1:8500/v1/health/service/server-app?passing)
# and calls one: its upstream.

resource "aws_ecs_cluster" "this" {
  #checkov:skip=CKV_AWS_65:Container Insights costs more than this development example; fargate-cluster enables it
  name = var.name

  setting {
    name  = "containerInsights"
    value = "disabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]
}

resource "aws_security_group" "apps" {
  name_prefix = "${var.name}-apps-"
  description = "example application tasks"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "apps_self" {
  security_group_id            = aws_security_group.apps.id
  description                  = "apps and their agents among themselves (9090, LAN gossip)"
  ip_protocol                  = "-1"
  referenced_security_group_id = aws_security_group.apps.id
}

resource "aws_vpc_security_group_ingress_rule" "apps_from_servers" {
  security_group_id            = aws_security_group.apps.id
  description                  = "LAN gossip from the servers"
  ip_protocol                  = "-1"
  referenced_security_group_id = module.server.security_group_id
}

resource "aws_vpc_security_group_egress_rule" "apps" {
  security_group_id = aws_security_group.apps.id
  description       = "image pulls, AWS APIs, servers"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

module "server" {
  source = "../../modules/ecs-server"

  name                       = "${var.name}-server"
  image                      = var.cairn_image
  ecs_cluster_arn            = aws_ecs_cluster.this.arn
  vpc_id                     = aws_vpc.this.id
  subnet_ids                 = aws_subnet.public[*].id
  assign_public_ip           = true
  server_count               = 1
  cpu                        = 256
  memory                     = 512
  cloudmap_namespace_name    = "${var.name}.cairn.internal"
  allowed_security_group_ids = [aws_security_group.apps.id]
  allowed_cidr_blocks        = var.ui_ingress_cidr == null ? [] : [var.ui_ingress_cidr]
}

# --- the applications ----------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "apps" {
  #checkov:skip=CKV_AWS_158:example applications' logs; CloudWatch's default encryption at rest
  #checkov:skip=CKV_AWS_338:a week is enough for an example
  name              = "/ecs/${var.name}-apps"
  retention_in_days = 7
}

resource "aws_iam_role" "app_execution" {
  name = "${var.name}-app-execution"
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Effect = "Allow", Principal = { Service = "ecs-tasks.amazonaws.com" }, Action = "sts:AssumeRole" }]
  })
}

resource "aws_iam_role_policy" "app_execution" {
  name = "logs-and-gossip-key"
  role = aws_iam_role.app_execution.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = ["logs:CreateLogStream", "logs:PutLogEvents"], Resource = "${aws_cloudwatch_log_group.apps.arn}:*" },
      { Effect = "Allow", Action = ["secretsmanager:GetSecretValue"], Resource = [module.server.gossip_key_secret_arn] },
    ]
  })
}

locals {
  logs = {
    for app in ["server-app", "client-app"] : app => {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.apps.name
        "awslogs-region"        = var.region
        "awslogs-stream-prefix" = app
      }
    }
  }

  server_app_script = <<-EOT
    import http.server
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"hello from server-app\n"
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    http.server.ThreadingHTTPServer(("0.0.0.0", 9090), H).serve_forever()
  EOT

  client_app_script = <<-EOT
    import http.server, json, random, urllib.request
    def upstream():
        entries = json.load(urllib.request.urlopen("http://127.0.0.1:8500/v1/health/service/server-app?passing", timeout=2))
        e = random.choice(entries)
        return urllib.request.urlopen(f"http://{e['Service']['Address'] or e['Node']['Address']}:{e['Service']['Port']}/", timeout=2).read()
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                body, status = b"client-app -> " + upstream(), 200
            except Exception as err:
                body, status = f"no upstream: {err}\n".encode(), 503
            self.send_response(status); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    http.server.ThreadingHTTPServer(("0.0.0.0", 9090), H).serve_forever()
  EOT

  apps = {
    "server-app" = local.server_app_script
    "client-app" = local.client_app_script
  }
}

module "app" {
  source   = "../../modules/ecs-client"
  for_each = local.apps

  image                 = var.cairn_image
  retry_join            = module.server.retry_join
  gossip_key_secret_arn = module.server.gossip_key_secret_arn
  log_configuration     = local.logs[each.key]
  services = [{
    name   = each.key
    port   = 9090
    checks = [{ http = "http://127.0.0.1:9090/", interval = "10s", timeout = "2s" }]
  }]
  task_definition = {
    family             = "${var.name}-${each.key}"
    cpu                = 256
    memory             = 512
    execution_role_arn = aws_iam_role.app_execution.arn
    container_definitions = [{
      name             = each.key
      image            = var.app_image
      essential        = true
      cpu              = 0
      command          = ["python3", "-c", each.value]
      portMappings     = [{ containerPort = 9090, hostPort = 9090, protocol = "tcp" }]
      environment      = []
      mountPoints      = []
      volumesFrom      = []
      systemControls   = []
      logConfiguration = local.logs[each.key]
    }]
  }
}

resource "aws_ecs_service" "app" {
  #checkov:skip=CKV_AWS_333:public subnets without a NAT gateway keep the example cheap; use private subnets in production
  for_each = module.app

  name            = "${var.name}-${each.key}"
  cluster         = aws_ecs_cluster.this.arn
  task_definition = each.value.task_definition_arn
  desired_count   = 1
  launch_type     = "FARGATE"

  network_configuration {
    subnets          = aws_subnet.public[*].id
    security_groups  = [aws_security_group.apps.id]
    assign_public_ip = true
  }

  # The client agents need the server's DNS name to exist (they retry until it answers anyway).
  depends_on = [module.server]
}
