"""Alerts pushed to the sidecar (webhooks), as opposed to the rules it evaluates itself."""
