# The inventory module, offline: each layout renders YAML that parses to its fixture, and
# each rule on the input rejects its bad input. A run that expects a failure names, on the
# line above it, the message it must fail with; tests/terraform/test_module_messages.py
# checks that exactly that message, and no other, is what Terraform printed.

# The hosts of inventory/example/hosts.yml, and the administrator that goes with them.
variables {
  hosts = [
    { name = "lb1", public_ip = "203.0.113.10", private_ip = "10.0.1.10", groups = ["lb"], ssh_user = "admin" },
    { name = "web1", public_ip = "203.0.113.21", private_ip = "10.0.1.21", groups = ["web"], ssh_user = "admin" },
    { name = "web2", public_ip = "203.0.113.22", private_ip = "10.0.1.22", groups = ["web"], ssh_user = "admin" },
    { name = "worker1", public_ip = "203.0.113.31", private_ip = "10.0.1.31", groups = ["worker"], ssh_user = "admin" },
    { name = "worker2", public_ip = "203.0.113.32", private_ip = "10.0.1.32", groups = ["worker"], ssh_user = "admin" },
    { name = "beat1", public_ip = "203.0.113.41", private_ip = "10.0.1.41", groups = ["beat"], ssh_user = "admin" },
    { name = "redis1", public_ip = "203.0.113.51", private_ip = "10.0.1.51", groups = ["redis"], ssh_user = "admin" },
    { name = "db1", public_ip = "203.0.113.61", private_ip = "10.0.1.61", groups = ["db"], ssh_user = "admin" },
  ]
  admin_users = [
    { name = "admin", ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw8hUvQ0HBbIrjw1tR5c2yTgH8gBVBc+5ziy4sTWyHb alice@laptop"] },
  ]
  admin_cidrs = ["198.51.100.0/24", "2001:db8:10::/48"]
}

run "example_fleet_is_the_example_inventory" {
  command = plan

  assert {
    # The committed example and the module cannot drift apart.
    condition     = yamldecode(output.hosts_yaml) == yamldecode(file("../../../inventory/example/hosts.yml"))
    error_message = "The rendered inventory differs from inventory/example/hosts.yml:\n${output.hosts_yaml}"
  }

  assert {
    condition     = output.groups == { lb = ["lb1"], web = ["web1", "web2"], worker = ["worker1", "worker2"], beat = ["beat1"], redis = ["redis1"], db = ["db1"] }
    error_message = "groups output: ${jsonencode(output.groups)}"
  }
}

run "single_vm_appears_in_every_group" {
  command = plan

  variables {
    hosts = [
      { name = "parley1", public_ip = "203.0.113.7", private_ip = "10.0.1.2", groups = ["lb", "web", "worker", "beat", "redis", "db"], ssh_user = "admin" },
    ]
  }

  assert {
    condition     = yamldecode(output.hosts_yaml) == yamldecode(file("tests/fixtures/single-vm.yml"))
    error_message = "The single-VM inventory differs from tests/fixtures/single-vm.yml:\n${output.hosts_yaml}"
  }
}

run "colocated_tiers_keep_input_order" {
  command = plan

  variables {
    hosts = [
      { name = "edge1", public_ip = "2001:db8:1::10", private_ip = "192.168.7.10", groups = ["lb"], ssh_user = "deploy" },
      { name = "app2", public_ip = "203.0.113.72", private_ip = "192.168.7.22", groups = ["web", "worker"], ssh_user = "deploy" },
      { name = "app10", public_ip = "203.0.113.80", private_ip = "192.168.7.30", groups = ["web", "worker", "beat"], ssh_user = "deploy" },
      { name = "data1", public_ip = "203.0.113.90", private_ip = "192.168.7.40", groups = ["redis", "db"], ssh_user = "deploy" },
    ]
    admin_users = [
      { name = "deploy", ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw8hUvQ0HBbIrjw1tR5c2yTgH8gBVBc+5ziy4sTWyHb ci"] },
    ]
  }

  assert {
    condition     = yamldecode(output.hosts_yaml) == yamldecode(file("tests/fixtures/colocated.yml"))
    error_message = "The colocated inventory differs from tests/fixtures/colocated.yml:\n${output.hosts_yaml}"
  }

  assert {
    # Input order, not sorted order: app2 stays before app10.
    condition     = output.groups.web == ["app2", "app10"]
    error_message = "web lists ${jsonencode(output.groups.web)}, not the input order [app2, app10]."
  }
}

run "group_vars_carry_admins_and_networks" {
  command = plan

  variables {
    admin_users = [
      { name = "admin", ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw8hUvQ0HBbIrjw1tR5c2yTgH8gBVBc+5ziy4sTWyHb alice@laptop", "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= bob"] },
      { name = "carol", ssh_keys = ["ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 carol@desk"] },
    ]
  }

  assert {
    condition     = yamldecode(output.group_vars_yaml) == yamldecode(file("tests/fixtures/group_vars.yml"))
    error_message = "The group_vars differ from tests/fixtures/group_vars.yml:\n${output.group_vars_yaml}"
  }
}

# rejects: hosts is empty: the inventory needs at least one host.
run "no_hosts" {
  command = plan
  variables {
    hosts = []
  }
  expect_failures = [var.hosts]
}

# rejects: Host names must be unique; repeated: web1.
run "duplicate_name" {
  command = plan
  variables {
    hosts = [for h in var.hosts : h.name == "web2" ? merge(h, { name = "web1" }) : h]
  }
  expect_failures = [var.hosts]
}

# rejects: Host names must be DNS labels (lowercase letters, digits and inner hyphens, at most 63 characters); not: Web_1.
run "name_not_a_dns_label" {
  command = plan
  variables {
    hosts = [for h in var.hosts : h.name == "web1" ? merge(h, { name = "Web_1" }) : h]
  }
  expect_failures = [var.hosts]
}

# rejects: Every host belongs to at least one group and names each group once; not so: worker2.
run "host_without_group" {
  command = plan
  variables {
    hosts = [for h in var.hosts : h.name == "worker2" ? merge(h, { groups = [] }) : h]
  }
  expect_failures = [var.hosts]
}

# rejects: Unknown inventory group cache: the groups are lb, web, worker, beat, redis and db.
run "unknown_group" {
  command = plan
  variables {
    hosts = [for h in var.hosts : h.name == "redis1" ? merge(h, { groups = ["redis", "cache"] }) : h]
  }
  expect_failures = [var.hosts]
}

# rejects: Every inventory group needs at least one host; empty: db.
run "empty_group" {
  command = plan
  variables {
    hosts = [for h in var.hosts : h if h.name != "db1"]
  }
  expect_failures = [var.hosts]
}

# rejects: Every inventory group needs at least one host; empty: beat.
run "no_beat_host" {
  command = plan
  variables {
    hosts = [for h in var.hosts : h if h.name != "beat1"]
  }
  expect_failures = [var.hosts]
}

# rejects: Exactly one host must be in group beat (two would run every periodic job twice); found 2: worker1, beat1.
run "two_beat_hosts" {
  command = plan
  variables {
    hosts = [for h in var.hosts : h.name == "worker1" ? merge(h, { groups = ["worker", "beat"] }) : h]
  }
  expect_failures = [var.hosts]
}

# rejects: public_ip must be an IPv4 or IPv6 address; not: lb1 (lb.example.com).
run "public_ip_not_an_address" {
  command = plan
  variables {
    hosts = [for h in var.hosts : h.name == "lb1" ? merge(h, { public_ip = "lb.example.com" }) : h]
  }
  expect_failures = [var.hosts]
}

# rejects: private_ip must be an IPv4 address in a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16), since internal services listen on it; not: db1 (203.0.113.61).
run "private_ip_public" {
  command = plan
  variables {
    hosts = [for h in var.hosts : h.name == "db1" ? merge(h, { private_ip = h.public_ip }) : h]
  }
  expect_failures = [var.hosts]
}

# rejects: Private addresses must be unique; repeated: 10.0.1.21.
run "duplicate_private_ip" {
  command = plan
  variables {
    hosts = [for h in var.hosts : h.name == "web2" ? merge(h, { private_ip = "10.0.1.21" }) : h]
  }
  expect_failures = [var.hosts]
}

# rejects: Every host must have the same ssh_user (the inventory sets it once, as all.vars.ansible_user); found: admin, debian.
run "mixed_ssh_users" {
  command = plan
  variables {
    hosts = [for h in var.hosts : h.name == "db1" ? merge(h, { ssh_user = "debian" }) : h]
  }
  expect_failures = [var.hosts]
}

# rejects: ssh_user must be a lowercase Unix user name (such as admin); not: Admin.
run "ssh_user_not_a_user_name" {
  command = plan
  variables {
    hosts = [for h in var.hosts : merge(h, { ssh_user = "Admin" })]
  }
  expect_failures = [var.hosts]
}

# rejects: admin_users needs at least one administrator, each with at least one SSH key: root and password logins are off, keys are the only way in.
run "admin_without_key" {
  command = plan
  variables {
    admin_users = [{ name = "admin", ssh_keys = [] }]
  }
  expect_failures = [var.admin_users]
}

# rejects: Administrator names must be unique lowercase Unix user names (such as admin or alice).
run "admin_name_repeated" {
  command = plan
  variables {
    admin_users = [for n in ["admin", "admin"] : { name = n, ssh_keys = var.admin_users[0].ssh_keys }]
  }
  expect_failures = [var.admin_users]
}

# rejects: Each SSH key must be one OpenSSH public key line, such as "ssh-ed25519 AAAA... alice@laptop" (the content of ~/.ssh/id_ed25519.pub, not the private key).
run "private_key_instead_of_public" {
  command = plan
  variables {
    admin_users = [{ name = "admin", ssh_keys = ["-----BEGIN OPENSSH PRIVATE KEY-----"] }]
  }
  expect_failures = [var.admin_users]
}

# rejects: The hosts' ssh_user (admin) is not among admin_users (alice): the common role would lock Ansible out after its first run. Add it to admin_users.
run "ssh_user_not_an_admin" {
  command = plan
  variables {
    admin_users = [{ name = "alice", ssh_keys = var.admin_users[0].ssh_keys }]
  }
  expect_failures = [output.hosts_yaml]
}

# rejects: admin_cidrs must list at least one network in CIDR notation, such as 198.51.100.0/24 or 2001:db8::/48.
run "admin_cidr_not_a_cidr" {
  command = plan
  variables {
    admin_cidrs = ["198.51.100.7"]
  }
  expect_failures = [var.admin_cidrs]
}

# rejects: admin_cidrs must name your administrators' networks: a /0 (0.0.0.0/0, ::/0) would open SSH to the whole Internet.
run "admin_cidrs_whole_internet" {
  command = plan
  variables {
    admin_cidrs = ["198.51.100.0/24", "0.0.0.0/0", "::/0"]
  }
  expect_failures = [var.admin_cidrs]
}

# rejects: admin_cidrs must name your administrators' networks: a /0 (0.0.0.0/00, ::/000) would open SSH to the whole Internet.
run "admin_cidrs_whole_internet_with_padded_prefix" {
  command = plan
  variables {
    # The prefix is a number: /00 is /0, however it is written.
    admin_cidrs = ["198.51.100.0/24", "0.0.0.0/00", "::/000"]
  }
  expect_failures = [var.admin_cidrs]
}
