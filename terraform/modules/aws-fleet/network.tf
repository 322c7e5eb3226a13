resource "aws_vpc" "fleet" {
  cidr_block           = module.layout.network_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = { Name = var.name }

  lifecycle {
    precondition {
      # The VPC has no IPv6, so only IPv4 admin networks can reach SSH through AWS.
      condition     = length(module.layout.admin_cidrs_ipv4) > 0
      error_message = "admin_cidrs has no IPv4 network, and this VPC is IPv4-only: nobody could reach SSH. Add your administrators' IPv4 network (such as 198.51.100.0/24)."
    }
  }
}

# Flow logs go to the site's own S3 bucket when it names one: retention and cost are its call.
resource "aws_flow_log" "fleet" {
  count = var.flow_log_bucket_arn == null ? 0 : 1

  vpc_id               = aws_vpc.fleet.id
  traffic_type         = "ALL"
  log_destination_type = "s3"
  log_destination      = var.flow_log_bucket_arn
  tags                 = { Name = var.name }
}

resource "aws_subnet" "fleet" {
  vpc_id            = aws_vpc.fleet.id
  cidr_block        = module.layout.subnet_cidr
  availability_zone = var.availability_zone
  # Addresses are asked for per instance, where the reason is written down.
  map_public_ip_on_launch = false
  tags                    = { Name = var.name }
}

resource "aws_internet_gateway" "fleet" {
  vpc_id = aws_vpc.fleet.id
  tags   = { Name = var.name }
}

resource "aws_route_table" "fleet" {
  vpc_id = aws_vpc.fleet.id
  tags   = { Name = var.name }

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.fleet.id
  }
}

resource "aws_route_table_association" "fleet" {
  subnet_id      = aws_subnet.fleet.id
  route_table_id = aws_route_table.fleet.id
}

# The VPC's default security group, emptied: an instance that ends up in it reaches nothing.
resource "aws_default_security_group" "fleet" {
  vpc_id = aws_vpc.fleet.id
  tags   = { Name = "${var.name}-default-unused" }
}
