"""When a page is ready and what it shows (``capture.readiness``), fed by hand-made probes."""

from __future__ import annotations

import pytest

from sidecar.capture.errors import CaptureClass
from sidecar.capture.readiness import PageFacts, Probe, Readiness, classify, terminal_class

# --------------------------------------------------------------------------- readiness

SCENES_DONE = Probe(body=True, ready_state="complete", hash="1:1", scenes=True, running=0, mounted=1)


def feed(r: Readiness, probes: list[Probe], *, inflight: int = 0, query_seen: bool = False) -> list[bool]:
    return [
        r.update(p, inflight=inflight, query_seen=query_seen, now=r.started + 0.1 * i) for i, p in enumerate(probes)
    ]


def test_scenes_ready_after_queries_finish_and_dom_is_stable_twice() -> None:
    r = Readiness(whole_dashboard=False, started=0.0)
    running = Probe(body=True, ready_state="complete", hash="1:0", scenes=True, running=1, loading=1, mounted=1)
    drawn = Probe(body=True, ready_state="complete", hash="2:2", scenes=True, running=0, mounted=1)
    assert feed(r, [running, running, SCENES_DONE, drawn, drawn]) == [False, False, False, False, True]


def test_scenes_waits_for_in_flight_requests_and_loading_indicators() -> None:
    r = Readiness(whole_dashboard=False, started=0.0)
    assert feed(r, [SCENES_DONE] * 3, inflight=1) == [False] * 3
    assert "1 network request in flight" in r.waiting_for
    r = Readiness(whole_dashboard=False, started=0.0)
    spinner = Probe(body=True, ready_state="complete", hash="1:1", scenes=True, running=0, loading=1, mounted=1)
    assert feed(r, [spinner] * 3) == [False] * 3
    assert "loading indicator" in r.waiting_for


def test_scenes_grace_for_the_first_query() -> None:
    # a panel without a query (a text panel): ready once the first query's grace is over
    before_query = Probe(body=True, ready_state="complete", hash="1:1", scenes=True, running=None, mounted=1)
    r = Readiness(whole_dashboard=False, started=0.0, first_query_grace=3.0)
    assert not r.update(before_query, inflight=0, query_seen=False, now=1.0)
    assert not r.update(before_query, inflight=0, query_seen=False, now=2.9)
    assert r.waiting_for == "the first query to start"
    assert not r.update(before_query, inflight=0, query_seen=False, now=3.0)  # settled once
    assert r.update(before_query, inflight=0, query_seen=False, now=3.1)  # gave up waiting
    # a query seen on the network ends the grace at once
    r = Readiness(whole_dashboard=False, started=0.0)
    assert feed(r, [before_query, before_query], query_seen=True) == [False, True]


def test_legacy_solo_waits_for_panels_rendered() -> None:
    pending = Probe(body=True, ready_state="complete", hash="1:1", solo_count=1, panels_rendered=None, mounted=1)
    done = Probe(body=True, ready_state="complete", hash="2:2", solo_count=1, panels_rendered=1, mounted=1)
    r = Readiness(whole_dashboard=False, started=0.0)
    assert feed(r, [pending, pending, pending, done, done]) == [False, False, False, False, True]
    assert feed(Readiness(whole_dashboard=False, started=0.0), [pending] * 5) == [False] * 5


def test_legacy_dashboard_waits_for_visible_panels() -> None:
    half = Probe(body=True, ready_state="complete", hash="1:1", dash_panels=2, dash_rendered=1, mounted=2)
    full = Probe(body=True, ready_state="complete", hash="2:2", dash_panels=2, dash_rendered=2, mounted=2)
    r = Readiness(whole_dashboard=True, started=0.0)
    assert feed(r, [half, half, full, full]) == [False, False, False, True]
    assert feed(Readiness(whole_dashboard=True, started=0.0), [half] * 4) == [False] * 4


def test_changing_dom_is_not_ready_and_loading_document_is_not_ready() -> None:
    changing = [
        Probe(body=True, ready_state="complete", hash=f"{i}:0", scenes=True, running=0, mounted=1) for i in range(5)
    ]
    assert feed(Readiness(whole_dashboard=False, started=0.0), changing) == [False] * 5
    loading = Probe(body=True, ready_state="loading", hash="1:1", scenes=True, running=0)
    assert feed(Readiness(whole_dashboard=False, started=0.0), [loading] * 3) == [False] * 3
    assert feed(Readiness(whole_dashboard=False, started=0.0), [Probe()] * 3) == [False] * 3


def test_live_panel_is_taken_once_everything_else_was_settled_for_live_after() -> None:
    ticking = [
        Probe(body=True, ready_state="complete", hash=f"{i}:0", scenes=True, running=0, mounted=1) for i in range(20)
    ]
    r = Readiness(whole_dashboard=False, started=0.0, live_after=1.0)
    ready = feed(r, ticking)  # polls every 0.1 s
    assert ready.index(True) == 10  # settled from the first poll, 1 s later
    # never while loading: a spinner keeps the live grace from starting
    loading = [
        Probe(body=True, ready_state="complete", hash=f"{i}:0", scenes=True, running=0, mounted=1, loading=1)
        for i in range(20)
    ]
    assert not any(feed(Readiness(whole_dashboard=False, started=0.0), loading))


