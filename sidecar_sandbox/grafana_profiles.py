"""Grafana versions and deployments the sandbox can play: what changes for a capture between them.

A ``Profile`` is one Grafana release line, each switch taken from Grafana's source:

* ``scenes_solo``: ``/d-solo/`` is Scenes' ``SoloPanelPage`` (``public/app/features/dashboard-scene/
  solo/SoloPanelPage.tsx``, ``useSoloPanel.ts``: the panel found by its key, ``panel-4`` or a
  repeat clone ``panel-4-clone-1``, ``findVizPanelByKey`` also accepting the bare id) — the
  ``dashboardSceneSolo`` feature toggle (``pkg/services/featuremgmt/registry.go``) is on by
  default from 11.2. Before, it is the legacy ``public/app/features/dashboard/containers/
  SoloPanelPage.tsx``, which does ``parseInt(panelId)``: ``panel-4`` gives "Panel with id NaN
  not found", and the page keeps ``window.panelsRendered``;
* ``scenes_dashboard``: ``/d/`` is Scenes (the ``dashboardScene`` toggle, GA in 11.3);
* ``solo_logo``: 12.4's ``SoloPanelPageLogo.tsx`` ("Powered by" + the Grafana logo, top right
  of every ``/d-solo/`` panel) unless the URL says ``hideLogo=true``;
* ``apis``: the frontend loads a dashboard from the app platform API
  (``public/app/features/dashboard/api/v1.ts`` / ``v2.ts``: ``/apis/dashboard.grafana.app/<v>/
  namespaces/<ns>/dashboards/<uid>/dto``) instead of ``/api/dashboards/uid/<uid>`` (12.x);
* ``v2``: v2-schema dashboards exist (12.1+): ``/api/dashboards/uid/<uid>`` answers them 406
  (``pkg/api/dashboard.go``: "dashboard api version not supported, use /apis/dashboard.grafana.app/
  v2/namespaces/<ns>/dashboards/<uid> instead") and ``/apis/dashboard.grafana.app/v2beta1/...``
  serves them.

``SubPath`` is a deployment under a sub path (``root_url = https://host/grafana/``): with
``serve_from_sub_path`` Grafana answers only under the prefix (``pkg/api/http_server.go``:
``m.SetURLPrefix(cfg.AppSubURL)``), without it Grafana answers at ``/`` (a proxy strips the
prefix) while its pages still load everything from the prefix (``public/views/index.html``:
``<base href="[[.AppSubUrl]]/" />``, ``appSubUrl`` in ``grafanaBootData.settings``,
``pkg/api/dtos/frontend_settings.go``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PROFILE", "PROFILES", "Profile", "SubPath", "namespace"]


@dataclass(frozen=True)
class Profile:
    version: str
    scenes_solo: bool
    scenes_dashboard: bool
    solo_logo: bool = False
    apis: bool = False
    v2: bool = False

    @property
    def major_minor(self) -> tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)


PROFILES: dict[str, Profile] = {
    "10.4": Profile("10.4.19", scenes_solo=False, scenes_dashboard=False),
    "11.1": Profile("11.1.13", scenes_solo=False, scenes_dashboard=False),
    "11.2": Profile("11.2.10", scenes_solo=True, scenes_dashboard=False),
    "11.3": Profile("11.3.0-sandbox", scenes_solo=True, scenes_dashboard=True),
    "12.4": Profile("12.4.0", scenes_solo=True, scenes_dashboard=True, solo_logo=True, apis=True, v2=True),
}
DEFAULT_PROFILE = "11.3"  # what the sandbox always emulated: per-dashboard Scenes, no badge


@dataclass(frozen=True)
class SubPath:
    """``root_url``'s path (``/grafana``) and ``serve_from_sub_path``."""

    prefix: str = ""
    serve_from_sub_path: bool = False
    root_url: str = ""  # the public address (``https://grafana.example.com/grafana/``); "" = where it is reached

    def __post_init__(self) -> None:
        if self.prefix and (not self.prefix.startswith("/") or self.prefix.endswith("/")):
            raise ValueError("prefix must look like /grafana")


def namespace(org_id: int) -> str:
    """The app platform namespace of an org: ``pkg/services/apiserver/endpoints/request/namespace.go``
    (``GetNamespaceMapper`` on-prem: org 1 is ``default``, others ``org-<id>``)."""
    return "default" if org_id == 1 else f"org-{org_id}"
