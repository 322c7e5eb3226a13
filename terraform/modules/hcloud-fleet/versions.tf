terraform {
  # The oldest Terraform the hcloud provider's current releases support (terraform/README.md).
  required_version = "~> 1.15"

  required_providers {
    hcloud = {
      source = "hetznercloud/hcloud"
      # 1.67 made `location` the only way to place servers and Primary IPs (the API dropped
      # datacenters), which is what this module uses.
      version = "~> 1.67"
    }
  }
}
