terraform {
  # A Terraform still supported, the same floor for both clouds (terraform/README.md).
  required_version = "~> 1.15"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.x: `domain = "vpc"` is the only way to ask for an Elastic IP in a VPC.
      version = "~> 6.0"
    }
  }
}
