"""Progress bars: images per stage with rates in a terminal, nothing when stderr is not a terminal."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import termios

from imagegen import photo, save
from test_cli import COMMAND

from dupflow.progress import LineBar, progress_bar, task_weights


def test_task_weights_spread_images_exactly():
    assert task_weights(3, 10) == [4, 3, 3] and sum(task_weights(7, 1000)) == 1000
    assert task_weights(4, None) == [1, 1, 1, 1]
    assert task_weights(5, 2) == [1, 1, 0, 0, 0]


def test_no_output_when_stderr_is_not_a_terminal(capsys):
    with progress_bar(100, "dupflow decoding", True) as bar:
        bar.update(100)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_notebook_line_has_the_rate_and_no_carriage_return():
    out = io.StringIO()
    with LineBar(2000, "dupflow decoding", "images", out) as bar:
        bar.update(1500)
        bar.update(500)
    text = out.getvalue()
    assert text.startswith("dupflow decoding: 2,000 images in ") and text.endswith("images/s)\n")
    assert "\r" not in text and text.count("\n") == 1


def _run(tmp_path, stderr, *flags):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_STATE_HOME=str(tmp_path / "state"))
    return subprocess.run(
        [*COMMAND, "in", "-Z", "out", "--catalog", str(tmp_path / "cat"), "-s", "similar", *flags],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_command_bars_count_images_on_a_terminal_only(tmp_path):
    for k in range(12):
        save(photo(k % 6, 64, 48), tmp_path / "in" / f"img{k:02d}.png")
    piped = _run(tmp_path, subprocess.PIPE)
    assert piped.returncode == 0 and piped.stderr == b""  # quiet in logs and pipes
    primary, replica = pty.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    try:
        shown = _run(tmp_path, replica, "--catalog", str(tmp_path / "cat2"))  # a cold catalog: decodes
    finally:
        os.close(replica)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal's other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert shown.returncode == 0
    lines = text.replace("\r", "\n").splitlines()
    decoding = [line for line in lines if line.startswith("dupflow decoding:")]
    comparing = [line for line in lines if line.startswith("dupflow comparing:")]
    assert decoding and all(
        "/12 [" in line and "images/s]" in line for line in decoding
    )  # images, not shards
    assert comparing and all("/12 [" in line for line in comparing)
