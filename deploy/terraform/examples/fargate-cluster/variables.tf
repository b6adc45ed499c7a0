variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "cairn-prod"

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
  default     = "10.43.0.0/16"
}

variable "cairn_image" {
  description = "cairn container image (make image, pushed to ECR)."
  type        = string
}

variable "prometheus_image" {
  description = "Prometheus image (upstream Prometheus has consul_sd)."
  type        = string
  default     = "public.ecr.aws/bitnami/prometheus:2.55.1"
}

variable "ui_ingress_cidr" {
  description = "Your address (x.x.x.x/32) allowed to reach the server's UI and API on port 8500; null: nobody."
  type        = string
  default     = null
}
