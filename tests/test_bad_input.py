"""Bad input: nothing a file, a name or a folder holds may crash the run or get lost.

Every odd file either ends up in invalid_files with a clear reason, or is a valid image that is
compared (each odd-but-valid image has a planted twin that must be found), or the call raises a
clear error; and the rest of the run completes.
"""

from __future__ import annotations

import ctypes
import glob
import io
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import warnings
import zlib

import numpy as np
import pytest
from imagegen import photo, save
from PIL import Image

import dupflow
import dupflow.api
from dupflow.decode import UNIDENTIFIED
from dupflow.sources import UNSUPPORTED, list_files


def names(paths) -> set[str]:
    """Base names of some paths."""
    return {os.path.basename(p) for p in paths}


def groups(found) -> set[frozenset[str]]:
    """Each group of a (union-mode) search as the set of its members' base names."""
    return {
        frozenset({os.path.basename(primary)} | names(m for m, _ in matches))
        for primary, matches in found.result.items()
    }


def logs(dif) -> dict[str, str]:
    """invalid_files logs keyed by base name."""
    return {os.path.basename(p): reason for p, reason in dif.stats["invalid_files"]["logs"].items()}


def as_rgb_png(source: str, target: str, frame: int = 0) -> str:
    """Losslessly save Pillow's own RGB conversion of a file's frame: its exact twin for difPy's recipe."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette-with-bytes-transparency warns on convert
        img = Image.open(source)
        img.seek(frame)
        img.convert("RGB").save(target)
    return target


def bilevel_png(path: str, width: int, height: int) -> str:
    """A real, valid 1-bit (mode "1") PNG of any size, streamed row by row; all black, so tiny on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    with open(path, "wb") as handle:
        handle.write(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat)
            + chunk(b"IEND", b"")
        )
    return path


def bomb_message(pixels: int, limit: int) -> str:
    return (
        f"Image size ({pixels} pixels) exceeds limit of {limit} pixels, "
        "could be decompression bomb DOS attack."
    )


# ---------------------------------------------------------------------------------------------------
# One folder holding every kind of odd file, next to ordinary duplicates
# ---------------------------------------------------------------------------------------------------


