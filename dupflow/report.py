"""The HTML report: one self-contained file (no network) that shows every group with its kept image.

`collect` gathers what a person needs to decide: the search's summary, its invalid files, every group with
each file's thumbnail (made on the Dask cluster through fsspec, so buckets work), size, dimensions,
modification time, MSE and, when a journal says so, what happened to it. `render_html` turns that into
one HTML file whose script pages through the groups (so 10,000 groups open fast), sorts and filters
them, and moves between them with the keyboard.
"""

from __future__ import annotations

import html
import json
import math
import os
from datetime import datetime
from typing import Any, Iterable, Mapping

from . import __version__
from .actions import read_journal
from .outputs import find_run, flat_groups, folder_of, human_bytes
from .sources import is_remote, local_path, redact
from .thumbnails import THUMB_PX, Thumb, thumbnails

LARGE_REPORT_FILES = 10_000  # above this many files, smaller thumbnails
SMALL_THUMB_PX = 128

__all__ = ["collect", "journal_events", "render_html", "report_from_outputs", "write_report"]


def journal_events(journals: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{source url: {"status": "moved"|"deleted"|"skipped", "destination"?, "reason"?, "size"?}}.

    Later journals win, so a file moved and then deleted shows its last fate.
    """
    events: dict[str, dict[str, Any]] = {}
    for path in journals:
        records = read_journal(path)
        sizes = {r["source"]: r.get("size") for r in records[1:] if r.get("op") == "plan"}
        for record in records[1:]:
            source = record.get("source")
            if record.get("op") == "done":
                entry = {"status": "moved" if record.get("destination") else "deleted"}
                if record.get("destination"):
                    entry["destination"] = record["destination"]
                entry["size"] = sizes.get(source)
                events[source] = entry
            elif record.get("op") == "skip":
                events[source] = {"status": "skipped", "reason": record.get("reason", "")}
    return events


def _url(path: str) -> str:
    """What a result path opens as (the journal's key): local paths absolute, URLs as they are."""
    if is_remote(path):
        return path
    return os.path.abspath(local_path(path))


def collect(
    result: Mapping[str, Any],
    stats: Mapping[str, Any],
    journals: Iterable[str] = (),
    storage_options: dict | None = None,
    scheduler: Any = None,
    show_progress: bool = False,
    side: int | None = None,
) -> dict[str, Any]:
    """Everything the report shows, as plain JSON-able data (thumbnails made on the cluster).

    Parameters
    ----------
    result, stats : dict
        A search's `result` (in_folder's nested form too) and `stats`.
    journals : iterable of str
        Journals of `move_to` / `delete` (e.g. `found.journals`): each file's fate is shown, and moved
        files are shown from where they went.
    storage_options : dict, optional
        fsspec options to read bucket objects with.
    scheduler : str or distributed.Client, optional
        Where thumbnails are made; None starts local threads for the call.
    side : int, optional
        Longest thumbnail side in pixels; by default THUMB_PX, or SMALL_THUMB_PX when the report shows
        more than LARGE_REPORT_FILES files (half the bytes, so a huge report still opens quickly).

    Returns
    -------
    dict
        ``summary``, ``parameters``, ``invalid`` (path, reason), ``files`` (per file: path, folder, width,
        height, bytes, mtime, thumbnail index, status), ``groups`` (kept file, [match, mse]) and
        ``thumbs`` (data URIs); `render_html` / `write_report` turn it into the page.

    Examples
    --------
    >>> from dupflow.report import collect, write_report
    >>> write_report("report.html", collect(found.result, found.stats, found.journals))  # doctest: +SKIP
    'report.html'
    """
    storage_options = storage_options or {}
    groups = flat_groups(result)
    paths = list(dict.fromkeys(p for primary, matches in groups for p in [primary, *(m for m, _ in matches)]))
    events = {redact(source): event for source, event in journal_events(journals).items()}
    wanted: list[str] = []
    where: dict[str, list[str]] = {}
    for path in paths:
        event = events.get(redact(_url(path)), {})
        candidates = [event["destination"]] if event.get("destination") else []
        candidates.append(_url(path))  # moved and then undone: it is back in its old place
        where[path] = candidates
        wanted.extend(candidates)
    if side is None:
        side = THUMB_PX if len(paths) <= LARGE_REPORT_FILES else SMALL_THUMB_PX
    thumbs = thumbnails(wanted, storage_options, scheduler, side, show_progress)
    files, uris = [], {}
    for path in paths:
        event = events.get(redact(_url(path)), {})
        seen = [thumbs[url] for url in where[path]]
        thumb = next(
            (t for t in seen if t.uri), seen[-1] if seen else Thumb(None, None, None, None, math.nan)
        )
        status = event.get("status")
        if status == "moved" and not seen[0].uri and thumb.uri:
            status = "restored"  # undone: the moved copy is gone and the file is back
        size = thumb.bytes if thumb.bytes is not None else event.get("size")
        entry = {
            "p": path,
            "f": folder_of(path),
            "w": thumb.width,
            "h": thumb.height,
            "b": size,
            "t": None if thumb.mtime is None or math.isnan(thumb.mtime) else thumb.mtime,
            "i": uris.setdefault(thumb.uri, len(uris)) if thumb.uri else -1,
        }
        if status:
            entry["s"] = status
        if event.get("destination"):
            entry["d"] = redact(event["destination"])
        if event.get("reason"):
            entry["r"] = event["reason"]
        if thumb.error and not thumb.uri and status != "deleted":
            entry["e"] = thumb.error
        files.append(entry)
    index = {path: k for k, path in enumerate(paths)}
    group_rows = [
        {"k": index[primary], "m": [[index[m], float(mse)] for m, mse in matches]}
        for primary, matches in groups
    ]
    reclaimable = sum(files[i]["b"] or 0 for g in group_rows for i, _ in g["m"])
    search = stats.get("process", {}).get("search", {})
    found = search.get("matches_found", {})
    invalid = stats.get("invalid_files", {})
    return {
        "version": __version__,
        "generated": datetime.now().isoformat(timespec="seconds"),
        "summary": {
            "directories": list(stats.get("directory", [])),
            "total_files": stats.get("total_files"),
            "files_searched": search.get("files_searched"),
            "invalid": invalid.get("count", 0),
            "groups": len(group_rows),
            "matches": sum(len(g["m"]) for g in group_rows),
            "duplicates": found.get("duplicates"),
            "similar": found.get("similar"),
            "bytes_reclaimable": reclaimable,
            "acted": sum(1 for f in files if f.get("s") in ("moved", "deleted")),
        },
        "parameters": {
            "build": stats.get("process", {}).get("build", {}).get("parameters", {}),
            "search": search.get("parameters", {}),
        },
        "invalid": [list(item) for item in sorted(invalid.get("logs", {}).items())],
        "files": files,
        "groups": group_rows,
        "thumbs": list(uris),
    }


def report_from_outputs(
    path: str,
    journals: Iterable[str] = (),
    storage_options: dict | None = None,
    scheduler: Any = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """`collect` for a finished run: a `..._results.json` file or an output folder (its latest run).

    Journals named in the run's `_journals.json` (written by the CLI after a move or delete) are read
    too, besides those given.
    """
    run = find_run(path)
    with open(run["results"], encoding="utf-8") as handle:
        result = json.load(handle)
    stats: dict = {}
    if "stats" in run:
        with open(run["stats"], encoding="utf-8") as handle:
            stats = json.load(handle)
    listed: list[str] = []
    if "journals" in run:
        with open(run["journals"], encoding="utf-8") as handle:
            listed = [j for j in json.load(handle) if os.path.isfile(j)]
    return collect(
        result, stats, [*listed, *journals], storage_options, scheduler, show_progress=show_progress
    )


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element (no `</script>` or `<!--` can appear)."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace("\u2028", "\\u2028")


def _card(key: str, label: str, value: Any, shown: str | None = None) -> str:
    text = html.escape(shown if shown is not None else f"{value:,}" if isinstance(value, int) else str(value))
    return (
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value" id="sum-{key}" data-value="{html.escape(str(value))}">{text}</div></div>'
    )


def render_html(data: Mapping[str, Any], title: str = "dupflow report") -> str:
    """One self-contained HTML page: summary and parameters as HTML, the groups rendered page by page."""
    s = data["summary"]
    cards = "".join(
        [
            _card("files", "Files searched", s["files_searched"] or 0),
            _card("invalid", "Invalid files", s["invalid"]),
            _card("groups", "Groups", s["groups"]),
            _card("matches", "Matches", s["matches"]),
            _card("bytes", "Reclaimable", s["bytes_reclaimable"], human_bytes(s["bytes_reclaimable"])),
        ]
    )
    params = "".join(
        f"<tr><th>{html.escape(stage)}</th><td>{html.escape(k)}</td><td>{html.escape(json.dumps(v))}</td></tr>"
        for stage in ("build", "search")
        for k, v in data["parameters"].get(stage, {}).items()
    )
    invalid = "".join(
        f'<li><span class="path">{html.escape(p)}</span><span class="reason">{html.escape(r)}</span></li>'
        for p, r in data["invalid"]
    )
    dirs = ", ".join(html.escape(d) for d in s["directories"]) or "—"
    counts = (
        f"{s['duplicates']} duplicate(s), {s['similar']} similar"
        if s.get("duplicates") is not None
        else f"{s['matches']} match(es)"
    )
    return (
        TEMPLATE.replace("{{title}}", html.escape(title))
        .replace("{{dirs}}", dirs)
        .replace("{{generated}}", html.escape(data["generated"]))
        .replace("{{version}}", html.escape(data["version"]))
        .replace("{{cards}}", cards)
        .replace("{{counts}}", html.escape(counts))
        .replace("{{params}}", params)
        .replace("{{invalid_count}}", str(len(data["invalid"])))
        .replace("{{invalid}}", invalid or "<li>None.</li>")
        .replace("{{data}}", _script_json(data))
    )


def write_report(path: str, data: Mapping[str, Any]) -> str:
    """Write the report to a local file (replacing it: the user named it) and return its path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(render_html(data))
    os.replace(tmp, path)
    return path


TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{{title}}</title>
<style>
:root{--bg:#f6f7f9;--fg:#1d2330;--muted:#5d6677;--card:#fff;--line:#e2e5ea;--accent:#2458d6;--keep:#12805c;
--keep-bg:#e3f5ed;--warn:#a4480b;--warn-bg:#fdeee2;--del:#b3261e;--del-bg:#fde7e5;--shadow:0 1px 2px rgba(0,0,0,.06)}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--fg:#e6e9ef;--muted:#9aa3b2;--card:#1d2128;--line:#2d333d;
--accent:#7aa2ff;--keep:#4cc38a;--keep-bg:#153a2b;--warn:#f0a060;--warn-bg:#3d2a1a;--del:#ff8a80;--del-bg:#3f1f1d}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header,main{max-width:1280px;margin:0 auto;padding:16px}
header{padding-bottom:0}
h1{font-size:1.4rem;margin:.2rem 0}
.sub{color:var(--muted);font-size:.9rem;overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin:14px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 14px;box-shadow:var(--shadow)}
.card .label{color:var(--muted);font-size:.8rem;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:1.5rem;font-weight:650}
details{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:8px 14px;margin:8px 0}
summary{cursor:pointer;font-weight:600}
table{border-collapse:collapse;font-size:.88rem;margin:8px 0}
td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}
ul.invalid{list-style:none;padding:0;margin:8px 0;max-height:320px;overflow:auto}
ul.invalid li{display:flex;flex-wrap:wrap;gap:4px 12px;padding:4px 0;border-bottom:1px solid var(--line)}
.path{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.82rem;overflow-wrap:anywhere}
.reason{color:var(--warn)}
.controls{position:sticky;top:0;z-index:2;background:var(--bg);display:flex;flex-wrap:wrap;gap:10px 16px;
align-items:end;padding:10px 0;border-bottom:1px solid var(--line)}
.controls label{display:flex;flex-direction:column;font-size:.8rem;color:var(--muted);gap:3px}
select,input{font:inherit;padding:5px 8px;border:1px solid var(--line);border-radius:7px;background:var(--card);color:var(--fg)}
input[type=number]{width:7em}
button{font:inherit;padding:5px 12px;border:1px solid var(--line);border-radius:7px;background:var(--card);color:var(--fg);cursor:pointer}
button:disabled{opacity:.45;cursor:default}
.pager{display:flex;gap:8px;align-items:center;margin-left:auto}
#shown{color:var(--muted);font-size:.9rem;padding:8px 0}
.group{background:var(--card);border:1px solid var(--line);border-radius:12px;margin:12px 0;padding:12px;box-shadow:var(--shadow)}
.group:focus{outline:3px solid var(--accent);outline-offset:2px}
.group h2{font-size:1rem;margin:0 0 10px;display:flex;flex-wrap:wrap;gap:4px 14px;align-items:baseline}
.group h2 .meta{color:var(--muted);font-weight:400;font-size:.88rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px}
figure{margin:0;border:1px solid var(--line);border-radius:10px;overflow:hidden;display:flex;flex-direction:column;background:var(--bg)}
figure.kept{border:2px solid var(--keep)}
.thumb{aspect-ratio:4/3;display:flex;align-items:center;justify-content:center;background:repeating-conic-gradient(var(--line) 0 25%,transparent 0 50%) 0 0/16px 16px}
.thumb img{max-width:100%;max-height:100%;object-fit:contain;display:block}
.thumb .none{color:var(--muted);font-size:.85rem;padding:8px;text-align:center}
figcaption{padding:8px 10px;font-size:.82rem;display:flex;flex-direction:column;gap:3px}
.badges{display:flex;flex-wrap:wrap;gap:4px}
.dest{color:var(--warn)}
.badge{align-self:flex-start;font-size:.72rem;font-weight:700;border-radius:999px;padding:1px 8px;text-transform:uppercase;letter-spacing:.03em}
.badge.kept{background:var(--keep-bg);color:var(--keep)}
.badge.mse{background:var(--bg);color:var(--fg);border:1px solid var(--line)}
.badge.moved,.badge.skipped,.badge.restored{background:var(--warn-bg);color:var(--warn)}
.badge.deleted{background:var(--del-bg);color:var(--del)}
.facts{color:var(--muted)}
.empty{padding:40px;text-align:center;color:var(--muted)}
.keys{color:var(--muted);font-size:.8rem}
kbd{border:1px solid var(--line);border-radius:4px;padding:0 4px;font-size:.78rem;background:var(--card)}
@media (max-width:600px){header,main{padding:10px}.card .value{font-size:1.2rem}
.grid{grid-template-columns:repeat(2,minmax(0,1fr));gap:8px}.pager{margin-left:0;width:100%;justify-content:space-between}
.controls{position:static}.keys{display:none}}
</style>
</head>
<body>
<header>
<h1>{{title}}</h1>
<div class="sub">Inputs: {{dirs}} · generated {{generated}} by dupflow {{version}} · {{counts}}</div>
<section class="cards" aria-label="Summary">{{cards}}</section>
<details id="params"><summary>Parameters</summary><table>{{params}}</table></details>
<details id="invalid"><summary>Invalid files ({{invalid_count}})</summary><ul class="invalid">{{invalid}}</ul></details>
</header>
<main>
<form class="controls" id="controls" aria-label="Sort and filter groups" onsubmit="return false">
<label>Sort groups by<select id="sort">
<option value="bytes">Bytes reclaimable</option><option value="size">Group size</option>
<option value="mse">Largest MSE</option><option value="path">Kept path</option></select></label>
<label>MSE from<input id="mse-min" type="number" min="0" step="any" placeholder="0" inputmode="decimal"></label>
<label>MSE to<input id="mse-max" type="number" min="0" step="any" placeholder="any" inputmode="decimal"></label>
<label>Folder<select id="folder"><option value="">All folders</option></select></label>
<label>Per page<select id="per-page"><option>20</option><option selected>50</option><option>200</option></select></label>
<div class="pager"><button type="button" id="prev" aria-label="Previous page">‹ Prev</button>
<span id="page" aria-live="polite"></span><button type="button" id="next" aria-label="Next page">Next ›</button></div>
</form>
<div id="shown" aria-live="polite"></div>
<div class="keys">Keys: <kbd>j</kbd>/<kbd>k</kbd> next/previous group · <kbd>n</kbd>/<kbd>p</kbd> next/previous page · <kbd>/</kbd> filter</div>
<div id="groups"></div>
</main>
<script id="dupflow-data" type="application/json">{{data}}</script>
<script>
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("dupflow-data").textContent);
  const F = D.files, G = D.groups, T = D.thumbs;
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; };
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  const human = (n) => { if (n == null) return "?"; let u = 0; while (Math.abs(n) >= 1024 && u < 4) { n /= 1024; u++; } return u ? n.toFixed(1) + " " + units[u] : n + " bytes"; };
  const when = (t) => t == null ? "time unknown" : new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  const mseText = (m) => Number.isInteger(m) ? String(m) : m.toFixed(3);
  G.forEach((g, n) => {
    g.n = n + 1;
    g.bytes = g.m.reduce((a, [i]) => a + (F[i].b || 0), 0);
    g.maxMse = g.m.reduce((a, [, m]) => Math.max(a, m), 0);
    g.folders = new Set([F[g.k].f, ...g.m.map(([i]) => F[i].f)]);
  });
  const folders = [...new Set(F.map((f) => f.f))].sort();
  for (const f of folders) { const o = el("option", null, f); o.value = f; $("folder").append(o); }
  let page = 0, view = [];
  function filtered() {
    const lo = parseFloat($("mse-min").value), hi = parseFloat($("mse-max").value), folder = $("folder").value;
    const L = isNaN(lo) ? -Infinity : lo, H = isNaN(hi) ? Infinity : hi;
    const out = [];
    for (const g of G) {
      const shown = g.m.filter(([i, m]) => m >= L && m <= H);
      if (!shown.length) continue;
      if (folder && !(g.folders.has(folder))) continue;
      out.push({ g, shown });
    }
    const key = $("sort").value;
    const cmp = { bytes: (a, b) => b.g.bytes - a.g.bytes, size: (a, b) => b.g.m.length - a.g.m.length,
      mse: (a, b) => b.g.maxMse - a.g.maxMse, path: (a, b) => F[a.g.k].p < F[b.g.k].p ? -1 : 1 }[key];
    out.sort((a, b) => cmp(a, b) || a.g.n - b.g.n);
    return out;
  }
  function status(f) {
    if (!f.s) return [];
    const badge = el("span", "badge " + f.s, f.s === "skipped" ? "left in place" : f.s);
    if (f.s === "moved") { const d = el("span", "path dest", "→ " + f.d); d.title = f.d; return [badge, d]; }
    if (f.s === "skipped") return [badge, el("span", "reason", f.r)];
    return [badge];
  }
  function figure(i, mse, kept) {
    const f = F[i];
    const fig = el("figure", kept ? "kept" : "");
    const box = el("div", "thumb");
    const dims = f.w ? f.w + "×" + f.h : "size unknown";
    if (f.i >= 0) {
      const img = el("img");
      img.decoding = "async";
      img.alt = (kept ? "Kept image: " : "Match (MSE " + mseText(mse) + "): ") + f.p + ", " + dims;
      img.src = T[f.i];
      box.append(img);
    } else {
      box.append(el("div", "none", f.s === "deleted" ? "deleted" : (f.e || "no preview")));
      box.setAttribute("role", "img");
      box.setAttribute("aria-label", (kept ? "Kept image: " : "Match: ") + f.p + " (no preview)");
    }
    const cap = el("figcaption");
    const top = el("div", "badges");
    top.append(el("span", "badge " + (kept ? "kept" : "mse"), kept ? "kept" : "MSE " + mseText(mse)));
    const [badge, ...more] = status(f);
    if (badge) top.append(badge);
    cap.append(top, ...more);
    cap.append(el("span", "facts", dims + " · " + human(f.b)));
    cap.append(el("span", "facts", when(f.t)));
    cap.append(el("span", "path file", f.p));
    fig.append(box, cap);
    return fig;
  }
  function render() {
    const per = parseInt($("per-page").value, 10);
    const pages = Math.max(1, Math.ceil(view.length / per));
    page = Math.min(Math.max(page, 0), pages - 1);
    const box = $("groups");
    box.replaceChildren();
    const slice = view.slice(page * per, page * per + per);
    for (const { g, shown } of slice) {
      const sec = el("section", "group");
      sec.tabIndex = 0;
      sec.dataset.group = g.n;
      const label = "Group " + g.n + ": " + (g.m.length + 1) + " images, " + human(g.bytes) + " reclaimable";
      sec.setAttribute("aria-label", label);
      const h = el("h2", null, "Group " + g.n);
      h.append(el("span", "meta", (g.m.length + 1) + " images · " + human(g.bytes) + " reclaimable · largest MSE " + mseText(g.maxMse)));
      const grid = el("div", "grid");
      grid.append(figure(g.k, 0, true));
      for (const [i, m] of shown) grid.append(figure(i, m, false));
      sec.append(h, grid);
      box.append(sec);
    }
    if (!slice.length) box.append(el("div", "empty", G.length ? "No group matches these filters." : "No duplicates found."));
    $("page").textContent = "Page " + (page + 1) + " of " + pages;
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages - 1;
    $("shown").textContent = "Showing " + view.length.toLocaleString("en") + " of " + G.length.toLocaleString("en") + " groups";
  }
  function refresh() { view = filtered(); page = 0; render(); }
  for (const id of ["sort", "folder", "per-page"]) $(id).addEventListener("change", refresh);
  for (const id of ["mse-min", "mse-max"]) $(id).addEventListener("input", refresh);
  $("prev").addEventListener("click", () => { page--; render(); });
  $("next").addEventListener("click", () => { page++; render(); });
  function move(step) {
    const all = [...document.querySelectorAll(".group")];
    const at = all.indexOf(document.activeElement);
    const next = all[at < 0 ? 0 : Math.min(Math.max(at + step, 0), all.length - 1)];
    if (next) { next.focus(); next.scrollIntoView({ block: "nearest" }); }
  }
  document.addEventListener("keydown", (e) => {
    if (e.target.closest && e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "j") { move(1); e.preventDefault(); }
    else if (e.key === "k") { move(-1); e.preventDefault(); }
    else if (e.key === "n" && !$("next").disabled) { page++; render(); move(0); e.preventDefault(); }
    else if (e.key === "p" && !$("prev").disabled) { page--; render(); move(0); e.preventDefault(); }
    else if (e.key === "/") { $("mse-min").focus(); e.preventDefault(); }
  });
  refresh();
  document.documentElement.dataset.ready = "1";
})();
</script>
</body>
</html>
"""
