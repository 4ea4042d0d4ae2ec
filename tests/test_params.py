"""Every parameter check: the error class and difPy's message text, before any work starts."""

from __future__ import annotations

import inspect
import json
import logging
import os
import pathlib
import re
import textwrap

import pytest
from imagegen import photo, save

import dupflow
from dupflow import cli
from dupflow.params import BUILD_OPTIONS, SEARCH_OPTIONS


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("params")
    save(photo(1, 40, 30), root / "a.png")
    save(photo(1, 40, 30), root / "b.png")
    return str(root)


BUILD_CASES = [
    ({"directory": ()}, ValueError, "Invalid directory parameter: no directory provided."),
    ({"directory": ([],)}, ValueError, "Invalid directory parameter: no directory provided."),
    (
        {"directory": (42,)},
        TypeError,
        "Invalid directory parameter: directories must be of type LIST or STRING",
    ),
    ({"recursive": 1}, TypeError, 'Invalid value for "recursive" parameter: must be of type BOOL.'),
    ({"in_folder": "yes"}, TypeError, 'Invalid value for "in_folder" parameter: must be of type BOOL.'),
    (
        {"limit_extensions": None},
        TypeError,
        'Invalid value for "limit_extensions" parameter: must be of type BOOL.',
    ),
    ({"px_size": 50.0}, TypeError, 'Invalid value for "px_size" parameter: must be of type INT.'),
    ({"px_size": True}, TypeError, 'Invalid value for "px_size" parameter: must be of type INT.'),
    ({"px_size": 9}, ValueError, 'Invalid value for "px_size" parameter: must be between 10 and 5000.'),
    ({"px_size": 5001}, ValueError, 'Invalid value for "px_size" parameter: must be between 10 and 5000.'),
    ({"show_progress": 0}, TypeError, 'Invalid value for "show_progress" parameter: must be of type BOOL.'),
    ({"processes": 1.5}, TypeError, 'Invalid value for "processes" parameter: must be of type INT.'),
    ({"processes": 0}, ValueError, 'Invalid value for "processes" parameter: must be >= 1.'),
    (
        {"processes": (os.cpu_count() or 1) + 1},
        ValueError,
        'Invalid value for "processes" parameter: must be <= the number of CPU cores',
    ),
    (
        {"lazy": True},
        ValueError,
        'Parameter "-la" / "lazy" was renamed to "-dim" / "same_dim" with difPy v4.2.',
    ),
    ({"similarity": "similar"}, TypeError, 'Unknown parameter "similarity" for dupflow.build()'),
    ({"decode": "quick"}, ValueError, 'Invalid value for "decode" parameter: must be one of exact, fast.'),
    ({"storage_options": "anon"}, TypeError, 'Invalid value for "storage_options" parameter'),
    ({"catalog": 5}, TypeError, 'Invalid value for "catalog" parameter'),
    ({"scheduler": 5}, TypeError, 'Invalid value for "scheduler" parameter'),
]


@pytest.mark.parametrize("kwargs, error, message", BUILD_CASES)
def test_build_rejects(folder, kwargs, error, message):
    kwargs = dict(kwargs)
    directory = kwargs.pop("directory", (folder,))
    with pytest.raises(error) as info:
        dupflow.build(*directory, **kwargs)
    assert str(info.value).startswith(message)


def test_first_failure_wins_in_difpys_order(folder):
    with pytest.raises(TypeError, match='"recursive"'):
        dupflow.build(folder, recursive="x", px_size=1, processes=0)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        dupflow.build(str(tmp_path / "missing"))
    assert str(info.value) == f'Directory "{tmp_path / "missing"}" does not exist'


def test_same_directory_twice(folder):
    for args in ((folder, folder), ([folder], [folder + "/"]), (folder, pathlib.Path(folder))):
        with pytest.raises(ValueError, match="invalid attempt to compare a directory with itself"):
            dupflow.build(*args)


