"""The model registry: content-addressed blobs, manifests per name:version, aliases, lineage."""
