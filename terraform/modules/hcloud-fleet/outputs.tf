output "hosts" {
  description = "Every server as the inventory module takes it: name, public_ip (IPv4, the Primary IP on load balancers), private_ip, groups and ssh_user, in layout order."
  value = [
    for h in module.layout.hosts : {
      name       = h.name
      public_ip  = hcloud_server.host[h.name].ipv4_address
      private_ip = one([for n in hcloud_server.host[h.name].network : n.ip])
      groups     = h.groups
      ssh_user   = var.admin_user
    }
  ]
}

output "lb_addresses" {
  description = "The stable public IPv4 address of each load balancer: point the site's DNS name here."
  value       = { for name, ip in hcloud_primary_ip.lb : name => ip.ip_address }
}

output "admin_cidrs" {
  description = "The validated administrators' networks, for the hosts' own firewall."
  value       = module.layout.admin_cidrs
}
