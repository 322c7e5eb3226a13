# One security group per pool (an instance has exactly one, so even the single-VM layout stays
# far below the limit of five per interface). Which pool may reach which internal port of
# which other pool is the layout module's `internal_rules`, tested offline.

locals {
  lb_pools = toset([for name, pool in local.pools : name if contains(pool.groups, "lb")])

  ssh_rules = {
    for pair in setproduct(keys(local.pools), module.layout.admin_cidrs_ipv4) :
    "${pair[0]}-ssh-from-${pair[1]}" => { pool = pair[0], cidr = pair[1] }
  }
}

resource "aws_security_group" "pool" {
  for_each = local.pools

  name        = "${var.name}-${each.key}"
  description = "Parley ${var.name} pool ${each.key}: ${join(", ", each.value.groups)}"
  vpc_id      = aws_vpc.fleet.id
  tags        = { Name = "${var.name}-${each.key}" }
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = local.ssh_rules

  security_group_id = aws_security_group.pool[each.value.pool].id
  description       = "SSH from an administrators' network"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value.cidr
}

resource "aws_vpc_security_group_ingress_rule" "http" {
  for_each = local.lb_pools

  security_group_id = aws_security_group.pool[each.key].id
  description       = "HTTP from anyone: ACME challenges and the redirect to HTTPS"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0" # checkov:skip=CKV_AWS_260: the load balancer answers ACME HTTP-01 challenges and redirects to HTTPS
}

resource "aws_vpc_security_group_ingress_rule" "https" {
  for_each = local.lb_pools

  security_group_id = aws_security_group.pool[each.key].id
  description       = "HTTPS and secure WebSockets from anyone"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "internal" {
  for_each = module.layout.internal_rules

  security_group_id            = aws_security_group.pool[each.value.pool].id
  description                  = each.value.description
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  referenced_security_group_id = aws_security_group.pool[each.value.client_pool].id
}

# Outbound: the listed TCP ports and NTP to the Internet, anything inside the VPC (the VPC's
# DNS resolver and the internal services).
resource "aws_vpc_security_group_egress_rule" "internet_tcp" {
  for_each = {
    for pair in setproduct(keys(local.pools), var.egress_tcp_ports) : "${pair[0]}-tcp-${pair[1]}" => { pool = pair[0], port = pair[1] }
  }

  security_group_id = aws_security_group.pool[each.value.pool].id
  description       = "TCP ${each.value.port} to the Internet"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "ntp" {
  for_each = local.pools

  security_group_id = aws_security_group.pool[each.key].id
  description       = "NTP to the Debian pool servers"
  ip_protocol       = "udp"
  from_port         = 123
  to_port           = 123
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "vpc" {
  for_each = local.pools

  security_group_id = aws_security_group.pool[each.key].id
  description       = "Anything inside the VPC: its DNS resolver and the internal services"
  ip_protocol       = "-1"
  cidr_ipv4         = module.layout.network_cidr
}
