"""Flashduty-, Grafana- and Prometheus-compatible emulators, their runner and the demo.

Development and test tooling, not part of the product: it is installed with the project from
source (``pip install -e .``) but never copied into the container image. The product package
``sidecar`` only imports it lazily, in the ``demo`` and ``sandbox`` subcommands.
"""
