output "lb_addresses" {
  description = "Elastic IP of each load balancer; it survives the instance's replacement. Point your site's DNS A record here."
  value       = module.fleet.lb_addresses
}

output "inventory" {
  description = "The inventory directory Terraform wrote (hosts.yml and group_vars/all/terraform.yml)."
  value       = local.inventory_dir
}

output "groups" {
  description = "Each inventory group with its hosts."
  value       = module.inventory.groups
}

output "known_hosts_command" {
  description = "Records the new hosts' SSH host keys in ~/.ssh/known_hosts (run it once the servers have booted)."
  value       = "ssh-keyscan -t ed25519 ${join(" ", distinct(module.fleet.hosts[*].public_ip))} >> ~/.ssh/known_hosts"
}
