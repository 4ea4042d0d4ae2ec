"""The malloc settings of dupflow's own processes: image-sized buffers are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# 40 MB, over glibc's own ceiling for its sliding mmap threshold (32 MB): untuned, each one is a fresh mmap
LOOP = textwrap.dedent("""
    import resource, sys
    if sys.argv[1] == "cli":
        import dupflow.cli
        try:
            dupflow.cli.main(["--version"])  # what the command does first, before any work
        except SystemExit:
            pass
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        buffer = b"\\1" * (40 << 20)  # a 4K image's pixels, written, then freed
        del buffer
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(how: str) -> int:
    done = subprocess.run([sys.executable, "-c", LOOP, how], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_command_reuses_freed_image_buffers():
    plain, tuned = _faults("plain"), _faults("cli")
    assert plain > 20 * (40 << 20) // 4096 // 2  # every buffer faulted in afresh (4 KiB pages)
    assert tuned * 4 < plain  # the first buffer only
