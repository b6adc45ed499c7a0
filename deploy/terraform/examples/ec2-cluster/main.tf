# Three cairn servers and a group of client hosts on EC2, joined by tag (provider=aws).

module "servers" {
  source = "../../modules/ec2-cluster"

  name                       = "${var.name}-server"
  mode                       = "server"
  cluster_size               = 3
  ami_id                     = var.ami_id
  instance_type              = "t3.small"
  vpc_id                     = aws_vpc.this.id
  subnet_ids                 = aws_subnet.public[*].id
  package_repo_url           = var.package_repo_url
  allowed_security_group_ids = [module.clients.security_group_id]
}

module "clients" {
  source = "../../modules/ec2-cluster"

  name                          = "${var.name}-client"
  mode                          = "client"
  cluster_size                  = var.client_count
  ami_id                        = var.ami_id
  instance_type                 = "t3.micro"
  vpc_id                        = aws_vpc.this.id
  subnet_ids                    = aws_subnet.public[*].id
  package_repo_url              = var.package_repo_url
  join_tag_value                = module.servers.cluster_tag_value
  allowed_security_group_ids    = [module.servers.security_group_id]
  additional_security_group_ids = []
}
