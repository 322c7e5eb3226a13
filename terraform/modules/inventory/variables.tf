variable "hosts" {
  description = <<-EOT
    The machines of the fleet, listed within each inventory group in this order.
    name: the inventory host name (a DNS label such as web1); public_ip: the address Ansible
    reaches over SSH (ansible_host); private_ip: the host's RFC 1918 address on the private
    network, where internal services listen; groups: the inventory groups it belongs to (lb,
    web, worker, beat, redis, db); ssh_user: the user Ansible logs in as, the same on every host.
  EOT
  type = list(object({
    name       = string
    public_ip  = string
    private_ip = string
    groups     = list(string)
    ssh_user   = string
  }))
  nullable = false

  validation {
    condition     = length(var.hosts) > 0
    error_message = "hosts is empty: the inventory needs at least one host."
  }

  validation {
    condition     = length(distinct(var.hosts[*].name)) == length(var.hosts)
    error_message = "Host names must be unique; repeated: ${join(", ", distinct([for n in var.hosts[*].name : n if length([for m in var.hosts[*].name : m if m == n]) > 1]))}."
  }

  validation {
    condition     = alltrue([for h in var.hosts : can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", h.name))])
    error_message = "Host names must be DNS labels (lowercase letters, digits and inner hyphens, at most 63 characters); not: ${join(", ", [for h in var.hosts : h.name if !can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", h.name))])}."
  }

  validation {
    condition     = alltrue([for h in var.hosts : length(h.groups) > 0 && length(distinct(h.groups)) == length(h.groups)])
    error_message = "Every host belongs to at least one group and names each group once; not so: ${join(", ", [for h in var.hosts : h.name if length(h.groups) == 0 || length(distinct(h.groups)) != length(h.groups)])}."
  }

  validation {
    condition     = length(setsubtract(flatten(var.hosts[*].groups), ["lb", "web", "worker", "beat", "redis", "db"])) == 0
    error_message = "Unknown inventory group ${join(", ", setsubtract(flatten(var.hosts[*].groups), ["lb", "web", "worker", "beat", "redis", "db"]))}: the groups are lb, web, worker, beat, redis and db."
  }

  validation {
    # An empty list has its own message above.
    condition     = length(var.hosts) == 0 || length(setsubtract(["lb", "web", "worker", "beat", "redis", "db"], flatten(var.hosts[*].groups))) == 0
    error_message = "Every inventory group needs at least one host; empty: ${join(", ", [for g in ["lb", "web", "worker", "beat", "redis", "db"] : g if !contains(flatten(var.hosts[*].groups), g)])}."
  }

  validation {
    # Celery Beat schedules every periodic job; two Beat hosts would run each job twice.
    condition     = length([for h in var.hosts : h if contains(h.groups, "beat")]) <= 1
    error_message = "Exactly one host must be in group beat (two would run every periodic job twice); found ${length([for h in var.hosts : h if contains(h.groups, "beat")])}: ${join(", ", [for h in var.hosts : h.name if contains(h.groups, "beat")])}."
  }

  validation {
    condition     = alltrue([for h in var.hosts : can(cidrnetmask("${h.public_ip}/32")) || can(cidrhost("${h.public_ip}/128", 0))])
    error_message = "public_ip must be an IPv4 or IPv6 address; not: ${join(", ", [for h in var.hosts : "${h.name} (${h.public_ip})" if !(can(cidrnetmask("${h.public_ip}/32")) || can(cidrhost("${h.public_ip}/128", 0)))])}."
  }

  validation {
    # Redis and PostgreSQL listen on the private address: it must not be routable publicly.
    condition = alltrue([for h in var.hosts : can(cidrnetmask("${h.private_ip}/32")) && (
      try(cidrhost("${h.private_ip}/8", 0) == "10.0.0.0", false) ||
      try(cidrhost("${h.private_ip}/12", 0) == "172.16.0.0", false) ||
      try(cidrhost("${h.private_ip}/16", 0) == "192.168.0.0", false)
    )])
    error_message = "private_ip must be an IPv4 address in a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16), since internal services listen on it; not: ${join(", ", [for h in var.hosts : "${h.name} (${h.private_ip})" if !(can(cidrnetmask("${h.private_ip}/32")) && (try(cidrhost("${h.private_ip}/8", 0) == "10.0.0.0", false) || try(cidrhost("${h.private_ip}/12", 0) == "172.16.0.0", false) || try(cidrhost("${h.private_ip}/16", 0) == "192.168.0.0", false)))])}."
  }

  validation {
    condition     = length(distinct(var.hosts[*].private_ip)) == length(var.hosts)
    error_message = "Private addresses must be unique; repeated: ${join(", ", distinct([for ip in var.hosts[*].private_ip : ip if length([for o in var.hosts[*].private_ip : o if o == ip]) > 1]))}."
  }

  validation {
    # The layout has one ansible_user, under all.vars.
    condition     = length(distinct(var.hosts[*].ssh_user)) <= 1
    error_message = "Every host must have the same ssh_user (the inventory sets it once, as all.vars.ansible_user); found: ${join(", ", distinct(var.hosts[*].ssh_user))}."
  }

  validation {
    condition     = alltrue([for h in var.hosts : can(regex("^[a-z_][a-z0-9_-]{0,31}$", h.ssh_user))])
    error_message = "ssh_user must be a lowercase Unix user name (such as admin); not: ${join(", ", distinct([for h in var.hosts : h.ssh_user if !can(regex("^[a-z_][a-z0-9_-]{0,31}$", h.ssh_user))]))}."
  }
}

