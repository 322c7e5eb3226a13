# AWS EC2 fleet for one environment, and the Ansible inventory that configures it:
# `terraform apply` here, then `ansible-playbook -i inventory/<environment> site.yml` from
# the repository root. README.md beside this directory walks through it.

module "fleet" {
  source = "../../../modules/aws-fleet"

  name                = var.environment
  pools               = var.pools
  admin_user          = var.admin_user
  ssh_public_keys     = var.ssh_public_keys
  admin_cidrs         = var.admin_cidrs
  network_cidr        = var.network_cidr
  root_volume_gb      = var.root_volume_gb
  flow_log_bucket_arn = var.flow_log_bucket_arn
}

module "inventory" {
  source = "../../../modules/inventory"

  hosts       = module.fleet.hosts
  admin_users = [{ name = var.admin_user, ssh_keys = var.ssh_public_keys }]
  admin_cidrs = module.fleet.admin_cidrs
}

locals {
  inventory_dir = abspath("${path.root}/../../../../inventory/${var.environment}")
}

resource "local_file" "hosts" {
  filename             = "${local.inventory_dir}/hosts.yml"
  content              = module.inventory.hosts_yaml
  file_permission      = "0644"
  directory_permission = "0755"
}

resource "local_file" "group_vars" {
  filename             = "${local.inventory_dir}/group_vars/all/terraform.yml"
  content              = module.inventory.group_vars_yaml
  file_permission      = "0644"
  directory_permission = "0755"
}
