variable "name" {
  description = "Name of the group: the auto scaling group, launch template, IAM role and security group derive from it."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name))
    error_message = "name must be 2-32 characters of lower-case letters, digits and '-', starting with a letter."
  }
}

variable "mode" {
  description = "server: cairn servers (cluster_size 1, 3 or 5, bootstrap_expect = cluster_size); client: client agents."
  type        = string
  default     = "server"
  nullable    = false

  validation {
    condition     = contains(["server", "client"], var.mode)
    error_message = "mode must be server or client."
  }
}

variable "cluster_size" {
  description = "Number of instances (servers: 1, 3 or 5)."
  type        = number
  default     = 3
  nullable    = false

  validation {
    condition     = var.cluster_size >= 0 && var.cluster_size <= 1000 && floor(var.cluster_size) == var.cluster_size
    error_message = "cluster_size must be a whole number between 0 and 1000."
  }
  validation {
    condition     = var.mode != "server" || contains([1, 3, 5], var.cluster_size)
    error_message = "a server group has 1, 3 or 5 instances."
  }
}

variable "ami_id" {
  description = "AMI to boot: Debian 12 (deb) or Amazon Linux 2023 / RHEL 9 (rpm), with systemd."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like ami-0123456789abcdef0."
  }
}

variable "instance_type" {
  description = "EC2 instance type."
  type        = string
  default     = "t3.small"
  nullable    = false
}

variable "vpc_id" {
  description = "VPC of the subnets."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Subnets the auto scaling group spreads the instances over."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.subnet_ids) > 0 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "subnet_ids must hold at least one subnet ID (subnet-...)."
  }
}

variable "package_repo_url" {
  description = "Base URL of the cairn package repository `make repo` builds (packaging/repo.sh): <url>/apt for apt, <url>/yum for dnf."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^(https?|file)://[^ '\"]+$", var.package_repo_url))
    error_message = "package_repo_url must be an http(s):// or file:// URL without spaces or quotes."
  }
}

variable "package_repo_trusted" {
  description = "Install from an unsigned repository (apt trusted=yes, dnf gpgcheck=0). Set false and bake the signing key into the AMI for signed repositories."
  type        = bool
  default     = true
  nullable    = false
}

variable "cluster_tag_key" {
  description = "Tag key the instances carry and cloud auto-join looks for."
  type        = string
  default     = "cairn-cluster"
  nullable    = false

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.:/=+@-]{1,127}$", var.cluster_tag_key)) && !startswith(var.cluster_tag_key, "aws:")
    error_message = "cluster_tag_key must be a valid EC2 tag key (1-127 characters, not starting with aws:)."
  }
}

variable "cluster_tag_value" {
  description = "Value of the cluster tag on these instances. Default: name."
  type        = string
  default     = null

  validation {
    condition     = var.cluster_tag_value == null || can(regex("^[a-zA-Z0-9_.:/=+@-]{1,255}$", var.cluster_tag_value))
    error_message = "cluster_tag_value must be 1-255 characters without spaces or quotes."
  }
}

variable "join_tag_value" {
  description = "Value of the cluster tag of the servers to join. Default: this group's own tag value (servers); set it to the server group's value for clients."
  type        = string
  default     = null

  validation {
    condition     = var.join_tag_value == null || can(regex("^[a-zA-Z0-9_.:/=+@-]{1,255}$", var.join_tag_value))
    error_message = "join_tag_value must be 1-255 characters without spaces or quotes."
  }
}

variable "datacenter" {
  description = "Datacenter name."
  type        = string
  default     = "dc1"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z0-9_-]+$", var.datacenter))
    error_message = "datacenter can only contain lowercase alphanumeric, - or _ characters."
  }
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed to reach RPC (8300), LAN gossip (8301), HTTP (8500) and DNS (8600)."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for s in var.allowed_security_group_ids : can(regex("^sg-[0-9a-f]+$", s))])
    error_message = "allowed_security_group_ids must hold security group IDs (sg-...)."
  }
}

variable "allowed_cidr_blocks" {
  description = "IPv4 CIDR blocks allowed to reach RPC, LAN gossip, HTTP and DNS."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for c in var.allowed_cidr_blocks : can(cidrhost(c, 0)) && !strcontains(c, ":")])
    error_message = "allowed_cidr_blocks must hold IPv4 CIDR blocks such as 10.0.0.0/16."
  }
}

variable "additional_security_group_ids" {
  description = "Further security groups attached to the instances (e.g. the server group's, for clients)."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "root_volume_size" {
  description = "Size of the encrypted gp3 root volume in GiB."
  type        = number
  default     = 20
  nullable    = false

  validation {
    condition     = var.root_volume_size >= 8 && var.root_volume_size <= 16384
    error_message = "root_volume_size must be between 8 and 16384 GiB."
  }
}

variable "key_name" {
  description = "EC2 key pair for SSH (null: none; use SSM Session Manager)."
  type        = string
  default     = null
}

variable "extra_config" {
  description = "Further agent configuration (Consul's keys) merged into /etc/cairn.d/cluster-aws.json, e.g. { encrypt = ..., ui_config = { enabled = true } }."
  type        = any
  default     = {}
  nullable    = false
}

variable "tags" {
  description = "Tags for every resource the module creates (and the instances)."
  type        = map(string)
  default     = {}
  nullable    = false
}
