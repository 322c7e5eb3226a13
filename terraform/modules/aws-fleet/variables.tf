variable "name" {
  description = "Name of the environment (production, staging); prefixes every resource name, so environments can share an AWS account and region."
  type        = string
  nullable    = false
}

variable "pools" {
  description = "Kinds of machine by pool name: count, inventory groups and size (an EC2 instance type such as t3.small). Checked by the layout module; see its README."
  type = map(object({
    count  = number
    groups = list(string)
    size   = string
  }))
  nullable = false

  validation {
    condition     = alltrue([for p in values(var.pools) : can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", p.size))])
    error_message = "Each pool's size must be an EC2 instance type such as t3.small or m7i.large (amd64: the Debian image looked up is the amd64 one)."
  }
}

variable "admin_user" {
  description = "The user cloud-init creates for Ansible, with the SSH keys and password-less sudo (Debian's own images call theirs admin too)."
  type        = string
  default     = "admin"
  nullable    = false
}

variable "ssh_public_keys" {
  description = "OpenSSH public key lines of the administrators; cloud-init installs them all for admin_user (an EC2 key pair would hold only one)."
  type        = list(string)
  nullable    = false
}

variable "admin_cidrs" {
  description = "Networks (CIDR) allowed to reach SSH; nothing else reaches port 22. The VPC is IPv4-only, so IPv6 entries are left to the hosts' own firewall and at least one IPv4 network is needed."
  type        = list(string)
  nullable    = false
}

variable "network_cidr" {
  description = "CIDR of the VPC (RFC 1918, /8 to /16); hosts live in its subnet number 1 (10.0.1.0/24 for the default). Checked by the layout module."
  type        = string
  default     = "10.0.0.0/16"
  nullable    = false
}

variable "availability_zone" {
  description = "Availability zone of the subnet (such as eu-central-1a); null lets AWS choose one."
  type        = string
  default     = null

  validation {
    condition     = var.availability_zone == null || can(regex("^[a-z]{2}(-[a-z]+)+-[0-9][a-z]$", var.availability_zone))
    error_message = "availability_zone must be a zone name such as eu-central-1a, or null."
  }
}

variable "root_volume_gb" {
  description = "Size in GiB of each host's encrypted root volume (gp3)."
  type        = number
  default     = 20
  nullable    = false

  validation {
    condition     = var.root_volume_gb >= 8 && var.root_volume_gb <= 16384 && floor(var.root_volume_gb) == var.root_volume_gb
    error_message = "root_volume_gb must be a whole number of GiB from 8 (Debian's image) to 16384."
  }
}

variable "egress_tcp_ports" {
  description = "TCP ports hosts may reach on the Internet: 80 and 443 serve Debian's mirrors, PyPI, ACME and the LLM provider. Add 587 for mail or a self-hosted model server's port."
  type        = list(number)
  default     = [80, 443]
  nullable    = false

  validation {
    condition     = alltrue([for p in var.egress_tcp_ports : p >= 1 && p <= 65535 && floor(p) == p])
    error_message = "egress_tcp_ports must be TCP port numbers from 1 to 65535."
  }
}

variable "flow_log_bucket_arn" {
  description = "ARN of an S3 bucket (or a folder in one) that receives the VPC's flow logs; null records none."
  type        = string
  default     = null

  validation {
    condition     = var.flow_log_bucket_arn == null || can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", var.flow_log_bucket_arn))
    error_message = "flow_log_bucket_arn must be an S3 bucket ARN such as arn:aws:s3:::example-flow-logs, or null."
  }
}
