output "hosts" {
  description = "Every machine to create, pools in name order and hosts in number order: name (inventory host name), server_name (cloud resource name), pool, groups, size, and stable_ip (true for load balancers, which get an address that outlives the machine)."
  value       = local.hosts
}

output "user_data" {
  description = "cloud-config for every host: admin_user with the SSH keys and password-less sudo, and python3, so Ansible can take over."
  value       = local.user_data
}

output "admin_cidrs" {
  description = "The validated admin networks, IPv4 and IPv6."
  value       = var.admin_cidrs
}

output "admin_cidrs_ipv4" {
  description = "The IPv4 admin networks (for firewalls that take the families apart)."
  value       = [for c in var.admin_cidrs : c if !strcontains(c, ":")]
}

output "admin_cidrs_ipv6" {
  description = "The IPv6 admin networks."
  value       = [for c in var.admin_cidrs : c if strcontains(c, ":")]
}

output "network_cidr" {
  description = "The validated private network of the fleet."
  value       = var.network_cidr
}

output "subnet_cidr" {
  description = "The /24 the hosts get their private addresses from: subnet number 1 of network_cidr."
  value       = cidrsubnet(var.network_cidr, 24 - tonumber(split("/", var.network_cidr)[1]), 1)
}

output "internal_rules" {
  description = "Which pool may reach which internal port of which pool, keyed <pool>-<port>-from-<client pool>: pool, client_pool, port and a description. Pools with count 0 take no part."
  value       = local.internal_rules
}
