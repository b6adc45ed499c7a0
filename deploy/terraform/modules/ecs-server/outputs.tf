output "server_dns" {
  description = "DNS name (Cloud Map, A records of every running server) clients pass to retry_join."
  value       = local.server_dns
}

output "retry_join" {
  description = "retry_join list for client agents: the servers' DNS name."
  value       = [local.server_dns]
}

output "server_retry_join" {
  description = "The cloud auto-join string the servers use to find each other."
  value       = local.server_join
}

output "security_group_id" {
  description = "Security group of the server tasks."
  value       = aws_security_group.this.id
}

output "ecs_service_name" {
  description = "Name of the ECS service running the servers."
  value       = aws_ecs_service.this.name
}

output "task_definition_arn" {
  description = "ARN of the server task definition."
  value       = aws_ecs_task_definition.this.arn
}

output "container_definitions" {
  description = "The rendered container definitions (JSON) of the server task."
  value       = aws_ecs_task_definition.this.container_definitions
}

output "task_role_arn" {
  description = "ARN of the server task role (cloud auto-join permissions)."
  value       = aws_iam_role.task.arn
}

output "execution_role_arn" {
  description = "ARN of the task execution role (logs, secrets)."
  value       = aws_iam_role.execution.arn
}

output "gossip_key_secret_arn" {
  description = "Secret holding the gossip key (null when gossip is not encrypted); give it to client agents."
  value       = local.gossip_key_arn
}

output "acl_bootstrap_token_secret_arn" {
  description = "Secret holding the ACL initial management token (null without ACLs)."
  value       = local.acl_token_arn
}

output "cloudmap_namespace_id" {
  description = "Cloud Map namespace of the servers' DNS name."
  value       = local.namespace_id
}

output "log_group_name" {
  description = "CloudWatch log group of the servers."
  value       = aws_cloudwatch_log_group.this.name
}
