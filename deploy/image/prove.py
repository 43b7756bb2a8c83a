"""Prove a built image as Kubernetes runs it (``./dev image`` runs this after the build).

    .venv/bin/python deploy/image/prove.py [IMAGE]     (default localhost/flashduty-sidecar:<version>)

$SIDECAR_PROVE_OUT: a directory where the delivered pictures and the CJK renders are kept;
$SIDECAR_PROVE_LOG=1: print the daemon's log at the end (it is printed when a check failed).

Needs root (mount and PID namespaces), buildah, and the repository's venv (the sandbox Grafana,
Prometheus and Flashduty run from it, on the loopback of a network namespace of this run's own:
the pod's, so the image's port 9464 and its HEALTHCHECK's URL are used as they are). The image's
root filesystem is mounted read-only and its entrypoint run as UID/GID 10001 with no capabilities
(``jail.py``); what is checked is in ``checks.py`` and below. Exit 0 when every check passed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from checks import Report, cap_mask, size_of, strip_difference
from image_checks import CJK_FONTS, CONFIG, ROOT, jail_checks, static_checks
from jail import STATE_DIR, UID, Jail, descendants, namespace_init, prepare_dirs, status
from rootfs import ImageConfig, MountedImage

from sidecar_sandbox.grafana_model import Dashboard, Panel
from sidecar_sandbox.pixels import SERIES_GREEN as GREEN
from sidecar_sandbox.pixels import colour_pixels
from sidecar_sandbox.runner import CONFIG_HEAD, Sandboxes, start_sandboxes

READYZ = "http://127.0.0.1:9464/readyz"
CJK_TITLE = "错误率 エラー率 오류율"
CJK_SERVICE = "结账服务"
PICTURES = 3  # delivered per rule before SIGTERM
RUN_CONFIG = (
    CONFIG_HEAD
    + """\
capture: {timeout: 20s, image_budget: 18s}
server: {listen: "0.0.0.0:9464"}
rules:
  - name: ImageReport
    source: schedule
    every: 3s
    title: Image report
    panels: [{dashboard: sandbox, panel: 1, range: 1h}]
  - name: ImageCJK
    source: schedule
    every: 3s
    title: 图表报告
    panels: [{dashboard: cjk, panel: 1, range: 1h, vars: {service: "@SERVICE@"}}]
