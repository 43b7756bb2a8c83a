"""Every metric the daemon exports, created against one injected ``CollectorRegistry``.

Names carry the ``flashduty_sidecar_`` prefix; label values are bounded (rule names, classes,
outcomes, never URLs or keys).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "flashduty_sidecar_"
_STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60)


class Metrics:
    """Holds the collectors; pass one instance to every component (tests make their own)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = PREFIX
        # capture
        self.captures = Counter(f"{p}captures_total", "Panel captures by outcome class", ["cls"], registry=r)
        self.capture_seconds = Histogram(
            f"{p}capture_duration_seconds",
            "Whole capture, navigation to encoded image",
            ["cls"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.capture_step_seconds = Histogram(
            f"{p}capture_step_duration_seconds",
            "Capture steps (navigate, wait_ready, screenshot, encode)",
            ["step"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.capture_cache = Counter(
            f"{p}capture_cache_total", "Capture cache lookups (hit, shared, miss)", ["result"], registry=r
        )
        self.browser_restarts = Counter(
            f"{p}browser_restarts_total", "Browser (re)launches by reason", ["reason"], registry=r
        )
        self.browser_rss = Gauge(
            f"{p}browser_rss_bytes", "Memory of all Chromium processes (PSS, RSS where PSS is unavailable)", registry=r
        )
        self.captures_in_flight = Gauge(f"{p}captures_in_flight", "Captures running now", registry=r)
        # flashduty
        self.uploads = Counter(f"{p}uploads_total", "Image uploads by outcome", ["outcome"], registry=r)
        self.pushes = Counter(f"{p}pushes_total", "Alert pushes by outcome", ["outcome"], registry=r)
        self.http_429 = Counter(f"{p}rate_limited_total", "429 answers from Flashduty", ["endpoint"], registry=r)
        self.image_cache = Counter(
            f"{p}image_cache_total", "sha256→image_key lookups (hit, shared, miss)", ["result"], registry=r
        )
        self.request_seconds = Histogram(
            f"{p}flashduty_request_duration_seconds",
            "Flashduty HTTP requests",
            ["endpoint"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        # delivery
        self.queue_depth = Gauge(f"{p}outbox_pending", "Events waiting in the outbox", registry=r)
        self.oldest_event_age = Gauge(
            f"{p}outbox_oldest_event_age_seconds", "Age of the oldest undelivered event", registry=r
        )
        self.dead_letters = Gauge(f"{p}dead_letters", "Events in the dead-letter table", registry=r)
        self.alerts_delivered = Counter(
            f"{p}alerts_delivered_total",
            "Alert events delivered, by status and picture outcome",
            ["status", "pictures"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            f"{p}delivery_duration_seconds",
            "From event creation to Flashduty accepting the push",
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        # rules
        self.rule_evaluations = Counter(f"{p}rule_evaluations_total", "Rule evaluations", ["rule"], registry=r)
        self.rule_failures = Counter(
            f"{p}rule_evaluation_failures_total", "Failed rule evaluations", ["rule"], registry=r
        )
        self.rule_skipped = Counter(
            f"{p}rule_evaluations_skipped_total",
            "Evaluations skipped (overrun or missed)",
            ["rule"],
            registry=r,
        )
        self.alerts_firing = Gauge(f"{p}alerts_firing", "Alert instances firing", ["rule"], registry=r)
        self.template_errors = Counter(f"{p}template_errors_total", "Template errors", ["rule"], registry=r)
        self.webhook_requests = Counter(
            f"{p}webhook_requests_total", "Webhook requests by outcome", ["outcome"], registry=r
        )
        self.alerts_api_requests = Counter(
            f"{p}alerts_api_requests_total", "POST /api/v2/alerts requests by outcome", ["outcome"], registry=r
        )
        # high availability (ha.mode kubernetes)
        self.leader = Gauge(f"{p}leader", "1 while this replica leads (and may send), else 0", registry=r)
        self.leader_transitions = Counter(
            f"{p}leader_transitions_total", "Changes of the Lease holder seen by this replica", registry=r
        )
        # process
        self.config_reloads = Counter(f"{p}config_reloads_total", "Config reloads", ["outcome"], registry=r)
        self.up = Gauge(f"{p}ready", "1 when the daemon is ready (the same checks as /readyz)", registry=r)
        self.background_errors = Counter(
            f"{p}background_errors_total", "Background jobs that ended with an exception", ["job"], registry=r
        )
