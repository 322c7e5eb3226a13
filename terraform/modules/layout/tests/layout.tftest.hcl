# The fleet layout, offline: pools expand to the hosts both cloud modules create, cloud-init
# carries exactly the admin user, its keys, sudo and Python, and each rule on the input
# rejects its bad input. A run that expects a failure names, on the line above it, the
# message it must fail with; tests/terraform/test_module_messages.py checks that exactly that
# message, and no other, is what Terraform printed.

# The production layout of inventory/example/hosts.yml.
variables {
  name = "production"
  pools = {
    lb     = { count = 1, groups = ["lb"], size = "cx23" }
    web    = { count = 2, groups = ["web"], size = "cx33" }
    worker = { count = 2, groups = ["worker"], size = "cx23" }
    beat   = { count = 1, groups = ["beat"], size = "cx23" }
    redis  = { count = 1, groups = ["redis"], size = "cx23" }
    db     = { count = 1, groups = ["db"], size = "cx33" }
  }
  ssh_public_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw8hUvQ0HBbIrjw1tR5c2yTgH8gBVBc+5ziy4sTWyHb alice@laptop"]
  admin_cidrs     = ["198.51.100.0/24", "2001:db8:10::/48"]
}

run "fleet_layout_has_the_example_hosts" {
  command = plan

  assert {
    condition     = [for h in output.hosts : h.name] == ["beat1", "db1", "lb1", "redis1", "web1", "web2", "worker1", "worker2"]
    error_message = "Host names: ${jsonencode([for h in output.hosts : h.name])}"
  }

  assert {
    condition     = [for h in output.hosts : h.server_name if h.pool == "web"] == ["production-web1", "production-web2"]
    error_message = "Server names are not <name>-<host>: ${jsonencode([for h in output.hosts : h.server_name])}"
  }

  assert {
    condition     = [for h in output.hosts : h.name if h.stable_ip] == ["lb1"]
    error_message = "Only the load balancer gets a stable address; got ${jsonencode([for h in output.hosts : h.name if h.stable_ip])}."
  }

  assert {
    condition     = jsonencode({ for h in output.hosts : h.name => [h.groups, h.size] }["db1"]) == jsonencode([["db"], "cx33"])
    error_message = "db1 does not carry its pool's groups and size."
  }
}

run "single_vm_is_one_pool_away" {
  command = plan

  variables {
    pools = {
      parley = { count = 1, groups = ["lb", "web", "worker", "beat", "redis", "db"], size = "cx33" }
    }
  }

  assert {
    # Compared as JSON: a list of objects from the module, a tuple literal here.
    condition     = jsonencode(output.hosts) == jsonencode([{ groups = ["lb", "web", "worker", "beat", "redis", "db"], name = "parley1", pool = "parley", server_name = "production-parley1", size = "cx33", stable_ip = true }])
    error_message = "Single VM layout: ${jsonencode(output.hosts)}"
  }
}

run "hosts_numbered_in_order_past_nine" {
  command = plan

  variables {
    pools = {
      edge = { count = 1, groups = ["lb"], size = "cx23" }
      app  = { count = 11, groups = ["web", "worker"], size = "cx33" }
      cron = { count = 1, groups = ["beat"], size = "cx23" }
      data = { count = 1, groups = ["redis", "db"], size = "cx43" }
      idle = { count = 0, groups = ["worker"], size = "cx23" }
    }
  }

  assert {
    condition     = [for h in output.hosts : h.name if h.pool == "app"] == [for i in range(1, 12) : "app${i}"]
    error_message = "app hosts are not app1..app11 in number order: ${jsonencode([for h in output.hosts : h.name if h.pool == "app"])}"
  }

  assert {
    condition     = length([for h in output.hosts : h if h.pool == "idle"]) == 0
    error_message = "A pool with count 0 must create no host."
  }
}

run "cloud_init_creates_only_the_admin_user_and_python" {
  command = plan

  variables {
    admin_user = "deploy"
    ssh_public_keys = [
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw8hUvQ0HBbIrjw1tR5c2yTgH8gBVBc+5ziy4sTWyHb alice@laptop",
      "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob",
    ]
  }

  assert {
    # cloud-init reads user data as cloud-config only when this is its first line.
    condition     = startswith(output.user_data, "#cloud-config\n")
    error_message = "user_data does not start with #cloud-config:\n${output.user_data}"
  }

  assert {
    condition = yamldecode(output.user_data) == {
      users = [{
        name                = "deploy"
        shell               = "/bin/bash"
        lock_passwd         = true
        sudo                = "ALL=(ALL) NOPASSWD:ALL"
        ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw8hUvQ0HBbIrjw1tR5c2yTgH8gBVBc+5ziy4sTWyHb alice@laptop", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob"]
      }]
      packages = ["python3"]
    }
    error_message = "Unexpected cloud-config:\n${output.user_data}"
  }
}

