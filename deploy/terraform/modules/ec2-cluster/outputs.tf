output "asg_name" {
  description = "Name of the auto scaling group."
  value       = aws_autoscaling_group.this.name
}

output "security_group_id" {
  description = "Security group of the instances (allow it on the servers' group for clients)."
  value       = aws_security_group.this.id
}

output "iam_role_arn" {
  description = "ARN of the instances' IAM role (ec2:DescribeInstances only)."
  value       = aws_iam_role.this.arn
}

output "launch_template_id" {
  description = "ID of the launch template."
  value       = aws_launch_template.this.id
}

output "cluster_tag_key" {
  description = "Tag key the instances carry."
  value       = var.cluster_tag_key
}

output "cluster_tag_value" {
  description = "Tag value the instances carry (pass it as join_tag_value to a client group)."
  value       = local.tag_value
}

output "retry_join" {
  description = "The cloud auto-join string the agents use."
  value       = local.join
}

output "user_data" {
  description = "The rendered user data script."
  value       = local.user_data
}