""".replace("@SERVICE@", CJK_SERVICE)
)


def grace_seconds() -> int:
    """terminationGracePeriodSeconds of the base deployment: what Kubernetes waits after SIGTERM."""
    deployment = yaml.safe_load((ROOT / "deploy/kubernetes/base/deployment.yaml").read_text(encoding="utf-8"))
    return int(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def add_cjk_dashboard(boxes: Sandboxes) -> None:
    """A dashboard whose panel title, series name and variable are Chinese/Japanese/Korean."""
    panel = Panel(1, CJK_TITLE, "series", "请求数", 0.2, 80.0, 20.0, (0, 0, 12, 8))
    board = Dashboard(uid="cjk", title="服务总览", slug="fu-wu-zong-lan", scenes=True, panels=(panel,),
                      variables={"service": CJK_SERVICE})  # fmt: skip
    boxes.grafana.dashboards[board.uid] = board


def pictures(boxes: Sandboxes, rule: str) -> list[bytes]:
    """The pictures delivered with the alerts of ``rule``, oldest first."""
    found = []
    for alert in boxes.flashduty.state()["alerts"]:
        if alert["labels"].get("sidecar_rule") == rule and alert.get("images"):
            stored = boxes.flashduty.images.get(alert["images"][0]["src"])
            if stored is not None:
                found.append(stored.data)
    return found


def picture(boxes: Sandboxes, rule: str) -> bytes | None:
    found = pictures(boxes, rule)
    return found[0] if found else None


def capture_classes(log: str) -> list[str]:
    """The class of every capture the daemon logged (its JSON log lines of ``sidecar.capture``)."""
    classes = []
    for line in Path(log).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("logger") == "sidecar.capture" and "cls" in entry:
            classes.append(str(entry["cls"]))
    return classes


async def readyz() -> int | None:
    try:
        async with aiohttp.ClientSession() as http, http.get(READYZ, timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


async def run_checks(report: Report, jail: Jail, cfg: ImageConfig, boxes: Sandboxes, logs: str) -> None:
    secrets = boxes.env()
    await asyncio.to_thread(jail_checks, report, jail, cfg, secrets)
    (Path(jail.config_dir) / "config.yaml").write_text(RUN_CONFIG, encoding="utf-8")
    health = cfg.healthcheck[1:]
    before = await asyncio.to_thread(jail.run, health)
    report.check("healthcheck fails while no daemon runs", before.returncode != 0, f"exit {before.returncode}")
    t0 = time.monotonic()
    daemon = jail.start([*cfg.entrypoint, *cfg.cmd], env=secrets, log=f"{logs}/daemon.log")
    try:
        await daemon_checks(report, jail, boxes, daemon, t0, health, f"{logs}/daemon.log")
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    await cjk_checks(report, jail, cfg, boxes, secrets)


async def daemon_checks(report: Report, jail: Jail, boxes: Sandboxes, daemon: subprocess.Popen[bytes],
                        t0: float, health: list[str], log: str) -> None:  # fmt: skip
    ready = None
    while time.monotonic() - t0 < 90 and daemon.poll() is None and ready != 200:
        ready = await readyz()
        await asyncio.sleep(0.05)
    startup = time.monotonic() - t0
    report.check("run: /readyz answers 200", ready == 200, f"in {startup:.2f} s")
    report.fact("start-up time to /readyz", f"{startup:.2f} s")
    init = namespace_init(daemon)
    tree = descendants(init) if init else []
    names = {pid: status(pid).get("Name", "") for pid in tree}
    report.check(
        "tini is PID 1 of the container", init is not None and names.get(init) == "tini", str(names.get(init or 0))
    )
    bad = [f"{names[p]}({p})" for p in tree if not _unprivileged(status(p))]
    browser = [p for p in tree if "chrom" in names[p]]
    report.check("every process (daemon, Chromium) runs as 10001 with no capabilities", bool(browser) and not bad,
                 f"{len(tree)} processes, {len(browser)} Chromium; bad: {bad}")  # fmt: skip
    healthy = await asyncio.to_thread(jail.run, health)
    report.check(
        "HEALTHCHECK command passes against the running daemon", healthy.returncode == 0, healthy.stdout.strip()[:80]
    )
    deadline = time.monotonic() + 60  # three alerts of each rule: pooled and fresh contexts
    while time.monotonic() < deadline and min(len(pictures(boxes, r)) for r in ("ImageReport", "ImageCJK")) < PICTURES:
        await asyncio.sleep(0.25)
    shot = picture(boxes, "ImageReport")
    green = colour_pixels(shot, GREEN) if shot else 0
    report.check("a schedule rule delivered a picture with data", green > 500, f"{green} series pixels")
    counts = {r: len(pictures(boxes, r)) for r in ("ImageReport", "ImageCJK")}
    report.check(
        f"each rule delivered {PICTURES} pictures (the CJK panel's too)", min(counts.values()) >= PICTURES, str(counts)
    )
    grace = grace_seconds()
    t1 = time.monotonic()
    os.kill(init or daemon.pid, signal.SIGTERM)
    try:
        code: int | None = await asyncio.to_thread(daemon.wait, grace)
    except subprocess.TimeoutExpired:
        code = None
    stopped = time.monotonic() - t1
    report.check(f"SIGTERM: exit 0 within the grace ({grace} s)", code == 0, f"exit {code} after {stopped:.2f} s")
    left = [p for p in tree if status(p)]
    report.check("no process of the container is left", not left, str(left))
    classes = capture_classes(log)
    failed = [c for c in classes if c != "ok"]
    report.check(
        "every capture of the run succeeded", bool(classes) and not failed, f"{len(classes)} captures, not ok: {failed}"
    )


def _unprivileged(st: dict[str, str]) -> bool:
    if not st:  # gone meanwhile (a short-lived helper)
        return True
    uids, gids = st.get("Uid", "").split(), st.get("Gid", "").split()
    caps = all(cap_mask(st, k) == 0 for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"))
    return uids == [str(UID)] * 4 and gids == [str(UID)] * 4 and caps and st.get("NoNewPrivs") == "1"


async def cjk_checks(report: Report, jail: Jail, cfg: ImageConfig, boxes: Sandboxes, secrets: dict[str, str]) -> None:
    """The delivered CJK picture against a render with the CJK font hidden: the title (top rows)
    and the legend (bottom rows) differ; a second render with the font matches the delivered one."""
    delivered = picture(boxes, "ImageCJK")
    renders: dict[str, bytes] = {}
    for name, hide in (("with", []), ("without", [CJK_FONTS])):
        out = f"{STATE_DIR}/cjk-{name}.png"
        argv = [*cfg.entrypoint, "capture", "-c", CONFIG, "--dashboard", "cjk", "--panel", "1", "--var",
                f"service={CJK_SERVICE}", "-o", out]  # fmt: skip
        done = await asyncio.to_thread(jail.run, argv, secrets, hide)
        host = Path(jail.state_dir) / f"cjk-{name}.png"
        if done.returncode == 0 and host.exists():
            renders[name] = host.read_bytes()
        else:
            report.check(
                f"capture the CJK panel {name} the CJK font", False, (done.stdout + done.stderr).strip()[-200:]
            )
    keep = os.environ.get("SIDECAR_PROVE_OUT")  # a directory for the pictures, to look at them
    if keep:
        os.makedirs(keep, exist_ok=True)
        for name, data in {
            **renders,
            "delivered": delivered or b"",
            "report": picture(boxes, "ImageReport") or b"",
        }.items():
            Path(keep, f"cjk-{name}.png" if name != "report" else "report.png").write_bytes(data)
    if not delivered or len(renders) < 2:
        report.check("CJK text drawn with real glyphs", False, "pictures missing")
        return
    title_fonts = strip_difference(renders["with"], renders["without"], 0, 40)
    legend_fonts = strip_difference(renders["with"], renders["without"], -40, 0)
    same = strip_difference(delivered, renders["with"], 0, 40)
    report.fact(
        "CJK pictures",
        f"{size_of(delivered)}; title rows differing pixels: {title_fonts} (font vs none), {same} (delivered vs font)",
    )
    report.check(
        "CJK title drawn with the CJK font (differs from the no-font render)", title_fonts > 100, f"{title_fonts} px"
    )
    report.check(
        "CJK legend drawn with the CJK font (differs from the no-font render)", legend_fonts > 50, f"{legend_fonts} px"
    )
    report.check("the delivered CJK title matches a render with the font", 0 <= same < 20, f"{same} px")


async def prove(image: str) -> int:
    report = Report()
    cfg = ImageConfig.inspect(image)
    with tempfile.TemporaryDirectory(prefix="sidecar-prove-") as tmp, MountedImage(image) as mounted:
        static_checks(report, cfg, mounted.path)
        state, conf, logs = f"{tmp}/state", f"{tmp}/config", f"{tmp}/logs"
        prepare_dirs(state, conf)
        os.makedirs(logs)
        jail = Jail(rootfs=mounted.path, scratch=f"{tmp}/roots", state_dir=state, config_dir=conf,
                    image_env=cfg.env, workdir=cfg.workdir)  # fmt: skip
        boxes = await start_sandboxes(query_delay=0.2)
        add_cjk_dashboard(boxes)
        try:
            await run_checks(report, jail, cfg, boxes, logs)
        finally:
            await boxes.close()
            if not report.passed or os.environ.get("SIDECAR_PROVE_LOG"):
                print(
                    Path(logs, "daemon.log").read_text(errors="replace")[-4000:]
                    if Path(logs, "daemon.log").exists()
                    else ""
                )
    print(report.summary())
    return 0 if report.passed else 1


def main() -> int:
    version = re.search(r'^version = "(.*)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    image = sys.argv[1] if len(sys.argv) > 1 else f"localhost/flashduty-sidecar:{version.group(1) if version else '0'}"
    if os.geteuid() != 0:
        print("prove.py: needs root (mount, PID and network namespaces, buildah mount)", file=sys.stderr)
        return 3
    if os.environ.get("SIDECAR_PROVE_NETNS") != "1":  # a network namespace of our own (the pod's)
        env = {**os.environ, "SIDECAR_PROVE_NETNS": "1"}
        argv = [
            "unshare",
            "--net",
            "--",
            "/bin/sh",
            "-c",
            'ip link set lo up && exec "$@"',
            "sh",
            sys.executable,
            *sys.argv,
        ]
        return subprocess.run(argv, env=env, check=False).returncode
    return asyncio.run(prove(image))


if __name__ == "__main__":
    sys.exit(main())
