# Offline unit tests: the real aws provider's schema, mocked answers (no AWS calls).
mock_provider "aws" {
  mock_resource "aws_iam_instance_profile" {
    defaults = { arn = "arn:aws:iam::123456789012:instance-profile/cairn/mock" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/cairn/mock" }
  }
  mock_resource "aws_security_group" {
    defaults = { id = "sg-0000000000000000a" }
  }
  mock_resource "aws_launch_template" {
    defaults = { id = "lt-0123456789abcdef0", latest_version = 1 }
  }
}

variables {
  name             = "cairn-servers"
  ami_id           = "ami-0123456789abcdef0"
  vpc_id           = "vpc-0123456789abcdef0"
  subnet_ids       = ["subnet-0123456789abcdef0"]
  package_repo_url = "https://repo.example.org/cairn/"
}

run "servers" {
  command = plan

  assert {
    condition     = aws_launch_template.this.metadata_options[0].http_tokens == "required" && aws_launch_template.this.metadata_options[0].instance_metadata_tags == "enabled"
    error_message = "IMDSv2 required, instance tags in metadata"
  }
  assert {
    condition     = aws_launch_template.this.metadata_options[0].http_put_response_hop_limit == 2
    error_message = "hop limit 2"
  }
  assert {
    condition     = jsondecode(local.instance_policy).Statement[0].Action == ["ec2:DescribeInstances"] && length(jsondecode(local.instance_policy).Statement) == 1
    error_message = "the instance role may only describe instances"
  }
  assert {
    condition     = [for t in aws_autoscaling_group.this.tag : t.value if t.key == "cairn-cluster"] == ["cairn-servers"]
    error_message = "the ASG tags its instances with the cluster tag"
  }
  assert {
    condition     = local.agent_config.retry_join == ["provider=aws tag_key=cairn-cluster tag_value=cairn-servers"] && local.agent_config.bootstrap_expect == 3 && local.agent_config.server && !local.agent_config.bootstrap
    error_message = "servers: tag join, bootstrap_expect = cluster_size"
  }
  assert {
    condition     = strcontains(local.user_data, "deb $opts $REPO_URL/apt stable main") && strcontains(local.user_data, "REPO_URL='https://repo.example.org/cairn'")
    error_message = "user data installs from the repository"
  }
  assert {
    condition     = strcontains(local.user_data, "cat >/etc/cairn.d/cluster-aws.json <<'CONFIG'\n${jsonencode(local.agent_config)}\nCONFIG")
    error_message = "user data writes the config"
  }
  assert {
    condition     = strcontains(local.user_data, "cairn validate /etc/cairn.d") && strcontains(local.user_data, "systemctl restart cairn")
    error_message = "user data validates then restarts"
  }
  assert {
    condition     = aws_autoscaling_group.this.instance_refresh[0].preferences[0].min_healthy_percentage == 66
    error_message = "rolling replacement one server at a time"
  }
  assert {
    condition     = length(local.ingress_rules) == 8
    error_message = "servers reach each other on every port"
  }
  assert {
    condition     = aws_launch_template.this.block_device_mappings[0].ebs[0].encrypted == "true"
    error_message = "encrypted root volume"
  }
}

run "clients" {
  command = plan

  variables {
    name                       = "cairn-clients"
    mode                       = "client"
    cluster_size               = 4
    join_tag_value             = "cairn-servers"
    allowed_security_group_ids = ["sg-0aaaaaaaaaaaaaaa1"]
    extra_config               = { log_level = "debug" }
  }

  assert {
    condition     = local.agent_config.retry_join == ["provider=aws tag_key=cairn-cluster tag_value=cairn-servers"] && !local.agent_config.server
    error_message = "clients join the servers' tag"
  }
  assert {
    condition     = !can(local.agent_config.bootstrap_expect) && local.agent_config.log_level == "debug"
    error_message = "no bootstrap_expect for clients; extra config merged"
  }
  assert {
    condition     = [for t in aws_autoscaling_group.this.tag : t.value if t.key == "cairn-cluster"] == ["cairn-clients"]
    error_message = "clients carry their own tag value"
  }
  assert {
    condition     = length(local.ingress_rules) == 2 + 2
    error_message = "clients open only LAN gossip"
  }
}

run "rejects_even_server_group" {
  command = plan
  variables {
    cluster_size = 4
  }
  expect_failures = [var.cluster_size]
}

run "rejects_bad_repo_url" {
  command = plan
  variables {
    package_repo_url = "repo.example.org"
  }
  expect_failures = [var.package_repo_url]
}

run "rejects_aws_tag" {
  command = plan
  variables {
    cluster_tag_key = "aws:autoscaling:groupName"
  }
  expect_failures = [var.cluster_tag_key]
}

run "apply_with_mocks" {
  command = apply

  assert {
    condition     = output.retry_join == "provider=aws tag_key=cairn-cluster tag_value=cairn-servers"
    error_message = "join string output"
  }
}
