"""Config reload: applied whole, or refused whole — never half.

A reload (SIGHUP, or the config file or one of its ``rule_files`` changing on disk) reads and
validates the new file, then compares it with the running config key by key (``changed_keys``):

* a changed key in ``RESTART_KEYS`` (connections, credentials, identities: what a running
  process cannot swap safely) refuses the whole reload: the running config is kept, the log
  names the keys and says to restart, ``config_reloads_total{outcome="restart_required"}``;
* an invalid file is refused the same way (``outcome="invalid"``);
* otherwise every component gets the new settings through its one ``reconfigure()``
  (``Reloader`` is given them as ``appliers``) and the new config becomes the current one.

Every reload goes through ``Reloader.reload``, serialised by one lock: SIGHUP (``request``)
and the file watcher (``watch``) never interleave. The watcher compares content digests, not
mtimes: a Kubernetes ConfigMap update swaps a symlink.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sidecar.config import Config, ConfigError, load_config
from sidecar.metrics import Metrics

__all__ = ["RESTART_KEYS", "Current", "Reloader", "changed_keys", "config_keys", "needs_restart"]

log = logging.getLogger("sidecar.reload")

# keys (or whole sections) whose change needs a restart; every other key applies live
RESTART_KEYS = (
    "flashduty",
    "grafana.url",
    "grafana.org_id",
    "grafana.token",
    "grafana.basic_auth",
    "capture.browser_path",
    "capture.concurrency",
    "server.listen",
    "state_dir",
    "log.format",
    "ha",
)


@dataclass
class Current:
    """The config in force; replaced as a whole by a reload. Readers look it up when they act."""

    config: Config


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[str]:
    """Every key a reload compares: the fields of each section, top-level fields as they are."""
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or name)
        ann = info.annotation
        if not prefix and isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from config_keys(ann, key + ".")
        else:
            yield key


def _value(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        fields = type(node).model_fields
        attr = next((n for n, i in fields.items() if (i.alias or n) == part), part)
        node = getattr(node, attr)
    return node


def changed_keys(old: Config, new: Config) -> list[str]:
    return [k for k in config_keys() if _value(old, k) != _value(new, k)]


def needs_restart(key: str) -> bool:
    return any(key == r or key.startswith(r + ".") for r in RESTART_KEYS)


def watched_files(cfg: Config, config_path: str) -> list[Path]:
    """The config file and every file its ``rule_files`` globs match (relative to its folder)."""
    base = Path(config_path).parent
    out = [Path(config_path)]
    for entry in cfg.rule_files:
        pattern = entry.path if os.path.isabs(entry.path) else str(base / entry.path)
        out.extend(Path(p) for p in sorted(glob.glob(pattern)))
    return out


def digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p).encode() + b"\0")
        try:
            h.update(p.read_bytes())
        except OSError:
            h.update(b"<unreadable>")
        h.update(b"\0")
    return h.hexdigest()


Applier = Callable[[Config], Any]  # a component's reconfigure; may return an awaitable


class Reloader:
    """The one reload path. ``appliers`` run in order with the new config."""

    def __init__(self, current: Current, *, config_path: str | None, metrics: Metrics) -> None:
        self._current = current
        self._path = config_path
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._requests: asyncio.Queue[str] = asyncio.Queue()
        self.appliers: list[tuple[str, Applier]] = []
        self.last: tuple[str, str] | None = None  # (outcome, detail) of the last reload
        self.last_at: float | None = None  # its wall time
        self._digest = self._files_digest(current.config)

    def add(self, name: str, apply: Applier) -> None:
        self.appliers.append((name, apply))

    def request(self, reason: str) -> None:
        """Ask for a reload from synchronous code (a signal handler); ``watch`` runs it."""
        self._requests.put_nowait(reason)

    async def watch(self, interval: float) -> None:
        """Serve ``request``s and reload when a watched file's content changes."""
        while True:
            try:
                async with asyncio.timeout(interval):  # not wait_for: on 3.11 it can swallow a cancel
                    reason = await self._requests.get()
            except TimeoutError:
                await self._reload_if_changed()
                continue
            await self.reload(reason)

    async def _reload_if_changed(self) -> None:
        # under the lock: a reload that just ran (SIGHUP, a caller) has recorded what it read
        async with self._lock:
            if self._path is None:
                return
            if await asyncio.to_thread(self._files_digest, self._current.config) != self._digest:
                await self._reload("config file changed")

    async def reload(self, reason: str) -> bool:
        async with self._lock:
            return await self._reload(reason)

    def _files_digest(self, cfg: Config) -> str | None:
        return digest(watched_files(cfg, self._path)) if self._path else None

    async def _reload(self, reason: str) -> bool:
        if not self._path:
            log.warning("reload requested (%s) but the config was not read from a file", reason)
            return False
        try:
            new = await asyncio.to_thread(load_config, self._path)
        except ConfigError as e:
            self._digest = await asyncio.to_thread(self._files_digest, self._current.config)
            return self._refuse("invalid", f"{len(e.problems)} problem(s): " + "; ".join(e.problems), reason)
        self._digest = await asyncio.to_thread(self._files_digest, new)
        changed = changed_keys(self._current.config, new)
        restart = [k for k in changed if needs_restart(k)]
        if restart:
            return self._refuse(
                "restart_required",
                f"{', '.join(restart)} changed: these apply only at start; restart the container",
                reason,
            )
        for name, apply in self.appliers:
            try:
                result = apply(new)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("config reload: applying the new settings to %s failed", name)
        self._current.config = new
        self._metrics.config_reloads.labels("ok").inc()
        self.last, self.last_at = ("ok", ", ".join(changed) or "nothing changed"), time.time()
        log.info("config reloaded (%s): %s", reason, self.last[1], extra={"changed": changed, "rules": len(new.rules)})
        return True

    def _refuse(self, outcome: str, detail: str, reason: str) -> bool:
        self._metrics.config_reloads.labels(outcome).inc()
        self.last, self.last_at = (outcome, detail), time.time()
        log.error("config reload refused (%s), keeping the running config: %s", reason, detail)
        return False
