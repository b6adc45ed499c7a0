variable "name" {
  description = "Name of the server group: the ECS service, task family, Cloud Map service, IAM roles and log group derive from it."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,22}[a-z0-9]$", var.name))
    error_message = "name must be 2-24 characters of lower-case letters, digits and '-', starting with a letter (IAM role names \"<name>-execution\" must stay within 64 characters)."
  }
}

variable "image" {
  description = "Container image of cairn (e.g. the one `make image` builds, pushed to ECR)."
  type        = string
  nullable    = false

  validation {
    condition     = length(trimspace(var.image)) > 0
    error_message = "image must name a container image."
  }
}

variable "ecs_cluster_arn" {
  description = "ARN of the ECS cluster the servers run in."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:cluster/.+$", var.ecs_cluster_arn))
    error_message = "ecs_cluster_arn must be an ECS cluster ARN (arn:aws:ecs:<region>:<account>:cluster/<name>)."
  }
}

variable "vpc_id" {
  description = "VPC of the subnets; the security group and the Cloud Map namespace live in it."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Subnets of the server tasks (private subnets with a NAT gateway or VPC endpoints to pull the image)."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.subnet_ids) > 0 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "subnet_ids must hold at least one subnet ID (subnet-...)."
  }
}

variable "server_count" {
  description = "Number of servers: 1 (development, no fault tolerance), 3 or 5."
  type        = number
  default     = 3
  nullable    = false

  validation {
    condition     = contains([1, 3, 5], var.server_count)
    error_message = "server_count must be 1, 3 or 5."
  }
}

variable "datacenter" {
  description = "Datacenter name of the servers."
  type        = string
  default     = "dc1"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z0-9_-]+$", var.datacenter))
    error_message = "datacenter can only contain lowercase alphanumeric, - or _ characters."
  }
}

variable "cpu" {
  description = "Fargate task CPU units (256, 512, 1024, 2048 or 4096)."
  type        = number
  default     = 512
  nullable    = false

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096], var.cpu)
    error_message = "cpu must be one of 256, 512, 1024, 2048, 4096."
  }
}

variable "memory" {
  description = "Fargate task memory in MiB; must be a valid combination with cpu."
  type        = number
  default     = 1024
  nullable    = false

  validation {
    condition = contains(lookup({
      "256"  = [512, 1024, 2048]
      "512"  = [1024, 2048, 3072, 4096]
      "1024" = [2048, 3072, 4096, 5120, 6144, 7168, 8192]
      "2048" = [for m in range(4096, 16385, 1024) : m]
      "4096" = [for m in range(8192, 30721, 1024) : m]
    }, tostring(var.cpu), []), var.memory)
    error_message = "memory is not a valid Fargate combination with cpu (e.g. 256: 512-2048, 512: 1024-4096, 1024: 2048-8192)."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the tasks: X86_64 or ARM64 (the image must match)."
  type        = string
  default     = "X86_64"
  nullable    = false

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "assign_public_ip" {
  description = "Give the tasks public IPs (only for public subnets without a NAT gateway)."
  type        = bool
  default     = false
  nullable    = false
}

variable "allowed_security_group_ids" {
  description = "Security groups (client tasks, EC2 hosts) allowed to reach the servers' RPC, gossip, HTTP and DNS ports."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for s in var.allowed_security_group_ids : can(regex("^sg-[0-9a-f]+$", s))])
    error_message = "allowed_security_group_ids must hold security group IDs (sg-...)."
  }
}

variable "allowed_cidr_blocks" {
  description = "IPv4 CIDR blocks allowed to reach the servers' RPC, gossip, HTTP and DNS ports."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for c in var.allowed_cidr_blocks : can(cidrhost(c, 0)) && !strcontains(c, ":")])
    error_message = "allowed_cidr_blocks must hold IPv4 CIDR blocks such as 10.0.0.0/16."
  }
}

variable "additional_security_group_ids" {
  description = "Further security groups attached to the server tasks."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "cloudmap_namespace_name" {
  description = "Private DNS namespace created for discovery when cloudmap_namespace_id is null; servers answer at <name>.<namespace>."
  type        = string
  default     = "cairn.internal"
  nullable    = false

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.cloudmap_namespace_name))
    error_message = "cloudmap_namespace_name must be a DNS name such as cairn.internal."
  }
}

variable "cloudmap_namespace_id" {
  description = "ID of an existing Cloud Map private DNS namespace to use instead of creating one."
  type        = string
  default     = null
}

variable "gossip_key_secret_arn" {
  description = "Secrets Manager secret holding the gossip encryption key (cairn keygen). Null: the module creates one with a random key."
  type        = string
  default     = null
}

variable "create_gossip_key" {
  description = "Create a gossip key secret when gossip_key_secret_arn is null (false leaves gossip unencrypted)."
  type        = bool
  default     = true
  nullable    = false
}

variable "acl_enabled" {
  description = "Enable ACLs with default_policy deny; the bootstrap (initial management) token comes from acl_bootstrap_token_secret_arn or a created secret."
  type        = bool
  default     = false
  nullable    = false
}

variable "acl_bootstrap_token_secret_arn" {
  description = "Secrets Manager secret holding the ACL initial management token (a UUID). Null with acl_enabled: the module creates one."
  type        = string
  default     = null
}

variable "tls_ca_secret_arn" {
  description = "Secrets Manager secret holding a PEM CA bundle written to the task and set as tls.defaults.ca_file. Null: no TLS settings."
  type        = string
  default     = null
}

variable "secret_recovery_window_days" {
  description = "Recovery window of the secrets the module creates; 0 deletes them at once so destroy and re-apply work."
  type        = number
  default     = 0
  nullable    = false

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "log_kms_key_arn" {
  description = "KMS key ARN to encrypt the log group with (its key policy must allow CloudWatch Logs); null: CloudWatch's default encryption."
  type        = string
  default     = null
}

variable "secrets_kms_key_arn" {
  description = "KMS key ARN for the secrets the module creates (the execution role then needs kms:Decrypt on it); null: aws/secretsmanager."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log group the module creates."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch retention value (1, 3, 5, 7, 14, 30, 60, 90, ...)."
  }
}

variable "enable_execute_command" {
  description = "Allow ECS Exec into the server tasks (adds the ssmmessages permissions to the task role)."
  type        = bool
  default     = false
  nullable    = false
}

variable "wait_for_steady_state" {
  description = "Make terraform apply wait until the service is stable."
  type        = bool
  default     = false
  nullable    = false
}

variable "tags" {
  description = "Tags for every resource the module creates."
  type        = map(string)
  default     = {}
  nullable    = false
}