def test_floor_a_page_without_panel_or_query_never_becomes_ready_and_gives_up() -> None:
    empty = Probe(body=True, ready_state="complete", hash="1:1", app=True)
    r = Readiness(whole_dashboard=False, started=0.0, boot_grace=3.0)
    assert feed(r, [empty] * 25) == [False] * 25  # the renderer would have shot it at once
    assert r.waiting_for.startswith("a panel to appear")
    assert r.gave_up(empty, now=2.9) is None
    cls, detail = r.gave_up(empty, now=3.0) or (None, "")
    assert cls is CaptureClass.NOT_LOADED and "no panel within 3s" in detail
    # Grafana booted but shows an error alert instead of the panel, in any language
    french = Probe(body=True, ready_state="complete", hash="1:1", app=True, alert_text="Panneau introuvable")
    assert r.gave_up(french, now=3.0) == (
        CaptureClass.NOT_FOUND,
        "Grafana shows an error instead of the panel: Panneau introuvable",
    )
    # the app never ran: the detail says what to check
    cls, detail = r.gave_up(Probe(body=True, ready_state="complete"), now=3.0) or (None, "")
    assert cls is CaptureClass.NOT_LOADED and "serve_from_sub_path" in detail and "root_url" in detail
    # a query seen is enough (a panel still loading counts as booted)
    r = Readiness(whole_dashboard=False, started=0.0)
    feed(r, [empty], query_seen=True)
    assert r.gave_up(empty, now=10.0) is None


def test_grafana_failed_to_load_its_application_files_is_terminal() -> None:
    failed = PageFacts(
        url=PAGE,
        probe=Probe(body=True, ready_state="complete", boot_failed=True),
        asset_failure="HTTP 404 on /grafana/public/build/app.js",
    )
    cls, detail = terminal_class(failed) or (None, "")
    assert cls is CaptureClass.NOT_LOADED
    assert "HTTP 404 on /grafana/public/build/app.js" in detail and "root_url" in detail


def test_probe_from_js_ignores_unknown_keys_and_junk() -> None:
    assert Probe.from_js({"body": True, "hash": "1:1", "extra": 5}) == Probe(body=True, hash="1:1")
    assert Probe.from_js(None) == Probe()


# --------------------------------------------------------------------------- classification

PAGE = "http://grafana:3000/d-solo/abc?panelId=4"


@pytest.mark.parametrize(
    ("facts", "cls", "words"),
    [
        (PageFacts(url="http://grafana:3000/login"), CaptureClass.LOGIN, "login page"),
        (PageFacts(url="http://grafana:3000/grafana/login/"), CaptureClass.LOGIN, "login page"),
        (PageFacts(url=PAGE, probe=Probe(login=True)), CaptureClass.LOGIN, "login page"),
        (PageFacts(url=PAGE, auth_failure="HTTP 401 on /api/ds/query"), CaptureClass.LOGIN, "HTTP 401"),
        (PageFacts(url=PAGE, document_status=403), CaptureClass.LOGIN, "HTTP 403"),
        (PageFacts(url=PAGE, document_status=404), CaptureClass.NOT_FOUND, "404"),
        (PageFacts(url=PAGE, probe=Probe(not_found=True)), CaptureClass.NOT_FOUND, "not found"),
        (PageFacts(url=PAGE, document_status=502), CaptureClass.ERROR, "HTTP 502"),
    ],
)
def test_terminal_classes(facts: PageFacts, cls: CaptureClass, words: str) -> None:
    early = terminal_class(facts)
    assert early is not None and early[0] is cls and words in early[1]
    assert classify(facts) == early


def test_page_classes_after_ready() -> None:
    ok = PageFacts(url=PAGE, document_status=200, probe=Probe(body=True))
    assert terminal_class(ok) is None
    assert classify(ok) == (CaptureClass.OK, "rendered")
    no_data = PageFacts(url=PAGE, document_status=200, probe=Probe(no_data=True))
    assert classify(no_data)[0] is CaptureClass.NO_DATA
    # an error wins over the "No data" the errored panel also shows
    broken = PageFacts(url=PAGE, probe=Probe(no_data=True, panel_error=True, error_text="boom"))
    assert classify(broken) == (CaptureClass.PANEL_ERROR, "the panel shows an error: boom")


def test_panel_error_text_is_stripped_of_credentials_and_shortened() -> None:
    text = 'Post "https://user:hunter2@prom:9090/api/v1/query?token=abc": dial tcp ' + "x" * 400
    cls, detail = classify(PageFacts(url=PAGE, probe=Probe(panel_error=True, error_text=text)))
    assert cls is CaptureClass.PANEL_ERROR
    assert "hunter2" not in detail and "token=abc" not in detail and "user:" not in detail
    assert "https://prom:9090/api/v1/query" in detail
    assert len(detail) < 220
