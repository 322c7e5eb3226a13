# The Parley fleet on Hetzner Cloud: one server per host of the layout, all on one private
# network, behind cloud firewalls that let the public reach only 80/443 on the load balancers
# and the administrators only SSH. Which hosts exist, their names and cloud-init come from
# the provider-free layout module, which `terraform test` checks offline.

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
  hosts  = { for h in module.layout.hosts : h.name => h }
  labels = merge(var.labels, { "parley-environment" = var.name })

  # Hetzner network zones by location: the subnet must be in the servers' zone.
  network_zone = {
    fsn1 = "eu-central", nbg1 = "eu-central", hel1 = "eu-central"
    ash  = "us-east", hil = "us-west", sin = "ap-southeast"
  }[var.location]

  primary_ipv4_ids = { for name, ip in hcloud_primary_ip.lb : name => ip.id }
}

# Uploading the keys keeps Hetzner from mailing a root password for each new server.
resource "hcloud_ssh_key" "admin" {
  for_each = { for i, key in var.ssh_public_keys : tostring(i) => key }

  name       = "${var.name}-admin-${each.key}"
  public_key = each.value
  labels     = local.labels
}

resource "hcloud_network" "fleet" {
  name     = var.name
  ip_range = module.layout.network_cidr
  labels   = local.labels
}

resource "hcloud_network_subnet" "fleet" {
  network_id   = hcloud_network.fleet.id
  type         = "cloud"
  network_zone = local.network_zone
  ip_range     = module.layout.subnet_cidr
}

# A Primary IP is Hetzner's address that outlives its server: replacing a load balancer keeps
# the address DNS points at. Unlike a Floating IP it needs no configuration inside the guest.
resource "hcloud_primary_ip" "lb" {
  for_each = { for name, h in local.hosts : name => h if h.stable_ip }

  name          = "${each.value.server_name}-ipv4"
  type          = "ipv4"
  location      = var.location
  assignee_type = "server"
  auto_delete   = false
  labels        = local.labels
}

resource "hcloud_server" "host" {
  for_each = local.hosts

  name        = each.value.server_name
  server_type = each.value.size
  image       = "debian-12"
  location    = var.location
  ssh_keys    = [for key in hcloud_ssh_key.admin : key.id]
  user_data   = module.layout.user_data
  labels      = merge(local.labels, { "parley-pool" = each.value.pool })

  firewall_ids = concat(
    [hcloud_firewall.admin.id],
    contains(each.value.groups, "lb") ? [hcloud_firewall.web.id] : [],
  )

  public_net {
    ipv4_enabled = true
    ipv4         = lookup(local.primary_ipv4_ids, each.key, null)
    ipv6_enabled = true
  }

  network {
    subnet_id = hcloud_network_subnet.fleet.id
    # An explicit empty list avoids the provider detaching and re-attaching the network on
    # every apply (hetznercloud/terraform-provider-hcloud#650).
    alias_ips = []
  }

  lifecycle {
    # cloud-init only bootstraps; from then on the common role owns users and keys. Without
    # this, changing a key would rebuild every server.
    ignore_changes = [user_data, ssh_keys]
  }

  # The subnet must exist before a server can be attached to it.
  depends_on = [hcloud_network_subnet.fleet]
}
