# An LKE cluster for infra/k8s/overlays/gpu, and the Object Storage its services use.
# `terraform output` gives what the Kubernetes Secrets and the framebus-cloud ConfigMap take.

resource "linode_lke_cluster" "framebus" {
  label       = var.cluster_label
  k8s_version = var.k8s_version
  region      = var.region
  tags        = ["framebus"]

  # The services. The label is for anyone who wants to pin them; nothing needs it today.
  pool {
    type   = var.cpu_pool_type
    count  = var.cpu_pool_count
    labels = { "framebus.dev/pool" = "cpu" }
  }

  # The generator workers. The overlay's workers select this label and tolerate this taint;
  # nothing else tolerates it, so no service takes a GPU node's CPU or memory. The workers ask
  # for nvidia.com/gpu: check a GPU node lists it (kubectl describe node), else install NVIDIA's
  # device plugin, tolerating this taint.
  pool {
    type   = var.gpu_pool_type
    labels = { "framebus.dev/pool" = "gpu" }
    taint {
      key    = "nvidia.com/gpu"
      value  = "present"
      effect = "NoSchedule"
    }
    # KEDA adds workers; the autoscaler adds the nodes they wait for (pending pods).
    autoscaler {
      min = var.gpu_pool_count
      max = var.gpu_pool_max_count
    }
  }
}

# Outputs: videos, posters and batch manifests, deleted after the retention period.
resource "linode_object_storage_bucket" "outputs" {
  region = var.region
  label  = var.bucket_name

  # No prefix: the rule covers every key, the result-cache index under `_results/` included. The
  # workers stop serving an index entry after FRAMEBUS_RESULT_CACHE_TTL_DAYS (default 30, the
  # default here) and delete it; keep that at most output_retention_days, since an entry is of no
  # use once the video it points at has expired.
  lifecycle_rule {
    id                                     = "expire-outputs"
    enabled                                = true
    abort_incomplete_multipart_upload_days = 1
    expiration {
      days = var.output_retention_days
    }
  }
}

# Model checkpoints: kept until someone deletes them (no lifecycle rule).
resource "linode_object_storage_bucket" "models" {
  region = var.region
  label  = var.models_bucket_name
}

# The services' key, limited to the two buckets: write outputs, only read the models.
resource "linode_object_storage_key" "services" {
  label = "${var.cluster_label}-services"

  bucket_access {
    bucket_name = linode_object_storage_bucket.outputs.label
    region      = var.region
    permissions = "read_write"
  }

  bucket_access {
    bucket_name = linode_object_storage_bucket.models.label
    region      = var.region
    permissions = "read_only"
  }
}
