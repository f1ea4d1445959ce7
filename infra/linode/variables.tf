variable "region" {
  description = "Linode region of the cluster and the buckets; it must offer the GPU type and Object Storage."
  type        = string
  default     = "us-ord"
}

variable "cluster_label" {
  description = "Name of the LKE cluster (and prefix of the Object Storage key's label)."
  type        = string
  default     = "framebus"
}

variable "k8s_version" {
  description = "Kubernetes minor version; infra/k8s is validated against the same one."
  type        = string
  default     = "1.33"
}

variable "cpu_pool_type" {
  description = "Linode type of the CPU pool: gateway, scheduler, metering, notifier, batch tracker, Prometheus, KEDA."
  type        = string
  default     = "g6-standard-4"
}

variable "cpu_pool_count" {
  description = "Nodes in the CPU pool (3: the scheduler's and the gateway's replicas on different nodes, with one to drain)."
  type        = number
  default     = 3
}

variable "gpu_pool_type" {
  description = "Linode type of the GPU pool: one generator worker per GPU."
  type        = string
  default     = "g2-gpu-rtx4000a1-m"
}

variable "gpu_pool_count" {
  description = "GPU nodes always up: the interactive and standard pools each keep one worker (batch may go to zero)."
  type        = number
  default     = 2
}

variable "gpu_pool_max_count" {
  description = "Most GPU nodes LKE's autoscaler adds as KEDA adds workers."
  type        = number
  default     = 10

  validation {
    condition     = var.gpu_pool_max_count >= var.gpu_pool_count
    error_message = "gpu_pool_max_count must be at least gpu_pool_count."
  }
}

variable "bucket_name" {
  description = "Bucket of videos, posters and batch manifests (FRAMEBUS_S3_BUCKET); bucket names are shared by every customer of a region."
  type        = string
  default     = "framebus-videos"
}

variable "models_bucket_name" {
  description = "Bucket of model checkpoints, one folder per model: the workers copy it at start."
  type        = string
  default     = "framebus-models"
}

variable "output_retention_days" {
  description = "Days a video, poster or manifest is kept before Object Storage deletes it."
  type        = number
  default     = 30

  # A batch manifest's links live up to 7 days (FRAMEBUS_BATCH_LINK_EXPIRY_S): keep what they point at.
  validation {
    condition     = var.output_retention_days >= 7
    error_message = "output_retention_days must be at least 7 (the longest a batch manifest's links live)."
  }
}
