terraform {
  # Provider-free on purpose: both fleet modules share this logic, and `terraform test`
  # checks it offline, where the cloud providers cannot be downloaded.
  required_version = "~> 1.9"
}
