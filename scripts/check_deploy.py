"""Cross-file checks for the deployment artefacts that a JSON schema cannot express.

Called by scripts/validate-deploy.sh with the venv's Python (PyYAML comes with
kubernetes-validate):

    check_deploy.py split <rendered.yaml> <core.yaml>   core kinds only, for kubernetes-validate
    check_deploy.py k8s <overlay-name> <rendered.yaml>
    check_deploy.py compose <docker-compose.yml>
    check_deploy.py files
    check_deploy.py prometheus-rule                      prints the prod PrometheusRule

kubernetes-validate knows only core Kubernetes kinds; custom resources (CRD_KINDS below) are
checked here instead: structure, and the names they share with the rest.

Prints one line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import ipaddress
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

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
MIGRATE_NAME = "datasync-migrate"
SECRET_NAME = "datasync-secrets"
CONFIG_NAME = "datasync-config"
# inventory-sync's targets: the variable that configures each, and its name in consumer names
# (services/inventory-sync/src/config.rs, shared/src/schemas/inventory.rs).
TARGET_VARS = {"ERP_BASE_URL": "erp", "SHOP_BASE_URL": "ecommerce", "POS_BASE_URL": "pos",
               "WMS_BASE_URL": "wms"}
# `kubectl apply -k <overlay> -l datasync-phase=pre-rollout` must bring up the migration Job
# together with everything it needs, before the Deployments roll; `infra` (prod's first step:
# namespaces, NATS, PostgreSQL, collector) comes earlier still.
PHASE_KEY = "datasync-phase"
PHASES_BEFORE_JOB = ("infra", "pre-rollout")
JOB_PHASE = "pre-rollout"
# SIGKILL must never cut a drain short: preStop + SHUTDOWN_GRACE_SECS + this < the grace period.
GRACE_MARGIN_SECS = 5
PROMETHEUS_RULES = ROOT / "deploy/monitoring/prometheus-rules.yml"
PROD_RULE = ROOT / "deploy/k8s/overlays/prod/datasync/prometheusrule.yaml"
NATS_DIR = ROOT / "deploy/nats"

# Custom resources: (apiVersion, kind). Everything else goes to kubernetes-validate, which
# warns (and so fails validate-deploy.sh) on a kind it has no schema for.
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"),
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
}

# The platform's namespaces the prod NetworkPolicies name (change them together).
NS_INGRESS = "ingress-nginx"
NS_MONITORING = "monitoring"
NS_KEDA = "keda"
NS_DNS = "kube-system"
NS_CNPG = "cnpg-system"
# Paths that must never be routed from outside (admin and operator endpoints).
PRIVATE_PATHS = ("/admin", "/targets", "/conflicts", "/review", "/dashboard", "/api", "/metrics",
                 "/events", "/openapi.json", "/healthz", "/readyz")

# Pod Security Standards, `restricted`.
PSS_LABELS = ("enforce", "audit", "warn")
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}

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


def upper_snake(name: str) -> str:
    return name.upper().replace("-", "_")


def conf_active(text: str) -> str:
    """A NATS configuration without its comments."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def matches(selector: dict | None, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels + matchExpressions); {} matches everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


# --- Rust sources: names the manifests must repeat -----------------------------------------


def rust_grep(rel: str, pattern: str, what: str, many: bool = False):
    path = ROOT / rel
    text = path.read_text() if path.is_file() else ""
    found = re.findall(pattern, text, re.S)
    if not found:
        fail(f"cannot find {what} in {rel} (pattern {pattern!r}): update scripts/check_deploy.py")
        return [] if many else None
    return found if many else found[0]


def push_consumers() -> tuple[str | None, set[str]]:
    """inventory-sync's push consumers: (stream, {durable names}), from the Rust sources."""
    schema = rust_grep("services/inventory-sync/src/lib.rs", r'pub const SCHEMA: &str = "(\w+)"',
                       "inventory-sync's schema")
    stream = rust_grep("services/inventory-sync/src/lib.rs", r"run_push\(\s*engine,\s*&streams::(\w+)",
                       "the push engines' stream")
    entity = rust_grep("services/inventory-sync/src/push.rs",
                       r'fn entity\(&self\) -> &\'static str \{\s*"(\w+)"', "the pushed entity")
    targets = rust_grep("shared/src/schemas/inventory.rs", r'Target::\w+ => "(\w+)"',
                        "the inventory targets", many=True)
    rust_grep("shared/src/push/mod.rs", r'format!\("\{\}-push-\{\}-\{\}", self\.schema, self\.target, '
              r'self\.connector\.entity\(\)\)', "the push consumers' name format")
    if not (schema and stream and entity and targets):
        return None, set()
    return stream, {f"{schema}-push-{t}-{entity}" for t in targets}


def public_routes() -> dict[str, str]:
    """Path -> service of what the Ingress must expose, from the Rust sources."""
    routes = {}
    for svc in ("crm-sync", "erp-sync"):
        system = rust_grep(f"services/{svc}/src/lib.rs", r'WebhookSource::new\("(\w+)"',
                           f"{svc}'s webhook source")
        if system:
            routes[f"/webhooks/{system}"] = svc
    if rust_grep("services/inventory-sync/src/handlers/adjustments.rs", r'#\[post\("(/adjustments)"\)\]',
                 "inventory-sync's POST /adjustments"):
        routes["/adjustments"] = "inventory-sync"
    if rust_grep("services/user-sync/src/scim/resources.rs", r'"(/scim/v2)/Users"', "user-sync's SCIM routes"):
        routes["/scim/v2"] = "user-sync"
    return routes


# --- Kubernetes: index of a rendering --------------------------------------------------------


@dataclass
class Pod:
    """A pod template (or a stand-in for a pod of the platform) for the NetworkPolicy checks."""
    ns: str
    labels: dict
    ports: dict = field(default_factory=dict)  # name -> number
    ip: str | None = None  # set for an address outside the cluster

    def port(self, value: object) -> int | None:
        return value if isinstance(value, int) else self.ports.get(value)

    def has(self, value: object) -> bool:
        """Whether the pod has this port (a number, or a container port's name)."""
        return value in self.ports.values() if isinstance(value, int) else value in self.ports


class Rendering:
    def __init__(self, docs: list[dict]):
        self.docs = docs
        self.by_id: dict[tuple[str, str | None, str], dict] = {}
        for doc in docs:
            self.by_id[(doc["kind"], ns_of(doc), doc["metadata"]["name"])] = doc

    def kind(self, kind: str, ns: object = ...) -> dict[str, dict]:
        return {n: d for (k, s, n), d in self.by_id.items() if k == kind and (ns is ... or s == ns)}

    def get(self, kind: str, ns: str | None, name: str) -> dict | None:
        return self.by_id.get((kind, ns, name))

    def workloads(self):
        """(kind, namespace, name, pod template) of every workload."""
        for doc in self.docs:
            if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                yield doc["kind"], ns_of(doc), doc["metadata"]["name"], doc["spec"]["template"]

    def namespaces(self) -> set[str]:
        return {ns_of(d) for d in self.docs if ns_of(d)} | set(self.kind("Namespace"))

    def ns_labels(self, ns: str) -> dict:
        doc = self.get("Namespace", None, ns)
        labels = dict((doc or {}).get("metadata", {}).get("labels") or {})
        labels["kubernetes.io/metadata.name"] = ns
        return labels


def ns_of(doc: dict) -> str | None:
    return doc["metadata"].get("namespace")


def containers(pod_spec: dict) -> list[dict]:
    return list(pod_spec.get("initContainers") or []) + list(pod_spec.get("containers") or [])


def pod_ports(pod_spec: dict) -> dict:
    return {p["name"]: p["containerPort"] for c in containers(pod_spec)
            for p in c.get("ports") or [] if "name" in p} | \
           {p["containerPort"]: p["containerPort"] for c in containers(pod_spec) for p in c.get("ports") or []}


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def mount_of(pod_spec: dict, container: dict, path: str) -> dict | None:
    """The volume whose mount holds `path` in this container."""
    for m in container.get("volumeMounts") or []:
        if path.startswith(m["mountPath"].rstrip("/") + "/"):
            return next((v for v in pod_spec.get("volumes") or [] if v["name"] == m["name"]), None)
    return None


