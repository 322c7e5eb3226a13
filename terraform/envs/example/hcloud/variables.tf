variable "environment" {
  description = "Name of this deployment (production, staging): prefixes the cloud resources and names the inventory directory inventory/<environment>/."
  type        = string
  nullable    = false

  validation {
    # inventory/example and inventory/local belong to the repository itself.
    condition     = !contains(["example", "local"], var.environment)
    error_message = "environment cannot be example or local: inventory/example and inventory/local belong to the repository. Choose a name such as production or staging."
  }
}

variable "location" {
  description = "Hetzner Cloud location of the fleet: fsn1, nbg1 (Germany), hel1 (Finland), ash, hil (USA) or sin (Singapore)."
  type        = string
  default     = "fsn1"
  nullable    = false
}

variable "pools" {
  description = "Kinds of machine: by pool name, how many (count), which inventory groups they join and their Hetzner server type (size). The default is the layout of inventory/example/hosts.yml; terraform.tfvars.example shows the single-VM layout."
  type = map(object({
    count  = number
    groups = list(string)
    size   = string
  }))
  default = {
    lb     = { count = 1, groups = ["lb"], size = "cx23" }
    web    = { count = 2, groups = ["web"], size = "cx33" }
    worker = { count = 2, groups = ["worker"], size = "cx23" }
    beat   = { count = 1, groups = ["beat"], size = "cx23" }
    redis  = { count = 1, groups = ["redis"], size = "cx23" }
    db     = { count = 1, groups = ["db"], size = "cx33" }
  }
  nullable = false
}

variable "admin_user" {
  description = "The user Ansible logs in as; cloud-init creates it with your keys and password-less sudo."
  type        = string
  default     = "admin"
  nullable    = false
}

variable "ssh_public_keys" {
  description = "Your administrators' OpenSSH public keys (the content of ~/.ssh/id_ed25519.pub)."
  type        = list(string)
  nullable    = false
}

variable "admin_cidrs" {
  description = "Networks (CIDR) your administrators and Ansible connect from; only they reach SSH."
  type        = list(string)
  nullable    = false
}

variable "network_cidr" {
  description = "Private network of the fleet (RFC 1918)."
  type        = string
  default     = "10.0.0.0/16"
  nullable    = false
}
