output "server_dns" {
  description = "DNS name of the cairn server inside the VPC."
  value       = module.server.server_dns
}

output "server_service" {
  description = "ECS service of the server (find its public IP in the ECS console or with aws ecs describe-tasks)."
  value       = module.server.ecs_service_name
}

output "app_task_definitions" {
  description = "Task definitions of the two applications."
  value       = { for k, m in module.app : k => m.task_definition_arn }
}
