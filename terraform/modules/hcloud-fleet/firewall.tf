# Hetzner Cloud firewalls filter the public interfaces only; traffic on the private network
# never passes them. Internal ports (gunicorn 8000, Redis 6379/6380, PostgreSQL 5432) are
# therefore opened by no rule here: they are closed to the Internet, and the hosts' own
# nftables (the common role and each service's drop-in) admits only the tiers that need them.
# Outbound traffic is not filtered: hosts fetch packages and call the LLM provider.

resource "hcloud_firewall" "admin" {
  name   = "${var.name}-admin"
  labels = local.labels

  rule {
    description = "SSH from the administrators' networks"
    direction   = "in"
    protocol    = "tcp"
    port        = "22"
    source_ips  = module.layout.admin_cidrs
  }

  rule {
    description = "Ping from the administrators' networks"
    direction   = "in"
    protocol    = "icmp"
    source_ips  = module.layout.admin_cidrs
  }
}

resource "hcloud_firewall" "web" {
  name   = "${var.name}-web"
  labels = local.labels

  rule {
    description = "HTTP from anyone: ACME challenges and the redirect to HTTPS"
    direction   = "in"
    protocol    = "tcp"
    port        = "80"
    source_ips  = ["0.0.0.0/0", "::/0"]
  }

  rule {
    description = "HTTPS and secure WebSockets from anyone"
    direction   = "in"
    protocol    = "tcp"
    port        = "443"
    source_ips  = ["0.0.0.0/0", "::/0"]
  }
}