run "admin_networks_split_by_family" {
  command = plan

  assert {
    condition     = output.admin_cidrs_ipv4 == ["198.51.100.0/24"] && output.admin_cidrs_ipv6 == ["2001:db8:10::/48"]
    error_message = "IPv4 ${jsonencode(output.admin_cidrs_ipv4)}, IPv6 ${jsonencode(output.admin_cidrs_ipv6)}"
  }
}

run "fleet_internal_traffic" {
  command = plan

  assert {
    condition = { for k, r in output.internal_rules : k => r.port } == {
      "web-8000-from-lb"    = 8000
      "redis-6379-from-web" = 6379, "redis-6379-from-worker" = 6379, "redis-6379-from-beat" = 6379
      "redis-6380-from-web" = 6380, "redis-6380-from-worker" = 6380, "redis-6380-from-beat" = 6380
      "db-5432-from-web"    = 5432, "db-5432-from-worker" = 5432, "db-5432-from-beat" = 5432
    }
    error_message = "Internal rules: ${jsonencode(keys(output.internal_rules))}"
  }

  assert {
    condition     = output.internal_rules["db-5432-from-beat"].description == "PostgreSQL from beat"
    error_message = "Description: ${output.internal_rules["db-5432-from-beat"].description}"
  }
}

run "single_vm_internal_traffic_stays_on_the_host" {
  command = plan

  variables {
    pools = {
      parley = { count = 1, groups = ["lb", "web", "worker", "beat", "redis", "db"], size = "cx33" }
    }
  }

  assert {
    condition     = jsonencode(sort(keys(output.internal_rules))) == jsonencode(["parley-5432-from-parley", "parley-6379-from-parley", "parley-6380-from-parley", "parley-8000-from-parley"])
    error_message = "Internal rules: ${jsonencode(keys(output.internal_rules))}"
  }
}

run "colocated_pools_and_idle_pools" {
  command = plan

  variables {
    pools = {
      edge = { count = 1, groups = ["lb"], size = "cx23" }
      app  = { count = 2, groups = ["web", "worker"], size = "cx33" }
      cron = { count = 1, groups = ["beat"], size = "cx23" }
      data = { count = 1, groups = ["redis", "db"], size = "cx43" }
      idle = { count = 0, groups = ["worker"], size = "cx23" }
    }
  }

  assert {
    condition = jsonencode(sort(keys(output.internal_rules))) == jsonencode([
      "app-8000-from-edge",
      "data-5432-from-app", "data-5432-from-cron",
      "data-6379-from-app", "data-6379-from-cron",
      "data-6380-from-app", "data-6380-from-cron",
    ])
    error_message = "Internal rules: ${jsonencode(keys(output.internal_rules))}"
  }
}

run "hosts_live_in_subnet_one" {
  command = plan

  variables {
    network_cidr = "172.20.0.0/16"
  }

  assert {
    condition     = output.subnet_cidr == "172.20.1.0/24" && output.network_cidr == "172.20.0.0/16"
    error_message = "subnet ${output.subnet_cidr} of ${output.network_cidr}"
  }
}

run "default_network" {
  command = plan

  assert {
    condition     = output.subnet_cidr == "10.0.1.0/24"
    error_message = "The default subnet is ${output.subnet_cidr}, not 10.0.1.0/24."
  }
}

# rejects: name must be 1 to 20 lowercase letters, digits or inner hyphens, starting with a letter (it prefixes server names, which are DNS labels).
run "name_with_underscore" {
  command = plan
  variables {
    name = "prod_eu"
  }
  expect_failures = [var.name]
}

# rejects: Pool names must be 1 to 20 lowercase letters or inner hyphens (hosts are named after them: web1, web2); not: web2.
run "pool_name_ending_in_digit" {
  command = plan
  variables {
    pools = merge(var.pools, { web2 = { count = 1, groups = ["web"], size = "cx23" } })
  }
  expect_failures = [var.pools]
}

