"""The ``status`` section: the status page on ``server.listen`` and the journal behind it."""

from __future__ import annotations

from pydantic import Field, SecretStr

from sidecar.config.values import Duration, StrictModel

__all__ = ["StatusConfig"]


class StatusConfig(StrictModel):
    ui_token: SecretStr | None = None
    """When set, the status page (`GET /`) and its pictures need it: `Authorization: Bearer <token>`, or the page's login form (an HttpOnly cookie). Without it they are open to whoever reaches `server.listen`. Secret: `${VAR}` only."""
    pictures: int = Field(default=200, ge=0)
    """Pictures kept in `state_dir/pictures` for the page, exactly as uploaded; the oldest are removed first (0: none kept)."""
    picture_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    """Bytes those pictures may take together; the oldest are removed first."""
    deliveries: int = Field(default=500, ge=50)
    """Deliveries kept in the journal (`state_dir/journal.sqlite3`) for the page; the oldest are removed first."""
    refresh: Duration = 10.0
    """How often the page reloads itself in a browser (0: never)."""
