# cairn on EC2: an auto scaling group whose instances install cairn from a package repository and
# join each other by tag (cloud auto-join, provider=aws). Servers and clients use the same module.

locals {
  is_server  = var.mode == "server"
  tag_value  = coalesce(var.cluster_tag_value, var.name)
  join_value = coalesce(var.join_tag_value, local.tag_value)
  tags       = merge(var.tags, { (var.cluster_tag_key) = local.tag_value })

  join = "provider=aws tag_key=${var.cluster_tag_key} tag_value=${local.join_value}"

  # Later files in /etc/cairn.d win: this one turns the packaged single-server default
  # (server = true, bootstrap = true) into a member of the tagged cluster.
  agent_config = merge(
    {
      datacenter  = var.datacenter
      server      = local.is_server
      bootstrap   = false
      retry_join  = [local.join]
      client_addr = "127.0.0.1"
    },
    [{
      bootstrap_expect = var.cluster_size
      ui_config        = { enabled = true }
      autopilot        = { cleanup_dead_servers = true }
    }, {}][local.is_server ? 0 : 1],
    var.extra_config,
  )

  user_data = templatefile("${path.module}/templates/user-data.sh.tftpl", {
    repo_url    = trimsuffix(var.package_repo_url, "/")
    trusted     = var.package_repo_trusted ? "true" : "false"
    config_json = jsonencode(local.agent_config)
  })

  # Cloud auto-join on EC2 needs this one permission (DescribeInstances has no resource-level
  # permissions, so the resource is "*").
  instance_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "CloudAutoJoin"
      Effect   = "Allow"
      Action   = ["ec2:DescribeInstances"]
      Resource = "*"
    }]
  })
}

# --- IAM ---------------------------------------------------------------------------------------

resource "aws_iam_role" "this" {
  name = "${var.name}-instance"
  path = "/cairn/"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = local.tags
}

resource "aws_iam_role_policy" "auto_join" {
  name   = "cairn-auto-join"
  role   = aws_iam_role.this.id
  policy = local.instance_policy
}

resource "aws_iam_instance_profile" "this" {
  name = "${var.name}-instance"
  path = "/cairn/"
  role = aws_iam_role.this.name
  tags = local.tags
}

# --- network -----------------------------------------------------------------------------------

locals {
  all_ports = {
    "rpc-tcp"     = { port = 8300, protocol = "tcp", what = "server RPC" }
    "serflan-tcp" = { port = 8301, protocol = "tcp", what = "LAN gossip" }
    "serflan-udp" = { port = 8301, protocol = "udp", what = "LAN gossip" }
    "serfwan-tcp" = { port = 8302, protocol = "tcp", what = "WAN gossip" }
    "serfwan-udp" = { port = 8302, protocol = "udp", what = "WAN gossip" }
    "http-tcp"    = { port = 8500, protocol = "tcp", what = "HTTP API" }
    "dns-tcp"     = { port = 8600, protocol = "tcp", what = "DNS" }
    "dns-udp"     = { port = 8600, protocol = "udp", what = "DNS" }
  }
  # servers: everything among themselves; clients: LAN gossip among themselves.
  self_ports   = local.is_server ? local.all_ports : { for k, v in local.all_ports : k => v if v.port == 8301 }
  others_ports = local.is_server ? { for k, v in local.all_ports : k => v if v.port != 8302 } : { for k, v in local.all_ports : k => v if v.port == 8301 }

  rules_self = { for k, v in local.self_ports : "self-${k}" => merge(v, { sg = aws_security_group.this.id, cidr = null }) }
  # Keys by position: security group IDs may be unknown until apply, for_each keys may not.
  rules_sg = merge([for i, sg in var.allowed_security_group_ids : {
    for k, v in local.others_ports : "sg${i}-${k}" => merge(v, { sg = sg, cidr = null })
  }]...)
  rules_cidr = merge([for i, c in var.allowed_cidr_blocks : {
    for k, v in local.others_ports : "cidr${i}-${k}" => merge(v, { sg = null, cidr = c })
  }]...)
  ingress_rules = merge(local.rules_self, local.rules_sg, local.rules_cidr)
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-"
  description = "cairn ${var.mode}s ${var.name}"
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
  description       = "package repository, EC2 API and other agents"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

# --- instances ---------------------------------------------------------------------------------

resource "aws_launch_template" "this" {
  #checkov:skip=CKV_AWS_341:hop limit 2 lets an agent in a container on a bridge network reach IMDSv2 (tokens are still required)
  name_prefix            = "${var.name}-"
  image_id               = var.ami_id
  instance_type          = var.instance_type
  key_name               = var.key_name
  user_data              = base64encode(local.user_data)
  vpc_security_group_ids = concat([aws_security_group.this.id], var.additional_security_group_ids)
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.this.arn
  }

  # IMDSv2 only; hop limit 2 lets a containerised agent reach it; tags readable from IMDS.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 2
    instance_metadata_tags      = "enabled"
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.root_volume_size
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = var.name })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = local.tags
  }

  tags = local.tags
}

resource "aws_autoscaling_group" "this" {
  name_prefix         = "${var.name}-"
  min_size            = var.cluster_size
  max_size            = var.cluster_size
  desired_capacity    = var.cluster_size
  vpc_zone_identifier = var.subnet_ids
  health_check_type   = "EC2"

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  # A new launch template version replaces the instances one at a time for servers.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = local.is_server && var.cluster_size > 1 ? floor(100 * (var.cluster_size - 1) / var.cluster_size) : 0
      instance_warmup        = 120
    }
  }

  tag {
    key                 = var.cluster_tag_key
    value               = local.tag_value
    propagate_at_launch = true
  }

  tag {
    key                 = "Name"
    value               = var.name
    propagate_at_launch = true
  }

  dynamic "tag" {
    for_each = { for k, v in var.tags : k => v if k != var.cluster_tag_key && k != "Name" }
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  depends_on = [aws_iam_role_policy.auto_join]
}
