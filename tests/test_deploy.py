"""deploy/: the SLURM and PBS jobqueue YAML render valid job scripts through dupflow's own cluster options,
and the batch scripts are valid bash. (The SLURM batch script also runs for real in test_slurm.py.)"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys

import pytest

from dupflow import cluster
from dupflow.cluster import Placement

DEPLOY = os.path.join(os.path.dirname(__file__), os.pardir, "deploy")


def _site_config(kind: str, **overrides):
    """dask config with deploy/<kind>/jobqueue.yaml loaded over dask-jobqueue's defaults (as Dask would
    read it from DASK_CONFIG), plus overrides such as a site's queue and account."""
    import dask
    import yaml

    cluster._cluster_class(kind)  # imported as dupflow does (lazily): loads dask-jobqueue's defaults
    with open(os.path.join(DEPLOY, kind, "jobqueue.yaml")) as handle:
        ours = yaml.safe_load(handle)["jobqueue"][kind]
    unknown = set(ours) - set(dask.config.get(f"jobqueue.{kind}"))
    assert not unknown, f"keys dask-jobqueue does not know: {unknown}"
    return dask.config.set({f"jobqueue.{kind}": {**dask.config.get(f"jobqueue.{kind}"), **ours, **overrides}})


def _render(kind: str, **overrides) -> str:
    with _site_config(kind, **overrides):
        made = cluster.make_cluster(
            Placement(cluster=kind, workers=2, lifetime="110m", lifetime_stagger="5m")
        )
        try:
            return made.job_script()
        finally:
            made.close()


def _directives(script: str, prefix: str) -> list[list[str]]:
    return [shlex.split(line[len(prefix) :]) for line in script.splitlines() if line.startswith(prefix)]


def _worker_command(script: str) -> list[str]:
    line = [line for line in script.splitlines() if "distributed.cli.dask_worker" in line]
    assert len(line) == 1, script
    return shlex.split(line[0])


def _bash_syntax_ok(script: str, tmp_path) -> None:
    path = tmp_path / "job.sh"
    path.write_text(script)
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


PBS_OPTIONS = {"-N", "-q", "-A", "-l", "-j", "-o", "-e", "-m", "-M", "-V", "-W", "-S", "-P"}


def test_pbs_yaml_renders_a_valid_job_script(tmp_path):
    script = _render("pbs", queue="workq", account="proj123")
    _bash_syntax_ok(script, tmp_path)
    directives = _directives(script, "#PBS ")
    assert directives and all(d[0] in PBS_OPTIONS for d in directives), directives
    flat = {d[0]: [] for d in directives}
    for d in directives:
        flat[d[0]].append(" ".join(d[1:]))
    assert flat["-N"] == ["dupflow-worker"] and flat["-q"] == ["workq"] and flat["-A"] == ["proj123"]
    resources = flat["-l"]
    assert "walltime=02:00:00" in resources
    select = [r for r in resources if r.startswith("select=")]
    # PBS Pro's chunk syntax: select=N:ncpus=C:mem=M, memory in a unit qsub accepts
    assert len(select) == 1 and re.fullmatch(r"select=1:ncpus=4:mem=\d+(\.\d+)?[KMGT]B", select[0]), select
    command = _worker_command(script)
    assert command[0] == sys.executable
    assert command[command.index("--nthreads") + 1] == "4"
    assert command[command.index("--lifetime") + 1] == "110m"
    assert command[command.index("--lifetime-stagger") + 1] == "5m"


def test_slurm_yaml_renders_a_valid_job_script(tmp_path):
    script = _render("slurm", queue="compute", account="proj123")
    _bash_syntax_ok(script, tmp_path)
    directives = {d[0].split("=")[0]: d for d in _directives(script, "#SBATCH ")}
    assert directives["-J"] == ["-J", "dupflow-worker"]
    assert directives["-p"] == ["-p", "compute"] and directives["-A"] == ["-A", "proj123"]
    assert directives["--cpus-per-task"] == ["--cpus-per-task=4"]
    assert directives["-t"] == ["-t", "02:00:00"]
    assert re.fullmatch(r"--mem=\d+G", directives["--mem"][0])
    command = _worker_command(script)
    assert command[command.index("--lifetime") + 1] == "110m"