def test_directory_forms_are_accepted(folder, client, catalog):
    """str, os.PathLike and lists (even mixed) all name inputs; they are normalized and sorted."""
    dif = dupflow.build(
        [pathlib.Path(folder) / "b.png"], folder + "/", show_progress=False, scheduler=client, catalog=catalog
    )
    assert dif.stats["directory"] == sorted([folder, os.path.join(folder, "b.png")])
    assert dif.stats["total_files"] == 2  # b.png is counted once


@pytest.fixture(scope="module")
def built(folder, client, tmp_path_factory):
    return dupflow.build(
        folder, show_progress=False, scheduler=client, catalog=str(tmp_path_factory.mktemp("cat"))
    )


SEARCH_CASES = [
    (
        {"similarity": "low"},
        ValueError,
        'Since difPy v3.0.8, "similarity" parameter only accepts "duplicates" and "similar"',
    ),
    (
        {"similarity": "abc"},
        ValueError,
        'Invalid value for "similarity" parameter: must be "duplicates", "similar" or of type INT or FLOAT.',
    ),
    (
        {"similarity": None},
        TypeError,
        'Invalid value for "similarity" parameter: must be "duplicates", "similar" or of type INT or FLOAT.',
    ),
    ({"similarity": True}, TypeError, 'Invalid value for "similarity" parameter'),
    ({"similarity": float("nan")}, ValueError, 'Invalid value for "similarity" parameter'),
    ({"similarity": -1}, ValueError, 'Invalid value for "similarity" parameter: must be >= 0.'),
    ({"similarity": "-0.5"}, ValueError, 'Invalid value for "similarity" parameter: must be >= 0.'),
    ({"similarity": 10**400}, ValueError, 'Invalid value for "similarity" parameter: too large for a float'),
    ({"rotate": "no"}, TypeError, 'Invalid value for "rotate" parameter: must be of type BOOL.'),
    ({"same_dim": 1}, TypeError, 'Invalid value for "same_dim" parameter: must be of type BOOL.'),
    (
        {"show_progress": None},
        TypeError,
        'Invalid value for "show_progress" parameter: must be of type BOOL.',
    ),
    ({"processes": -2}, ValueError, 'Invalid value for "processes" parameter: must be >= 1.'),
    ({"chunksize": 2.0}, TypeError, 'Invalid value for "chunksize" parameter: must be of type INT or None.'),
    ({"chunksize": 0}, ValueError, 'Invalid value for "chunksize" parameter: must be >= 1.'),
    ({"lazy": False}, ValueError, 'Parameter "-la" / "lazy" was renamed'),
    ({"px_size": 20}, TypeError, 'Unknown parameter "px_size" for dupflow.search()'),
]


@pytest.mark.parametrize("kwargs, error, message", SEARCH_CASES)
def test_search_rejects(built, kwargs, error, message):
    with pytest.raises(error) as info:
        dupflow.search(
            built, show_progress=False, **kwargs
        ) if "show_progress" not in kwargs else dupflow.search(built, **kwargs)
    assert str(info.value).startswith(message)


def test_search_needs_a_build():
    with pytest.raises(TypeError, match='"difpy_obj" parameter: must be a dupflow.build object'):
        dupflow.search("photos/")


@pytest.mark.parametrize(
    "value, stored",
    [("duplicates", 0), ("similar", 5), (7, 7.0), ("2.5", 2.5), (0.0, 0.0), (-0.0, 0.0), ("-0", 0.0)],
)
def test_similarity_values(built, value, stored):
    found = dupflow.search(built, similarity=value, show_progress=False)
    reported = found.stats["process"]["search"]["parameters"]["similarity_mse"]
    assert reported == stored and type(reported) is type(stored)
    assert not json.dumps(reported).startswith("-")  # -0.0 is reported as 0.0, not "-0.0"


