"""The Flashduty sandbox, exercised over real loopback HTTP (sidecar_sandbox/flashduty.py).

The limiter runs on an injected fake clock and alert times on a fake wall clock, so the rate
limit and merge tests are deterministic and never sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from PIL import Image

from sidecar_sandbox.flashduty import FlashdutySandbox
from sidecar_sandbox.flashduty_images import MAX_IMAGE_BYTES
from tests.support.wait import eventually

INTEGRATION_KEY = "it-key-one"
OTHER_KEY = "it-key-two"
APP_KEY = "app-key-one"
T0 = 1_750_000_000
DAY = 86400
ITEM_FIELDS = {
    "alert_id",
    "integration_id",
    "channel_id",
    "account_id",
    "title",
    "alert_severity",
    "alert_status",
    "start_time",
    "last_time",
    "end_time",
    "labels",
    "ever_muted",
    "created_at",
    "updated_at",
    "integration_name",
    "integration_type",
    "channel_name",
    "event_cnt",
}


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]
    text: str
    raw: bytes


@dataclass
class Harness:
    sandbox: FlashdutySandbox
    session: aiohttp.ClientSession
    url: str
    clock: FakeClock
    wall: FakeClock

    async def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        async with self.session.request(method, self.url + path, **kwargs) as resp:
            raw = await resp.read()
            text = raw.decode("utf-8", errors="replace")
            body = json.loads(text) if resp.content_type == "application/json" else None
            return Reply(resp.status, body, dict(resp.headers), text, raw)

    async def upload(
        self,
        data: bytes,
        *,
        key: str | None = INTEGRATION_KEY,
        filename: str | None = "shot.png",
        field: str = "image",
        content_type: str = "image/png",
    ) -> Reply:
        with aiohttp.MultipartWriter("form-data") as writer:
            part = writer.append(io.BytesIO(data), {"Content-Type": content_type})
            if filename:
                part.set_content_disposition("form-data", name=field, filename=filename)
            else:
                part.set_content_disposition("form-data", name=field)
        return await self.request("POST", "/push/image/upload", params=_key(key), data=writer)

    async def push(self, body: Any, *, key: str | None = INTEGRATION_KEY) -> Reply:
        return await self.request("POST", "/event/push/alert/standard", params=_key(key), json=body)

    async def list_alerts(self, body: Any, *, app_key: str | None = APP_KEY) -> Reply:
        params = {"app_key": app_key} if app_key is not None else {}
        return await self.request("POST", "/alert/list", params=params, json=body)

    async def state(self) -> dict[str, Any]:
        reply = await self.request("GET", "/_sandbox/state")
        assert reply.status == 200
        state: dict[str, Any] = reply.body
        return state


def _key(key: str | None) -> dict[str, str]:
    return {"integration_key": key} if key is not None else {}


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    async with contextlib.AsyncExitStack() as stack:

        async def _start(**overrides: Any) -> Harness:
            clock, wall = FakeClock(1000.0), FakeClock(T0)
            kwargs: dict[str, Any] = {
                "integration_keys": (INTEGRATION_KEY, OTHER_KEY),
                "app_keys": (APP_KEY,),
                "clock": clock,
                "wall": wall,
            }
            sandbox = FlashdutySandbox(**(kwargs | overrides))
            url = await stack.enter_async_context(sandbox.serve())
            session = await stack.enter_async_context(aiohttp.ClientSession())
            return Harness(sandbox, session, url, clock, wall)

        yield _start


@pytest.fixture
async def fd(start: Start) -> Harness:
    return await start()


def make_image(fmt: str, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buf, format=fmt)
    return buf.getvalue()


def event(title: str = "disk full", status: str = "Critical", **fields: Any) -> dict[str, Any]:
    return {"title_rule": title, "event_status": status, **fields}


def the_alert(state: dict[str, Any], alert_key: str) -> dict[str, Any]:
    matches = [a for a in state["alerts"] if a["alert_key"] == alert_key]
    assert len(matches) == 1, matches
    alert: dict[str, Any] = matches[0]
    return alert


# ---- envelope and routing ------------------------------------------------------------------


async def test_envelope_and_request_id_header(fd: Harness) -> None:
    ok = await fd.upload(make_image("PNG"))
    bad = await fd.upload(make_image("PNG"), key="nope")

    assert ok.status == 200 and set(ok.body) == {"request_id", "data"}
    assert bad.status == 401 and set(bad.body) == {"request_id", "error"}
    assert bad.body["error"]["code"] == "Unauthorized" and bad.body["error"]["message"]
    for reply in (ok, bad):
        assert re.fullmatch(r"[0-9a-f]{32}", reply.body["request_id"])
        assert reply.headers["Flashcat-Request-Id"] == reply.body["request_id"]
    assert ok.body["request_id"] != bad.body["request_id"]


async def test_unknown_route_and_wrong_method_use_the_envelope(fd: Harness) -> None:
    missing = await fd.request("GET", "/no/such/route")
    wrong = await fd.request("GET", "/event/push/alert/standard", params=_key(INTEGRATION_KEY))

    assert missing.status == 404 and missing.body["error"]["code"] == "RouteNotFound"
    assert wrong.status == 405 and wrong.body["error"]["code"] == "MethodNotAllowed"
    assert "POST" in wrong.headers["Allow"]
    for reply in (missing, wrong):
        assert reply.headers["Flashcat-Request-Id"] == reply.body["request_id"]


# ---- image upload ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("GIF", "image/gif"),
        ("TIFF", "image/tiff"),
        ("BMP", "image/bmp"),
        ("ICO", "image/x-icon"),
    ],
)
async def test_upload_sniffs_the_format_from_the_bytes(fd: Harness, fmt: str, content_type: str) -> None:
    data = make_image(fmt)
    reply = await fd.upload(data, filename="notes.txt", content_type="text/plain")

    assert reply.status == 200, reply.text
    key = reply.body["data"]["image_key"]
    served = await fd.request("GET", f"/_sandbox/images/{key}")
    assert served.headers["Content-Type"] == content_type and served.raw == data


@pytest.mark.parametrize("data", [b"just some text", b"BMW is a car, not a bitmap", b""])
async def test_upload_rejects_bytes_that_are_not_an_image(fd: Harness, data: bytes) -> None:
    reply = await fd.upload(data, filename="graph.png", content_type="image/png")

    assert reply.status == 400 and reply.body["error"]["code"] == "InvalidParameter"
    assert (await fd.state())["images"] == []


async def test_upload_needs_a_file_field_named_image(fd: Harness) -> None:
    png = make_image("PNG")
    wrong_field = await fd.upload(png, field="file")
    no_filename = await fd.upload(png, filename=None)
    not_multipart = await fd.request(
        "POST", "/push/image/upload", params=_key(INTEGRATION_KEY), data=png, headers={"Content-Type": "image/png"}
    )

    for reply in (wrong_field, no_filename, not_multipart):
        assert reply.status == 400 and reply.body["error"]["code"] == "InvalidParameter"


async def test_upload_caps_size_at_5_mb(fd: Harness) -> None:
    png_header = make_image("PNG")[:16]
    at_cap = png_header + b"\0" * (MAX_IMAGE_BYTES - len(png_header))
    over = at_cap + b"\0"

    assert (await fd.upload(at_cap)).status == 200
    reply = await fd.upload(over)
    assert reply.status == 400 and reply.body["error"]["code"] == "InvalidParameter"
    assert "5 MB" in reply.body["error"]["message"]


async def test_identical_uploads_share_one_key(fd: Harness) -> None:
    red, blue = make_image("PNG", (255, 0, 0)), make_image("PNG", (0, 0, 255))
    first, again, other = [(await fd.upload(data)).body["data"]["image_key"] for data in (red, red, blue)]

    assert first == again != other
    assert first.startswith("img_") and len(first) <= 256
    state = await fd.state()
    assert state["uploads"] == 3
    assert {image["image_key"]: image["uploads"] for image in state["images"]} == {first: 2, other: 1}


async def test_upload_accepts_any_integration_key_of_the_account_only(fd: Harness) -> None:
    png = make_image("PNG")
    assert (await fd.upload(png, key=OTHER_KEY)).status == 200
    for key in (None, "", "not-a-key"):
        reply = await fd.upload(png, key=key)
        assert reply.status == 401 and reply.body["error"]["code"] == "Unauthorized"


async def test_upload_limit_5_per_second_per_account_and_rejections_do_not_count(fd: Harness) -> None:
    png = make_image("PNG")

    async def burst(n: int) -> list[int]:
        keys = (INTEGRATION_KEY, OTHER_KEY)  # two integrations, one account
        return [(await fd.upload(png, key=keys[i % 2])).status for i in range(n)]

    assert await burst(6) == [200] * 5 + [429]
    fd.clock.advance(0.5)
    rejected = await fd.upload(png)
    assert rejected.status == 429 and rejected.body["error"]["code"] == "RequestTooFrequently"
    fd.clock.advance(0.5)  # the t=0 requests leave the window; the rejected one at 0.5 never entered
    assert await burst(6) == [200] * 5 + [429]

    limits = (await fd.state())["limits"]["upload"]
    assert list(limits["scopes"]) == ["account"]
    assert limits["scopes"]["account"] == {
        "accepted": 10,
        "rejected": 3,
        "max_accepted_in_second": 5,
        "max_accepted_in_minute": 10,
        "max_requests_in_second": 7,
        "max_requests_in_minute": 13,
    }


async def test_upload_limit_50_per_minute_is_an_exact_sliding_window(fd: Harness) -> None:
    png = make_image("PNG")
    start = fd.clock.now
    for second in range(10):
        fd.clock.now = start + second
        assert [(await fd.upload(png)).status for _ in range(5)] == [200] * 5

    fd.clock.now = start + 10
    assert (await fd.upload(png)).status == 429
    fd.clock.now = start + 59.5
    assert (await fd.upload(png)).status == 429
    fd.clock.now = start + 60  # the five accepted at `start` slide out
    assert [(await fd.upload(png)).status for _ in range(6)] == [200] * 5 + [429]

    state = await fd.state()
    account = state["limits"]["upload"]["scopes"]["account"]
    assert account["max_accepted_in_minute"] == 50 and account["max_accepted_in_second"] == 5
    assert state["http_429"]["upload"] == 3 and state["endpoints"]["upload"]["rate_limited"] == 3


async def test_time_scale_shrinks_the_windows(start: Start) -> None:
    fd = await start(time_scale=10, upload_per_minute=6)
    png = make_image("PNG")
    base = fd.clock.now

    assert [(await fd.upload(png)).status for _ in range(6)] == [200] * 5 + [429]
    fd.clock.now = base + 0.09
    assert (await fd.upload(png)).status == 429
    fd.clock.now = base + 0.1  # the "second" is 0.1 s
    assert [(await fd.upload(png)).status for _ in range(2)] == [200, 429]  # the "minute" is full
    fd.clock.now = base + 5.99
    assert (await fd.upload(png)).status == 429
    fd.clock.now = base + 6.0  # the "minute" is 6 s
    assert (await fd.upload(png)).status == 200

    limits = (await fd.state())["limits"]["upload"]
    assert limits["second_window_seconds"] == pytest.approx(0.1)
    assert limits["minute_window_seconds"] == pytest.approx(6.0)


async def test_default_clock_is_real_time() -> None:
    sandbox = FlashdutySandbox()
    png = make_image("PNG")
    async with sandbox.serve() as url, aiohttp.ClientSession() as session:

        async def upload() -> int:
            form = aiohttp.FormData()
            form.add_field("image", png, filename="a.png")
            async with session.post(
                f"{url}/push/image/upload", params={"integration_key": "sandbox-integration-key"}, data=form
            ) as resp:
                return resp.status

        statuses = await asyncio.gather(*(upload() for _ in range(6)))  # at once: one real second holds them
    assert sorted(statuses) == [200] * 5 + [429]


# ---- push: validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"event_status": "Critical"}, id="no-title_rule"),
        pytest.param({"title_rule": "", "event_status": "Critical"}, id="empty-title_rule"),
        pytest.param({"title_rule": "x"}, id="no-event_status"),
        pytest.param(event(status="critical"), id="status-is-case-sensitive"),
        pytest.param(event(status="Error"), id="unknown-status"),
        pytest.param(event(labels={f"k{i}": "v" for i in range(51)}), id="51-labels"),
        pytest.param(event(labels={"k" * 129: "v"}), id="label-key-129"),
        pytest.param(event(labels={"k": 1}), id="label-value-not-string"),
        pytest.param(event(status="Ok"), id="Ok-without-alert_key"),
        pytest.param(event(alert_key="k" * 256), id="alert_key-256"),
        pytest.param(event(images={"src": "img_x"}), id="images-not-array"),
        pytest.param(event(images=[{"alt": "no src"}]), id="image-without-src"),
        pytest.param([event()], id="body-not-object"),
    ],
)
async def test_push_rejects_invalid_events(fd: Harness, body: Any) -> None:
    reply = await fd.push(body)

    assert reply.status == 400 and reply.body["error"]["code"] == "InvalidParameter", reply.text
    assert (await fd.state())["alerts"] == []


async def test_push_needs_json_content_type_and_valid_json(fd: Harness) -> None:
    params = _key(INTEGRATION_KEY)
    as_text = await fd.request(
        "POST", "/event/push/alert/standard", params=params, data=json.dumps(event()),
        headers={"Content-Type": "text/plain"},
    )  # fmt: skip
    broken = await fd.request(
        "POST", "/event/push/alert/standard", params=params, data=b"{not json",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip

    assert as_text.status == 400 and as_text.body["error"]["code"] == "InvalidContentType"
    assert broken.status == 400 and broken.body["error"]["code"] == "InvalidParameter"


async def test_push_with_an_unknown_integration_key_is_invalid_parameter(fd: Harness) -> None:
    for key in (None, "wrong-key"):
        reply = await fd.push(event(), key=key)
        assert reply.status == 400 and reply.body["error"]["code"] == "InvalidParameter"
        assert reply.body["error"]["message"] == "integration_key is not a valid one"


async def test_push_truncates_the_documented_fields(fd: Harness) -> None:
    labels = {f"k{i}": "v" for i in range(49)} | {"long": "v" * 3000}
    images = [
        {"src": "https://grafana.example/" + "x" * 240, "alt": "dropped", "href": "h"},
        {"src": "https://grafana.example/p.png", "alt": "a" * 200, "href": "https://h/" + "h" * 300},
    ]
    reply = await fd.push(event("T" * 600, alert_key="trunc", description="d" * 3000, labels=labels, images=images))

    assert reply.status == 200, reply.text
    alert = the_alert(await fd.state(), "trunc")
    assert alert["title"] == "T" * 512 and alert["description"] == "d" * 2048
    assert len(alert["labels"]) == 50 and alert["labels"]["long"] == "v" * 2048
    assert alert["images"] == [
        {"src": "https://grafana.example/p.png", "alt": "a" * 128, "href": ("https://h/" + "h" * 300)[:256]}
    ]


async def test_push_without_alert_key_gets_a_generated_one(fd: Harness) -> None:
    first = await fd.push(event())
    second = await fd.push(event())

    key1, key2 = first.body["data"]["alert_key"], second.body["data"]["alert_key"]
    assert key1 and key2 and key1 != key2
    state = await fd.state()
    assert [a["alert_key"] for a in state["alerts"]] == [key1, key2]


async def test_push_returns_the_clients_own_alert_key(fd: Harness) -> None:
    reply = await fd.push(event(alert_key="fds:abc"))
    assert reply.status == 200 and reply.body["data"] == {"alert_key": "fds:abc"}


async def test_title_templates_read_labels(fd: Harness) -> None:
    title = "[TPL]${check} on ${resource} / {{ .Labels.team }}{{.Labels.none}} ${missing}"
    await fd.push(event(title, alert_key="tpl", labels={"check": "cpu", "resource": "db-1", "team": "sre"}))

    alert = the_alert(await fd.state(), "tpl")
    assert alert["title"] == "cpu on db-1 / sre <no value>" and alert["title_rule"] == title


# ---- push: alerts ----------------------------------------------------------------------------


async def test_events_merge_into_one_alert_until_ok_closes_it(fd: Harness) -> None:
    await fd.push(event("disk 80%", "Warning", alert_key="k1", description="d1", labels={"a": "1"}))
    fd.wall.advance(60)
    await fd.push(event("disk 95%", "Critical", alert_key="k1", description="d2", labels={"b": "2"}))
    fd.wall.advance(60)
    await fd.push(event("disk 85%", "Warning", alert_key="k1", labels={"a": "3"}))
    alert = the_alert(await fd.state(), "k1")
    assert (alert["alert_status"], alert["alert_severity"]) == ("Warning", "Critical")
    assert alert["title"] == "disk 85%" and alert["description"] == "d2"
    assert alert["labels"] == {"a": "3", "b": "2"}
    assert (alert["start_time"], alert["last_time"], alert["end_time"]) == (T0, T0 + 120, 0)
    assert alert["event_cnt"] == 3 and [e["event_status"] for e in alert["events"]] == [
        "Warning",
        "Critical",
        "Warning",
    ]
    assert re.fullmatch(r"[0-9a-f]{24}", alert["alert_id"])

    fd.wall.advance(60)
    await fd.push(event("disk 50%", "Ok", alert_key="k1"))
    closed = the_alert(await fd.state(), "k1")
    assert (closed["alert_status"], closed["alert_severity"]) == ("Ok", "Critical")
    assert closed["end_time"] == T0 + 180 and closed["event_cnt"] == 4

    fd.wall.advance(60)
    reopened = await fd.push(event("disk 99%", "Critical", alert_key="k1"))
    assert reopened.body["data"]["alert_key"] == "k1"
    alerts = (await fd.state())["alerts"]
    assert [(a["alert_status"], a["event_cnt"]) for a in alerts] == [("Ok", 4), ("Critical", 1)]
    assert alerts[1]["alert_id"] != alerts[0]["alert_id"] and alerts[1]["start_time"] == T0 + 240


async def test_ok_without_an_open_alert_is_discarded(fd: Harness) -> None:
    reply = await fd.push(event(status="Ok", alert_key="never-fired"))

    assert reply.status == 200 and reply.body["data"]["alert_key"] == "never-fired"
    state = await fd.state()
    assert state["alerts"] == []
    assert [d["alert_key"] for d in state["discarded_events"]] == ["never-fired"]


async def test_alert_key_is_scoped_per_integration(fd: Harness) -> None:
    await fd.push(event(alert_key="same"), key=INTEGRATION_KEY)
    await fd.push(event(alert_key="same"), key=OTHER_KEY)

    alerts = (await fd.state())["alerts"]
    assert sorted(a["integration_id"] for a in alerts) == sorted(
        fd.sandbox.integration_id(key) for key in (INTEGRATION_KEY, OTHER_KEY)
    )


async def test_an_identical_event_is_discarded(fd: Harness) -> None:
    body = event(alert_key="dup", labels={"a": "1"})
    replies = [await fd.push(body) for _ in range(2)]
    changed = await fd.push(event(alert_key="dup", labels={"a": "2"}))

    assert [r.status for r in (*replies, changed)] == [200, 200, 200]
    state = await fd.state()
    assert the_alert(state, "dup")["event_cnt"] == 2
    assert len(state["discarded_events"]) == 1
    assert "identical" in state["discarded_events"][0]["reason"]
    assert state["pushes"] == 3


async def test_images_merge_by_alt_within_and_across_events(fd: Harness) -> None:
    key_a = (await fd.upload(make_image("PNG", (1, 2, 3)))).body["data"]["image_key"]
    key_b = (await fd.upload(make_image("PNG", (4, 5, 6)))).body["data"]["image_key"]
    first = [
        {"src": key_a, "alt": "cpu"},
        {"src": key_b, "alt": "cpu"},  # same alt: replaces the one above
        {"src": key_a},  # missing alt counts as ""
        {"src": "img_" + "0" * 64, "alt": "forged"},  # not issued by this sandbox
        {"src": "https://grafana.example/render.png", "alt": "ext"},
        {"src": "ftp://example/x.png", "alt": "ftp"},
    ]
    await fd.push(event(alert_key="img", images=first))
    alert = the_alert(await fd.state(), "img")
    expected = [
        {"src": key_b, "alt": "cpu", "href": ""},
        {"src": key_a, "alt": "", "href": ""},
        {"src": "https://grafana.example/render.png", "alt": "ext", "href": ""},
    ]
    assert alert["events"][0]["images"] == expected
    assert alert["images"] == expected

    await fd.push(event(alert_key="img", images=[{"src": key_a, "alt": "cpu"}, {"src": key_b, "alt": "mem"}]))
    state = await fd.state()
    alert = the_alert(state, "img")
    assert [(i["alt"], i["src"]) for i in alert["images"]] == [
        ("cpu", key_a),
        ("", key_a),
        ("ext", "https://grafana.example/render.png"),
        ("mem", key_b),
    ]
    assert any("img_" + "0" * 64 in w for w in state["warnings"])
    assert any("ftp" not in w and "neither" in w for w in state["warnings"])
    assert all(image["referenced"] for image in state["images"])


async def test_push_limit_is_per_integration(start: Start) -> None:
    fd = await start(push_per_second=3, push_per_minute=5)

    async def push_n(n: int, key: str) -> list[int]:
        return [(await fd.push(event(alert_key=f"{key}-{fd.clock.now}-{i}"), key=key)).status for i in range(n)]

    assert await push_n(4, INTEGRATION_KEY) == [200, 200, 200, 429]
    assert await push_n(1, OTHER_KEY) == [200]
    fd.clock.advance(1)
    assert await push_n(3, INTEGRATION_KEY) == [200, 200, 429]  # the minute holds 5

    state = await fd.state()
    scopes = state["limits"]["push"]["scopes"]
    one, two = (str(fd.sandbox.integration_id(k)) for k in (INTEGRATION_KEY, OTHER_KEY))
    assert set(scopes) == {one, two}
    assert scopes[one]["max_accepted_in_second"] == 3 and scopes[one]["max_accepted_in_minute"] == 5
    assert scopes[one]["rejected"] == 2 and state["http_429"]["push"] == 2


# ---- alert list ------------------------------------------------------------------------------


async def test_list_requires_a_valid_app_key(fd: Harness) -> None:
    body = {"start_time": T0 - 60, "end_time": T0}
    for app_key in (None, "wrong", INTEGRATION_KEY):
        reply = await fd.list_alerts(body, app_key=app_key)
        assert reply.status == 401 and reply.body["error"]["code"] == "Unauthorized"
    assert (await fd.list_alerts(body)).status == 200


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"end_time": T0}, id="no-start_time"),
        pytest.param({"start_time": T0}, id="no-end_time"),
        pytest.param({"start_time": T0, "end_time": T0 + 31 * DAY + 1}, id="span-over-31-days"),
        pytest.param({"start_time": T0, "end_time": T0 - 1}, id="end-before-start"),
        pytest.param({"start_time": str(T0), "end_time": T0}, id="start-not-int"),
        pytest.param({"start_time": T0, "end_time": T0, "limit": 101}, id="limit-101"),
        pytest.param({"start_time": T0, "end_time": T0, "p": 101, "limit": 100}, id="p-times-limit-over-10000"),
        pytest.param({"start_time": T0, "end_time": T0, "orderby": "title"}, id="bad-orderby"),
        pytest.param({"start_time": T0, "end_time": T0, "alert_severity": "Fatal"}, id="bad-severity"),
        pytest.param({"start_time": T0, "end_time": T0, "search_after_ctx": "garbage!"}, id="bad-cursor"),
        pytest.param({"start_time": T0, "end_time": T0, "is_active": "yes"}, id="is_active-not-bool"),
    ],
)
async def test_list_rejects_invalid_queries(fd: Harness, body: dict[str, Any]) -> None:
    reply = await fd.list_alerts(body)
    assert reply.status == 400 and reply.body["error"]["code"] == "InvalidParameter", reply.text


async def test_list_accepts_the_boundaries(fd: Harness) -> None:
    for body in (
        {"start_time": T0, "end_time": T0 + 31 * DAY},
        {"start_time": T0, "end_time": T0, "p": 100, "limit": 100},
    ):
        assert (await fd.list_alerts(body)).status == 200


async def seed_three(fd: Harness) -> None:
    """A (Critical, at T0), B (Warning, at T0+100), C (Info, T0+200, recovered at T0+300)."""
    fd.sandbox.push_event(event("A", "Critical", alert_key="a"))
    fd.wall.now = T0 + 100
    fd.sandbox.push_event(event("B", "Warning", alert_key="b"))
    fd.wall.now = T0 + 200
    fd.sandbox.push_event(event("C", "Info", alert_key="c"))
    fd.wall.now = T0 + 300
    fd.sandbox.push_event(event("C", "Ok", alert_key="c"))


async def titles(fd: Harness, **query: Any) -> list[str]:
    reply = await fd.list_alerts({"start_time": T0 - DAY, "end_time": T0 + DAY} | query)
    assert reply.status == 200, reply.text
    return [item["title"] for item in reply.body["data"]["items"]]


async def test_list_items_carry_the_documented_fields_and_no_alert_key(fd: Harness) -> None:
    await seed_three(fd)
    reply = await fd.list_alerts({"start_time": T0, "end_time": T0 + 300})

    data = reply.body["data"]
    assert data["total"] == 3 and data["has_next_page"] is False and "search_after_ctx" not in data
    assert all(set(item) == ITEM_FIELDS for item in data["items"])
    c = data["items"][0]
    assert (c["title"], c["alert_status"], c["alert_severity"]) == ("C", "Ok", "Info")
    assert (c["start_time"], c["last_time"], c["end_time"], c["event_cnt"]) == (T0 + 200, T0 + 300, T0 + 300, 2)
    assert c["integration_id"] == fd.sandbox.integration_id(INTEGRATION_KEY)
    assert data["items"][1]["end_time"] == 0


async def test_list_window_is_an_overlap_test(fd: Harness) -> None:
    await seed_three(fd)

    assert await titles(fd, start_time=T0, end_time=T0 + 100) == ["B", "A"]
    assert await titles(fd, start_time=T0 + 101, end_time=T0 + 199) == []
    assert await titles(fd, start_time=T0 + 250, end_time=T0 + 299) == ["C"]  # started before, ended after
    assert await titles(fd, start_time=T0 + 250, end_time=T0 + 299, by_updated_at=True) == []
    assert await titles(fd, start_time=T0 + 300, end_time=T0 + 300, by_updated_at=True) == ["C"]


async def test_list_filters_and_order(fd: Harness) -> None:
    await seed_three(fd)
    ids = {a.alert_key: a.alert_id for a in fd.sandbox.alerts}

    assert await titles(fd) == ["C", "B", "A"]
    assert await titles(fd, asc=True) == ["A", "B", "C"]
    assert await titles(fd, is_active=True) == ["B", "A"]
    assert await titles(fd, is_active=False) == ["C"]
    assert await titles(fd, alert_severity="Critical,Info") == ["C", "A"]
    assert await titles(fd, alert_keys=["b"]) == ["B"]
    assert await titles(fd, alert_ids=[ids["a"], ids["c"]]) == ["C", "A"]
    assert await titles(fd, integration_ids=[fd.sandbox.integration_id(OTHER_KEY)]) == []
    assert await titles(fd, channel_ids=[FlashdutySandbox.CHANNEL_ID]) == ["C", "B", "A"]
    fd.wall.now = T0 + 400
    fd.sandbox.push_event(event("A again", "Critical", alert_key="a"))
    assert await titles(fd, orderby="updated_at") == ["A again", "C", "B"]


async def test_list_paginates_with_search_after_ctx(fd: Harness) -> None:
    for i in range(5):
        fd.wall.now = T0 + i
        fd.sandbox.push_event(event(f"alert {i}", alert_key=f"k{i}"))

    page1 = (await fd.list_alerts({"start_time": T0, "end_time": T0 + 10, "limit": 2})).body["data"]
    fd.wall.now = T0 + 5
    fd.sandbox.push_event(event("newer", alert_key="k5"))  # newest first: must not shift the cursor
    query = {"start_time": T0, "end_time": T0 + 4, "limit": 2}
    page2 = (await fd.list_alerts(query | {"search_after_ctx": page1["search_after_ctx"]})).body["data"]
    page3 = (await fd.list_alerts(query | {"search_after_ctx": page2["search_after_ctx"]})).body["data"]

    assert [p["has_next_page"] for p in (page1, page2, page3)] == [True, True, False]
    assert "search_after_ctx" not in page3
    seen = [item["title"] for page in (page1, page2, page3) for item in page["items"]]
    assert seen == ["alert 4", "alert 3", "alert 2", "alert 1", "alert 0"]
    assert page1["total"] == 5

    by_page = (await fd.list_alerts(query | {"p": 3})).body["data"]
    assert [i["title"] for i in by_page["items"]] == ["alert 0"] and by_page["has_next_page"] is False
    wrong_order = await fd.list_alerts(query | {"search_after_ctx": page1["search_after_ctx"], "asc": True})
    assert wrong_order.status == 400


async def test_list_total_is_capped_at_1000(fd: Harness) -> None:
    for i in range(1001):
        fd.sandbox.push_event(event(f"alert {i}", alert_key=f"k{i}"))

    data = (await fd.list_alerts({"start_time": T0, "end_time": T0})).body["data"]
    assert data["total"] == 1000 and data["has_next_page"] is True and len(data["items"]) == 20


async def test_list_rate_limit_per_account(start: Start) -> None:
    fd = await start(list_per_second=2)
    body = {"start_time": T0, "end_time": T0}
    assert [(await fd.list_alerts(body)).status for _ in range(3)] == [200, 200, 429]


# ---- fault injection -------------------------------------------------------------------------


async def add_fault(fd: Harness, spec: Any) -> Reply:
    return await fd.request("POST", "/_sandbox/faults", json=spec)


async def test_status_fault_hits_the_next_n_requests_of_one_endpoint(fd: Harness) -> None:
    assert (await add_fault(fd, {"endpoint": "push", "kind": "status", "status": 500, "count": 2})).status == 200

    upload = await fd.upload(make_image("PNG"))
    pushes = [await fd.push(event(alert_key=f"f{i}")) for i in range(3)]

    assert upload.status == 200
    assert [p.status for p in pushes] == [500, 500, 200]
    assert pushes[0].body["error"]["code"] == "InternalError"
    assert pushes[0].headers["Flashcat-Request-Id"] == pushes[0].body["request_id"]
    state = await fd.state()
    assert [a["alert_key"] for a in state["alerts"]] == ["f2"]
    assert state["endpoints"]["push"]["faulted"] == 2
    scope = str(fd.sandbox.integration_id(INTEGRATION_KEY))
    assert state["limits"]["push"]["scopes"][scope]["accepted"] == 1
    assert state["faults"] == []


@pytest.mark.parametrize("retry_after", ["2", "Wed, 21 Oct 2015 07:28:00 GMT", None])
async def test_429_fault_with_or_without_retry_after(fd: Harness, retry_after: str | None) -> None:
    spec: dict[str, Any] = {"endpoint": "upload", "kind": "429", "count": 1}
    if retry_after is not None:
        spec["retry_after"] = retry_after
    await add_fault(fd, spec)

    limited = await fd.upload(make_image("PNG"))
    after = await fd.upload(make_image("PNG"))

    assert limited.status == 429 and limited.body["error"]["code"] == "RequestTooFrequently"
    assert limited.headers.get("Retry-After") == retry_after
    assert after.status == 200
    state = await fd.state()
    assert state["http_429"]["upload"] == 1 and state["endpoints"]["upload"]["rate_limited"] == 0
    assert state["limits"]["upload"]["scopes"]["account"]["accepted"] == 1


async def test_401_fault_lasts_until_cleared(fd: Harness) -> None:
    await add_fault(fd, {"endpoint": "list", "kind": "401"})
    body = {"start_time": T0, "end_time": T0}

    assert [(await fd.list_alerts(body)).status for _ in range(3)] == [401] * 3
    assert (await fd.push(event())).status == 200
    listed = await fd.request("GET", "/_sandbox/faults")
    assert [(f["kind"], f["endpoint"], f["fired"]) for f in listed.body["faults"]] == [("401", "list", 3)]
    cleared = await fd.request("DELETE", "/_sandbox/faults")
    assert cleared.body == {"faults": []}
    assert (await fd.list_alerts(body)).status == 200


async def test_error_in_200_fault(fd: Harness) -> None:
    fd.sandbox.add_fault("error_in_200", endpoint="upload", count=1)

    reply = await fd.upload(make_image("PNG"))

    assert reply.status == 200 and "data" not in reply.body
    assert reply.body["error"]["code"] == "InternalError"
    state = await fd.state()
    assert state["uploads"] == 0 and state["images"] == []


async def test_wildcard_fault_hits_every_endpoint(fd: Harness) -> None:
    fd.sandbox.add_fault("status", status=503, count=3)

    replies = [
        await fd.upload(make_image("PNG")),
        await fd.push(event()),
        await fd.list_alerts({"start_time": T0, "end_time": T0}),
        await fd.push(event()),
    ]
    assert [r.status for r in replies] == [503, 503, 503, 200]


async def test_hang_fault_processes_the_request_then_delays_the_answer(fd: Harness) -> None:
    fd.sandbox.add_fault("hang", endpoint="push", seconds=5, count=1)

    slow = asyncio.create_task(fd.push(event(alert_key="slow")))
    await eventually(lambda: [a.alert_key for a in fd.sandbox.alerts] == ["slow"], "the slow push ingested")
    await asyncio.sleep(0.1)
    assert not slow.done()  # done, but the reply is held back
    slow.cancel()

    started = time.monotonic()
    assert (await fd.push(event(alert_key="fast"))).status == 200
    assert time.monotonic() - started < 2.0  # count=1: the fault is used up
    assert [a.alert_key for a in fd.sandbox.alerts] == ["slow", "fast"]


async def test_hang_is_cut_short_when_the_server_shuts_down() -> None:
    sandbox = FlashdutySandbox()
    sandbox.add_fault("hang", seconds=30)
    async with aiohttp.ClientSession() as session:
        async with sandbox.serve() as url:

            async def hung() -> int:
                params = {"app_key": "sandbox-app-key"}
                async with session.post(f"{url}/alert/list", params=params, json={}) as resp:
                    return resp.status

            task = asyncio.create_task(hung())
            await asyncio.sleep(0.2)
            assert not task.done()
            started = time.monotonic()
        assert time.monotonic() - started < 5
        with contextlib.suppress(aiohttp.ClientError):
            assert await task == 400  # processed (start_time missing), then released


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "boom"},
        {"kind": "hang"},
        {"kind": "status", "endpoint": "nowhere"},
        {"kind": "status", "status": 99},
        {"kind": "401", "count": 0},
        {"kind": "401", "colour": "red"},
        ["not an object"],
    ],
)
async def test_bad_fault_specs_are_rejected(fd: Harness, spec: Any) -> None:
    reply = await add_fault(fd, spec)
    assert reply.status == 400 and reply.body["error"]["code"] == "InvalidParameter"
    assert (await fd.state())["faults"] == []


def test_add_fault_validates_in_process() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        FlashdutySandbox().add_fault("teapot")


# ---- page, introspection, secrets ------------------------------------------------------------


async def test_page_shows_alerts_newest_first_with_inline_images_and_escapes(fd: Harness) -> None:
    png = make_image("PNG")
    key = (await fd.upload(png)).body["data"]["image_key"]
    evil = '<script>alert("x")</script> & <b>bold</b>'
    images = [{"src": key, "alt": "latency <graph>", "href": "javascript:alert(1)"}]
    await fd.push(event(evil, alert_key="evil", labels={"service": "<i>api</i>"}, images=images))
    fd.wall.advance(10)
    await fd.push(event("second alert", "Warning", alert_key="second", description="line 1\nline 2"))

    page = await fd.request("GET", "/")

    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    html = page.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "<script" not in html and "<b>bold" not in html and "<i>api" not in html
    assert "service=&lt;i&gt;api&lt;/i&gt;" in html
    assert f'<img src="/_sandbox/images/{key}" alt="latency &lt;graph&gt;"' in html
    assert "javascript:" not in html
    assert html.index("second alert") < html.index("&lt;script&gt;")
    assert "<link" not in html and 'src="http' not in html
    assert (await fd.request("GET", f"/_sandbox/images/{key}")).raw == png


async def test_unknown_image_is_404(fd: Harness) -> None:
    reply = await fd.request("GET", "/_sandbox/images/img_nope")
    assert reply.status == 404


async def test_reset_forgets_everything(fd: Harness) -> None:
    await fd.upload(make_image("PNG"))
    await fd.push(event(alert_key="x"))
    fd.sandbox.add_fault("401", endpoint="list")

    assert (await fd.request("POST", "/_sandbox/reset")).status == 200

    state = await fd.state()
    assert (state["alerts"], state["images"], state["faults"], state["uploads"], state["pushes"]) == (
        [],
        [],
        [],
        0,
        0,
    )
    assert state["limits"]["upload"]["scopes"] == {} and state["limits"]["push"]["scopes"] == {}


async def test_keys_never_appear_in_responses_state_or_logs(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    secret_int, secret_app, wrong = "SECRET-int-7f3a", "SECRET-app-9c1d", "SECRET-wrong-0b2e"
    caplog.set_level(logging.DEBUG)
    fd = await start(integration_keys=(secret_int,), app_keys=(secret_app,))
    body = {"start_time": T0, "end_time": T0}

    replies = [
        await fd.upload(make_image("PNG"), key=secret_int),
        await fd.upload(make_image("PNG"), key=wrong),
        await fd.push(event(alert_key="s"), key=secret_int),
        await fd.push(event(), key=wrong),
        await fd.list_alerts(body, app_key=secret_app),
        await fd.list_alerts(body, app_key=wrong),
        await fd.request("GET", "/"),
        await fd.request("GET", "/_sandbox/state"),
    ]

    assert [r.status for r in replies] == [200, 401, 200, 400, 200, 401, 200, 200]
    assert "/push/image/upload" in caplog.text  # the access log was captured
    for text in [r.text for r in replies] + [caplog.text]:
        for secret in (secret_int, secret_app, wrong):
            assert secret not in text
