# Named after what takes them: the framebus-cloud ConfigMap's keys and the framebus-s3 Secret's
# (tests/infra/test_linode.py checks every key the manifests read has an output here).

output "kubeconfig" {
  description = "kubeconfig of the LKE cluster (terraform output -raw kubeconfig > ~/.kube/framebus)."
  value       = base64decode(linode_lke_cluster.framebus.kubeconfig)
  sensitive   = true
}

output "s3_endpoint" {
  description = "FRAMEBUS_S3_ENDPOINT: the buckets' S3 endpoint (the provider gives a host name)."
  value       = "https://${linode_object_storage_bucket.outputs.s3_endpoint}"
}

output "s3_bucket" {
  description = "FRAMEBUS_S3_BUCKET: videos, posters and batch manifests."
  value       = linode_object_storage_bucket.outputs.label
}

output "s3_models_bucket" {
  description = "Where the workers copy model checkpoints from."
  value       = linode_object_storage_bucket.models.label
}

output "s3_access_key" {
  description = "FRAMEBUS_S3_ACCESS_KEY (not secret by itself)."
  value       = linode_object_storage_key.services.access_key
}

output "s3_secret_key" {
  description = "FRAMEBUS_S3_SECRET_KEY."
  value       = linode_object_storage_key.services.secret_key
  sensitive   = true
}
