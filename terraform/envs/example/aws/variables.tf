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

variable "region" {
  description = "AWS region of the fleet, such as eu-central-1."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-central-1 or us-east-2."
  }
}

variable "pools" {
  description = "Kinds of machine: by pool name, how many (count), which inventory groups they join and their EC2 instance type (size). The default is the layout of inventory/example/hosts.yml; terraform.tfvars.example shows the single-VM layout."
  type = map(object({
    count  = number
    groups = list(string)
    size   = string
  }))
  default = {
    lb     = { count = 1, groups = ["lb"], size = "t3.small" }
    web    = { count = 2, groups = ["web"], size = "t3.medium" }
    worker = { count = 2, groups = ["worker"], size = "t3.small" }
    beat   = { count = 1, groups = ["beat"], size = "t3.small" }
    redis  = { count = 1, groups = ["redis"], size = "t3.small" }
    db     = { count = 1, groups = ["db"], size = "t3.medium" }
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
  description = "Networks (CIDR) your administrators and Ansible connect from; only they reach SSH. The VPC is IPv4-only: list at least one IPv4 network."
  type        = list(string)
  nullable    = false
}

variable "network_cidr" {
  description = "CIDR of the VPC (RFC 1918)."
  type        = string
  default     = "10.0.0.0/16"
  nullable    = false
}

variable "root_volume_gb" {
  description = "Size in GiB of each host's encrypted root volume."
  type        = number
  default     = 20
  nullable    = false
}

variable "flow_log_bucket_arn" {
  description = "ARN of an S3 bucket for the VPC's flow logs; null records none. Needs log delivery permissions beyond AmazonEC2FullAccess (README.md, step 2)."
  type        = string
  default     = null
}
