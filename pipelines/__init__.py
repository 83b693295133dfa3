"""Per-clip logic: manifests, decoding, geometry, scene flow, quality metrics, synthetic scenes, reports."""
