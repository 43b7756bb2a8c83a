"""Flashduty's Open API as the sidecar speaks it: the endpoint table and Flashduty's own limits.

Three endpoints, each a ``POST`` with its key in the query string (``params=``, never a header a
proxy might log):

* ``upload`` — ``/push/image/upload?integration_key=``: multipart file field ``image``, at most
  ``MAX_IMAGE_BYTES`` (5 MB; ``capture.images`` caps every picture at it);
* ``push`` — ``/event/push/alert/standard?integration_key=``: one Standard Alert event;
* ``list`` — ``/alert/list?app_key=``: the Open API alert list; one window spans at most
  ``MAX_LIST_SPAN`` (31 days), quota ``LIST_RATE`` per account.

Upload and push quotas are configurable (``flashduty.upload_rate`` / ``push_rate``); the list
quota is Flashduty's fixed Open API one. Answers carry a request id in the body or in the
``Flashcat-Request-Id`` header (``answers.py`` reads them).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "KEY_HINT",
    "LIST",
    "LIST_RATE",
    "MAX_IMAGE_BYTES",
    "MAX_LIST_SPAN",
    "PUSH",
    "REQUEST_ID_HEADER",
    "UPLOAD",
    "USER_AGENT",
    "Endpoint",
    "upload_filename",
]

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Flashduty's limit for one uploaded picture
MAX_LIST_SPAN = 31 * 86400  # /alert/list rejects longer windows
LIST_RATE = (50, 1000)  # per second, per minute (per account, Open API)
REQUEST_ID_HEADER = "Flashcat-Request-Id"
USER_AGENT = "flashduty-sidecar/0.1"

# the file name a picture is uploaded under, by content type
_SUFFIXES = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass(frozen=True)
class Endpoint:
    name: str  # metric label, log field and rate-limit quota: upload | push | list
    path: str
    key_param: str  # integration_key | app_key


UPLOAD = Endpoint("upload", "/push/image/upload", "integration_key")
PUSH = Endpoint("push", "/event/push/alert/standard", "integration_key")
LIST = Endpoint("list", "/alert/list", "app_key")

# where the operator sets each key: named in every "key rejected / not configured" error
KEY_HINT = {
    "integration_key": "FLASHDUTY_INTEGRATION_KEY / flashduty.integration_key",
    "app_key": "FLASHDUTY_APP_KEY / flashduty.app_key",
}


def upload_filename(content_type: str, stem: str = "panel") -> str:
    """The file name a picture of ``content_type`` is uploaded under (``panel.png`` when unknown)."""
    return f"{stem}.{_SUFFIXES.get(content_type, 'png')}"
