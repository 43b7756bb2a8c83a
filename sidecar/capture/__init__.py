"""Panel captures: ``service.CaptureService`` is the entry point.

``browser`` (Chromium lifecycle), ``grafana`` (URLs, auth, readiness, classes), ``page`` (driving
one page through the steps), ``images`` (encoding under the size cap).
"""
