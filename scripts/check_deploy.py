"""Cross-file checks for the deployment artefacts that a JSON schema cannot express.

Called by scripts/validate-deploy.sh with the venv's Python (PyYAML comes with
kubernetes-validate):

    check_deploy.py k8s <overlay-name> <rendered.yaml>
    check_deploy.py compose <docker-compose.yml>
    check_deploy.py files

Prints one line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# The contract: crate name -> default HTTP port.
SERVICES = {
    "crm-sync": 8081,
    "erp-sync": 8082,
    "inventory-sync": 8083,
    "user-sync": 8084,
    "conflict-resolver": 8085,
    "sync-monitor": 8086,
}
SCALABLE = "inventory-sync"
MIGRATE_IMAGE = "inventory-sync"
SECRET_NAME = "datasync-secrets"
CONFIG_NAME = "datasync-config"
# `kubectl apply -k <overlay> -l datasync-phase=pre-rollout` must bring up the migration Job
# together with everything it needs, before the Deployments roll.
PHASE_LABEL = ("datasync-phase", "pre-rollout")

problems: list[str] = []


def fail(msg: str) -> None:
    problems.append(msg)


def load_all(path: Path) -> list[dict]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def seconds(value: object) -> float:
    """Compose durations such as "40s", "1m30s"; plain numbers are seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(value)):
        total += float(num) * units[unit]
    return total


