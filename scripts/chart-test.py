#!/usr/bin/env python3
"""`make chart-test`: checks the Helm chart charts/cks-lab with Helm's own code (helm-python-sdk,
Helm's Go SDK behind a C ABI: load, lint, render, values schema; no helm binary).

1. the chart's crds/ are byte-equal copies of the repository's crds/ (`make crds` copies them);
2. values.schema.json refuses wrong types, unknown keys and missing inputs (a table below);
3. for each value set (defaults, every optional part on, proxy auth, token auth, git-sync, a
   ConfigMap catalog): strict lint with no warning, render, every pod template checked against
   Pod Security `restricted` (and a read-only root filesystem, no token in every container),
   and every rendered object and CRD
   validated strictly against the Kubernetes 1.33 OpenAPI schemas (kubernetes-validate); custom
   resources (the sample ClusterPool) are checked by the development control plane's CRD schema
   in step 5 instead, and the ServiceMonitor (Prometheus Operator's CRD, not shipped here) only
   for rendering;
4. checkov on every value set's manifests: no failed check (a skip is an annotation on the one
   object it concerns, with its reason next to it in the template);
5. each value set applied (server-side) to a fresh development control plane with the CRDs, and
   every object read back.

Run through the Makefile, which passes the cks-devcluster binary and kubectl.
"""

from __future__ import annotations

import argparse
import copy
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import helm_python as helm
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "cks-lab"
KUBE_VERSION = "1.33.0"

# Value sets rendered, linted, validated, scanned and applied. Names become release names.
VALUE_SETS: dict[str, dict] = {
    "defaults": {},
    # Every optional part on at once.
    "all-on": {
        "commonLabels": {"team": "platform"},
        "commonAnnotations": {"owner": "platform@example.com"},
        "image": {"digest": "sha256:" + "ab" * 32},
        "imagePullSecrets": [{"name": "registry"}],
        "pools": {"namespace": "cks-pools", "goldenImageNamespaces": ["vm-templates", "vm-images"]},
        "ssh": {"transport": "port-forward"},
        "scenarios": {
            "source": "gitSync",
            "gitSync": {
                "repo": "https://git.example.com/platform/cks-scenarios.git",
                "image": {"repository": "registry.k8s.io/git-sync/git-sync", "digest": "sha256:" + "cd" * 32},
                "username": "cks-bot",
                "credentialsSecret": "cks-scenarios-git",
            },
        },
        "operator": {"extraArgs": ["--resync-seconds=600"], "priorityClassName": "system-cluster-critical",
                     "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}]},
        "gateway": {
            "publicUrl": "https://cks.example.com",
            "pool": "cks-standard",
            "corsOrigins": ["https://portal.example.com"],
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
                "tls": {"enabled": True},
                "certManager": {"enabled": True, "clusterIssuer": "letsencrypt"},
            },
            "service": {"annotations": {"example.com/scrape": "true"}},
        },
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "networkPolicy": {
            "apiServer": {"cidrs": ["10.0.0.1/32"], "ports": [443]},
            "gatewayFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        },
        "samplePool": {"enabled": True},
    },
    "proxy-auth": {
        "gateway": {"auth": {"mode": "proxy", "proxy": {"trustedProxies": ["10.96.12.0/28", "fd00::/120"]}},
                    "publicUrl": "https://cks.example.com", "ingress": {"enabled": True}},
    },
    "token-auth": {
        "gateway": {"auth": {"mode": "token", "token": {"existingSecret": "api-tokens", "key": "tokens.csv"}},
                    "terminal": {"enabled": False}, "web": {"enabled": False}},
        "operator": {"leaderElection": False, "replicas": 1, "pdb": {"enabled": False}},
    },
    "git-sync": {
        "scenarios": {"source": "gitSync", "gitSync": {"repo": "https://git.example.com/cks-scenarios.git"}},
    },
    "configmap-catalog": {
        "scenarios": {"source": "configMap", "configMap": {
            "name": "cks-scenarios",
            "items": [{"key": "categories.yaml", "path": "categories.yaml"}],
        }},
        "gateway": {"enabled": False},
    },
}

# Values the schema (or a template's `required`) must refuse: (what, values).
REFUSED: list[tuple[str, dict]] = [
    ("replicas as a string", {"operator": {"replicas": "two"}}),
    ("zero replicas", {"gateway": {"replicas": 0}}),
    ("an unknown top-level key", {"operatr": {}}),
    ("an unknown nested key", {"gateway": {"auth": {"mod": "token"}}}),
    ("dev auth (loopback only, not for a cluster)", {"gateway": {"auth": {"mode": "dev"}}}),
    ("proxy auth without trusted proxies", {"gateway": {"auth": {"mode": "proxy"}}}),
    ("a trusted proxy that is not a CIDR", {"gateway": {"auth": {"mode": "proxy", "proxy": {"trustedProxies": ["proxy"]}}}}),
    ("token auth without its Secret", {"gateway": {"auth": {"mode": "token", "token": {"existingSecret": ""}}}}),
    ("an unknown SSH transport", {"ssh": {"transport": "telnet"}}),
    ("a port out of range", {"ssh": {"port": 70000}}),
    ("an unknown log format", {"logFormat": "xml"}),
    ("git-sync without a repository", {"scenarios": {"source": "gitSync"}}),
    ("a ConfigMap catalog without a name", {"scenarios": {"source": "configMap"}}),
    ("a digest that is not sha256", {"image": {"digest": "latest"}}),
    ("a pool namespace that is not a DNS label", {"pools": {"namespace": "Bad_NS"}}),
    ("a public URL that is not http(s)", {"gateway": {"publicUrl": "cks.example.com"}}),
    ("a boolean as a string", {"networkPolicy": {"enabled": "yes"}}),
]


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check_crds() -> None:
    repo, chart = ROOT / "crds", CHART / "crds"
    names = sorted(p.name for p in repo.glob("*.yaml"))
    if sorted(p.name for p in chart.glob("*.yaml")) != names:
        fail(f"{chart} does not hold the same files as {repo}: run 'make crds' and commit")
    _, mismatch, errors = filecmp.cmpfiles(repo, chart, names, shallow=False)
    if mismatch or errors:
        fail(f"{chart} differs from {repo} in {mismatch + errors}: run 'make crds' and commit")
    print(f"chart CRDs: {len(names)} files equal to crds/")


def render(values: dict, release: str, namespace: str) -> list[dict]:
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values)
    files = chart.render(values, name=release, namespace=namespace, is_install=True)
    objects = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            if "cks-lab" not in text:
                fail(f"{release}: NOTES.txt rendered empty")
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def check_refusals() -> None:
    chart = helm.Chart.load(str(CHART))
    for what, values in REFUSED:
        try:
            chart.validate_schema(values)
            chart.render(values, name="refused", namespace="cks-lab", is_install=True)
        except helm.HelmError:
            continue
        fail(f"the chart accepted {what}: {json.dumps(values)}")
    print(f"values schema: {len(REFUSED)} wrong value sets refused")


