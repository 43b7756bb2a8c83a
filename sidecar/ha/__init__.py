"""One sender across the Grafana pod's replicas: leader election on a Kubernetes Lease (``ha.mode``)."""
