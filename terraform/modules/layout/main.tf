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
}