def test_infinite_similarity_is_strict_json(built, client, tmp_path):
    """JSON has no Infinity: the stats say "inf" (API and the CLI's _stats.json alike)."""
    found = dupflow.search(built, similarity=float("inf"), show_progress=False)
    assert found.stats["process"]["search"]["parameters"]["similarity_mse"] == "inf"
    json.dumps(found.stats, allow_nan=False)
    assert len(found.lower_quality) == 1  # every pair matches
    out, folder = tmp_path / "out", built.params.directories[0]
    address = client.scheduler.address  # the command line in this process, on the shared cluster
    logger = logging.getLogger("dupflow")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        assert cli.main([folder, "-s", "inf", "-Z", str(out), "-p", "false", "--scheduler", address]) == 0
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])
    (stats_file,) = out.glob("*_stats.json")
    text = stats_file.read_text()
    assert "Infinity" not in text
    stats = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert stats["process"]["search"]["parameters"]["similarity_mse"] == "inf"


def test_search_processes_are_honoured(folder, tmp_path):
    """A search asking for another number of local workers gets them, and its stats say so."""
    cores = os.cpu_count() or 1
    if cores < 2:
        pytest.skip("one core: no second cluster size to tell apart")
    with dupflow.build(folder, processes=cores, show_progress=False, catalog=str(tmp_path / "c")) as dif:
        small = dupflow.search(dif, processes=1, show_progress=False)
        full = dupflow.search(dif, processes=cores, show_progress=False)
    assert small.stats["process"]["search"]["parameters"]["processes"] == 1
    assert small.stats["dupflow"]["search"]["cluster"]["threads"] == 1
    assert full.stats["dupflow"]["search"]["cluster"]["threads"] == cores
    assert small.result == full.result and len(small.lower_quality) == 1


def test_processes_none_means_all_cores(built):
    found = dupflow.search(built, processes=None, show_progress=False)
    assert found.stats["process"]["search"]["parameters"]["processes"] == os.cpu_count()


def test_credentials_in_a_url_never_reach_stats_or_errors(tmp_path):
    """user:password@ in an input URL is stripped from every message and report."""
    with pytest.raises(FileNotFoundError) as info:
        dupflow.build("memory://bob:hunter2@nowhere/photos")
    assert "hunter2" not in str(info.value) and "bob" not in str(info.value)
    from dupflow.sources import redact

    assert redact("ftp://bob:hunter2@host/a.png") == "ftp://host/a.png"
    assert redact("s3://bucket/key@2x.png") == "s3://bucket/key@2x.png"


@pytest.mark.parametrize(
    "func, options",
    [
        (dupflow.build, BUILD_OPTIONS),
        (dupflow.search, SEARCH_OPTIONS),
        (dupflow.search.move_to, ()),
        (dupflow.search.delete, ()),
        (dupflow.undo, ()),
    ],
    ids=["build", "search", "move_to", "delete", "undo"],
)
def test_help_documents_every_parameter(func, options):
    """help() answers what the README answers: numpydoc sections naming every parameter, keyword options
    included, with what is returned (or the attributes), what is raised, and examples."""
    doc = inspect.getdoc(func)
    named = [n for n in inspect.signature(func).parameters if n not in ("self", "options")]
    documented = re.findall(r"^\*?(\w+) : ", doc.split("Parameters\n----------\n", 1)[1], flags=re.M)
    assert set(named) | set(options) <= set(documented)
    assert re.search(r"^(Returns|Attributes)\n-{7,}$", doc, flags=re.M)
    assert "Raises\n------" in doc and "Examples\n--------" in doc and ">>> " in doc


def test_search_asks_its_build_through_public_operations(built):
    """A search reads no private attribute of its build; the build answers match queries itself."""
    import ast

    from dupflow.compare import MatchSpec

    tree = ast.parse(textwrap.dedent(inspect.getsource(dupflow.search)))
    reached = sorted(
        f"{ast.unparse(node.value)}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and ast.unparse(node.value) != "self"
    )
    assert reached == []
    found = built.find_edges(built.scopes(), MatchSpec.from_threshold(built.params.px_size, True, True, 0))
    ((i, j, sums),) = found.edges  # one scope; a.png and b.png are the same photo
    paths = sorted(built.files.path[k] for k in (int(i[0]), int(j[0])))
    assert (
        len(i) == 1 and sums.tolist() == [0.0] and [os.path.basename(p) for p in paths] == ["a.png", "b.png"]
    )
    assert found.shards_repaired == 0
