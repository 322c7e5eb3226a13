output "hosts_yaml" {
  description = "The inventory (inventory/<env>/hosts.yml): all.vars.ansible_user and all.children.<group>.hosts.<name>.{ansible_host, private_ip}, groups in the order lb, web, worker, beat, redis, db."
  value       = local.hosts_yaml

  precondition {
    # The common role lets only common_admin_users log in over SSH: an ssh_user missing
    # there would lose its access in the middle of the first playbook run.
    condition     = contains(var.admin_users[*].name, one(distinct(var.hosts[*].ssh_user)))
    error_message = "The hosts' ssh_user (${one(distinct(var.hosts[*].ssh_user))}) is not among admin_users (${join(", ", var.admin_users[*].name)}): the common role would lock Ansible out after its first run. Add it to admin_users."
  }
}

output "group_vars_yaml" {
  description = "Variables for inventory/<env>/group_vars/all/terraform.yml: common_admin_users and common_firewall_ssh_cidrs, from the same inputs as the cloud resources."
  value       = local.group_vars_yaml
}

output "groups" {
  description = "Each inventory group with the names of its hosts, in inventory order."
  value       = { for group, hosts in local.hosts_by_group : group => hosts[*].name }
}
