terraform {
  # Provider-free on purpose: the module only renders text, so `terraform test` runs it
  # offline. 1.9 is the oldest release whose validation and test features it relies on.
  required_version = "~> 1.9"
}
