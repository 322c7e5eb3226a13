variable "name" {
  description = "Name of the environment (production, staging); prefixes every resource name, so environments can share a Hetzner Cloud project."
  type        = string
  nullable    = false
}

variable "location" {
  description = "Hetzner Cloud location of every server, the network subnet and the load balancers' Primary IPs (fsn1, nbg1, hel1, ash, hil, sin)."
  type        = string
  default     = "fsn1"
  nullable    = false

  validation {
    condition     = contains(["fsn1", "nbg1", "hel1", "ash", "hil", "sin"], var.location)
    error_message = "location must be one of fsn1, nbg1, hel1 (Germany, Finland), ash, hil (USA) or sin (Singapore)."
  }
}

variable "pools" {
  description = "Kinds of machine by pool name: count, inventory groups and size (a Hetzner server type such as cx23). Checked by the layout module; see its README."
  type = map(object({
    count  = number
    groups = list(string)
    size   = string
  }))
  nullable = false

  validation {
    condition     = alltrue([for p in values(var.pools) : can(regex("^[a-z]+[0-9]+[a-z]*$", p.size))])
    error_message = "Each pool's size must be a Hetzner server type such as cx23, cpx31 or cax21."
  }
}

variable "admin_user" {
  description = "The user cloud-init creates for Ansible, with the SSH keys and password-less sudo."
  type        = string
  default     = "admin"
  nullable    = false
}

variable "ssh_public_keys" {
  description = "OpenSSH public key lines of the administrators. Each becomes a Hetzner SSH key (so Hetzner mails no root password) and cloud-init installs them all for admin_user."
  type        = list(string)
  nullable    = false
}

variable "admin_cidrs" {
  description = "Networks (CIDR, IPv4 or IPv6) allowed to reach SSH; nothing else reaches port 22."
  type        = list(string)
  nullable    = false
}

variable "network_cidr" {
  description = "Private network of the fleet (RFC 1918, /8 to /16); servers get addresses from its subnet number 1 (10.0.1.0/24 for the default). Checked by the layout module."
  type        = string
  default     = "10.0.0.0/16"
  nullable    = false
}

variable "labels" {
  description = "Extra Hetzner labels on every resource that takes them (cost centre, owner)."
  type        = map(string)
  default     = {}
  nullable    = false
}
