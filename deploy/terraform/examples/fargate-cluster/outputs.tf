output "server_dns" {
  description = "DNS name of the cairn servers inside the VPC."
  value       = module.servers.server_dns
}

output "gossip_key_secret_arn" {
  description = "Secret holding the gossip key, for client agents."
  value       = module.servers.gossip_key_secret_arn
}

output "server_security_group_id" {
  description = "Security group of the servers."
  value       = module.servers.security_group_id
}
