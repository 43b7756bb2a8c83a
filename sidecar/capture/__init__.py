"""Panel captures: ``service.CaptureService`` is the entry point.

The service: ``service`` (the facade: lifecycle, reload, stats, singleflight, bounded
concurrency), ``cache`` (pictures reused for ``capture.cache_ttl``), ``run`` (one capture's
named, timed steps, its metrics and log line), ``result`` (``CaptureResult``), ``oneshot`` (one
capture from the config, for the CLI). The browser: ``browser`` (``BrowserManager``: the warm
Chromium's lifecycle, relaunch, recycling, liveness), ``supervisor`` (which browser is current,
background relaunch), ``outage`` (how long it has been down), ``launcher`` (which executable,
flags, private directory, environment), ``pool`` (contexts prepared ahead and reused), ``options``
(what a context is opened with, which pool fits), ``lease`` (a capture's hold on a context),
``proc`` (Chromium's processes in ``/proc``). Grafana: ``urls`` (every URL built or parsed),
``auth`` (the ``Authorization`` value), ``dashboards`` (slug and titles from the API),
``readiness`` (when a page is ready, what it shows). ``page`` drives one page through
navigation, readiness and screenshot, ``network`` tracks its requests and routes credentials,
``images`` encodes under the size cap and knows the content types, ``errors`` holds the classes.
"""