def secret_refs(pod_spec: dict) -> list[tuple[str, str | None, str]]:
    """(secret, key or None for the whole Secret, how) of a pod."""
    refs = []
    for c in containers(pod_spec):
        for r in c.get("envFrom") or []:
            if "secretRef" in r:
                refs.append((r["secretRef"]["name"], None, f"{c['name']} envFrom"))
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                refs.append((ref["name"], ref["key"], f"{c['name']} env {e['name']}"))
    for v in pod_spec.get("volumes") or []:
        if "secret" in v:
            keys = [i["key"] for i in v["secret"].get("items") or []] or [None]
            refs += [(v["secret"]["secretName"], k, f"volume {v['name']}") for k in keys]
    return refs


# --- Kubernetes -------------------------------------------------------------------------------


def split_core(rendered: Path, out: Path) -> None:
    docs = load_all(rendered)
    core = [d for d in docs if (d.get("apiVersion"), d.get("kind")) not in CRD_KINDS]
    out.write_text(yaml.safe_dump_all(core, sort_keys=False) if core else "")


def check_k8s(overlay: str, rendered: Path) -> None:
    r = Rendering(load_all(rendered))
    is_base = overlay == "base"
    crm = next((d for d in r.kind("Deployment").values() if d["metadata"]["name"] == "crm-sync"), None)
    app_ns = ns_of(crm) if crm else None

    deployments = r.kind("Deployment", app_ns)
    configmaps = r.kind("ConfigMap", app_ns)
    secrets = r.kind("Secret", app_ns)
    services = r.kind("Service", app_ns)
    pdbs = r.kind("PodDisruptionBudget", app_ns)
    hpas = r.kind("HorizontalPodAutoscaler", app_ns)
    scaled = r.kind("ScaledObject", app_ns)
    jobs = r.kind("Job", app_ns)
    accounts = r.kind("ServiceAccount", app_ns)

    if set(deployments) != set(SERVICES):
        fail(f"{overlay}: Deployments {sorted(deployments)} != services {sorted(SERVICES)}")

    config = next(
        (cm.get("data", {}) for name, cm in configmaps.items() if name.startswith(CONFIG_NAME)), None
    )
    if config is None:
        fail(f"{overlay}: no ConfigMap {CONFIG_NAME}")
        config = {}
    if not is_base:
        for key in ("NATS_URL",):
            if key not in config:
                fail(f"{overlay}: ConfigMap lacks {key}")

    def check_env_from(where: str, pod_spec: dict, own: str | None = None) -> None:
        container = pod_spec["containers"][0]
        refs = container.get("envFrom", [])
        cm_refs = [r["configMapRef"]["name"] for r in refs if "configMapRef" in r]
        secret_refs_ = [r["secretRef"]["name"] for r in refs if "secretRef" in r]
        if len(cm_refs) != 1 or cm_refs[0] not in configmaps:
            fail(f"{overlay}: {where} envFrom ConfigMap {cm_refs} is not the rendered one")
        # The shared Secret, and at most the service's own (datasync-<service>), never another
        # service's.
        if own and len(secret_refs_) == 2:
            if secret_refs_[1] != f"datasync-{own}":
                fail(f"{overlay}: {where} loads Secret {secret_refs_[1]}, not its own datasync-{own}")
            secret_refs_ = secret_refs_[:1]
        if len(secret_refs_) != 1:
            fail(f"{overlay}: {where} must load the shared Secret (and its own), got {secret_refs_}")
        elif secrets:
            if secret_refs_[0] not in secrets:
                fail(f"{overlay}: {where} refers to Secret {secret_refs_[0]}, not the generated one")
        elif secret_refs_[0] != SECRET_NAME:
            fail(f"{overlay}: {where} refers to external Secret {secret_refs_[0]}, expected {SECRET_NAME}")

    def check_hardening(where: str, pod_spec: dict) -> None:
        container = pod_spec["containers"][0]
        sc = container.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(f"{overlay}: {where} lacks readOnlyRootFilesystem: true")
        res = container.get("resources", {})
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(res.get(part, {})):
                fail(f"{overlay}: {where} resources.{part} needs cpu and memory")
        image = container.get("image", "")
        if not is_base and (image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]):
            fail(f"{overlay}: {where} image {image!r} is not pinned to a tag")

    sa_users: dict[str, str] = {}
    for name, dep in deployments.items():
        port = SERVICES.get(name)
        pod = dep["spec"]["template"]
        spec = pod["spec"]
        container = spec["containers"][0]
        where = f"Deployment {name}"
        check_env_from(where, spec, own=name)
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

        # Grace periods add up: the preStop pause, then the service's own drain
        # (SHUTDOWN_GRACE_SECS: the Deployment's env wins over the ConfigMap), then a margin,
        # all before the kubelet's SIGKILL.
        grace = int(env.get("SHUTDOWN_GRACE_SECS") or config.get("SHUTDOWN_GRACE_SECS", 30))
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_stop_secs = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] and len(pre_stop) == 2 else 0
        budget = pre_stop_secs + grace + GRACE_MARGIN_SECS
        if spec.get("terminationGracePeriodSeconds", 30) <= budget:
            fail(f"{overlay}: {where} terminationGracePeriodSeconds "
                 f"({spec.get('terminationGracePeriodSeconds', 30)}s) must exceed preStop ({pre_stop_secs}s) "
                 f"+ SHUTDOWN_GRACE_SECS ({grace}s) + margin ({GRACE_MARGIN_SECS}s)")

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

        account = spec.get("serviceAccountName")
        if account != name:
            fail(f"{overlay}: {where} should run as its own ServiceAccount {name}, not {account}")
        sa_users.setdefault(account or "default", name)

    # Autoscaling: exactly one autoscaler owns the scalable Deployment's replica count.
    owners: dict[str, list[str]] = {}
    for name, hpa in hpas.items():
        owners.setdefault(hpa["spec"]["scaleTargetRef"]["name"], []).append(f"HPA {name}")
    for name, so in scaled.items():
        owners.setdefault(so["spec"]["scaleTargetRef"]["name"], []).append(f"ScaledObject {name}")
    for target, who in owners.items():
        if target not in deployments:
            fail(f"{overlay}: {', '.join(who)} targets missing Deployment {target}")
        elif "replicas" in deployments[target]["spec"]:
            fail(f"{overlay}: Deployment {target} sets replicas although {', '.join(who)} owns them")
        if len(who) > 1:
            fail(f"{overlay}: Deployment {target} has several autoscalers ({', '.join(who)}); "
                 "KEDA creates an HPA of its own")
    if SCALABLE not in owners and "replicas" not in deployments.get(SCALABLE, {}).get("spec", {}):
        fail(f"{overlay}: {SCALABLE} has neither an autoscaler nor a replica count")

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
        account = spec.get("serviceAccountName")
        if account != MIGRATE_NAME:
            fail(f"{overlay}: {where} should run as ServiceAccount {MIGRATE_NAME}, not {account}")

        needed = [job]
        needed += [cm for n, cm in configmaps.items() if n.startswith(CONFIG_NAME)]
        needed += list(secrets.values())
        needed += [accounts[account]] if account in accounts else []
        for doc in needed:
            if doc["metadata"].get("labels", {}).get(PHASE_KEY) != JOB_PHASE:
                fail(f"{overlay}: {doc['kind']} {doc['metadata']['name']} lacks label "
                     f"{PHASE_KEY}={JOB_PHASE} (the Job needs it in the first apply)")
        if app_ns:
            ns_doc = r.get("Namespace", None, app_ns)
            if ns_doc is None:
                fail(f"{overlay}: namespace {app_ns} is not part of the overlay")
            elif ns_doc["metadata"].get("labels", {}).get(PHASE_KEY) not in PHASES_BEFORE_JOB:
                fail(f"{overlay}: Namespace {app_ns} lacks label {PHASE_KEY} in {PHASES_BEFORE_JOB} "
                     "(the Job needs somewhere to run)")

        # Prod: the migration connects as the database owner from a Secret the services do not
        # load, and grants the services' role DML afterwards.
        env = env_of(container)
        url_ref = (env.get("DATABASE_URL", {}).get("valueFrom") or {}).get("secretKeyRef")
        if url_ref and url_ref["name"] == SECRET_NAME:
            fail(f"{overlay}: {where} takes the owner's DATABASE_URL from {SECRET_NAME}, which every "
                 "service loads: use a Secret of its own")
        if url_ref and not (env.get("DATABASE_APP_ROLE") or {}).get("value"):
            fail(f"{overlay}: {where} migrates as the owner but sets no DATABASE_APP_ROLE to grant")

    check_service_accounts(overlay, r)
    check_pod_security(overlay, r, is_base)
    if not is_base:
        check_namespaces(overlay, r)
    check_nats(overlay, r, app_ns, config, deployments)
    check_secrets_exist(overlay, r, app_ns)
    check_crds(overlay, r, app_ns, deployments, services, jobs, config)
    check_network_policies(overlay, r, app_ns)