def with_defaults(value: object) -> str:
    """Resolve ${VAR:-default} / ${VAR-default} / ${VAR} the way Compose would with VAR unset."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))


# --- Kubernetes ---------------------------------------------------------------------------


def check_k8s(overlay: str, rendered: Path) -> None:
    docs = load_all(rendered)
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc

    deployments = by_kind.get("Deployment", {})
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    services = by_kind.get("Service", {})
    pdbs = by_kind.get("PodDisruptionBudget", {})
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    jobs = by_kind.get("Job", {})
    is_base = overlay == "base"

    if set(deployments) != set(SERVICES):
        fail(f"{overlay}: Deployments {sorted(deployments)} != services {sorted(SERVICES)}")

    config = next(
        (cm.get("data", {}) for name, cm in configmaps.items() if name.startswith(CONFIG_NAME)), None
    )
    if config is None:
        fail(f"{overlay}: no ConfigMap {CONFIG_NAME}")
        config = {}
    grace = int(config.get("SHUTDOWN_GRACE_SECS", 30))
    if not is_base:
        for key in ("NATS_URL",):
            if key not in config:
                fail(f"{overlay}: ConfigMap lacks {key}")

    def check_env_from(where: str, pod_spec: dict) -> None:
        container = pod_spec["containers"][0]
        refs = container.get("envFrom", [])
        cm_refs = [r["configMapRef"]["name"] for r in refs if "configMapRef" in r]
        secret_refs = [r["secretRef"]["name"] for r in refs if "secretRef" in r]
        if len(cm_refs) != 1 or cm_refs[0] not in configmaps:
            fail(f"{overlay}: {where} envFrom ConfigMap {cm_refs} is not the rendered one")
        if len(secret_refs) != 1:
            fail(f"{overlay}: {where} must load exactly one Secret, got {secret_refs}")
        elif secrets:
            if secret_refs[0] not in secrets:
                fail(f"{overlay}: {where} refers to Secret {secret_refs[0]}, not the generated one")
        elif secret_refs[0] != SECRET_NAME:
            fail(f"{overlay}: {where} refers to external Secret {secret_refs[0]}, expected {SECRET_NAME}")

    def check_hardening(where: str, pod_spec: dict) -> None:
        container = pod_spec["containers"][0]
        if pod_spec.get("securityContext", {}).get("runAsNonRoot") is not True:
            fail(f"{overlay}: {where} pod lacks runAsNonRoot: true")
        sc = container.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(f"{overlay}: {where} lacks readOnlyRootFilesystem: true")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{overlay}: {where} lacks allowPrivilegeEscalation: false")
        res = container.get("resources", {})
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(res.get(part, {})):
                fail(f"{overlay}: {where} resources.{part} needs cpu and memory")
        image = container.get("image", "")
        if not is_base and (image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]):
            fail(f"{overlay}: {where} image {image!r} is not pinned to a tag")

    for name, dep in deployments.items():
        port = SERVICES.get(name)
        pod = dep["spec"]["template"]
        spec = pod["spec"]
        container = spec["containers"][0]
        where = f"Deployment {name}"
        check_env_from(where, spec)
        check_hardening(where, spec)

        if not container.get("image", "").startswith(f"ghcr.io/datasync/{name}:"):
            fail(f"{overlay}: {where} runs image {container.get('image')}")
        if container.get("args") != ["serve"]:
            fail(f"{overlay}: {where} args {container.get('args')} != ['serve']")
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        if ports.get("http") != port:
            fail(f"{overlay}: {where} containerPort http={ports.get('http')}, expected {port}")
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if env.get("HTTP_PORT") != str(port):
            fail(f"{overlay}: {where} HTTP_PORT={env.get('HTTP_PORT')}, expected {port}")
        ann = pod["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(port):
            fail(f"{overlay}: {where} prometheus annotations do not scrape port {port}")

        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                            ("readinessProbe", "/readyz")):
            got = container.get(probe, {}).get("httpGet", {}).get("path")
            if got != path:
                fail(f"{overlay}: {where} {probe} path {got}, expected {path}")

        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_stop_secs = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] and len(pre_stop) == 2 else 0
        if spec.get("terminationGracePeriodSeconds", 30) <= grace + pre_stop_secs:
            fail(f"{overlay}: {where} terminationGracePeriodSeconds must exceed "
                 f"preStop ({pre_stop_secs}s) + SHUTDOWN_GRACE_SECS ({grace}s)")

        selector = dep["spec"]["selector"]["matchLabels"]
        labels = pod["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in selector.items()):
            fail(f"{overlay}: {where} selector does not match its pod labels")
        svc = services.get(name)
        if svc is None or svc["spec"].get("selector") != selector:
            fail(f"{overlay}: {where} has no Service selecting it")
        elif [p["port"] for p in svc["spec"]["ports"]] != [port]:
            fail(f"{overlay}: Service {name} ports {svc['spec']['ports']} != [{port}]")
        pdb = pdbs.get(name)
        if pdb is None or pdb["spec"]["selector"].get("matchLabels") != selector:
            fail(f"{overlay}: {where} has no PodDisruptionBudget selecting it")

    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            fail(f"{overlay}: HPA {name} targets missing Deployment {target}")
        elif "replicas" in deployments[target]["spec"]:
            fail(f"{overlay}: Deployment {target} sets replicas although HPA {name} owns them")
    if not hpas and "replicas" not in deployments.get(SCALABLE, {}).get("spec", {}):
        fail(f"{overlay}: {SCALABLE} has neither an HPA nor a replica count")

    if len(jobs) != 1:
        fail(f"{overlay}: expected one migration Job, got {sorted(jobs)}")
    for name, job in jobs.items():
        spec = job["spec"]["template"]["spec"]
        container = spec["containers"][0]
        where = f"Job {name}"
        check_env_from(where, spec)
        check_hardening(where, spec)
        if not container.get("image", "").startswith(f"ghcr.io/datasync/{MIGRATE_IMAGE}:"):
            fail(f"{overlay}: {where} should run the {MIGRATE_IMAGE} image")
        if container.get("args") != ["migrate"]:
            fail(f"{overlay}: {where} args {container.get('args')} != ['migrate']")
        for key in ("backoffLimit", "ttlSecondsAfterFinished"):
            if key not in job["spec"]:
                fail(f"{overlay}: {where} lacks {key}")

        needed = [job]
        needed += [cm for n, cm in configmaps.items() if n.startswith(CONFIG_NAME)]
        needed += list(secrets.values()) + list(by_kind.get("Namespace", {}).values())
        for doc in needed:
            if doc["metadata"].get("labels", {}).get(PHASE_LABEL[0]) != PHASE_LABEL[1]:
                fail(f"{overlay}: {doc['kind']} {doc['metadata']['name']} lacks label "
                     f"{PHASE_LABEL[0]}={PHASE_LABEL[1]} (the Job needs it in the first apply)")


# --- Compose ------------------------------------------------------------------------------


def check_compose(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services", {})

    for infra in ("postgres", "nats", "mailpit", "otel-collector", "migrate"):
        if infra not in services:
            fail(f"compose: service {infra} missing")

    for name, port in SERVICES.items():
        svc = services.get(name)
        if svc is None:
            fail(f"compose: service {name} missing")
            continue
        args = svc.get("build", {}).get("args", {})
        if args.get("SERVICE") != name or str(args.get("HTTP_PORT")) != str(port):
            fail(f"compose: {name} build args {args} do not match crate {name} / port {port}")
        env = svc.get("environment", {})
        if str(env.get("HTTP_PORT")) != str(port):
            fail(f"compose: {name} HTTP_PORT={env.get('HTTP_PORT')}, expected {port}")
        for key in ("DATABASE_URL", "NATS_URL", "ADMIN_TOKEN"):
            if not with_defaults(env.get(key, "")):
                fail(f"compose: {name} has no {key} (with its default)")
        if env.get("NATS_URL") != "nats://nats:4222":
            fail(f"compose: {name} NATS_URL should point at the nats service")

        if svc.get("env_file") != [{"path": ".env", "required": False}]:
            fail(f"compose: {name} env_file should be the optional .env")
        deps = svc.get("depends_on", {})
        wanted = {"postgres": "service_healthy", "nats": "service_healthy",
                  "migrate": "service_completed_successfully"}
        for dep, cond in wanted.items():
            if deps.get(dep, {}).get("condition") != cond:
                fail(f"compose: {name} should depend on {dep} ({cond})")

        grace = int(with_defaults(env.get("SHUTDOWN_GRACE_SECS", "30")))
        if seconds(svc.get("stop_grace_period", "10s")) <= grace:
            fail(f"compose: {name} stop_grace_period must exceed SHUTDOWN_GRACE_SECS ({grace}s)")

        published = []
        for p in svc.get("ports", []):
            if isinstance(p, dict):
                published.append((str(p.get("published", "")), str(p.get("target"))))
            else:
                parts = with_defaults(p).split("/")[0].split(":")
                published.append((parts[-2] if len(parts) > 1 else "", parts[-1]))
        if any(target != str(port) for _, target in published):
            fail(f"compose: {name} publishes container ports {published}, expected {port}")
        if name == SCALABLE:
            if any(host for host, _ in published):
                fail(f"compose: {name} must not publish a fixed host port (it is scaled)")
            if "container_name" in svc:
                fail(f"compose: {name} must not set container_name (it is scaled)")
        elif [host for host, _ in published] != [str(port)]:
            fail(f"compose: {name} should publish host port {port}")

        manifest = ROOT / "services" / name / "Cargo.toml"
        if not manifest.is_file():
            fail(f"compose: {name} has no crate at {manifest.relative_to(ROOT)}")
        elif tomllib.loads(manifest.read_text())["package"]["name"] != name:
            fail(f"compose: package name in {manifest.relative_to(ROOT)} is not {name}")

    migrate = services.get("migrate", {})
    if migrate.get("command") != ["migrate"]:
        fail("compose: migrate should run command ['migrate']")
    if migrate.get("build", {}).get("args", {}).get("SERVICE") != MIGRATE_IMAGE:
        fail(f"compose: migrate should build the {MIGRATE_IMAGE} binary")
    if migrate.get("restart", "no") != "no":
        fail("compose: migrate is one-shot and must not restart")

    nats = services.get("nats", {})
    if not str(nats.get("image", "")).startswith("nats:2.10"):
        fail("compose: nats should use the official nats:2.10 image")
    command = [str(c) for c in nats.get("command", [])]
    if "--http_port" not in command or "8222" not in command:
        fail("compose: nats should enable monitoring with --http_port 8222")
    if not any("/data" == str(v).split(":")[1] for v in nats.get("volumes", []) if ":" in str(v)):
        fail("compose: nats should keep JetStream on a volume mounted at /data")

    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./") and not (path.parent / source).exists():
                fail(f"compose: {name} mounts missing file {source}")
        if "healthcheck" in svc and not svc["healthcheck"].get("test"):
            fail(f"compose: {name} healthcheck has no test")
        for dep, spec in (svc.get("depends_on") or {}).items():
            if isinstance(spec, dict) and spec.get("condition") == "service_healthy":
                if "healthcheck" not in services.get(dep, {}):
                    fail(f"compose: {name} waits for {dep} to be healthy, but it has no healthcheck")


# --- Other files --------------------------------------------------------------------------


def check_files() -> None:
    nats_conf = (ROOT / "deploy/nats/nats.conf").read_text()
    active = "\n".join(line.split("#", 1)[0] for line in nats_conf.splitlines())
    if not re.search(r"^\s*sync_interval\s*[:=]?\s*always\s*$", active, re.M):
        fail("nats.conf: jetstream must set sync_interval: always (acked messages survive power loss)")
    if not re.search(r"^\s*store_dir\s*[:=]?\s*\"?/data\"?\s*$", active, re.M):
        fail("nats.conf: jetstream store_dir must be /data (the compose volume)")

    otel = yaml.safe_load((ROOT / "deploy/otel/collector.yaml").read_text())
    protocols = otel.get("receivers", {}).get("otlp", {}).get("protocols", {})
    if not {"grpc", "http"} <= set(protocols):
        fail("collector.yaml: the otlp receiver needs grpc and http")
    if not str(protocols.get("http", {}).get("endpoint", "")).endswith(":4318"):
        fail("collector.yaml: OTLP/HTTP must listen on :4318 (what the services export to)")
    for pipe, cfg in otel.get("service", {}).get("pipelines", {}).items():
        for part in ("receivers", "processors", "exporters"):
            for comp in cfg.get(part, []):
                if comp not in (otel.get(part) or {}):
                    fail(f"collector.yaml: pipeline {pipe} uses undefined {part[:-1]} {comp}")
    for ext in otel.get("service", {}).get("extensions", []):
        if ext not in (otel.get("extensions") or {}):
            fail(f"collector.yaml: service uses undefined extension {ext}")

    dockerfile = (ROOT / "Dockerfile").read_text()
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    rust_version = workspace.get("workspace", {}).get("package", {}).get("rust-version")
    if rust_version and f"rust:{rust_version}-bookworm" not in dockerfile:
        fail(f"Dockerfile: builder image should be rust:{rust_version}-bookworm (workspace rust-version)")
    for needle in ("ARG SERVICE", 'cargo build --release --locked --package "${SERVICE}"',
                   "cargo chef prepare", "cargo chef cook", "FROM ${RUNTIME_IMAGE} AS runtime",
                   'CMD ["serve"]', "USER 10001"):
        if needle not in dockerfile:
            fail(f"Dockerfile: expected {needle!r}")
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in ("target", ".git", ".run", ".env"):
        if entry not in ignored:
            fail(f".dockerignore: should exclude {entry}")


def main(argv: list[str]) -> int:
    match argv:
        case ["k8s", overlay, rendered]:
            check_k8s(overlay, Path(rendered))
        case ["compose", compose]:
            check_compose(Path(compose))
        case ["files"]:
            check_files()
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
