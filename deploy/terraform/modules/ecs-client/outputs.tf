output "container_definition" {
  description = "The agent's container definition (an object): add it to your task's container_definitions."
  value       = local.container
}

output "app_dependency" {
  description = "The dependsOn entry for each application container: start once the agent is healthy."
  value       = local.app_dependency
}

output "volume_name" {
  description = "Name of the task volume the agent keeps its data in: declare `volume { name = ... }` in your task definition."
  value       = local.volume_name
}

output "secret_arns" {
  description = "Secrets the task execution role must be allowed to read (secretsmanager:GetSecretValue)."
  value       = [for s in local.secrets : s.valueFrom]
}

output "task_definition_arn" {
  description = "ARN of the wrapped task definition (null when task_definition is null)."
  value       = one(aws_ecs_task_definition.this[*].arn)
}

output "container_definitions" {
  description = "The rendered container definitions (JSON) of the wrapped task (null when task_definition is null)."
  value       = one(aws_ecs_task_definition.this[*].container_definitions)
}
