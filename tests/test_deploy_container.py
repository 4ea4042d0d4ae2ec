"""deploy/container/Containerfile: linted with hadolint, built with podman (--isolation=chroot) from a local
Debian base made with debootstrap, dupflow installed from a wheelhouse built on this host; then
`dupflow --version` and a small search run inside the image's filesystem (chroot), with the host's answer.

The base is cached under ~/.cache/dupflow-ci/ keyed by its inputs, so a warm machine skips debootstrap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from imagegen import make_photo_set

import dupflow

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile"
CACHE = Path(os.environ.get("DUPFLOW_CI_CACHE", "~/.cache/dupflow-ci")).expanduser()
SUITES = {(3, 11): "bookworm", (3, 13): "trixie"}  # Debian release whose python3 takes this host's wheels
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,ca-certificates"
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def _run(args: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def test_containerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint), str(CONTAINERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # and it bites: a classic mistake is reported
    bad = subprocess.run(
        [str(hadolint), "-"], input="FROM debian\nRUN cd /tmp && echo hi\n", capture_output=True, text=True
    )
    assert bad.returncode != 0 and "DL" in bad.stdout


def _base_image() -> str:
    """A Debian base image imported into podman from a debootstrap tarball cached by its inputs."""
    suite = SUITES.get(sys.version_info[:2])
    assert suite, f"no Debian release known with python {sys.version_info[:2]} (known: {SUITES})"
    version = _run(["dpkg-query", "-W", "-f", "${Version}", "debootstrap"]).stdout
    inputs = {"suite": suite, "variant": "minbase", "include": PACKAGES, "mirror": MIRROR, "tool": version}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]
    image = f"localhost/dupflow-ci-base:{suite}-{key}"
    if subprocess.run(["podman", "image", "exists", image]).returncode == 0:
        return image
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"container-base-{suite}-{key}.tar"
    if not tarball.exists():
        work = CACHE / f".build-{uuid.uuid4().hex}"
        try:
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={PACKAGES}",
                    suite,
                    str(work / "root"),
                    MIRROR,
                ],
                timeout=540,
            )
            _run(["tar", "-C", str(work / "root"), "-cf", str(work / "base.tar"), "."])
            os.replace(work / "base.tar", tarball)  # whole or not at all
        finally:
            shutil.rmtree(work, ignore_errors=True)
    _run(["podman", "import", str(tarball), image])
    return image


def _wheelhouse(into: Path) -> None:
    """dupflow's wheel, freshly built, plus its dependencies' wheels (cached by the dependency list)."""
    import tomllib

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    key = hashlib.sha256(json.dumps([dependencies, sys.version_info[:2]]).encode()).hexdigest()[:12]
    cached = CACHE / f"wheelhouse-{key}"
    into.mkdir(parents=True)
    if not cached.exists():
        work = CACHE / f".wheels-{uuid.uuid4().hex}"
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(work), *dependencies])
        os.replace(work, cached)
    for wheel in cached.iterdir():
        shutil.copy(wheel, into)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(into), str(ROOT)])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_container_image_builds_and_searches(tmp_path):
    photos = tmp_path / "photos"
    make_photo_set(photos)
    with dupflow.build(str(photos), show_progress=False, catalog=str(tmp_path / "cat")) as dif:
        expected = dupflow.search(dif, show_progress=False, similarity="similar").result
    assert expected

    base = _base_image()
    context = tmp_path / "context"
    _wheelhouse(context / "wheels")
    tag = f"localhost/dupflow-ci-test:{uuid.uuid4().hex[:8]}"
    _run(
        ["podman", "build", "--isolation=chroot", "--build-arg", f"BASE={base}"]
        + ["--build-arg", "PACKAGE=dupflow", "-f", str(CONTAINERFILE), "-t", tag, str(context)],
        timeout=600,
    )
    container = f"dupflow-ci-{uuid.uuid4().hex[:8]}"
    mounted: list[str] = []
    try:
        _run(["podman", "create", "--name", container, tag])
        root = Path(_run(["podman", "mount", container]).stdout.strip())
        mounted.append(str(root))
        _run(["mount", "-t", "proc", "proc", str(root / "proc")])
        mounted.append(str(root / "proc"))
        shutil.copytree(photos, root / "data" / "photos")
        # the image's user and environment, as `podman run` would give them (it cannot run here)
        env = {"PATH": "/opt/dupflow/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/home/dupflow"}
        env["XDG_CACHE_HOME"] = "/home/dupflow/.cache"
        inside = [CHROOT, "--userspec=10001:10001", str(root)]
        version = _run(inside + ["dupflow", "--version"], env=env).stdout.strip()
        assert version == f"dupflow {dupflow.__version__}"
        os.makedirs(root / "tmp" / "out")
        os.chown(root / "tmp" / "out", 10001, 10001)
        _run(inside + ["dupflow", "/data/photos", "-s", "similar", "-p", "false", "-Z", "/tmp/out"], env=env)
        (results,) = (root / "tmp" / "out").glob("*_results.json")
        found = json.loads(results.read_text().replace("/data/photos", str(photos)))
        assert found == json.loads(json.dumps(expected))
        # the catalog went where the image says, in the dupflow user's cache
        assert (root / "home" / "dupflow" / ".cache" / "dupflow" / "catalog").is_dir()
    finally:
        for path in reversed(mounted[1:]):
            subprocess.run(["umount", path], capture_output=True)
        if mounted:
            subprocess.run(["podman", "umount", container], capture_output=True)
        subprocess.run(["podman", "rm", "-f", container], capture_output=True)
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
