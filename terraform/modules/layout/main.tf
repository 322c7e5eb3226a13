locals {
  # Pools in name order, hosts within a pool in number order: web1, web2, ..., web10.
  hosts = flatten([
    for pool in sort(keys(var.pools)) : [
      for i in range(var.pools[pool].count) : {
        name        = "${pool}${i + 1}"
        server_name = "${var.name}-${pool}${i + 1}"
        pool        = pool
        groups      = var.pools[pool].groups
        size        = var.pools[pool].size
        # Load balancers get an address that outlives the machine, so DNS can point at it.
        stable_ip = contains(var.pools[pool].groups, "lb")
      }
    ]
  ])

  # Only what Ansible needs to take over: its user with the keys and sudo, and Python. The
  # common role does everything else (sshd, firewall, upgrades), so no setting has two owners.
  user_data = join("\n", [
    "#cloud-config",
    yamlencode({
      users = [{
        name                = var.admin_user
        shell               = "/bin/bash"
        lock_passwd         = true
        sudo                = "ALL=(ALL) NOPASSWD:ALL"
        ssh_authorized_keys = var.ssh_public_keys
      }]
      packages = ["python3"]
    }),
  ])

  # Who talks to whom on the private network, by inventory group: gunicorn on web from the
  # load balancers; both Redis instances (6379 broker, 6380 channel layer) and PostgreSQL
  # from the application tiers.
  internal_services = [
    { group = "web", port = 8000, clients = ["lb"], what = "gunicorn" },
    { group = "redis", port = 6379, clients = ["web", "worker", "beat"], what = "Redis broker" },
    { group = "redis", port = 6380, clients = ["web", "worker", "beat"], what = "Redis channel layer" },
    { group = "db", port = 5432, clients = ["web", "worker", "beat"], what = "PostgreSQL" },
  ]

  # The same by pool: every (serving pool, port, client pool) triple, for firewalls that
  # work per machine kind. A pool can be its own client (the single VM).
  active_pools = { for name, pool in var.pools : name => pool if pool.count > 0 }
  internal_rules = merge([
    for service in local.internal_services : {
      for pair in setproduct(keys(local.active_pools), keys(local.active_pools)) :
      "${pair[0]}-${service.port}-from-${pair[1]}" => {
        pool        = pair[0]
        client_pool = pair[1]
        port        = service.port
        description = "${service.what} from ${pair[1]}"
      }
      if contains(local.active_pools[pair[0]].groups, service.group) &&
      length(setintersection(local.active_pools[pair[1]].groups, service.clients)) > 0
    }
  ]...)
}
