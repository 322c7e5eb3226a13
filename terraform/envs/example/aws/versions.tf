terraform {
  # A Terraform still supported, the same floor for both clouds (terraform/README.md).
  required_version = "~> 1.15"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    local = {
      source  = "hashicorp/local"
      version = "~> 2.5"
    }
  }
}

# Credentials come from the usual AWS chain (AWS_PROFILE, or AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY), never from a file in git.
provider "aws" {
  region = var.region

  default_tags {
    tags = { Project = "parley", Environment = var.environment }
  }
}
