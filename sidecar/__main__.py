"""``python -m sidecar`` → the CLI."""

from sidecar.cli import main

raise SystemExit(main())
