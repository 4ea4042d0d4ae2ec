"""What the cluster tests share: photos big enough that decoding lasts seconds, a search's answer in a
comparable form, and waiting for a condition."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from imagegen import photo
from PIL import Image


def large_photos(root: Path, n: int, copy_every: int, turn_every: int = 0, reencode_every: int = 0) -> str:
    """n 1024x768 JPEG photos (about 0.1 s each to decode), with byte copies of every `copy_every`-th,
    PNG pairs with a lossless quarter turn of every `turn_every`-th, q80 re-encodes of every
    `reencode_every`-th (0: none)."""
    for k in range(n):
        base = Image.fromarray(photo(k, 160, 120)).resize((1024, 768), Image.BICUBIC)
        base.save(root / f"p{k:03d}.jpg", quality=90)
        if k % copy_every == 0:
            shutil.copyfile(root / f"p{k:03d}.jpg", root / f"p{k:03d}_copy.jpg")
        if turn_every and k % turn_every == 0:
            base.save(root / f"p{k:03d}.png", compress_level=1)
            base.rotate(90, expand=True).save(root / f"p{k:03d}_r90.png", compress_level=1)
        if reencode_every and k % reencode_every == 0:
            base.save(root / f"p{k:03d}_q80.jpg", quality=80)
    return str(root)


def answer(found) -> tuple:
    """result (as JSON would carry it), lower_quality and every matching pair of a search."""
    return json.loads(json.dumps(found.result)), found.lower_quality, found.pairs


def wait_for(condition, timeout: float, what: str):
    """Poll until `condition()` is truthy (returning it), failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
