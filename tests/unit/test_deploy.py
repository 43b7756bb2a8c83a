"""deploy/: the Dockerfile, the kustomize base and the production example, checked offline.

* the manifests are validated against the Kubernetes OpenAPI schemas bundled with the
  ``kubernetes-validate`` package (strict: unknown fields are errors), for the oldest and the
  newest Kubernetes version we claim; the kustomize renderings need ``kubectl`` (skipped
  without it), the plain base manifests are validated either way;
* the pod keeps the promises of docs/operations.md: non-root UID 10001 (the Dockerfile's USER),
  read-only root filesystem, no capabilities, probes on /healthz and /readyz, a grace period
  longer than ``server.shutdown_grace``, writable /tmp and state_dir, every required secret wired;
* the ConfigMap's config passes ``check-config`` (the real CLI, in a subprocess);
* static checks of the Dockerfile (tini, numeric USER, HEALTHCHECK through the CLI, no
  ``playwright install``) — no Docker engine needed;
* the image carries no emulators: the Dockerfile never copies ``sidecar_sandbox``, nothing in
  ``sidecar/`` imports it except the lazy imports of the ``demo`` and ``sandbox`` subcommands,
  which exit 2 with one line without it;
* docs/operations.md lists every metric the daemon exports, with its labels.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from sidecar.cli import build_parser, main
from sidecar.config import Config, ConfigError, ServerConfig, parse_config
from sidecar.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
PRODUCTION = DEPLOY / "kubernetes" / "examples" / "production"
HA = DEPLOY / "kubernetes" / "examples" / "ha"
DOCKERFILE = DEPLOY / "Dockerfile"
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
SIDECAR = "flashduty-sidecar"
STATE_DIR = "/var/lib/flashduty-sidecar"
PORT = ServerConfig().port  # 9464
# placeholder values for every variable the deploy configs reference
PLACEHOLDER_ENV = {
    "FLASHDUTY_INTEGRATION_KEY": "placeholder-integration-key",
    "FLASHDUTY_APP_KEY": "placeholder-app-key",
    "GRAFANA_TOKEN": "placeholder-grafana-token",
    "SIDECAR_WEBHOOK_TOKEN": "placeholder-webhook-token",
}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")


# --------------------------------------------------------------------------- helpers


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@functools.cache
def kustomize(directory: Path) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: kustomize renderings not checked")
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory.relative_to(ROOT)} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def one(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def validate_all(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> None:
    for doc in docs:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}) at {where}: {e.message}")


def config_text(docs: tuple[dict[str, Any], ...]) -> str:
    return one(docs, "ConfigMap", "flashduty-sidecar-config")["data"]["config.yaml"]


def sidecar_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == SIDECAR)


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def check_config(text: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,  # hermetic: only the placeholders, nothing from the developer's shell
        cwd=ROOT,
        check=False,
    )


# --------------------------------------------------------------------------- Dockerfile


@functools.cache
def dockerfile_instructions() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends with a continuation line"
    return tuple(out)


def instruction(name: str) -> list[str]:
    return [args for word, args in dockerfile_instructions() if word == name]


def last_stage(name: str) -> list[str]:
    """Arguments of ``name`` in the final stage (after the last FROM)."""
    ins = dockerfile_instructions()
    start = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return [args for word, args in ins[start:] if word == name]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {args}"
    return value


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in last_stage("ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            assert sep, f"use ENV key=value (got {token!r})"
            env[key] = value
    return env


def dockerfile_uid() -> int:
    users = last_stage("USER")
    assert users, "the final stage sets no USER"
    user = users[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER must be numeric (runAsNonRoot checks it): {user!r}"
    uid = int(user.split(":")[0])
    assert uid != 0
    return uid


def test_dockerfile_is_multi_stage_on_a_debian_bookworm_base_chosen_at_build_time() -> None:
    froms = instruction("FROM")
    assert len(froms) >= 2, "expected a build stage and a runtime stage"
    assert all(f.split()[0] == "${BASE}" for f in froms), froms
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in instruction("ARG") if "=" in a}
    # the default is the base deploy/image/build.sh makes with mmdebstrap (debian:bookworm-slim's
    # content); Python is Debian's python3 (3.11 on bookworm), in both stages
    assert args["BASE"] == "localhost/flashduty-sidecar-base:bookworm"
    assert args["BROWSER"] == "chromium-headless-shell"
    build_installs = " ".join(r for r in instruction("RUN") if "apt-get install" in r)
    assert "python3-venv" in build_installs


def test_the_build_secrets_are_read_by_pip_only_and_never_copied() -> None:
    (pip,) = [r for r in instruction("RUN") if "pip install" in r]
    assert "--mount=type=secret,id=ca-bundle" in pip and "--mount=type=secret,id=pip-conf" in pip
    assert "PIP_CERT=/run/secrets/ca-bundle" in pip and "PIP_CONFIG_FILE=/run/secrets/pip-conf" in pip
    assert not any("secrets" in a or "pip.conf" in a or ".crt" in a for a in instruction("COPY"))
    assert not any("PIP_CERT" in k or "PIP_CONFIG" in k for k in dockerfile_env())


def test_dockerfile_runs_under_tini_as_a_numeric_non_root_user() -> None:
    (entrypoint,) = last_stage("ENTRYPOINT")
    assert exec_form(entrypoint)[:3] == ["/usr/bin/tini", "--", "flashduty-sidecar"]
    (cmd,) = last_stage("CMD")
    assert exec_form(cmd) == ["run", "-c", "/etc/flashduty-sidecar/config.yaml"]
    assert dockerfile_uid() == 10001


def test_dockerfile_healthcheck_uses_the_cli() -> None:
    (healthcheck,) = last_stage("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert exec_form(command.strip()) == ["flashduty-sidecar", "healthcheck"]
    # the subcommand's default URL is the port the image exposes
    assert f"127.0.0.1:{PORT}/healthz" in _healthcheck_default_url()
    assert last_stage("EXPOSE") == [str(PORT)]
    assert "--interval=" in options


def _healthcheck_default_url() -> str:
    args = build_parser().parse_args(["healthcheck"])
    return str(args.url)


def test_dockerfile_installs_chromium_fonts_and_tini_from_debian_and_never_playwright_browsers() -> None:
    runs = " ".join(instruction("RUN"))
    assert "playwright install" not in runs.lower()
    installs = " ".join(r for r in last_stage("RUN") if "apt-get install" in r)
    for package in ("${BROWSER}", "fonts-noto-cjk", "fonts-dejavu-core", "fonts-liberation", "tini", "fontconfig"):
        assert re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", installs), f"{package} is not installed"
    # Playwright's Node driver links libatomic.so.1; the venv's interpreter is Debian's python3
    for package in ("libatomic1", "python3"):
        assert re.search(rf"(?<![\w-]){package}(?![\w-])", installs), f"{package} is not installed"
    assert "--no-install-recommends" in installs
    assert "rm -rf /var/lib/apt/lists/*" in installs


def test_dockerfile_environment_fits_a_read_only_root_filesystem() -> None:
    env = dockerfile_env()
    assert env["HOME"] == "/tmp"
    assert env["XDG_CONFIG_HOME"].startswith("/tmp/")
    assert env["XDG_CACHE_HOME"].startswith("/tmp/")
    assert env["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] == "1"
    assert env["SIDECAR_BROWSER_PATH"] == "/usr/local/bin/sidecar-browser"  # a link to ${BROWSER}
    assert exec_form(last_stage("VOLUME")[0]) == [STATE_DIR]


def test_dockerfile_copies_only_what_exists_and_the_context_is_an_allow_list() -> None:
    for args in instruction("COPY"):
        if args.startswith("--from="):
            continue
        *sources, _dest = args.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[ignore.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!sidecar/"]


# --------------------------------------------------------------------------- the image carries no emulators

SANDBOX = "sidecar_sandbox"
# where sidecar may import sidecar_sandbox: (file under sidecar/, enclosing function)
LAZY_SANDBOX_IMPORTS = {
    ("cli_tools.py", "_have_sandbox"),
    ("cli_tools.py", "cmd_demo"),
    ("cli_tools.py", "cmd_sandbox"),
}
NO_SANDBOX_LINE = (
    "{command} needs the sidecar_sandbox package: it is installed with the project from source "
    "(pip install -e .), not in the container image"
)


def test_dockerfile_never_copies_sidecar_sandbox_so_the_image_holds_the_sidecar_package_alone() -> None:
    packages: set[str] = set()
    for args in instruction("COPY") + instruction("ADD"):
        if args.startswith("--from="):
            continue
        tokens = [a for a in args.split() if not a.startswith("--")]  # sources… destination
        for src in tokens[:-1]:
            assert SANDBOX not in src, f"the Dockerfile copies {src}"
            path = (ROOT / src).resolve()
            assert path != ROOT, f"COPY {src} would bring sidecar_sandbox (and tests/) into the image"
            if (path / "__init__.py").is_file():
                packages.add(path.name)
    assert packages == {"sidecar"}, "setuptools in the build stage must find the sidecar package only"
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert not [line for line in ignore if line.startswith("!") and SANDBOX in line]
    # and the build stage proves it: sidecar_sandbox does not import from the venv
    assert '! /opt/venv/bin/python -c "import sidecar_sandbox"' in " ".join(instruction("RUN"))


def _sandbox_imports(path: Path) -> list[tuple[int, str | None]]:
    """(line, enclosing function or None at module level) of each import of sidecar_sandbox in
    ``path``: import statements and importlib.import_module / __import__ with a literal name."""

    def is_sandbox(name: str | None) -> bool:
        return name is not None and (name == SANDBOX or name.startswith(SANDBOX + "."))

    found: list[tuple[int, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            names: list[str | None] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                names = [child.module]
            elif isinstance(child, ast.Call) and child.args and isinstance(child.args[0], ast.Constant):
                callee = child.func.attr if isinstance(child.func, ast.Attribute) else getattr(child.func, "id", "")
                if callee in ("import_module", "__import__") and isinstance(child.args[0].value, str):
                    names = [child.args[0].value]
            if any(is_sandbox(n) for n in names):
                found.append((child.lineno, function))
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), None)
    return found


def test_the_sidecar_package_imports_sidecar_sandbox_only_lazily_in_the_demo_and_sandbox_subcommands() -> None:
    product = ROOT / "sidecar"
    found = {
        (path.relative_to(product).as_posix(), line, function)
        for path in sorted(product.rglob("*.py"))
        for line, function in _sandbox_imports(path)
    }
    stray = sorted(
        f"sidecar/{rel}:{line} (in {function or 'the module'})"
        for rel, line, function in found
        if (rel, function) not in LAZY_SANDBOX_IMPORTS
    )
    assert not stray, "the production image has no sidecar_sandbox: " + ", ".join(stray)
    # the lazy imports are there, so the check above looks at the right thing
    assert {(rel, function) for rel, _, function in found} == LAZY_SANDBOX_IMPORTS


def test_every_sidecar_module_imports_without_sidecar_sandbox() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "sys.modules['sidecar_sandbox'] = None  # as in the image: an import of it fails\n"
        "import sidecar\n"
        "for m in pkgutil.walk_packages(sidecar.__path__, 'sidecar.'):\n"
        "    if m.name != 'sidecar.__main__':\n"
        "        importlib.import_module(m.name)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("command", ["demo", "sandbox"])
def test_demo_and_sandbox_without_sidecar_sandbox_exit_2_with_one_line(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, SANDBOX, None)  # what an import of a missing package does
    assert main([command]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == NO_SANDBOX_LINE.format(command=command) + "\n"


# --------------------------------------------------------------------------- schemas


def test_plain_base_manifests_are_valid_kubernetes_objects() -> None:
    """Without kubectl too: every manifest file (not the kustomization) against the schemas."""
    files = [BASE / "deployment.yaml", BASE / "service.yaml", BASE / "secret.yaml", PRODUCTION / "pvc.yaml"]
    docs = [d for f in files for d in load_docs(f)]
    assert {d["kind"] for d in docs} == {"Deployment", "Service", "Secret", "PersistentVolumeClaim"}
    validate_all(docs)


def test_schema_validation_rejects_a_wrong_field() -> None:
    """The validator is strict: a typo in a pod spec is caught, so the test above can fail."""
    (deployment,) = load_docs(BASE / "deployment.yaml")
    sidecar_container(deployment)["securityContext"]["readOnlyRootFileSystem"] = True  # wrong case
    with pytest.raises(pytest.fail.Exception, match="readOnlyRootFileSystem"):
        validate_all([deployment])


@pytest.mark.parametrize("overlay", [BASE, PRODUCTION, HA], ids=["base", "production", "ha"])
def test_rendered_kustomization_is_valid(overlay: Path) -> None:
    docs = kustomize(overlay)
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    expected = [
        "ConfigMap/flashduty-sidecar-config",
        "Deployment/grafana",
        "Service/flashduty-sidecar",
        "Service/grafana",
    ]
    if overlay == HA:
        expected += ["Secret/flashduty-sidecar", "ServiceAccount/flashduty-sidecar"]
        expected += ["Role/flashduty-sidecar-leader-election", "RoleBinding/flashduty-sidecar-leader-election"]
    elif overlay == BASE:
        expected.append("Secret/flashduty-sidecar")
    else:
        expected.append("PersistentVolumeClaim/flashduty-sidecar-state")
    assert kinds == sorted(expected)
    validate_all(docs)


# --------------------------------------------------------------------------- the pod


@dataclass(frozen=True)
class Pod:
    """One variant of the pod: the Deployment, its sidecar container and the config it mounts."""

    deployment: dict[str, Any]
    config_text: str

    @property
    def spec(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        return sidecar_container(self.deployment)

    @property
    def cfg(self) -> Config:
        return parse_config(self.config_text, env=PLACEHOLDER_ENV)


@pytest.fixture(params=["base-plain", "base", "production", "ha"])
def pod(request: pytest.FixtureRequest) -> Pod:
    """The plain base manifest always; the kustomize renderings when kubectl is installed."""
    if request.param == "base-plain":
        (deployment,) = load_docs(BASE / "deployment.yaml")
        return Pod(deployment, (BASE / "config.yaml").read_text(encoding="utf-8"))
    docs = kustomize({"base": BASE, "production": PRODUCTION, "ha": HA}[request.param])
    return Pod(one(docs, "Deployment", "grafana"), config_text(docs))


def test_sidecar_runs_non_root_on_a_read_only_root_filesystem(pod: Pod) -> None:
    spec, sc = pod.spec, pod.container["securityContext"]
    assert sc["runAsNonRoot"] is True and spec["securityContext"]["runAsNonRoot"] is True
    assert sc["runAsUser"] == dockerfile_uid()
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    assert "privileged" not in sc


def test_probes_point_at_healthz_and_readyz(pod: Pod) -> None:
    container, cfg = pod.container, pod.cfg
    expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert port_number(container, get["port"]) == cfg.server.port == PORT, probe
    # the liveness probe must not fire before the slowest heartbeat allowance (60 s) is over
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 30


def test_grace_period_outlasts_the_shutdown_drain(pod: Pod) -> None:
    grace = pod.spec["terminationGracePeriodSeconds"]
    assert grace > pod.cfg.server.shutdown_grace
    assert grace > ServerConfig().shutdown_grace
    if pod.cfg.ha.mode == "kubernetes":  # replicas elect one sender: rolling updates are safe
        assert grace > pod.cfg.server.shutdown_grace + pod.cfg.ha.renew_deadline, "the drain, then the hand-over"
        assert pod.deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        assert pod.deployment["spec"]["replicas"] >= 2
    else:  # two sidecars would both send
        assert pod.deployment["spec"]["strategy"]["type"] == "Recreate"
        assert pod.deployment["spec"]["replicas"] == 1


def test_writable_paths_are_volumes_and_match_the_config(pod: Pod) -> None:
    container, cfg = pod.container, pod.cfg
    volumes = {v["name"]: v for v in pod.spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    assert cfg.state_dir == STATE_DIR and STATE_DIR in mounts
    tmp = mounts["/tmp"]["emptyDir"]
    assert tmp.get("medium", "") == "", "/tmp must be disk-backed (Chromium writes its shared memory there)"
    shm = mounts["/dev/shm"]["emptyDir"]
    assert shm["medium"] == "Memory" and shm["sizeLimit"] == "256Mi"
    config_dir = mounts["/etc/flashduty-sidecar"]
    assert config_dir["configMap"]["name"] == "flashduty-sidecar-config"
    assert not any("subPath" in m for m in container["volumeMounts"]), "subPath mounts never see ConfigMap updates"
    assert container["args"] == ["run", "-c", "/etc/flashduty-sidecar/config.yaml"]
    assert cfg.capture.browser_path == ""  # the image's $SIDECAR_BROWSER_PATH
    assert cfg.grafana.url == "http://localhost:3000"


def test_memory_limit_leaves_room_above_the_browser_recycle_threshold(
    pod: Pod,
) -> None:
    resources = pod.container["resources"]
    limit = _mebibytes(resources["limits"]["memory"])
    request = _mebibytes(resources["requests"]["memory"])
    assert request <= limit
    # Python + Playwright's Node driver take ~250 MiB besides Chromium (docs/operations.md#sizing)
    assert pod.cfg.capture.max_browser_rss_mb + 256 < limit
    assert "cpu" in resources["requests"]


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi|M|G)", quantity)
    assert m, f"unexpected quantity {quantity!r}"
    return float(m.group(1)) * units[m.group(2)]


def test_every_variable_of_the_config_comes_from_the_secret(pod: Pod) -> None:
    env = {e["name"]: e for e in pod.container.get("env", [])}
    (secret,) = load_docs(BASE / "secret.yaml")
    for name, default in _VAR.findall(pod.config_text):
        if default:  # ${VAR:-default}: optional, the image or the default covers it
            continue
        assert name in env, f"${{{name}}} is required by the config but not set in the container"
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
        assert not ref.get("optional", False), f"{name} is required: its secretKeyRef must not be optional"


def test_service_exposes_metrics_and_webhook_to_prometheus() -> None:
    docs = load_docs(BASE / "service.yaml")
    service = one(docs, "Service", SIDECAR)
    (deployment,) = load_docs(BASE / "deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == PORT
    assert port_number(sidecar_container(deployment), port["targetPort"]) == PORT
    ann = service["metadata"]["annotations"]
    assert ann == {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT), "prometheus.io/path": "/metrics"}


def test_production_example_uses_a_pvc_a_namespace_a_pinned_image_and_no_placeholder_secret() -> None:
    docs = kustomize(PRODUCTION)
    assert {d["metadata"].get("namespace") for d in docs} == {"observability"}
    assert not [d for d in docs if d["kind"] == "Secret"]
    deployment = one(docs, "Deployment", "grafana")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["sidecar-state"] == {
        "name": "sidecar-state",
        "persistentVolumeClaim": {"claimName": "flashduty-sidecar-state"},
    }
    one(docs, "PersistentVolumeClaim", "flashduty-sidecar-state")
    images = {c["name"]: c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    for image in images.values():
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"image not pinned: {image}"


def test_ha_example_grants_the_lease_only_and_gives_the_token_to_the_sidecar_alone() -> None:
    docs = kustomize(HA)
    role = one(docs, "Role", "flashduty-sidecar-leader-election")
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]
    binding = one(docs, "RoleBinding", "flashduty-sidecar-leader-election")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SIDECAR}]
    one(docs, "ServiceAccount", SIDECAR)
    deployment = one(docs, "Deployment", "grafana")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == SIDECAR and spec["automountServiceAccountToken"] is False
    sa_path = "/var/run/secrets/kubernetes.io/serviceaccount"
    for c in spec["containers"]:
        mounted = {m["mountPath"] for m in c.get("volumeMounts", [])}
        assert (sa_path in mounted) == (c["name"] == SIDECAR), f"{c['name']}: the token is for the sidecar only"
    projected = {v["name"]: v for v in spec["volumes"]}["kube-api-access"]["projected"]["sources"]
    assert {next(iter(src)) for src in projected} == {"serviceAccountToken", "configMap", "downwardAPI"}
    env = {
        e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        for e in sidecar_container(deployment)["env"]
    }
    assert env["POD_NAME"] == "metadata.name" and env["POD_NAMESPACE"] == "metadata.namespace"
    token = next(e for e in sidecar_container(deployment)["env"] if e["name"] == "SIDECAR_WEBHOOK_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["optional"] is False, "required with ha (/ha/events)"
    assert one(docs, "Secret", SIDECAR)["stringData"]["SIDECAR_WEBHOOK_TOKEN"], "a placeholder to replace"
    with pytest.raises(ConfigError, match=r"server\.webhook_token: required with ha\.mode: kubernetes"):
        parse_config(config_text(docs), env={k: v for k, v in PLACEHOLDER_ENV.items() if k != "SIDECAR_WEBHOOK_TOKEN"})
    cfg = parse_config(config_text(docs), env={**PLACEHOLDER_ENV, "POD_NAME": "grafana-0", "POD_NAMESPACE": "obs"})
    assert cfg.ha.mode == "kubernetes" and cfg.ha.identity == "grafana-0" and cfg.ha.namespace == "obs"
    assert cfg.ha.renew_deadline < cfg.ha.lease_duration and cfg.ha.retry_period < cfg.ha.renew_deadline


# --------------------------------------------------------------------------- check-config


@pytest.mark.parametrize("overlay", [BASE, PRODUCTION, HA], ids=["base", "production", "ha"])
def test_configmap_config_passes_check_config(overlay: Path, tmp_path: Path) -> None:
    text = (overlay / "config.yaml").read_text(encoding="utf-8")
    proc = check_config(text, tmp_path, PLACEHOLDER_ENV)
    assert proc.returncode == 0, proc.stderr
    assert ": ok (" in proc.stdout


def test_rendered_configmap_is_the_checked_file() -> None:
    for directory in (BASE, PRODUCTION, HA):
        assert config_text(kustomize(directory)) == (directory / "config.yaml").read_text(encoding="utf-8")


def test_check_config_refuses_the_configmap_without_its_secrets(tmp_path: Path) -> None:
    text = (BASE / "config.yaml").read_text(encoding="utf-8")
    env = {k: v for k, v in PLACEHOLDER_ENV.items() if k != "FLASHDUTY_INTEGRATION_KEY"}
    proc = check_config(text, tmp_path, env)
    assert proc.returncode == 2
    assert "flashduty.integration_key: environment variable FLASHDUTY_INTEGRATION_KEY is not set" in proc.stderr


# --------------------------------------------------------------------------- docs


def _metric_names() -> dict[str, list[str]]:
    """Every metric of ``Metrics`` as exported (counters with ``_total``) → its label names.

    prometheus_client has no public accessor for a collector's label names: ``_labelnames``.
    """
    out: dict[str, list[str]] = {}
    for collector in vars(Metrics()).values():
        if isinstance(collector, MetricWrapperBase):
            name = collector._name + ("_total" if collector._type == "counter" else "")
            out[name] = list(collector._labelnames)
    return out


def test_operations_doc_lists_every_metric_with_its_labels() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(flashduty_sidecar_[a-z0-9_]+)`.*$", doc, re.M)}
    names = _metric_names()
    assert names, "no metrics found"
    assert sorted(rows) == sorted(names), "docs/operations.md metrics table differs from sidecar/metrics.py"
    for name, labels in names.items():
        for label in labels:
            assert f"`{label}`" in rows[name], f"{name}: label {label} not documented"


def test_the_manifests_name_the_image_that_build_sh_tags() -> None:
    """deploy/image/build.sh tags flashduty-sidecar:<version from pyproject.toml>; the base
    kustomization deploys that name and tag."""
    script = (ROOT / "deploy/image/build.sh").read_text(encoding="utf-8")
    assert 'TAG="flashduty-sidecar:$(sed -n \'s/^version = "\\(.*\\)"/\\1/p\' pyproject.toml | head -1)"' in script
    version = re.search(r'^version = "(.*)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    assert version
    kustomization = yaml.safe_load((ROOT / "deploy/kubernetes/base/kustomization.yaml").read_text(encoding="utf-8"))
    images = {i["name"]: i for i in kustomization["images"]}
    assert images["flashduty-sidecar"]["newTag"] == version.group(1)
    assert "newName" not in images["flashduty-sidecar"]
