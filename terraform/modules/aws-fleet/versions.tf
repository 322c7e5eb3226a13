terraform {
  required_version = "~> 1.9"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.x: `domain = "vpc"` is the only way to ask for an Elastic IP in a VPC.
      version = "~> 6.0"
    }
  }
}
