"""The checks of the image that need no running daemon: its config and files (on the mounted
root filesystem), then one-shot commands in the jail (``check-config`` on the shipped example,
who a process is and what it may write, the CJK font)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from checks import Report
from jail import CONFIG_DIR, STATE_DIR, UID, Jail
from rootfs import ImageConfig, tree_bytes

ROOT = Path(__file__).resolve().parents[2]
CONFIG = f"{CONFIG_DIR}/config.yaml"
CJK_FONTS = "/usr/share/fonts/opentype/noto"  # fonts-noto-cjk


def static_checks(report: Report, cfg: ImageConfig, root: str) -> None:
    report.fact("image", f"{cfg.name}, {cfg.size} (buildah), {tree_bytes(root) / 1e6:.0f} MB unpacked")
    report.check("USER is 10001:10001", cfg.user == f"{UID}:{UID}", cfg.user)
    report.check(
        "entrypoint is tini -- flashduty-sidecar", cfg.entrypoint[:3] == ["/usr/bin/tini", "--", "flashduty-sidecar"]
    )
    report.check(
        "HEALTHCHECK kept (docker format)",
        cfg.healthcheck[1:] == ["flashduty-sidecar", "healthcheck"],
        str(cfg.healthcheck),
    )
    browser = cfg.env.get("SIDECAR_BROWSER_PATH", "")
    target = _in_image(root, browser) if browser else ""
    label = cfg.labels.get("io.flashcat.sidecar.browser", "")
    report.check("SIDECAR_BROWSER_PATH is an executable in the image", bool(target) and os.access(root + target, os.X_OK)
                 and Path(target).name == label, f"{browser} -> {target} (BROWSER={label})")  # fmt: skip
    python = os.readlink(f"{root}/opt/venv/bin/python3") if os.path.islink(f"{root}/opt/venv/bin/python3") else ""
    report.check("the venv runs Debian's python3 (3.11)", os.path.exists(f"{root}/usr/bin/python3.11") and "python3" in python,
                 python)  # fmt: skip
    sandbox = list(Path(root, "opt/venv").rglob("sidecar_sandbox"))
    report.check("no emulators in the image (sidecar_sandbox)", not sandbox, ", ".join(map(str, sandbox[:3])))
    leaked = [
        p
        for p in ("run/secrets", "etc/pip.conf", "root/.config/pip", "root/.cache/pip")
        if os.path.exists(f"{root}/{p}")
    ]
    envs = [k for k in cfg.env if k.startswith("PIP_CERT") or k.startswith("PIP_CONFIG")]
    report.check(
        "no build secrets in the image (CA bundle, pip config)", not leaked and not envs, ", ".join(leaked + envs)
    )
    report.check(
        "libatomic1 (Playwright's Node driver)",
        bool(list(Path(root, "usr/lib/x86_64-linux-gnu").glob("libatomic.so.1*"))),
    )


def _in_image(root: str, path: str, hops: int = 8) -> str:
    """``path`` with its symbolic links resolved inside the image rooted at ``root``."""
    for _ in range(hops):
        if not os.path.islink(root + path):
            return path
        link = os.readlink(root + path)
        path = link if link.startswith("/") else os.path.normpath(os.path.join(os.path.dirname(path), link))
    return path


def jail_checks(report: Report, jail: Jail, cfg: ImageConfig, secrets: dict[str, str]) -> None:
    shutil.copy(ROOT / "config.example.yaml", Path(jail.config_dir) / "config.yaml")
    done = jail.run([*cfg.entrypoint, "check-config", "-c", CONFIG], env=secrets)
    report.check(
        "check-config on the shipped config.example.yaml",
        done.returncode == 0,
        (done.stdout + done.stderr).strip()[-200:],
    )
    probe = jail.run(["/bin/sh", "-c", "id -u; id -g; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status;"
                      "touch /opt/venv/x 2>/dev/null && echo root-writable; touch /tmp/x && echo tmp-writable;"
                      f"touch {STATE_DIR}/x && rm {STATE_DIR}/x && echo state-writable"])  # fmt: skip
    out = probe.stdout
    report.check(
        "a process in the jail is 10001:10001", out.split()[:2] == [str(UID), str(UID)], " ".join(out.split()[:2])
    )
    report.check("no capabilities, no new privileges", re.search(r"CapEff:\s+0+\n", out) is not None
                 and re.search(r"CapBnd:\s+0+\n", out) is not None and "NoNewPrivs:\t1" in out)  # fmt: skip
    report.check("root filesystem read-only; /tmp and the state dir writable",
                 "root-writable" not in out and "tmp-writable" in out and "state-writable" in out, out.split("\n", 5)[-1].strip())  # fmt: skip
    fonts = jail.run(["fc-list", ":lang=zh", "family"]).stdout
    report.check(
        "a CJK font is installed (fc-list :lang=zh)", "Noto Sans CJK" in fonts, fonts.splitlines()[0] if fonts else ""
    )
    hidden = jail.run(["fc-list", ":lang=zh", "family"], hide=[CJK_FONTS]).stdout
    report.check("... and gone when its directory is hidden (the control render)", hidden.strip() == "", hidden[:80])
