variable "image" {
  description = "Container image of cairn (e.g. the one `make image` builds, pushed to ECR)."
  type        = string
  nullable    = false

  validation {
    condition     = length(trimspace(var.image)) > 0
    error_message = "image must name a container image."
  }
}

variable "retry_join" {
  description = "Where the client agent finds the servers: a DNS name (ecs-server's server_dns), addresses, or cloud auto-join strings (provider=aws ...)."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.retry_join) > 0 && alltrue([for j in var.retry_join : length(trimspace(j)) > 0])
    error_message = "retry_join must hold at least one non-empty entry."
  }
}

variable "datacenter" {
  description = "Datacenter of the servers."
  type        = string
  default     = "dc1"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z0-9_-]+$", var.datacenter))
    error_message = "datacenter can only contain lowercase alphanumeric, - or _ characters."
  }
}

variable "services" {
  description = "Service definitions the agent registers (Consul's format: name, port, tags, meta, checks, ...). Addresses default to the task's."
  type        = any
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for s in var.services : can(regex("^[a-zA-Z0-9][a-zA-Z0-9_-]*$", s.name))])
    error_message = "services must be a list of service definitions, each with a name of letters, digits, '-' and '_'."
  }
}

variable "container_name" {
  description = "Name of the agent's container in the task."
  type        = string
  default     = "cairn-agent"
  nullable    = false

  validation {
    condition     = can(regex("^[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}$", var.container_name))
    error_message = "container_name must be letters, digits, '-' and '_' (at most 255)."
  }
}

variable "gossip_key_secret_arn" {
  description = "Secrets Manager secret of the gossip key (ecs-server's gossip_key_secret_arn); null when gossip is not encrypted."
  type        = string
  default     = null
}

variable "acl_token_secret_arn" {
  description = "Secrets Manager secret holding the agent's ACL token (acl.tokens.agent and default); null without ACLs."
  type        = string
  default     = null
}

variable "memory_reservation" {
  description = "Soft memory limit of the agent container in MiB."
  type        = number
  default     = 64
  nullable    = false

  validation {
    condition     = var.memory_reservation >= 32 && var.memory_reservation <= 4096
    error_message = "memory_reservation must be between 32 and 4096 MiB."
  }
}

variable "log_configuration" {
  description = "logConfiguration of the agent container (e.g. awslogs); null sends logs nowhere."
  type        = any
  default     = null
}

variable "task_definition" {
  description = "Wrap a whole task: family, cpu, memory, execution_role_arn, task_role_arn (optional) and container_definitions (list of objects). Each app container then waits for the agent to be healthy. Null: only render the container."
  type = object({
    family                   = string
    cpu                      = number
    memory                   = number
    execution_role_arn       = string
    task_role_arn            = optional(string)
    container_definitions    = any
    requires_compatibilities = optional(list(string), ["FARGATE"])
  })
  default = null

  validation {
    condition     = var.task_definition == null || can(regex("^[a-zA-Z0-9_-]{1,255}$", var.task_definition.family))
    error_message = "task_definition.family must be 1-255 letters, digits, '-' and '_'."
  }
  validation {
    condition     = var.task_definition == null || alltrue([for c in try([for x in var.task_definition.container_definitions : x], [{}]) : can(c.name) && can(c.image)])
    error_message = "task_definition.container_definitions must be a list of container definitions with name and image."
  }
}

variable "tags" {
  description = "Tags for the task definition when the module wraps one."
  type        = map(string)
  default     = {}
  nullable    = false
}
