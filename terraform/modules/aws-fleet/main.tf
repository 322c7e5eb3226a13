# The Parley fleet on AWS EC2: one instance per host of the layout in one public subnet of its
# own VPC, each pool behind a security group that admits the public only to 80/443 on load
# balancers, the administrators only to SSH, and every internal port only from the security
# groups of the tiers that use it. Which hosts exist, their names and cloud-init come from the
# provider-free layout module, which `terraform test` checks offline.

module "layout" {
  source = "../layout"

  name            = var.name
  pools           = var.pools
  admin_user      = var.admin_user
  ssh_public_keys = var.ssh_public_keys
  admin_cidrs     = var.admin_cidrs
  network_cidr    = var.network_cidr
}

locals {
  hosts = { for h in module.layout.hosts : h.name => h }
  # Pools that have hosts; a pool scaled to 0 needs no security group.
  pools = { for name, pool in var.pools : name => pool if pool.count > 0 }
}

# Debian's own image, published by the Debian cloud team's AWS account.
data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"]

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

resource "aws_instance" "host" {
  # checkov:skip=CKV2_AWS_41: the hosts call no AWS API; an instance role would only hand an intruder credentials
  for_each = local.hosts

  ami                         = data.aws_ami.debian.id
  instance_type               = each.value.size
  subnet_id                   = aws_subnet.fleet.id
  vpc_security_group_ids      = [aws_security_group.pool[each.value.pool].id]
  associate_public_ip_address = true # checkov:skip=CKV_AWS_88: Ansible reaches every host over SSH, which only the admin networks may open
  user_data                   = module.layout.user_data
  ebs_optimized               = true
  monitoring                  = true

  metadata_options {
    # IMDSv2 only, one hop: a process in a container on the host cannot read the metadata.
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.root_volume_gb
    encrypted   = true
  }

  tags = { Name = each.value.server_name, "parley:pool" = each.value.pool }

  lifecycle {
    # A newer Debian image or a changed key must not rebuild the fleet: cloud-init only
    # bootstraps, then Ansible owns the host (unattended upgrades, the common role's keys).
    ignore_changes = [ami, user_data]
  }
}

# Load balancers keep their public address when the instance is replaced, so DNS stays put.
resource "aws_eip" "lb" {
  for_each = { for name, h in local.hosts : name => h if h.stable_ip }

  domain = "vpc"
  tags   = { Name = each.value.server_name }

  depends_on = [aws_internet_gateway.fleet]
}

resource "aws_eip_association" "lb" {
  for_each = aws_eip.lb

  allocation_id = each.value.id
  instance_id   = aws_instance.host[each.key].id
}
