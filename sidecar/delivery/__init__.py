"""flashduty-sidecar."""