def check_service_accounts(overlay: str, r: Rendering) -> None:
    used: dict[tuple, str] = {}
    for kind, ns, name, tmpl in r.workloads():
        spec = tmpl["spec"]
        where = f"{kind} {name}"
        account = spec.get("serviceAccountName")
        if not account or account == "default":
            fail(f"{overlay}: {where} runs as the namespace's default ServiceAccount")
            continue
        if spec.get("automountServiceAccountToken") is not False:
            fail(f"{overlay}: {where} mounts an API token (automountServiceAccountToken: false)")
        sa = r.get("ServiceAccount", ns, account)
        if sa is None:
            fail(f"{overlay}: {where} runs as ServiceAccount {account}, which is not rendered")
        elif sa.get("automountServiceAccountToken") is not False:
            fail(f"{overlay}: ServiceAccount {account} should set automountServiceAccountToken: false")
        if (ns, account) in used:
            fail(f"{overlay}: {where} shares ServiceAccount {account} with {used[(ns, account)]}")
        used[(ns, account)] = where


def check_pod_security(overlay: str, r: Rendering, is_base: bool) -> None:
    """The `restricted` Pod Security Standard, for every pod template."""
    for kind, _, name, tmpl in r.workloads():
        spec = tmpl["spec"]
        where = f"{overlay}: {kind} {name}"
        psc = spec.get("securityContext") or {}
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(host):
                fail(f"{where} sets {host}")
        for v in spec.get("volumes") or []:
            types = set(v) - {"name"}
            if not types <= RESTRICTED_VOLUMES:
                fail(f"{where} volume {v['name']} of type {sorted(types)} is not allowed by `restricted`")
        if psc.get("runAsUser") == 0:
            fail(f"{where} runs as uid 0")
        pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
        for c in containers(spec):
            sc = c.get("securityContext") or {}
            cw = f"{where} container {c['name']}"
            if not (sc.get("runAsNonRoot") is True or
                    (psc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is not False)):
                fail(f"{cw}: runAsNonRoot must be true")
            if sc.get("runAsUser") == 0:
                fail(f"{cw}: runs as uid 0")
            seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
            if seccomp not in ("RuntimeDefault", "Localhost"):
                fail(f"{cw}: seccompProfile must be RuntimeDefault (pod or container)")
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"{cw}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                fail(f"{cw}: privileged")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                fail(f"{cw}: capabilities must drop ALL")
            if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                fail(f"{cw}: adds capabilities {caps.get('add')}")
            if any(p.get("hostPort") for p in c.get("ports") or []):
                fail(f"{cw}: uses a hostPort")
            image = c.get("image", "")
            if not is_base and (image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]):
                fail(f"{cw}: image {image!r} is not pinned to a tag")


def check_namespaces(overlay: str, r: Rendering) -> None:
    for ns in sorted(r.namespaces()):
        doc = r.get("Namespace", None, ns)
        if doc is None:
            fail(f"{overlay}: resources go to namespace {ns}, which the overlay does not create")
            continue
        labels = doc["metadata"].get("labels") or {}
        # Dev enforces `baseline` (its PostgreSQL and NATS run from their official images in the
        # namespace) and audits and warns `restricted`; every other namespace enforces it.
        for mode in PSS_LABELS:
            want = "baseline" if (overlay.endswith("dev") and mode == "enforce") else "restricted"
            if labels.get(f"pod-security.kubernetes.io/{mode}") != want:
                fail(f"{overlay}: Namespace {ns} lacks pod-security.kubernetes.io/{mode}: {want}")


