variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "cairn-ec2"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,14}[a-z0-9]$", var.name))
    error_message = "name must be 2-16 lower-case letters, digits and '-'."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "availability_zones" {
  description = "Two availability zones (default: <region>a and <region>b)."
  type        = list(string)
  default     = null
}

variable "vpc_cidr" {
  description = "CIDR block of the example VPC."
  type        = string
  default     = "10.44.0.0/16"
}

variable "ami_id" {
  description = "Debian 12 (or Amazon Linux 2023) AMI of the region."
  type        = string
}

variable "package_repo_url" {
  description = "URL of the cairn package repository (make repo, copied to a web server or S3 website)."
  type        = string
}

variable "client_count" {
  description = "Number of client instances."
  type        = number
  default     = 2
}
