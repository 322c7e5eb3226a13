variable "name" {
  description = "Name of the environment (production, staging); prefixes every cloud resource name, so two environments can share one cloud project or account."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,18}[a-z0-9])?$", var.name))
    error_message = "name must be 1 to 20 lowercase letters, digits or inner hyphens, starting with a letter (it prefixes server names, which are DNS labels)."
  }
}

variable "pools" {
  description = <<-EOT
    Kinds of machine in the fleet, by pool name. count: how many (hosts are named <pool>1,
    <pool>2, ...); groups: the inventory groups each of them joins; size: the cloud's machine
    size (a Hetzner server type such as cx23, an EC2 instance type such as t3.small). A single
    VM holding every group is one pool with count 1 and all six groups.
  EOT
  type = map(object({
    count  = number
    groups = list(string)
    size   = string
  }))
  nullable = false

  validation {
    # Host names are the pool name and a number: a pool name ending in a digit could make
    # two pools produce the same host name (web1 + 1 and web + 11).
    condition     = alltrue([for p in keys(var.pools) : can(regex("^[a-z]([a-z-]{0,18}[a-z])?$", p))])
    error_message = "Pool names must be 1 to 20 lowercase letters or inner hyphens (hosts are named after them: web1, web2); not: ${join(", ", [for p in keys(var.pools) : p if !can(regex("^[a-z]([a-z-]{0,18}[a-z])?$", p))])}."
  }

  validation {
    condition     = alltrue([for p in values(var.pools) : p.count >= 0 && p.count <= 50 && floor(p.count) == p.count])
    error_message = "Each pool's count must be a whole number from 0 to 50; not so: ${join(", ", [for n, p in var.pools : "${n} (${p.count})" if !(p.count >= 0 && p.count <= 50 && floor(p.count) == p.count)])}."
  }

  validation {
    condition = alltrue([for p in values(var.pools) :
    length(p.groups) > 0 && length(distinct(p.groups)) == length(p.groups) && length(setsubtract(p.groups, ["lb", "web", "worker", "beat", "redis", "db"])) == 0])
    error_message = "Each pool joins one or more of the groups lb, web, worker, beat, redis, db, each named once; not so: ${join(", ", [for n, p in var.pools : n if !(length(p.groups) > 0 && length(distinct(p.groups)) == length(p.groups) && length(setsubtract(p.groups, ["lb", "web", "worker", "beat", "redis", "db"])) == 0)])}."
  }

  validation {
    condition     = alltrue([for p in values(var.pools) : trimspace(p.size) != ""])
    error_message = "Each pool needs a size (a server or instance type such as cx23 or t3.small)."
  }

  validation {
    condition     = alltrue([for g in ["lb", "web", "worker", "beat", "redis", "db"] : anytrue([for p in values(var.pools) : p.count > 0 && contains(p.groups, g)])])
    error_message = "Every inventory group needs at least one host; no pool with a count above 0 joins: ${join(", ", [for g in ["lb", "web", "worker", "beat", "redis", "db"] : g if !anytrue([for p in values(var.pools) : p.count > 0 && contains(p.groups, g)])])}."
  }

  validation {
    # Celery Beat schedules every periodic job; two Beat hosts would run each job twice.
    condition     = sum(concat([0], [for p in values(var.pools) : p.count if contains(p.groups, "beat")])) <= 1
    error_message = "Exactly one host must be in group beat (two would run every periodic job twice); the pools joining beat add up to ${sum(concat([0], [for p in values(var.pools) : p.count if contains(p.groups, "beat")]))}."
  }
}

variable "admin_user" {
  description = "The user cloud-init creates for Ansible (with the SSH keys and password-less sudo); it becomes the inventory's ansible_user."
  type        = string
  default     = "admin"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.admin_user)) && var.admin_user != "root"
    error_message = "admin_user must be a lowercase Unix user name other than root (root logins are turned off), such as admin."
  }
}

variable "ssh_public_keys" {
  description = "OpenSSH public key lines of the administrators (the content of ~/.ssh/id_ed25519.pub); cloud-init installs them for admin_user."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.ssh_public_keys) > 0
    error_message = "ssh_public_keys needs at least one key: password and root logins are off, a key is the only way in."
  }

  validation {
    # The pattern the common role checks, so a key Terraform accepts never fails the playbook.
    condition = alltrue([for k in var.ssh_public_keys :
    can(regex("^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\\.com) [A-Za-z0-9+/=]+( .*)?$", k))])
    error_message = "Each SSH key must be one OpenSSH public key line, such as \"ssh-ed25519 AAAA... alice@laptop\" (the content of ~/.ssh/id_ed25519.pub, not the private key)."
  }
}

variable "admin_cidrs" {
  description = "Networks (CIDR) of the administrators: the only sources the cloud firewall lets reach SSH (22)."
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

variable "network_cidr" {
  description = "Private network of the fleet (RFC 1918, /8 to /16). Hosts live in its subnet number 1, a /24 (10.0.1.0/24 for the default)."
  type        = string
  default     = "10.0.0.0/16"
  nullable    = false

  validation {
    # Internal services listen on these addresses: they must never be publicly routable.
    condition = try(anytrue([for range in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] :
      cidrhost("${split("/", var.network_cidr)[0]}/${split("/", range)[1]}", 0) == split("/", range)[0] &&
      tonumber(split("/", var.network_cidr)[1]) >= tonumber(split("/", range)[1]) &&
    tonumber(split("/", var.network_cidr)[1]) <= 16]), false)
    error_message = "network_cidr must be a private IPv4 network (inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16) of size /8 to /16, such as 10.0.0.0/16; got ${var.network_cidr}."
  }
}
