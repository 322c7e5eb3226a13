locals {
  # The order of inventory/example/hosts.yml: traffic flows from the top down.
  group_order = ["lb", "web", "worker", "beat", "redis", "db"]

  # Each group's hosts in the order they were given; a host in several groups (the single-VM
  # layout) is listed under each of them.
  hosts_by_group = {
    for group in local.group_order : group => [for h in var.hosts : h if contains(h.groups, group)]
  }

  hosts_yaml = templatefile("${path.module}/templates/hosts.yml.tftpl", {
    groups         = local.group_order
    hosts_by_group = local.hosts_by_group
    ssh_user       = one(distinct(var.hosts[*].ssh_user))
  })

  group_vars_yaml = templatefile("${path.module}/templates/group_vars.yml.tftpl", {
    admin_users = var.admin_users
    admin_cidrs = var.admin_cidrs
  })
}