@pytest.mark.parametrize("path", ["slurm/dupflow-search.sbatch", "pbs/dupflow-search.pbs"])
def test_batch_scripts_are_valid_bash_and_run_dupflow_on_the_queue(path):
    full = os.path.join(DEPLOY, path)
    assert os.access(full, os.X_OK)
    done = subprocess.run(["bash", "-n", full], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = open(full).read()
    kind = path.split("/")[0]
    assert f"--cluster {kind}" in text and "--lifetime" in text and "DASK_CONFIG" in text


# ---- deploy/kubernetes: validated offline --------------------------------------------------------------

KUBE = os.path.join(DEPLOY, "kubernetes")
KUBE_VALIDATE = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")


def _documents(name: str) -> list[dict]:
    import yaml

    with open(os.path.join(KUBE, name)) as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def _kubernetes_validate(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([KUBE_VALIDATE, "--strict", path], capture_output=True, text=True)


def test_hygiene_cronjob_and_its_configmap_pass_strict_validation(tmp_path):
    import yaml

    path = os.path.join(KUBE, "hygiene-cronjob.yaml")
    done = _kubernetes_validate(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed for resource configmap/dupflow-hygiene" in done.stdout
    assert "passed for resource cronjob/dupflow-hygiene" in done.stdout
    # the validator bites: one misspelt field fails
    docs = _documents("hygiene-cronjob.yaml")
    docs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(docs))
    assert _kubernetes_validate(str(broken)).returncode != 0


def test_hygiene_cronjob_runs_the_hygiene_job_on_its_config():
    """The ConfigMap's hygiene.toml is a valid hygiene config, and the command is the job's entry point."""
    import tomllib

    from dupflow.hygiene.config import parse_config

    configmap, cronjob = _documents("hygiene-cronjob.yaml")
    config = parse_config(tomllib.loads(configmap["data"]["hygiene.toml"]), "/config/hygiene.toml")
    assert config.sources == ["s3://lake/incoming"] and config.catalog.startswith("s3://")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "dupflow.hygiene", "/config/hygiene.toml"]
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["config"]
    assert mount == "/config" and pod["volumes"][0]["configMap"]["name"] == configmap["metadata"]["name"]


@functools.cache
def _operator_crd(kind: str):
    """The CRD schema shipped in the dask-kubernetes package, made strict below `spec` (an unknown field
    is an error, as `kubectl --validate=strict` makes it), except where the CRD keeps unknown fields."""
    from importlib.resources import files

    import yaml

    crds = files("dask_kubernetes") / "operator" / "deployment" / "helm" / "dask-kubernetes-operator" / "crds"
    crd = yaml.safe_load((crds / f"{kind.lower()}.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def strict(node):
        if isinstance(node, dict):
            if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node.setdefault("additionalProperties", False)
            for value in node.values():
                strict(value)
        elif isinstance(node, list):
            for value in node:
                strict(value)

    strict(schema["properties"]["spec"])
    import jsonschema

    jsonschema.Draft7Validator.check_schema(schema)  # once per kind: the schema itself is sound
    return jsonschema.Draft7Validator(schema)


def _pod_specs(cluster_spec: dict) -> list[tuple[str, dict]]:
    return [("worker", cluster_spec["worker"]["spec"]), ("scheduler", cluster_spec["scheduler"]["spec"])]


def _validate_dask_resource(doc: dict) -> None:
    """Against the operator's CRD, and each embedded pod and service against Kubernetes' own schemas."""
    import kubernetes_validate

    _operator_crd(doc["kind"]).validate(doc)
    cluster_spec = doc["spec"] if doc["kind"] == "DaskCluster" else doc["spec"]["cluster"]["spec"]
    pods = _pod_specs(cluster_spec)
    if doc["kind"] == "DaskJob":
        pods.append(("job", doc["spec"]["job"]["spec"]))
    for name, spec in pods:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
        kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}
    service["spec"] = cluster_spec["scheduler"]["service"]
    kubernetes_validate.validate(service, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("name, kind", [("daskcluster.yaml", "DaskCluster"), ("daskjob.yaml", "DaskJob")])
def test_dask_resources_match_the_operator_crds(name, kind):
    import copy

    import jsonschema

    (doc,) = _documents(name)
    assert doc["apiVersion"] == "kubernetes.dask.org/v1" and doc["kind"] == kind
    _validate_dask_resource(doc)
    # the checks bite: a misspelt field of the resource, or of a pod inside it, fails
    cluster_key = doc["spec"] if kind == "DaskCluster" else doc["spec"]["cluster"]["spec"]
    broken = copy.deepcopy(doc)
    target = broken["spec"] if kind == "DaskCluster" else broken["spec"]["cluster"]["spec"]
    target["worker"]["replica"] = target["worker"].pop("replicas")
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        _validate_dask_resource(broken)
    broken = copy.deepcopy(doc)
    target = broken["spec"] if kind == "DaskCluster" else broken["spec"]["cluster"]["spec"]
    target["scheduler"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(jsonschema.ValidationError, match="imagePullPolicyy"):
        _validate_dask_resource(broken)
    assert cluster_key["worker"]["replicas"] >= 1


def test_daskjob_runs_a_dupflow_search_over_a_bucket_on_the_jobs_cluster():
    """The job pod's arguments are a valid dupflow command over a bucket with the catalog in a bucket; it
    names no scheduler, so it uses DASK_SCHEDULER_ADDRESS, which the operator sets."""
    from dupflow.cli import search_parser
    from dupflow.params import validate_build

    (doc,) = _documents("daskjob.yaml")
    (container,) = doc["spec"]["job"]["spec"]["containers"]
    assert container["args"][0] == "dupflow"
    args = search_parser().parse_intermixed_args(container["args"][1:])
    assert all(path.startswith("s3://") for path in args.paths) and args.catalog.startswith("s3://")
    assert args.scheduler is None and args.cluster is None and args.scheduler_file is None
    validate_build((args.paths,), True, False, True, 50, False, None, {"catalog": args.catalog})
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert args.output_directory in mounts


def test_sge_cluster_gets_dupflows_worker_lifetime(tmp_path):
    """--cluster sge has no deploy/ folder (same knobs as pbs): dupflow's options still reach its jobs."""
    import dask

    cluster._cluster_class("sge")
    with dask.config.set(
        {"jobqueue.sge.cores": 2, "jobqueue.sge.memory": "4GiB", "jobqueue.sge.queue": "all.q"}
    ):
        made = cluster.make_cluster(Placement(cluster="sge", lifetime="50m", lifetime_stagger="2m"))
        try:
            script = made.job_script()
        finally:
            made.close()
    _bash_syntax_ok(script, tmp_path)
    assert ["-q", "all.q"] in _directives(script, "#$ ")
    command = _worker_command(script)
    assert command[command.index("--lifetime") + 1] == "50m"
    assert command[command.index("--lifetime-stagger") + 1] == "2m"


def test_kubernetes_workers_get_the_lifetime_through_their_environment():
    options = cluster.cluster_options(Placement(cluster="kubernetes", lifetime="2h", lifetime_stagger="10m"))
    assert options["env"] == {
        "DASK_DISTRIBUTED__WORKER__LIFETIME__DURATION": "2h",
        "DASK_DISTRIBUTED__WORKER__LIFETIME__STAGGER": "10m",
    }