def lint(values: dict, name: str) -> None:
    report = helm.lint(str(CHART), values, strict=True, namespace="cks-lab", kube_version="v" + KUBE_VERSION)
    # Severity 1 is INFO ("icon is recommended": the project has no icon); 2 and up fail.
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    if bad or report.get("errors"):
        fail(f"helm lint {name}: {json.dumps(bad + report.get('errors', []), indent=1)}")


def kube_validate(objects: list[dict], name: str) -> int:
    checked = 0
    for obj in objects:
        if obj["apiVersion"].split("/")[0] in ("cks.io", "monitoring.coreos.com"):
            continue  # custom resources: the CRD schema checks them (apply step)
        try:
            kv.validate(obj, KUBE_VERSION, strict=True)
        except (kv.ValidationError, kv.SchemaNotFoundError) as e:
            where = ".".join(str(p) for p in getattr(e, "path", []))
            fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} does not validate against Kubernetes {KUBE_VERSION}: {where}: {getattr(e, 'message', e)}")
        checked += 1
    return checked


def check_restricted(objects: list[dict], name: str) -> int:
    """Every pod template meets Pod Security `restricted` (the rules of the Kubernetes Pod
    Security Standards that a pod spec can break), plus a read-only root filesystem."""
    pods = 0
    for obj in objects:
        if obj["kind"] != "Deployment":
            continue
        pods += 1
        spec = obj["spec"]["template"]["spec"]
        where = f"{name}: {obj['metadata']['name']}"
        psc = spec.get("securityContext", {})
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                fail(f"{where}: {key}")
        for v in spec.get("volumes", []):
            allowed = {"name", "configMap", "secret", "emptyDir", "projected", "downwardAPI",
                       "persistentVolumeClaim", "ephemeral", "csi"}
            if set(v) - allowed:
                fail(f"{where}: volume {v['name']} of a type restricted forbids")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            cw = f"{where}/{c['name']}"
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                fail(f"{cw}: runAsNonRoot is not set")
            if sc.get("runAsUser", psc.get("runAsUser")) == 0:
                fail(f"{cw}: runs as UID 0")
            if sc.get("allowPrivilegeEscalation") is not False:
                fail(f"{cw}: allowPrivilegeEscalation is not false")
            if sc.get("privileged"):
                fail(f"{cw}: privileged")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
                fail(f"{cw}: capabilities must drop ALL and add nothing but NET_BIND_SERVICE")
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                fail(f"{cw}: seccompProfile {seccomp}")
            if sc.get("readOnlyRootFilesystem") is not True:
                fail(f"{cw}: root filesystem is writable")
            if any(p.get("hostPort") for p in c.get("ports", [])):
                fail(f"{cw}: hostPort")
        if spec.get("automountServiceAccountToken") is not False:
            fail(f"{where}: the ServiceAccount token is mounted into every container")
    return pods


def write_manifests(objects: list[dict], path: Path) -> None:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))