# rejects: Each pool's count must be a whole number from 0 to 50; not so: web (1.5).
run "fractional_count" {
  command = plan
  variables {
    pools = merge(var.pools, { web = { count = 1.5, groups = ["web"], size = "cx33" } })
  }
  expect_failures = [var.pools]
}

# rejects: Each pool joins one or more of the groups lb, web, worker, beat, redis, db, each named once; not so: cache.
run "pool_with_unknown_group" {
  command = plan
  variables {
    pools = merge(var.pools, { cache = { count = 1, groups = ["memcached"], size = "cx23" } })
  }
  expect_failures = [var.pools]
}

# rejects: Each pool needs a size (a server or instance type such as cx23 or t3.small).
run "pool_without_size" {
  command = plan
  variables {
    pools = merge(var.pools, { db = { count = 1, groups = ["db"], size = " " } })
  }
  expect_failures = [var.pools]
}

# rejects: Every inventory group needs at least one host; no pool with a count above 0 joins: redis.
run "redis_pool_scaled_to_zero" {
  command = plan
  variables {
    pools = merge(var.pools, { redis = { count = 0, groups = ["redis"], size = "cx23" } })
  }
  expect_failures = [var.pools]
}

# rejects: Exactly one host must be in group beat (two would run every periodic job twice); the pools joining beat add up to 2.
run "two_beat_hosts" {
  command = plan
  variables {
    pools = merge(var.pools, { beat = { count = 2, groups = ["beat"], size = "cx23" } })
  }
  expect_failures = [var.pools]
}

# rejects: admin_user must be a lowercase Unix user name other than root (root logins are turned off), such as admin.
run "admin_user_root" {
  command = plan
  variables {
    admin_user = "root"
  }
  expect_failures = [var.admin_user]
}

# rejects: ssh_public_keys needs at least one key: password and root logins are off, a key is the only way in.
run "no_ssh_key" {
  command = plan
  variables {
    ssh_public_keys = []
  }
  expect_failures = [var.ssh_public_keys]
}

# rejects: Each SSH key must be one OpenSSH public key line, such as "ssh-ed25519 AAAA... alice@laptop" (the content of ~/.ssh/id_ed25519.pub, not the private key).
run "ssh_key_path_instead_of_key" {
  command = plan
  variables {
    ssh_public_keys = ["~/.ssh/id_ed25519.pub"]
  }
  expect_failures = [var.ssh_public_keys]
}

# rejects: admin_cidrs must list at least one network in CIDR notation, such as 198.51.100.0/24 or 2001:db8::/48.
run "no_admin_network" {
  command = plan
  variables {
    admin_cidrs = []
  }
  expect_failures = [var.admin_cidrs]
}

# rejects: admin_cidrs must name your administrators' networks: a /0 (0.0.0.0/0) would open SSH to the whole Internet.
run "ssh_open_to_the_world" {
  command = plan
  variables {
    admin_cidrs = ["0.0.0.0/0"]
  }
  expect_failures = [var.admin_cidrs]
}

# rejects: admin_cidrs must name your administrators' networks: a /0 (::/0) would open SSH to the whole Internet.
run "ssh_open_to_the_ipv6_world" {
  command = plan
  variables {
    admin_cidrs = ["198.51.100.0/24", "::/0"]
  }
  expect_failures = [var.admin_cidrs]
}

# rejects: admin_cidrs must name your administrators' networks: a /0 (0.0.0.0/00, ::/000) would open SSH to the whole Internet.
run "ssh_open_to_the_world_with_padded_prefix" {
  command = plan
  variables {
    # The prefix is a number: /00 is /0, however it is written.
    admin_cidrs = ["198.51.100.0/24", "0.0.0.0/00", "::/000"]
  }
  expect_failures = [var.admin_cidrs]
}

# rejects: network_cidr must be a private IPv4 network (inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16) of size /8 to /16, such as 10.0.0.0/16; got 100.64.0.0/16.
run "network_not_private" {
  command = plan
  variables {
    network_cidr = "100.64.0.0/16"
  }
  expect_failures = [var.network_cidr]
}

# rejects: network_cidr must be a private IPv4 network (inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16) of size /8 to /16, such as 10.0.0.0/16; got 10.0.0.0/24.
run "network_too_small_for_a_subnet" {
  command = plan
  variables {
    network_cidr = "10.0.0.0/24"
  }
  expect_failures = [var.network_cidr]
}
