"""Panel captures: ``service.CaptureService`` is the entry point.

The browser: ``browser`` (``BrowserManager``: the warm Chromium's lifecycle, relaunch, recycling,
liveness), ``launcher`` (which executable, flags, private directory, environment), ``pool``
(contexts prepared ahead and reused), ``lease`` (a capture's hold on a context), ``proc``
(Chromium's processes in ``/proc``). Grafana: ``urls`` (every URL built or parsed), ``auth``
(the ``Authorization`` value), ``dashboards`` (slug and titles from the API), ``readiness``
(when a page is ready, what it shows). ``page`` drives one page through a capture's steps,
``images`` encodes under the size cap and knows the content types, ``errors`` holds the classes.
"""
