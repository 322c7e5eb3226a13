output "hosts" {
  description = "Every instance as the inventory module takes it: name, public_ip (the Elastic IP on load balancers), private_ip, groups and ssh_user, in layout order."
  value = [
    for h in module.layout.hosts : {
      name       = h.name
      public_ip  = h.stable_ip ? aws_eip.lb[h.name].public_ip : aws_instance.host[h.name].public_ip
      private_ip = aws_instance.host[h.name].private_ip
      groups     = h.groups
      ssh_user   = var.admin_user
    }
  ]
  # The inventory must not be written before the Elastic IPs are on their instances.
  depends_on = [aws_eip_association.lb]
}

output "lb_addresses" {
  description = "The Elastic IP of each load balancer: point the site's DNS name here."
  value       = { for name, ip in aws_eip.lb : name => ip.public_ip }
}

output "admin_cidrs" {
  description = "The validated administrators' networks, for the hosts' own firewall."
  value       = module.layout.admin_cidrs
}