variable "admin_users" {
  description = <<-EOT
    Administrators written to group_vars as common_admin_users: name and SSH public keys
    (OpenSSH lines). The common role keeps exactly these keys and lets only these users log
    in, so the hosts' ssh_user must be one of them.
  EOT
  type = list(object({
    name     = string
    ssh_keys = list(string)
  }))
  nullable = false

  validation {
    condition     = length(var.admin_users) > 0 && alltrue([for u in var.admin_users : length(u.ssh_keys) > 0])
    error_message = "admin_users needs at least one administrator, each with at least one SSH key: root and password logins are off, keys are the only way in."
  }

  validation {
    condition     = alltrue([for u in var.admin_users : can(regex("^[a-z_][a-z0-9_-]{0,31}$", u.name))]) && length(distinct(var.admin_users[*].name)) == length(var.admin_users)
    error_message = "Administrator names must be unique lowercase Unix user names (such as admin or alice)."
  }

  validation {
    # The pattern the common role checks, so a key Terraform accepts never fails the playbook.
    condition = alltrue([for k in flatten(var.admin_users[*].ssh_keys) :
    can(regex("^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\\.com) [A-Za-z0-9+/=]+( .*)?$", k))])
    error_message = "Each SSH key must be one OpenSSH public key line, such as \"ssh-ed25519 AAAA... alice@laptop\" (the content of ~/.ssh/id_ed25519.pub, not the private key)."
  }
}

variable "admin_cidrs" {
  description = "Networks (CIDR) allowed to reach SSH, written to group_vars as common_firewall_ssh_cidrs for the hosts' own firewall; the same list the cloud firewall uses."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.admin_cidrs) > 0 && alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0))])
    error_message = "admin_cidrs must list at least one network in CIDR notation, such as 198.51.100.0/24 or 2001:db8::/48."
  }

  validation {
    # The prefix length compared as a number: 0.0.0.0/00 and ::/000 are a /0 as well.
    condition     = alltrue([for c in var.admin_cidrs : !can(cidrhost(c, 0)) || try(tonumber(split("/", c)[1]) > 0, true)])
    error_message = "admin_cidrs must name your administrators' networks: a /0 (${join(", ", [for c in var.admin_cidrs : c if can(cidrhost(c, 0)) && try(tonumber(split("/", c)[1]) == 0, false)])}) would open SSH to the whole Internet."
  }
}
