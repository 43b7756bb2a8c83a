"""The status page: what the daemon is doing and the pictures it sent (``GET /``).

``journal`` keeps the last deliveries and their pictures in ``state_dir``; ``record`` builds a
delivery's entry from the pipeline's objects; ``provider`` gathers the daemon's state for the
page; ``render`` turns it into HTML (Jinja2 templates in ``templates/``, also used by the demo's
static export); ``page`` serves it, with the UI token.
"""
