terraform {
  # A Terraform still supported, the same floor for both clouds (terraform/README.md).
  required_version = "~> 1.15"

  required_providers {
    hcloud = {
      source  = "hetznercloud/hcloud"
      version = "~> 1.67"
    }
    local = {
      source  = "hashicorp/local"
      version = "~> 2.5"
    }
  }
}

# The API token comes from the HCLOUD_TOKEN environment variable, never from a file in git.
provider "hcloud" {}
