# Pinned: a provider upgrade is a reviewed change (tests/infra/test_linode.py refuses a range).
terraform {
  required_version = ">= 1.5.0"
  required_providers {
    linode = {
      source  = "linode/linode"
      version = "3.13.0"
    }
  }
}

# The API token comes from LINODE_TOKEN. Bucket lifecycle rules need Object Storage keys of
# their own: the provider makes short-lived ones for that (the services' key below is limited
# to the buckets, and cannot change their configuration).
provider "linode" {
  obj_use_temp_keys = true
}