def checkov(checkov_bin: str, manifests: Path) -> None:
    proc = subprocess.run(
        [checkov_bin, "--directory", str(manifests), "--framework", "kubernetes", "--compact",
         "--output", "json", "--skip-download"],
        capture_output=True, text=True,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        fail(f"checkov gave no JSON report (exit {proc.returncode}): {proc.stderr[-2000:]}")
    reports = report if isinstance(report, list) else [report]
    failed, skipped, passed, parse_errors = [], [], 0, 0
    for r in reports:
        summary = r.get("summary", {})
        passed += summary.get("passed", 0)
        parse_errors += summary.get("parsing_errors", 0)
        failed += r.get("results", {}).get("failed_checks", [])
        skipped += r.get("results", {}).get("skipped_checks", [])
    for f in failed:
        print(f"checkov: {f['check_id']} {f['check_name']}: {f['file_path']} {f['resource']}", file=sys.stderr)
    if failed or parse_errors or passed == 0:
        fail(f"checkov: {len(failed)} failed checks, {parse_errors} files not parsed, {passed} passed")
    reasons = sorted({f"{s['check_id']} ({s['check_result'].get('suppress_comment', '')})" for s in skipped})
    print(f"checkov: {passed} passed, 0 failed, {len(skipped)} skipped, each with its reason in the template:")
    for r in reasons:
        print(f"  {r}")


class DevCluster:
    """A fresh development control plane with the chart's CRDs."""

    def __init__(self, binary: str, kubectl: str, state: Path) -> None:
        self.kubectl = kubectl
        self.kubeconfig = state / "kubeconfig"
        self.log = open(state / "devcluster.log", "w")
        self.proc = subprocess.Popen(
            [binary, "--addr", "127.0.0.1:0", "--kubeconfig", str(self.kubeconfig),
             "--apply", str(CHART / "crds"), "--log", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not (self.kubeconfig.exists() and self.kubeconfig.stat().st_size > 0):
            if self.proc.poll() is not None:
                fail(f"cks-devcluster exited: {(state / 'devcluster.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                fail("cks-devcluster wrote no kubeconfig within 60 s")
            time.sleep(0.05)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.kubectl, "--kubeconfig", str(self.kubeconfig), *args],
                              capture_output=True, text=True)

    def apply(self, objects: list[dict], path: Path, name: str) -> int:
        namespaces = sorted({o["metadata"].get("namespace") for o in objects} - {None})
        for ns in namespaces:
            self.run("create", "namespace", ns)  # an existing one is fine
        applicable = [o for o in objects if o["apiVersion"].split("/")[0] != "monitoring.coreos.com"]
        write_manifests(applicable, path)
        out = self.run("apply", "--server-side", "--field-manager=helm", "-f", str(path))
        if out.returncode != 0:
            fail(f"{name}: the development control plane refused the chart: {out.stderr}{out.stdout}")
        got = self.run("get", "-f", str(path), "-o", "json")
        if got.returncode != 0:
            fail(f"{name}: reading the applied objects back: {got.stderr}")
        items = json.loads(got.stdout)
        items = items.get("items", [items])
        want = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in applicable}
        have = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in items}
        if want - have:
            fail(f"{name}: applied but not found: {sorted(want - have)}")
        return len(applicable)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devcluster", required=True, help="the cks-devcluster binary")
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--checkov", required=True, help="the checkov executable")
    ap.add_argument("--out", help="keep the rendered manifests in this directory")
    args = ap.parse_args()

    started = time.monotonic()
    check_crds()
    check_refusals()
    with tempfile.TemporaryDirectory(prefix="chart-test-") as tmp:
        tmp = Path(tmp)
        out = Path(args.out) if args.out else tmp / "rendered"
        out.mkdir(parents=True, exist_ok=True)
        crds = [yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))]
        validated = kube_validate(crds, "crds")
        rendered: dict[str, list[dict]] = {}
        pods = 0
        for name, values in VALUE_SETS.items():
            lint(copy.deepcopy(values), name)
            objects = render(copy.deepcopy(values), release=f"cks-{name}", namespace=f"cks-{name}")
            validated += kube_validate(objects, name)
            pods += check_restricted(objects, name)
            (out / name).mkdir(exist_ok=True)
            write_manifests(objects, out / name / "manifests.yaml")
            rendered[name] = objects
        print(f"helm lint (strict, Kubernetes {KUBE_VERSION}) and render: {len(VALUE_SETS)} value sets clean; "
              f"{validated} objects valid against the Kubernetes {KUBE_VERSION} schemas (strict); "
              f"{pods} pod templates meet Pod Security restricted with a read-only root filesystem")
        checkov(args.checkov, out)
        cluster = DevCluster(args.devcluster, args.kubectl, tmp)
        try:
            applied = sum(cluster.apply(objs, tmp / f"apply-{name}.yaml", name) for name, objs in rendered.items())
        finally:
            cluster.stop()
        print(f"development control plane: {applied} objects of {len(rendered)} value sets applied and read back")
    print(f"chart-test: passed in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
