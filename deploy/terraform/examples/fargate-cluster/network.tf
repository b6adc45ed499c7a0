# A small VPC: public subnets in two zones, tasks and instances with public IPs (no NAT gateway,
# which would cost more than the example itself). Use private subnets and a NAT gateway or VPC
# endpoints in production.

locals {
  zones = coalesce(var.availability_zones, ["${var.region}a", "${var.region}b"])
}

resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11:an example VPC; flow logs cost more than the example, enable them in your own VPC
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = var.name }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = var.name }
}

resource "aws_subnet" "public" {
  count                   = length(local.zones)
  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.zones[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, count.index)
  map_public_ip_on_launch = true
  tags                    = { Name = "${var.name}-public-${local.zones[count.index]}" }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-public" }

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
}

resource "aws_route_table_association" "public" {
  count          = length(aws_subnet.public)
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# No rules on the VPC's default security group: nothing here uses it.
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.this.id
}
