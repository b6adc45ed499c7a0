output "server_asg" {
  description = "Auto scaling group of the servers."
  value       = module.servers.asg_name
}

output "client_asg" {
  description = "Auto scaling group of the clients."
  value       = module.clients.asg_name
}

output "retry_join" {
  description = "The join string every agent uses."
  value       = module.servers.retry_join
}