def make_zoo(root: str) -> None:
    """Corrupt, fake, huge and special files, plus odd-but-valid images each with an exact twin."""
    os.makedirs(root)
    base = photo(1)
    save(base, f"{root}/good.png")
    shutil.copy(f"{root}/good.png", f"{root}/good_copy.png")
    # corrupt / not images
    buf = io.BytesIO()
    Image.fromarray(photo(2)).save(buf, "JPEG", quality=90)
    with open(f"{root}/truncated.jpg", "wb") as handle:
        handle.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    open(f"{root}/zero.jpg", "wb").close()
    with open(f"{root}/text.jpg", "w") as handle:
        handle.write("this is not a picture\n")
    with open(f"{root}/doc.pdf", "wb") as handle:
        handle.write(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
    bilevel_png(f"{root}/bomb.png", 9500, 9500)  # 1x..2x the limit: Pillow only warns
    bilevel_png(f"{root}/megabomb.png", 20000, 20000)  # over 2x: Pillow raises
    os.mkfifo(f"{root}/fifo.jpg")
    # odd but valid: CMYK JPEG, 16-bit PNG, palette PNG with bytes transparency, animated GIF
    Image.fromarray(photo(3)).convert("CMYK").save(f"{root}/cmyk.jpg", quality=92)
    as_rgb_png(f"{root}/cmyk.jpg", f"{root}/cmyk_twin.png")
    Image.fromarray(photo(4)[..., 1].astype(np.uint16) * 257).save(f"{root}/deep16.png")
    as_rgb_png(f"{root}/deep16.png", f"{root}/deep16_twin.png")
    Image.fromarray(photo(5)).convert("P", palette=Image.ADAPTIVE, colors=64).save(
        f"{root}/palette.png", transparency=bytes([0, 128] + [255] * 62)
    )
    as_rgb_png(f"{root}/palette.png", f"{root}/palette_twin.png")
    frames = [Image.fromarray(photo(6 + k)) for k in range(3)]
    frames[0].save(f"{root}/anim.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)
    as_rgb_png(f"{root}/anim.gif", f"{root}/anim_first.png", frame=0)
    as_rgb_png(f"{root}/anim.gif", f"{root}/anim_second.png", frame=1)


@pytest.mark.timeout(120)
def test_bad_files_are_logged_and_odd_images_compared(run, tmp_path):
    root = str(tmp_path / "zoo")
    make_zoo(root)
    # the fixtures are what they claim to be
    assert Image.open(f"{root}/cmyk.jpg").mode == "CMYK"
    assert Image.open(f"{root}/deep16.png").mode.startswith("I;16")
    assert isinstance(Image.open(f"{root}/palette.png").info.get("transparency"), bytes)
    assert getattr(Image.open(f"{root}/anim.gif"), "n_frames", 1) == 3
    assert os.path.getsize(f"{root}/bomb.png") < 100_000 and 9500 * 9500 > Image.MAX_IMAGE_PIXELS

    dif, found = run(root)

    invalid = logs(dif)
    assert set(invalid) == {
        "truncated.jpg",
        "zero.jpg",
        "text.jpg",
        "doc.pdf",
        "bomb.png",
        "megabomb.png",
        "fifo.jpg",
    }
    assert "truncated" in invalid["truncated.jpg"].lower()
    assert invalid["zero.jpg"] == UNIDENTIFIED
    assert invalid["text.jpg"] == UNIDENTIFIED
    assert invalid["doc.pdf"] == UNSUPPORTED
    assert invalid["bomb.png"] == bomb_message(9500 * 9500, Image.MAX_IMAGE_PIXELS)
    assert invalid["megabomb.png"] == bomb_message(20000 * 20000, 2 * Image.MAX_IMAGE_PIXELS)
    assert "regular file" in invalid["fifo.jpg"]
    # odd-format images are valid and compared; the GIF by its first frame only; Pillow's warning
    # on the palette image is harmless (difPy would drop that file)
    assert groups(found) == {
        frozenset({"good.png", "good_copy.png"}),
        frozenset({"cmyk.jpg", "cmyk_twin.png"}),
        frozenset({"deep16.png", "deep16_twin.png"}),
        frozenset({"palette.png", "palette_twin.png"}),
        frozenset({"anim.gif", "anim_first.png"}),
    }
    assert all(mse == 0.0 for matches in found.result.values() for _, mse in matches)
    assert len(found.lower_quality) == 5
    # nothing lost: every file is either searched or logged, and the counts agree
    stats = found.stats
    assert stats["invalid_files"]["count"] == 7 == len(stats["invalid_files"]["logs"])
    assert stats["process"]["search"]["files_searched"] == 11
    assert stats["total_files"] == 18 == len(os.listdir(root))
    assert stats["process"]["search"]["matches_found"] == {"duplicates": 5, "similar": 0}


def test_pdf_without_extension_filter_is_unidentified(run, tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "doc.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    (root / "notes").write_text("no extension at all")
    save(photo(11), root / "a.png")
    save(photo(11), root / "b.bmp")
    dif, found = run(str(root), limit_extensions=False)
    assert logs(dif) == {"doc.pdf": UNIDENTIFIED, "notes": UNIDENTIFIED}
    assert groups(found) == {frozenset({"a.png", "b.bmp"})}


def test_harmless_warnings_do_not_invalidate_even_as_errors(tmp_path):
    """Under a warnings-as-errors filter (-W error: a strict host), Pillow's harmless warnings stay so."""
    palette = str(tmp_path / "palette.png")
    Image.fromarray(photo(12)).convert("P", palette=Image.ADAPTIVE, colors=32).save(
        palette, transparency=bytes([0, 128] + [255] * 30)
    )
    with warnings.catch_warnings(record=True) as seen:  # the file really makes Pillow warn
        warnings.simplefilter("always")
        Image.open(palette).convert("RGB")
    assert any(issubclass(w.category, UserWarning) for w in seen)
    bomb = bilevel_png(str(tmp_path / "bomb.png"), 9500, 9500)
    script = textwrap.dedent(f"""
        from dupflow.decode import decode_image, error_message
        from PIL import Image
        tensor, width, height = decode_image(open({palette!r}, "rb").read(), 50)
        print("PALETTE", tensor.shape, width, height)
        try:
            decode_image(open({bomb!r}, "rb").read(), 50)
        except Image.DecompressionBombError as exc:
            print("BOMB", error_message(exc))
    """)
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "PALETTE (50, 50, 3) 96 72" in done.stdout
    assert f"BOMB {bomb_message(9500 * 9500, Image.MAX_IMAGE_PIXELS)}" in done.stdout


HOST = """
import json, logging, warnings
import numpy, PIL.Image, dask.bag, distributed, pyarrow.parquet, fsspec, tqdm.auto  # their own filters first


def snapshot():
    loggers = logging.root.manager.loggerDict.items()
    return {
        "filters": [repr(f) for f in warnings.filters],
        "root": [repr(logging.root.handlers), logging.root.level],
        "loggers": {
            n: [repr(g.handlers), g.level, g.propagate] for n, g in loggers if isinstance(g, logging.Logger)
        },
    }


before = snapshot()
import dupflow
from dupflow.decode import decode_image
decode_image(open(PALETTE, "rb").read(), 50)  # Pillow warns here: handled without a lasting filter
after = snapshot()
ours = logging.getLogger("dupflow")
ours.warning("a record no host handler asked for")
print(json.dumps({"before": before, "after": after, "ours": [type(h).__name__ for h in ours.handlers]}))
"""


def test_importing_dupflow_leaves_the_hosts_warnings_and_logging_alone(tmp_path):
    """No process-wide warning filter at import or after a decode; the "dupflow" logger has a NullHandler,
    so a host that configured no logging sees no stray records on stderr."""
    palette = str(tmp_path / "palette.png")
    Image.fromarray(photo(12)).convert("P", palette=Image.ADAPTIVE, colors=32).save(
        palette, transparency=bytes([0, 128] + [255] * 30)
    )
    done = subprocess.run(
        [sys.executable, "-c", f"PALETTE = {palette!r}\n" + HOST], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    before, after = report["before"], report["after"]
    assert after["filters"] == before["filters"]
    assert after["root"] == before["root"]
    assert {n: v for n, v in after["loggers"].items() if n in before["loggers"]} == before["loggers"]
    assert report["ours"] == ["NullHandler"]
    assert "a record no host handler asked for" not in done.stderr


# ---------------------------------------------------------------------------------------------------
# Names and folders
# ---------------------------------------------------------------------------------------------------

ODD_NAMES = ["ünïcødé 写真.png", "with  two spaces .png", "a[1].png", "star*.png", "what?.png", "[x].png"]


def test_unicode_spaces_and_glob_characters_in_names(run, tmp_path):
    folder = tmp_path / "Photos [2020]"
    for name in ODD_NAMES:
        save(photo(21), folder / name)
    save(photo(22), folder / "a1.png")  # what the pattern a[1].png would match
    save(photo(22), folder / "sub ?*" / "copy of a1 [B].png")
    save(photo(23), folder / "stara.png")  # what star*.png would match
    save(photo(24), folder / "x.png")  # what [x].png would match
    dif, found = run(str(folder))
    assert dif.stats["invalid_files"]["logs"] == {}
    assert dif.stats["total_files"] == len(ODD_NAMES) + 4
    assert groups(found) == {frozenset(ODD_NAMES), frozenset({"a1.png", "copy of a1 [B].png"})}
    assert all(p.startswith(str(folder) + os.sep) for p in found.lower_quality)

    # the odd names given one by one as inputs, and the odd folder in in_folder mode
    dif, found = run(str(folder / "a[1].png"), str(folder / "star*.png"), str(folder / "x.png"))
    assert dif.stats["invalid_files"]["logs"] == {}
    assert groups(found) == {frozenset({"a[1].png", "star*.png"})}
    dif, found = run(str(folder), in_folder=True)
    assert list(found.result) == [str(folder)]
    assert len(found.result[str(folder)]) == 2


@pytest.mark.timeout(60)
def test_symlink_loops_do_not_hang(run, tmp_path):
    root = tmp_path / "links"
    save(photo(31), root / "a.png")
    save(photo(31), root / "sub" / "a_copy.png")
    os.symlink("..", root / "sub" / "up")  # a folder symlinked to its parent
    os.symlink(root, root / "loop")  # ... and to itself, by absolute path
    os.symlink("self.jpg", root / "self.jpg")  # a file symlink pointing to itself
    os.symlink("missing.png", root / "dangling.png")  # a broken one
    dif, found = run(str(root))
    invalid = logs(dif)
    assert set(invalid) == {"self.jpg", "dangling.png"}
    assert "symbolic link" in invalid["self.jpg"] and "symbolic link" in invalid["dangling.png"]
    assert groups(found) == {frozenset({"a.png", "a_copy.png"})}
    listed = [*found.lower_quality, *found.result]
    assert not any("/up/" in p or "/loop/" in p for p in listed)
    assert dif.stats["total_files"] == 4  # every file once, not once per loop turn

    # the looping links given directly as inputs
    dif, found = run(str(root / "sub" / "up"), str(root / "self.jpg"))
    assert "symbolic link" in logs(dif)["self.jpg"]
    assert groups(found) == {frozenset({"a.png", "a_copy.png"})}


def test_empty_folder(run, tmp_path):
    empty = tmp_path / "empty"
    (empty / "only" / "folders").mkdir(parents=True)
    dif, found = run(str(empty))
    assert found.result == {} and found.lower_quality == []
    assert dif.stats["total_files"] == 0
    assert dif.stats["invalid_files"] == {"count": 0, "logs": {}}
    assert found.stats["process"]["search"]["files_searched"] == 0
    assert found.stats["process"]["search"]["matches_found"] == {"duplicates": 0, "similar": 0}

    full = tmp_path / "full"
    save(photo(41), full / "a.png")
    save(photo(41), full / "b.png")
    dif, found = run(str(empty), str(full), in_folder=True)
    assert list(found.result) == [str(full)]
    for similarity in ("similar", 200):  # the band search, with nothing valid in one folder or at all
        dif, found = run(str(empty), str(full), in_folder=True, search={"similarity": similarity})
        assert list(found.result) == [str(full)]
        dif, found = run(str(empty), search={"similarity": similarity})
        assert found.result == {} and found.stats["process"]["search"]["files_searched"] == 0


def test_missing_folder_is_a_clear_error(client, catalog, tmp_path):
    save(photo(51), tmp_path / "here" / "a.png")
    for missing in (tmp_path / "nowhere", tmp_path / "gone [1]" / "x", tmp_path / "here" / "b.png"):
        with pytest.raises(FileNotFoundError, match=re.escape(f'Directory "{missing}" does not exist')):
            dupflow.build(
                str(missing), str(tmp_path / "here"), scheduler=client, catalog=catalog, show_progress=False
            )
    assert not os.path.exists(catalog)  # refused before any work


# ---------------------------------------------------------------------------------------------------
# Files that change under the run
# ---------------------------------------------------------------------------------------------------


def test_file_vanishing_between_listing_and_decoding(run, tmp_path, monkeypatch):
    root = tmp_path / "shaky"
    for name in ("a.png", "b.png", "c.png"):
        save(photo(61), root / name)
    save(photo(62), root / "gone.png")
    real_list_files = dupflow.api.list_files

    def list_then_lose_one(*args, **kwargs):
        listing = real_list_files(*args, **kwargs)
        assert any(p.endswith("gone.png") for p in listing.path)
        os.remove(root / "gone.png")
        return listing

    monkeypatch.setattr(dupflow.api, "list_files", list_then_lose_one)
    dif, found = run(str(root))
    reason = logs(dif)["gone.png"]
    assert "not found" in reason.lower() and "after it was listed" in reason, reason
    assert groups(found) == {frozenset({"a.png", "b.png", "c.png"})}
    assert dif.stats["total_files"] == 4 and dif.stats["invalid_files"]["count"] == 1


@pytest.mark.timeout(60)
def test_fifo_given_by_name_does_not_hang(run, tmp_path):
    save(photo(71), tmp_path / "a.png")
    save(photo(71), tmp_path / "b.png")
    fifo = str(tmp_path / "pipe.jpg")
    os.mkfifo(fifo)
    # refused at listing, so no worker ever blocks reading it
    listing = list_files([fifo], recursive=True, limit_extensions=True)
    assert len(listing) == 0 and "regular file" in listing.invalid[fifo]
    dif, found = run(fifo, str(tmp_path / "a.png"), str(tmp_path / "b.png"))
    assert "regular file" in logs(dif)["pipe.jpg"]
    assert groups(found) == {frozenset({"a.png", "b.png"})}


def _drop_file_permission_bypass() -> None:
    """preexec_fn for root: lose the power to ignore file modes (CAP_DAC_*), or else become nobody."""
    libc = ctypes.CDLL(None, use_errno=True)
    PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
    if all(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0 for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)):
        return  # still uid 0, so the interpreter stays reachable
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


@pytest.mark.timeout(120)
def test_unreadable_file_and_folder():
    base = tempfile.mkdtemp(prefix="dupflow-unreadable-")  # outside pytest's private tmp tree
    root = os.path.join(base, "pics")
    try:
        save(photo(81), os.path.join(root, "a.png"))
        save(photo(81), os.path.join(root, "b.png"))
        save(photo(81), os.path.join(root, "locked.png"))
        save(photo(82), os.path.join(root, "private", "hidden_from_us.png"))
        for folder, _, files in os.walk(base):
            os.chmod(folder, 0o777)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o666)
        os.chmod(os.path.join(root, "locked.png"), 0)
        os.chmod(os.path.join(root, "private"), 0)
        out, work = os.path.join(base, "out"), os.path.join(base, "work")
        os.makedirs(work, mode=0o777)
        os.chmod(work, 0o777)
        env = {**os.environ, "HOME": work, "XDG_CACHE_HOME": work, "XDG_STATE_HOME": work, "TMPDIR": work}
        command = [
            sys.executable,
            "-m",
            "dupflow.cli",
            root,
            "-Z",
            out,
            "--catalog",
            os.path.join(work, "catalog"),
            "-p",
            "false",
            "-proc",
            "1",
        ]
        done = subprocess.run(
            command,
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=100,
            preexec_fn=_drop_file_permission_bypass if os.geteuid() == 0 else None,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        [stats_file] = glob.glob(os.path.join(glob.escape(out), "*_stats.json"))
        [results_file] = glob.glob(os.path.join(glob.escape(out), "*_results.json"))
        with open(stats_file) as handle:
            stats = json.load(handle)
        with open(results_file) as handle:
            result = json.load(handle)
        invalid = stats["invalid_files"]["logs"]
        assert "Permission denied" in invalid[os.path.join(root, "locked.png")], invalid
        assert "Permission denied" in invalid[os.path.join(root, "private")], invalid
        assert {frozenset({os.path.basename(k)} | names(m for m, _ in v)) for k, v in result.items()} == {
            frozenset({"a.png", "b.png"})
        }
        assert stats["process"]["search"]["files_searched"] == 2
    finally:
        for folder, subfolders, files in os.walk(base):
            for name in subfolders + files:
                path = os.path.join(folder, name)
                if not os.path.islink(path):
                    os.chmod(path, stat.S_IRWXU)
        shutil.rmtree(base, ignore_errors=True)