def check_nats(overlay: str, r: Rendering, app_ns: str | None, config: dict, deployments: dict) -> None:
    """The NATS cluster (deploy/nats) against its config files and its clients."""
    stss = [d for d in r.kind("StatefulSet").values()
            if any(c.get("image", "").startswith("nats:") for c in d["spec"]["template"]["spec"]["containers"])]
    users = {e.get("NATS_USER", {}).get("value"): n for n, d in deployments.items()
             for e in [env_of(d["spec"]["template"]["spec"]["containers"][0])] if "NATS_USER" in e}
    if not stss:
        if users:
            fail(f"{overlay}: services set NATS_USER but the overlay has no NATS cluster")
        return
    sts = stss[0]
    ns, name = ns_of(sts), sts["metadata"]["name"]
    where = f"{overlay}: StatefulSet {ns}/{name}"
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    nats = next(c for c in pod["containers"] if c.get("image", "").startswith("nats:"))
    replicas = spec.get("replicas", 1)
    if replicas != 3:
        fail(f"{where} should run 3 nodes, has {replicas}")
    if not re.fullmatch(r"nats:2\.10\.(2[3-9]|[3-9]\d)-alpine", nats["image"]):
        fail(f"{where} image {nats['image']} should be nats:2.10.x-alpine, x >= 23")

    cluster_conf = conf_active((NATS_DIR / "cluster.conf").read_text())
    auth_conf = (NATS_DIR / "auth.conf").read_text()
    if not re.search(r"^\s*include\s+\"?(\./)?auth\.conf\"?\s*$", cluster_conf, re.M):
        fail("deploy/nats/cluster.conf must include auth.conf")

    # Config files reach the pod through the generated ConfigMap, mounted where --config says.
    command = nats.get("command", []) + nats.get("args", [])
    conf_path = next((command[i + 1] for i, a in enumerate(command[:-1]) if a in ("--config", "-c")), "")
    vol = mount_of(pod, nats, conf_path)
    cm = r.get("ConfigMap", ns, (vol or {}).get("configMap", {}).get("name", ""))
    if cm is None or not {"cluster.conf", "auth.conf"} <= set(cm.get("data", {})) \
            or not conf_path.endswith("/cluster.conf"):
        fail(f"{where} must start with --config <mount>/cluster.conf from the generated ConfigMap "
             "holding cluster.conf and auth.conf")

    # JetStream on the per-node volume.
    store = re.search(r"^\s*store_dir\s*[:=]?\s*\"?([^\s\"]+)\"?\s*$", cluster_conf, re.M)
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
    mounts = {m["mountPath"]: m["name"] for m in nats.get("volumeMounts") or []}
    if not store or mounts.get(store.group(1)) not in claims:
        fail(f"{where}: jetstream store_dir must be the mount of a volumeClaimTemplate")

    # Routes: one per node, by the headless Service's per-pod names.
    headless = r.get("Service", ns, spec.get("serviceName", ""))
    if headless is None or headless["spec"].get("clusterIP") != "None" \
            or not headless["spec"].get("publishNotReadyAddresses"):
        fail(f"{where}: serviceName must be a headless Service publishing not-ready addresses")
    cluster_port = pod_ports(pod).get("cluster")
    want_routes = {f"{name}-{i}.{spec.get('serviceName')}.{ns}.svc.cluster.local:{cluster_port}"
                   for i in range(replicas)}
    got_routes = set(re.findall(r"nats-route://([^\s,\]]+)", cluster_conf))
    if got_routes != want_routes:
        fail(f"deploy/nats/cluster.conf routes {sorted(got_routes)} != {sorted(want_routes)}")
    if not re.search(r"^\s*server_name\s*[:=]?\s*\$POD_NAME\s*$", cluster_conf, re.M) or \
            (env_of(nats).get("POD_NAME", {}).get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") \
            != "metadata.name":
        fail(f"{where}: server_name must be $POD_NAME, from the pod's name (KEDA matches it)")
    for var in re.findall(r"\$([A-Z_][A-Z0-9_]*)", cluster_conf):
        if var not in env_of(nats) and var != "POD_NAME":
            fail(f"deploy/nats/cluster.conf reads ${var}, which the StatefulSet does not set")

    # TLS for clients and routes: files from the mounted Secret a Certificate issues.
    tls_files = re.findall(r"(?:cert_file|key_file|ca_file)\s*[:=]?\s*\"?([^\s\"]+)", cluster_conf)
    if len(tls_files) < 6 or not re.search(r"cluster\s*\{[^}]*tls\s*\{[^}]*verify\s*:\s*true", cluster_conf, re.S):
        fail("deploy/nats/cluster.conf needs tls {} for clients and mutual tls {verify: true} in cluster {}")
    for path in set(tls_files):
        vol = mount_of(pod, nats, path)
        secret = (vol or {}).get("secret", {}).get("secretName")
        cert = next((c for c in r.kind("Certificate", ns).values() if c["spec"].get("secretName") == secret), None)
        if cert is None:
            fail(f"{where}: {path} is not in a mounted Secret issued by a rendered Certificate")
            continue
        names = set(cert["spec"].get("dnsNames") or [])
        client_svc = r.get("Service", ns, name)
        wanted = {f"*.{spec.get('serviceName')}.{ns}.svc.cluster.local"}
        if client_svc:
            wanted.add(f"{name}.{ns}.svc.cluster.local")
        if not wanted <= names:
            fail(f"{overlay}: Certificate {cert['metadata']['name']} dnsNames lack {sorted(wanted - names)}")
        if not {"server auth", "client auth"} <= set(cert["spec"].get("usages") or []):
            fail(f"{overlay}: Certificate {cert['metadata']['name']} needs usages server auth and client "
                 "auth (routes are mutual TLS)")

    # Lame duck mode before SIGKILL.
    def dur(key: str) -> float:
        m = re.search(rf"^\s*{key}\s*[:=]?\s*\"?(\w+)\"?\s*$", cluster_conf, re.M)
        return seconds(m.group(1)) if m else {"lame_duck_duration": 120, "lame_duck_grace_period": 10}[key]
    ldm = dur("lame_duck_duration") + dur("lame_duck_grace_period")
    if pod.get("terminationGracePeriodSeconds", 30) <= ldm + GRACE_MARGIN_SECS:
        fail(f"{where} terminationGracePeriodSeconds must exceed lame duck mode ({ldm:.0f}s) + margin")
    if "ldm" not in " ".join(nats.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])):
        fail(f"{where}: preStop should put the server in lame duck mode")

    # Users: every service's NATS_USER is in auth.conf with its own password variable, and the
    # StatefulSet gets every password variable from the Secret it loads.
    auth_users = dict(re.findall(r'user:\s*"?([\w-]+)"?\s*,?\s*password:\s*\$([A-Z0-9_]+)', auth_conf, re.S))
    for user, svc in users.items():
        d = deployments[svc]
        env = env_of(d["spec"]["template"]["spec"]["containers"][0])
        ref = (env.get("NATS_PASSWORD", {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        want_key = f"NATS_PASSWORD_{upper_snake(svc)}"
        if user != svc:
            fail(f"{overlay}: Deployment {svc} connects as NATS user {user}, not its own name")
        if ref.get("name") != f"datasync-{svc}" or ref.get("key") != want_key:
            fail(f"{overlay}: Deployment {svc} NATS_PASSWORD should come from its own Secret "
                 f"datasync-{svc} key {want_key}")
        if auth_users.get(user) != want_key:
            fail(f"deploy/nats/auth.conf: user {user} should have password ${want_key}")
    if users and set(users) != set(SERVICES):
        fail(f"{overlay}: only {sorted(users)} set NATS_USER")
    loaded = [x["secretRef"]["name"] for x in nats.get("envFrom") or [] if "secretRef" in x]
    if loaded != ["nats-auth"]:
        fail(f"{where} should load the password variables from Secret nats-auth")

    # Clients reach the cluster by its client Service, over TLS, and declare 3 replicas.
    url = urlsplit(config.get("NATS_URL", ""))
    client_svc = r.get("Service", ns, name)
    client_port = next((p["port"] for p in (client_svc or {}).get("spec", {}).get("ports", [])
                        if p.get("name") == "client"), None)
    if users:
        if url.hostname != f"{name}.{ns}.svc.cluster.local" or url.port != client_port:
            fail(f"{overlay}: NATS_URL {config.get('NATS_URL')} should be "
                 f"tls://{name}.{ns}.svc.cluster.local:{client_port}")
        if url.scheme != "tls":
            fail(f"{overlay}: NATS_URL should be tls:// (the cluster requires TLS)")
        if str(config.get("NATS_STREAM_REPLICAS")) != str(replicas):
            fail(f"{overlay}: NATS_STREAM_REPLICAS should be {replicas} on a {replicas}-node cluster")
        for svc, d in deployments.items():
            spec_ = d["spec"]["template"]["spec"]
            c = spec_["containers"][0]
            ca = env_of(c).get("NATS_CA_FILE", {}).get("value", "")
            vol = mount_of(spec_, c, ca) if ca else None
            items = [i["path"] for i in (vol or {}).get("secret", {}).get("items") or []]
            if not vol or Path(ca).name not in (items or ["ca.crt"]):
                fail(f"{overlay}: Deployment {svc} NATS_CA_FILE={ca!r} is not a mounted Secret's file")


def example_docs(overlay: str) -> dict[tuple[str | None, str], dict]:
    """(namespace, name) -> stringData of the overlay's secret.example.yaml."""
    path = ROOT / f"deploy/k8s/overlays/{overlay}/secret.example.yaml"
    docs = load_all(path) if path.is_file() else []
    return {(ns_of(d), d["metadata"]["name"]): (d.get("stringData") or {}) | (d.get("data") or {})
            for d in docs if d.get("kind") == "Secret"}


def example_secrets(overlay: str) -> dict[tuple[str | None, str], set[str]]:
    return {k: set(v) for k, v in example_docs(overlay).items()}


def check_secrets_exist(overlay: str, r: Rendering, app_ns: str | None) -> None:
    """Every Secret a pod or custom resource uses is rendered, made by an operator from a
    rendered resource, or listed (with that key) in the overlay's secret.example.yaml."""
    if overlay == "base":
        return
    examples = example_secrets(overlay)
    made: dict[tuple, set | None] = {}  # keys None: not known
    for (kind, ns, name), doc in r.by_id.items():
        if kind == "Secret":
            made[(ns, name)] = set(doc.get("data") or {}) | set(doc.get("stringData") or {})
        elif kind == "Certificate":
            made[(ns, doc["spec"]["secretName"])] = {"tls.crt", "tls.key", "ca.crt"}
        elif kind == "Cluster" and doc["apiVersion"].startswith("postgresql.cnpg.io/"):
            made[(ns, f"{name}-ca")] = {"ca.crt", "ca.key"}

    def known(ns: str | None, secret: str, key: str | None, where: str) -> None:
        keys = made.get((ns, secret), examples.get((ns, secret)))
        if keys is None:
            fail(f"{overlay}: {where} uses Secret {ns}/{secret}, which is neither rendered, made by an "
                 "operator, nor listed in secret.example.yaml")
        elif key is not None and key not in keys:
            fail(f"{overlay}: {where} uses key {key} of Secret {ns}/{secret}, which "
                 f"{'secret.example.yaml does not list' if (ns, secret) not in made else 'it lacks'}")

    for kind, ns, name, tmpl in r.workloads():
        for secret, key, how in secret_refs(tmpl["spec"]):
            known(ns, secret, key, f"{kind} {name} ({how})")
    for (kind, ns, name), doc in r.by_id.items():
        if kind != "Cluster" or not doc["apiVersion"].startswith("postgresql.cnpg.io/"):
            continue
        spec = doc["spec"]
        owner = ((spec.get("bootstrap") or {}).get("initdb") or {}).get("secret", {}).get("name")
        if owner:
            known(ns, owner, "username", f"Cluster {name} bootstrap")
            known(ns, owner, "password", f"Cluster {name} bootstrap")
        for role in (spec.get("managed") or {}).get("roles") or []:
            if role.get("passwordSecret"):
                known(ns, role["passwordSecret"]["name"], "password", f"Cluster {name} role {role['name']}")
        creds = ((spec.get("backup") or {}).get("barmanObjectStore") or {}).get("s3Credentials") or {}
        for part in ("accessKeyId", "secretAccessKey"):
            if part in creds:
                known(ns, creds[part]["name"], creds[part]["key"], f"Cluster {name} backup")

    # NATS's password variables: every one auth.conf reads must be in the example's nats-auth.
    for kind, ns, name, tmpl in r.workloads():
        if kind == "StatefulSet" and (ns, "nats-auth") in examples:
            wanted = set(re.findall(r"\$(NATS_PASSWORD_[A-Z0-9_]+)", (NATS_DIR / "auth.conf").read_text()))
            missing = wanted - examples[(ns, "nats-auth")]
            if missing:
                fail(f"{overlay}: secret.example.yaml nats-auth lacks {sorted(missing)} (auth.conf reads them)")


def check_crds(overlay: str, r: Rendering, app_ns, deployments, services, jobs, config) -> None:
    for doc in r.docs:
        if (doc.get("apiVersion"), doc.get("kind")) not in CRD_KINDS:
            continue
        if not isinstance(doc.get("spec"), dict):
            fail(f"{overlay}: {doc['kind']} {doc['metadata']['name']} has no spec")
    check_scaled_objects(overlay, r, app_ns, deployments)
    check_monitoring(overlay, r, app_ns, services)
    check_postgres(overlay, r, app_ns, deployments, jobs)
    check_cert_manager(overlay, r)
    check_ingress(overlay, r, app_ns, config)


def check_scaled_objects(overlay: str, r: Rendering, app_ns, deployments) -> None:
    sos = r.kind("ScaledObject")
    if not sos:
        return
    stream, consumers = push_consumers()
    nats_svcs = {f"{n}.{ns_of(d)}.svc.cluster.local:{p['port']}"
                 for (k, _, n), d in r.by_id.items() if k == "Service"
                 for p in d["spec"].get("ports", []) if p.get("name") == "monitor"}
    for name, so in sos.items():
        where = f"{overlay}: ScaledObject {name}"
        spec = so["spec"]
        target = spec.get("scaleTargetRef") or {}
        if target.get("kind", "Deployment") != "Deployment" or \
                r.get("Deployment", ns_of(so), target.get("name", "")) is None:
            fail(f"{where} scaleTargetRef {target} names no rendered Deployment")
        lo, hi = spec.get("minReplicaCount"), spec.get("maxReplicaCount")
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            fail(f"{where} needs minReplicaCount >= 1 and maxReplicaCount >= it")
        triggers = spec.get("triggers") or []
        seen = set()
        for t in triggers:
            meta = t.get("metadata") or {}
            if not all(isinstance(v, str) for v in meta.values()):
                fail(f"{where} trigger {t.get('type')}: metadata values must be strings")
            if t.get("type") == "nats-jetstream":
                for key in ("natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"):
                    if not meta.get(key):
                        fail(f"{where} nats-jetstream trigger lacks {key}")
                if meta.get("natsServerMonitoringEndpoint") not in nats_svcs:
                    fail(f"{where} natsServerMonitoringEndpoint {meta.get('natsServerMonitoringEndpoint')} "
                         f"is not a rendered NATS monitoring Service ({sorted(nats_svcs)})")
                if stream and meta.get("stream") != stream:
                    fail(f"{where} watches stream {meta.get('stream')}, the push consumers are on {stream}")
                if consumers and meta.get("consumer") not in consumers:
                    fail(f"{where} watches consumer {meta.get('consumer')}, not one of {sorted(consumers)}")
                seen.add(meta.get("consumer"))
            elif t.get("type") in ("cpu", "memory"):
                if t.get("metricType") not in ("Utilization", "AverageValue") or not meta.get("value"):
                    fail(f"{where} {t.get('type')} trigger needs metricType and metadata.value")
                dep = r.get("Deployment", ns_of(so), target.get("name", ""))
                for c in (dep or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                    if t.get("type") not in (c.get("resources", {}).get("requests") or {}):
                        fail(f"{where} {t.get('type')} trigger: container {c['name']} has no such request")
            else:
                fail(f"{where} has an unexpected trigger type {t.get('type')}")
        types = {t.get("type") for t in triggers}
        if "cpu" not in types:
            fail(f"{where} should scale on cpu (the synchronous /adjustments path)")
        # A push consumer exists only for a configured target, and a trigger whose consumer is
        # missing fails (the HPA then never scales in): the lag triggers are exactly the
        # configured targets' consumers.
        config = next((cm.get("data", {}) for n, cm in r.kind("ConfigMap").items()
                       if n.startswith(CONFIG_NAME)), {})
        configured = {f"inventory-push-{t}-stock_level" for var, t in TARGET_VARS.items()
                      if config.get(var)}
        if seen != configured:
            fail(f"{where} watches {sorted(seen)}, but the configured targets' push consumers "
                 f"are {sorted(configured)} (set <TARGET>_BASE_URL and its trigger together)")
        if len(seen) != len([t for t in triggers if t.get("type") == "nats-jetstream"]):
            fail(f"{where} watches a consumer twice")


def check_monitoring(overlay: str, r: Rendering, app_ns, services) -> None:
    for name, sm in r.kind("ServiceMonitor").items():
        where = f"{overlay}: ServiceMonitor {name}"
        spec = sm["spec"]
        if spec.get("namespaceSelector") not in (None, {}) and \
                app_ns not in (spec["namespaceSelector"].get("matchNames") or []):
            fail(f"{where} namespaceSelector misses {app_ns}")
        selected = {n for n, s in services.items() if matches(spec.get("selector"), s["metadata"].get("labels") or {})}
        if selected != set(SERVICES):
            fail(f"{where} selects Services {sorted(selected)}, expected {sorted(SERVICES)}")
        endpoints = spec.get("endpoints") or []
        if not endpoints:
            fail(f"{where} has no endpoints")
        for ep in endpoints:
            for svc in selected:
                if ep.get("port") not in {p.get("name") for p in services[svc]["spec"]["ports"]}:
                    fail(f"{where} endpoint port {ep.get('port')} is not a named port of Service {svc}")
            if ep.get("path", "/metrics") != "/metrics":
                fail(f"{where} scrapes {ep.get('path')}, the services serve /metrics")
    for name, rule in r.kind("PrometheusRule").items():
        want = yaml.safe_load(PROMETHEUS_RULES.read_text())["groups"]
        if rule["spec"].get("groups") != want:
            fail(f"{overlay}: PrometheusRule {name} differs from {PROMETHEUS_RULES.relative_to(ROOT)}: "
                 f"regenerate it with `scripts/check_deploy.py prometheus-rule > "
                 f"{PROD_RULE.relative_to(ROOT)}`")
    if r.kind("ServiceMonitor") and not r.kind("PrometheusRule"):
        fail(f"{overlay}: a ServiceMonitor without the PrometheusRule (alerts)")


def db_url(url: str) -> tuple[object, dict]:
    parts = urlsplit(url)
    return parts, {k: v[0] for k, v in parse_qs(parts.query).items()}


def check_postgres(overlay: str, r: Rendering, app_ns, deployments, jobs) -> None:
    clusters = {n: d for n, d in r.kind("Cluster").items() if d["apiVersion"].startswith("postgresql.cnpg.io/")}
    for name, sb in r.kind("ScheduledBackup").items():
        if (sb["spec"].get("cluster") or {}).get("name") not in clusters:
            fail(f"{overlay}: ScheduledBackup {name} names no rendered Cluster")
        if len(str(sb["spec"].get("schedule", "")).split()) != 6:
            fail(f"{overlay}: ScheduledBackup {name} schedule needs six fields (seconds first)")
    for name, cl in clusters.items():
        where = f"{overlay}: Cluster {name}"
        spec = cl["spec"]
        if spec.get("instances", 1) < 3:
            fail(f"{where} should have 3 instances")
        if not (spec.get("storage") or {}).get("size"):
            fail(f"{where} needs storage.size")
        image = spec.get("imageName", "")
        if not re.search(r":\d+(\.\d+)", image):
            fail(f"{where} imageName {image!r} should pin a PostgreSQL minor version")
        params = (spec.get("postgresql") or {}).get("parameters") or {}
        if int(params.get("max_connections", 100)) < 400:
            fail(f"{where} max_connections {params.get('max_connections')} < 400 (deploy/README.md's budget)")
        hba = " ".join((spec.get("postgresql") or {}).get("pg_hba") or [])
        if "hostnossl" not in hba or "reject" not in hba:
            fail(f"{where} should reject connections without TLS in pg_hba")
        initdb = (spec.get("bootstrap") or {}).get("initdb") or {}
        owner = initdb.get("owner")
        if not (initdb.get("database") and owner and (initdb.get("secret") or {}).get("name")):
            fail(f"{where} bootstrap.initdb needs database, owner and secret")
        roles = {ro["name"]: ro for ro in (spec.get("managed") or {}).get("roles") or []}
        backup = (spec.get("backup") or {}).get("barmanObjectStore") or {}
        creds = backup.get("s3Credentials") or {}
        if not str(backup.get("destinationPath", "")).startswith("s3://") or \
                not (creds.get("inheritFromIAMRole") or {"accessKeyId", "secretAccessKey"} <= set(creds)):
            fail(f"{where} backup.barmanObjectStore needs an s3:// destinationPath and s3Credentials")
        if not (spec.get("backup") or {}).get("retentionPolicy"):
            fail(f"{where} backup needs a retentionPolicy")

        # The roles the Job and the services use, and how they connect (the example URLs).
        examples = example_docs(overlay)
        for jname, job in jobs.items():
            env = env_of(job["spec"]["template"]["spec"]["containers"][0])
            app_role = (env.get("DATABASE_APP_ROLE") or {}).get("value")
            role = roles.get(app_role or "")
            if role is None:
                fail(f"{where}: the Job's DATABASE_APP_ROLE {app_role!r} is not a managed role")
            elif not role.get("login") or any(role.get(k) for k in ("superuser", "createdb", "createrole")):
                fail(f"{where}: role {app_role} should be LOGIN only (no superuser, createdb, createrole)")
            ref = (env.get("DATABASE_URL", {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            url = examples.get((ns_of(job), ref.get("name")), {}).get(ref.get("key"))
            if not url:
                fail(f"{where}: the Job's DATABASE_URL ({ref}) is not in secret.example.yaml")
            else:
                check_db_url(overlay, f"{ref['name']}.{ref['key']}", url, owner, name, ns_of(cl),
                             job["spec"]["template"]["spec"], f"Job {jname}")
            app_url = examples.get((app_ns, SECRET_NAME), {}).get("DATABASE_URL")
            if app_url:
                for dname, dep in deployments.items():
                    check_db_url(overlay, f"{SECRET_NAME}.DATABASE_URL", app_url, app_role, name, ns_of(cl),
                                 dep["spec"]["template"]["spec"], f"Deployment {dname}")


def check_db_url(overlay, what, url, user, cluster, ns, pod_spec, who) -> None:
    parts, query = db_url(url)
    if parts.username != user:
        fail(f"{overlay}: secret.example.yaml {what} connects as {parts.username}, expected {user}")
    if parts.hostname != f"{cluster}-rw.{ns}.svc":
        fail(f"{overlay}: secret.example.yaml {what} host {parts.hostname} should be {cluster}-rw.{ns}.svc "
             "(a name the operator's server certificate carries)")
    if query.get("sslmode") != "verify-full":
        fail(f"{overlay}: secret.example.yaml {what} should use sslmode=verify-full")
    root = query.get("sslrootcert", "")
    vol = mount_of(pod_spec, pod_spec["containers"][0], root)
    if (vol or {}).get("secret", {}).get("secretName") != f"{cluster}-ca":
        fail(f"{overlay}: {who} does not mount Secret {cluster}-ca where sslrootcert={root} points")


def check_cert_manager(overlay: str, r: Rendering) -> None:
    for (kind, ns, name), doc in r.by_id.items():
        if kind == "Certificate":
            spec = doc["spec"]
            ref = spec.get("issuerRef") or {}
            if not spec.get("secretName") or not ref.get("name"):
                fail(f"{overlay}: Certificate {name} needs secretName and issuerRef.name")
            if ref.get("kind", "Issuer") == "Issuer" and r.get("Issuer", ns, ref.get("name", "")) is None:
                fail(f"{overlay}: Certificate {name} names Issuer {ref.get('name')}, which is not rendered")
            if not (spec.get("dnsNames") or spec.get("commonName")):
                fail(f"{overlay}: Certificate {name} has no names")
        elif kind == "Issuer":
            spec = doc["spec"]
            kinds = set(spec) & {"selfSigned", "ca", "acme", "vault", "venafi"}
            if len(kinds) != 1:
                fail(f"{overlay}: Issuer {name} should have exactly one issuer type")
            ca = (spec.get("ca") or {}).get("secretName")
            if ca and not any(c["spec"].get("secretName") == ca and c["spec"].get("isCA")
                              for c in r.kind("Certificate", ns).values()):
                fail(f"{overlay}: Issuer {name} signs with Secret {ca}, which no rendered CA Certificate issues")


def check_ingress(overlay: str, r: Rendering, app_ns, config) -> None:
    ingresses = r.kind("Ingress")
    if not ingresses:
        return
    expected = public_routes()
    routed: dict[str, str] = {}
    for name, ing in ingresses.items():
        where = f"{overlay}: Ingress {name}"
        spec = ing["spec"]
        ann = ing["metadata"].get("annotations") or {}
        if not (ann.get("cert-manager.io/cluster-issuer") or ann.get("cert-manager.io/issuer")):
            fail(f"{where} lacks a cert-manager issuer annotation")
        if not spec.get("ingressClassName"):
            fail(f"{where} lacks ingressClassName")
        tls_hosts = {h for t in spec.get("tls") or [] if t.get("secretName") for h in t.get("hosts") or []}
        for rule in spec.get("rules") or []:
            host = rule.get("host")
            if host not in tls_hosts:
                fail(f"{where} host {host} is not covered by a tls entry with a secretName")
            public = urlsplit(config.get("PUBLIC_URL", ""))
            if public.scheme != "https" or public.hostname != host:
                fail(f"{overlay}: PUBLIC_URL {config.get('PUBLIC_URL')!r} should be https://{host} (the Ingress host)")
            for p in (rule.get("http") or {}).get("paths") or []:
                path = p.get("path", "/")
                backend = (p.get("backend") or {}).get("service") or {}
                svc = r.get("Service", ns_of(ing), backend.get("name", ""))
                port = backend.get("port") or {}
                if svc is None:
                    fail(f"{where} path {path} routes to missing Service {backend.get('name')}")
                elif not any(port.get("name") == sp.get("name") if "name" in port else port.get("number") == sp["port"]
                             for sp in svc["spec"]["ports"]):
                    fail(f"{where} path {path} routes to port {port} that Service {backend.get('name')} lacks")
                if any(path == x or path.startswith(x + "/") or path == "/" for x in PRIVATE_PATHS):
                    fail(f"{where} exposes private path {path}")
                routed[path] = backend.get("name")
    for path, svc in expected.items():
        if routed.get(path) != svc:
            fail(f"{overlay}: the Ingress should route {path} to {svc} (got {routed.get(path)})")
    for path in set(routed) - set(expected):
        fail(f"{overlay}: the Ingress routes {path}, which is not a public endpoint of the services")


def check_network_policies(overlay: str, r: Rendering, app_ns: str | None) -> None:
    # A list: the same policy name recurs across namespaces (default-deny-ingress).
    policies = [d for d in r.docs if d["kind"] == "NetworkPolicy"]
    if not policies:
        return
    pods = [Pod(ns, tmpl["metadata"].get("labels") or {}, pod_ports(tmpl["spec"]))
            for _, ns, _, tmpl in r.workloads()]
    pg = [Pod(ns_of(c), {"cnpg.io/cluster": n}, {"postgresql": 5432, "status": 8000, "metrics": 9187})
          for n, c in r.kind("Cluster").items() if c["apiVersion"].startswith("postgresql.cnpg.io/")]
    solver = Pod(app_ns, {"acme.cert-manager.io/http01-solver": "true"}, {"http": 8089})

    # Ports a policy names must exist on the pods it selects (a typo admits nothing).
    for pol in policies:
        ns, name = ns_of(pol), pol["metadata"]["name"]
        selected = [p for p in pods + pg + [solver] if p.ns == ns and matches(pol["spec"].get("podSelector"), p.labels)]
        if not selected:
            fail(f"{overlay}: NetworkPolicy {ns}/{name} selects no pod")
        for rule in pol["spec"].get("ingress") or []:
            for port in rule.get("ports") or []:
                for p in selected:
                    if "port" in port and not p.has(port["port"]):
                        fail(f"{overlay}: NetworkPolicy {ns}/{name} admits port {port['port']}, "
                             f"which pod {p.labels} does not have")
        for rule in pol["spec"].get("egress") or []:
            dests = [p for p in pods + pg if any(peer_matches(r, peer, p, ns) for peer in rule.get("to") or [])]
            for port in rule.get("ports") or []:
                for p in dests:
                    if "port" in port and not p.has(port["port"]):
                        fail(f"{overlay}: NetworkPolicy {ns}/{name} allows egress to port {port['port']}, "
                             f"which pod {p.labels} does not have")

    # Default deny: in the services' namespace and NATS's, nothing is admitted unless allowed.
    nats_ns = {ns for _, ns, _, tmpl in r.workloads() if tmpl["metadata"].get("labels", {}).get(
        "app.kubernetes.io/name") == "nats"}
    for ns in {app_ns} | nats_ns:
        if not any(ns_of(p) == ns and not p["spec"].get("podSelector") and not p["spec"].get("ingress")
                   and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"]) for p in policies):
            fail(f"{overlay}: namespace {ns} has no default-deny ingress NetworkPolicy")

    # The connectivity the deployment needs, and some it must not have.
    def svc_pod(name: str) -> Pod | None:
        return next((p for p in pods if p.ns == app_ns and p.labels.get("app.kubernetes.io/name") == name), None)

    nats = next((p for p in pods if p.labels.get("app.kubernetes.io/name") == "nats"), None)
    collector = next((p for p in pods if p.labels.get("app.kubernetes.io/name") == "otel-collector"), None)
    migrate = svc_pod(MIGRATE_NAME)
    ingress_ctl = Pod(NS_INGRESS, {"app.kubernetes.io/name": "ingress-nginx"})
    prometheus = Pod(NS_MONITORING, {"app.kubernetes.io/name": "prometheus"})
    keda = Pod(NS_KEDA, {"app": "keda-operator"})
    dns = Pod(NS_DNS, {"k8s-app": "kube-dns"}, {"dns": 53})
    stranger = Pod("default", {"app": "stranger"})
    internet = Pod("", {}, ip="203.0.113.10")
    private = Pod("", {}, ip="10.20.30.40")
    exposed = set(public_routes().values())

    def expect(src: Pod, dst: Pod, port: int, want: bool, what: str) -> None:
        if dst is None or src is None:
            return
        got = allowed(r, policies, src, dst, port)
        if got != want:
            fail(f"{overlay}: NetworkPolicies {'block' if want else 'allow'} {what} (port {port})")

    for svc, port in SERVICES.items():
        me = svc_pod(svc)
        if me is None:
            continue
        expect(ingress_ctl, me, port, svc in exposed, f"the ingress controller -> {svc}")
        expect(prometheus, me, port, True, f"Prometheus -> {svc} /metrics")
        expect(stranger, me, port, False, f"another namespace -> {svc}")
        if svc != "sync-monitor":
            expect(svc_pod("sync-monitor"), me, port, True, f"sync-monitor -> {svc} admin API")
        expect(me, dns, 53, True, f"{svc} -> DNS")
        for db in pg:
            expect(me, db, 5432, True, f"{svc} -> PostgreSQL")
        if collector:
            expect(me, collector, 4318, True, f"{svc} -> the collector")
        expect(me, internet, 443, True, f"{svc} -> external HTTPS targets")
        expect(me, private, 443, False, f"{svc} -> private addresses on 443")
        if nats:
            expect(me, nats, 4222, True, f"{svc} -> NATS")
            expect(me, nats, 8222, False, f"{svc} -> NATS monitoring")
    if migrate:
        for db in pg:
            expect(migrate, db, 5432, True, "the migration Job -> PostgreSQL")
        expect(migrate, dns, 53, True, "the migration Job -> DNS")
    if nats:
        expect(keda, nats, 8222, True, "KEDA -> NATS monitoring")
        expect(stranger, nats, 4222, False, "another namespace -> NATS")
        expect(nats, nats, 6222, True, "NATS routes")
    if collector:
        expect(stranger, collector, 4318, False, "another namespace -> the collector")
    for db in pg:
        expect(stranger, db, 5432, False, "another namespace -> PostgreSQL")
        expect(Pod(NS_CNPG, {"app.kubernetes.io/name": "cloudnative-pg"}), db, 8000, True,
               "the CloudNativePG operator -> instances")
    expect(ingress_ctl, solver, 8089, True, "the ingress controller -> cert-manager's HTTP-01 solver")


def peer_matches(r: Rendering, peer: dict, pod: Pod, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        if pod.ip is None:
            return False
        block = peer["ipBlock"]
        addr = ipaddress.ip_address(pod.ip)
        net = ipaddress.ip_network(block["cidr"])
        return addr.version == net.version and addr in net and not any(
            addr in ipaddress.ip_network(e) for e in block.get("except") or []
            if ipaddress.ip_network(e).version == addr.version)
    if pod.ip is not None:
        return False
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_sel is None:
        return pod.ns == policy_ns and matches(pod_sel, pod.labels)
    return matches(ns_sel, r.ns_labels(pod.ns)) and (pod_sel is None or matches(pod_sel, pod.labels))


def port_matches(ports: list | None, port: int, dst: Pod) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != "TCP" and port != 53:
            continue
        if "port" not in p:
            return True
        want = dst.port(p["port"]) if isinstance(p["port"], str) else p["port"]
        if want == port or (isinstance(want, int) and p.get("endPort") and want <= port <= p["endPort"]):
            return True
    return False


def allowed(r: Rendering, policies: list[dict], src: Pod, dst: Pod, port: int) -> bool:
    """NetworkPolicy semantics: a direction is open unless a policy of that type selects the pod,
    then only what one of them allows."""
    def applies(pol: dict, pod: Pod, kind: str) -> bool:
        types = pol["spec"].get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in pol["spec"] else []))
        return pod.ip is None and ns_of(pol) == pod.ns and kind in types and \
            matches(pol["spec"].get("podSelector"), pod.labels)

    egress = [p for p in policies if applies(p, src, "Egress")]
    if egress and not any(peer_ok and port_matches(rule.get("ports"), port, dst)
                          for pol in egress for rule in pol["spec"].get("egress") or []
                          for peer_ok in [not rule.get("to") or any(peer_matches(r, peer, dst, ns_of(pol))
                                                                    for peer in rule["to"])]):
        return False
    ingress = [p for p in policies if applies(p, dst, "Ingress")]
    if ingress and not any(peer_ok and port_matches(rule.get("ports"), port, dst)
                           for pol in ingress for rule in pol["spec"].get("ingress") or []
                           for peer_ok in [not rule.get("from") or any(peer_matches(r, peer, src, ns_of(pol))
                                                                       for peer in rule["from"])]):
        return False
    return True


def prometheus_rule() -> str:
    rules = yaml.safe_load(PROMETHEUS_RULES.read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "datasync"},
        "spec": {"groups": rules["groups"]},
    }
    header = (
        f"# GENERATED from {PROMETHEUS_RULES.relative_to(ROOT)} (the plain rules file promtool and\n"
        "# sync-monitor's tests check) for the Prometheus Operator; do not edit. Regenerate with\n"
        f"#   scripts/check_deploy.py prometheus-rule > {PROD_RULE.relative_to(ROOT)}\n"
        "# validate-deploy.sh fails while the two differ. The Prometheus resource must select it\n"
        "# (ruleSelector / ruleNamespaceSelector), as for the ServiceMonitor.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


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
        if urlsplit(with_defaults(env.get("NATS_URL", ""))).hostname != "nats":
            fail(f"compose: {name} NATS_URL should point at the nats service")

        if svc.get("env_file") != [{"path": ".env", "required": False}]:
            fail(f"compose: {name} env_file should be the optional .env")
        deps = svc.get("depends_on", {})
        wanted = {"postgres": "service_healthy", "nats": "service_healthy",
                  "migrate": "service_completed_successfully"}
        for dep, cond in wanted.items():
            if deps.get(dep, {}).get("condition") != cond:
                fail(f"compose: {name} should depend on {dep} ({cond})")

        # Grace periods add up: the service's drain plus a margin before Compose's SIGKILL.
        grace = int(with_defaults(env.get("SHUTDOWN_GRACE_SECS", "30")))
        stop = seconds(svc.get("stop_grace_period", "10s"))
        if stop <= grace + GRACE_MARGIN_SECS:
            fail(f"compose: {name} stop_grace_period ({stop:.0f}s) must exceed "
                 f"SHUTDOWN_GRACE_SECS ({grace}s) + margin ({GRACE_MARGIN_SECS}s)")

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


def check_collector_config(rel: str, otel: dict) -> None:
    protocols = otel.get("receivers", {}).get("otlp", {}).get("protocols", {})
    if not {"grpc", "http"} <= set(protocols):
        fail(f"{rel}: the otlp receiver needs grpc and http")
    if not str(protocols.get("http", {}).get("endpoint", "")).endswith(":4318"):
        fail(f"{rel}: OTLP/HTTP must listen on :4318 (what the services export to)")
    for pipe, cfg in otel.get("service", {}).get("pipelines", {}).items():
        for part in ("receivers", "processors", "exporters"):
            for comp in cfg.get(part, []):
                if comp not in (otel.get(part) or {}):
                    fail(f"{rel}: pipeline {pipe} uses undefined {part[:-1]} {comp}")
    for ext in otel.get("service", {}).get("extensions", []):
        if ext not in (otel.get("extensions") or {}):
            fail(f"{rel}: service uses undefined extension {ext}")


def check_files() -> None:
    nats_conf = (ROOT / "deploy/nats/nats.conf").read_text()
    active = conf_active(nats_conf)
    if not re.search(r"^\s*sync_interval\s*[:=]?\s*always\s*$", active, re.M):
        fail("nats.conf: jetstream must set sync_interval: always (acked messages survive power loss)")
    if not re.search(r"^\s*store_dir\s*[:=]?\s*\"?/data\"?\s*$", active, re.M):
        fail("nats.conf: jetstream store_dir must be /data (the compose volume)")

    check_collector_config("collector.yaml", yaml.safe_load((ROOT / "deploy/otel/collector.yaml").read_text()))
    # The Kubernetes gateway: the same receivers, memory_limiter first, batch, a real exporter.
    rel = "deploy/otel/k8s/collector.yaml"
    otel = yaml.safe_load((ROOT / rel).read_text())
    check_collector_config(rel, otel)
    for pipe, cfg in otel.get("service", {}).get("pipelines", {}).items():
        procs = cfg.get("processors", [])
        if procs[:1] != ["memory_limiter"] or "batch" not in procs:
            fail(f"{rel}: pipeline {pipe} should start with memory_limiter and batch")
        if not any(e.split("/")[0] in ("otlp", "otlphttp") for e in cfg.get("exporters", [])):
            fail(f"{rel}: pipeline {pipe} should export to a backend over OTLP")
    if "traces" not in otel.get("service", {}).get("pipelines", {}):
        fail(f"{rel}: no traces pipeline (the services export traces)")

    check_dockerfile()
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in ("target", ".git", ".run", ".env"):
        if entry not in ignored:
            fail(f".dockerignore: should exclude {entry}")


def check_dockerfile() -> None:
    """One builder stage compiles the dependencies and all six binaries once, with no SERVICE
    in sight (so the six image builds share it); the runtime stage picks one binary."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())
    rust_version = workspace.get("workspace", {}).get("package", {}).get("rust-version")
    if rust_version and f"rust:{rust_version}-bookworm" not in dockerfile:
        fail(f"Dockerfile: builder image should be rust:{rust_version}-bookworm (workspace rust-version)")
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)", dockerfile, re.M):
        if ":" not in image or image.endswith(":latest"):
            fail(f"Dockerfile: base image {image} is not pinned")

    stages: dict[str, str] = {}
    current = None
    for line in dockerfile.splitlines():
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I)
        if m:
            current = m.group(1)
            stages[current] = ""
        if current:
            stages[current] += line + "\n"
    runtime = stages.get("runtime", "")
    if not runtime:
        fail("Dockerfile: expected a stage `FROM ${RUNTIME_IMAGE} AS runtime`")
    for stage, body in stages.items():
        if stage != "runtime" and re.search(r"\bSERVICE\b", body):
            fail(f"Dockerfile: stage {stage} mentions SERVICE: it must be the same for all six images")
    packages = " ".join(f"--package {s}" for s in SERVICES)
    joined = re.sub(r"\s*\\\n\s*", " ", dockerfile)  # continuation lines as one
    cook = re.search(r"cargo chef cook .*", joined)
    build = re.search(r"cargo build --release --locked .*", joined)
    for what, m in (("cargo chef cook", cook), ("cargo build --release --locked", build)):
        if not m:
            fail(f"Dockerfile: expected {what}")
        elif not re.search(rf"{re.escape(packages)}(\s|$)", m.group(0)):
            fail(f"Dockerfile: {what} should select exactly `{packages}` (the same set, so the cooked "
                 "dependencies have the features the build needs)")
    if "cargo chef prepare" not in dockerfile:
        fail("Dockerfile: expected cargo chef prepare")
    for needle in ("ARG SERVICE", "/${SERVICE}", 'CMD ["serve"]', "USER 10001"):
        if needle not in runtime:
            fail(f"Dockerfile: runtime stage should contain {needle!r}")


def main(argv: list[str]) -> int:
    match argv:
        case ["split", rendered, out]:
            split_core(Path(rendered), Path(out))
        case ["k8s", overlay, rendered]:
            check_k8s(overlay, Path(rendered))
        case ["compose", compose]:
            check_compose(Path(compose))
        case ["files"]:
            check_files()
        case ["prometheus-rule"]:
            sys.stdout.write(prometheus_rule())
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
