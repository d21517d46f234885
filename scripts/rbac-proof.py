#!/usr/bin/env python3
"""`make rbac-proof` (part of `make test`): the Helm chart's RBAC against what the operator and the
gateway really ask the API server for.

The chart is rendered (helm-python-sdk) with the values below; the development control plane
(KubeVirt simulator, fast profile) runs with an audit log and one bearer token per component, each
authenticating as that component's ServiceAccount; two operator replicas and a gateway run as
separate processes with the arguments of the chart's own Deployments (only what cannot work on
this machine is replaced: listen addresses, `--auth dev` instead of the token Secret, the
practice-API mode, the simulated VMs' SSH port and the terminal key file the chart mounts from
its Secret). A flow drives them over HTTP: pool to Available, a student session with a
validation run (twice, so the operator prunes the older run), extension, the event stream, a
terminal (its WebSocket runs `hostname` on the control plane over SSH through the KubeVirt
port-forward, with the pool's key and the cluster's pinned host key), every admin action that
changes something, session end, deletion, release-all; then the pool is deleted and its
clusters torn down.

Then, per component, every request in the audit log must be allowed by the chart's rules for
that ServiceAccount (Roles through RoleBindings in their namespace, ClusterRoles through
ClusterRoleBindings everywhere, resourceNames honoured; discovery is granted to every
authenticated user by Kubernetes' own system:discovery), and every verb of every rule must have
been used by some request, except those listed in NOT_EXERCISED with the reason this flow cannot
reach them. The development control plane also enforces the chart's RBAC for both identities
(`--enforce-rbac`), so a missing rule fails the flow the way a real cluster would.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import helm_python as helm
import yaml
from websockets.sync.client import connect as ws_connect

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "cks-lab"
RELEASE, NAMESPACE = "cks-lab", "cks-lab"
VM_SSH_PORT = int(os.environ.get("CKS_RBAC_PROOF_SSH_PORT", "2224"))

VALUES = {
    "pools": {"goldenImageNamespaces": ["vm-templates"]},
    # Port-forward SSH, so the subresource rule is exercised too (direct needs no permission).
    "ssh": {"transport": "port-forward"},
    # One kept run per task: the second validation makes the operator delete the first.
    "operator": {"validationRunsKept": 1},
    # Terminals on (the flow opens one), signed with the key of this Secret; no web page.
    "gateway": {"pool": "cks-standard", "web": {"enabled": False},
                "terminal": {"enabled": True, "keySecret": {"name": "cks-lab-terminal-key", "key": "key"}}},
}

# Rules (component, group, resource, verb) this flow cannot reach, and why. Each is needed by code
# that the crate tests named exercise, or by a check of a real API server the development control
# plane does not make.
NOT_EXERCISED = {
    ("operator", "kubevirt.io", "virtualmachines", "deletecollection"):
        "a provisioning retry after a failed clone (crates/operator/tests/cluster.rs, clone failures)",
    ("operator", "snapshot.kubevirt.io", "virtualmachinesnapshots", "deletecollection"):
        "a snapshot retry after a failed snapshot (cluster.rs delete_all on Snapshotting)",
    ("operator", "cdi.kubevirt.io", "datavolumes/source", "create"):
        "checked by KubeVirt's VM admission (CDI clone authorization) on a real cluster, not by the simulator",
    ("operator", "cks.io", "clusterpools/finalizers", "update"):
        "checked by the OwnerReferencesPermissionEnforcement admission plugin on a real cluster",
    ("operator", "cks.io", "sessions/finalizers", "update"):
        "checked by the OwnerReferencesPermissionEnforcement admission plugin on a real cluster",
    ("gateway", "cks.io", "sessions/finalizers", "update"):
        "checked by the OwnerReferencesPermissionEnforcement admission plugin on a real cluster",
}


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Forbidden:
    """Watches the audit log for refused requests, so a missing rule fails at once (with the
    request named) instead of as a timeout of whatever waited on it."""

    path: Path | None = None

    @classmethod
    def check(cls) -> None:
        if cls.path is None or not cls.path.exists():
            return
        for line in cls.path.read_text().splitlines():
            r = json.loads(line)
            if r.get("code") == 403:
                sub = f"/{r['subresource']}" if r["subresource"] else ""
                fail(f"RBAC refused {r['user']}: {r['verb']} {r['group'] or 'core'}/{r['resource']}{sub} "
                     f"in {r['namespace'] or '(cluster)'} (name {r['name'] or '-'}): a rule is MISSING in the chart")


def wait_for(what: str, check, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        Forbidden.check()
        try:
            got = check()
            if got:
                return got
        except Exception as e:  # noqa: BLE001 - retried until the deadline; the last one is reported
            last = e
        time.sleep(interval)
    fail(f"{what} within {timeout:.0f} s" + (f" (last error: {last})" if last else ""))


# ---- the chart's rules ------------------------------------------------------------------------

def sa_user(name: str) -> str:
    return f"system:serviceaccount:{NAMESPACE}:{name}"


def rules_for(objects: list[dict], user: str) -> list[dict]:
    """Every rule that applies to `user`, with `scope` (None: cluster-wide, else a namespace)."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    out = []
    for b in objects:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(sa_user(s["name"]) == user and s.get("namespace") == NAMESPACE
                   for s in b.get("subjects", []) if s["kind"] == "ServiceAccount"):
            continue
        ref = b["roleRef"]
        ns = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
        role = roles.get((ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"]))
        if role is None:
            fail(f"{b['kind']} {b['metadata']['name']} refers to a missing {ref['kind']} {ref['name']}")
        for i, rule in enumerate(role.get("rules", [])):
            out.append({**rule, "scope": ns, "origin": f"{role['kind']} {role['metadata']['name']} rule {i}"})
    return out


def allows(rule: dict, req: dict) -> bool:
    resource = req["resource"] + (f"/{req['subresource']}" if req["subresource"] else "")
    return (
        req["group"] in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and req["verb"] in rule.get("verbs", [])
        and (not rule.get("resourceNames") or req["name"] in rule["resourceNames"])
        and (rule["scope"] is None or rule["scope"] == req["namespace"])
    )


# system:discovery and system:public-info-viewer, bound to every authenticated user.
DISCOVERY = re.compile(r"^/(api|apis|openapi|version|healthz|livez|readyz)(/|$)")


def compare(component: str, rules: list[dict], requests: list[dict]) -> list[str]:
    problems = []
    used: set[tuple[str, str, str, str]] = set()
    for req in requests:
        if not req["resource"]:
            if req["verb"] == "get" and DISCOVERY.match(req["path"]):
                continue
            problems.append(f"{component}: non-resource {req['verb']} {req['path']} is not allowed")
            continue
        matching = [r for r in rules if allows(r, req)]
        if not matching:
            problems.append(f"{component}: MISSING rule for {req['verb']} {req['group'] or 'core'}/{req['resource']}"
                            f"{'/' + req['subresource'] if req['subresource'] else ''} in "
                            f"{req['namespace'] or '(cluster)'} (name {req['name'] or '-'})")
        resource = req["resource"] + (f"/{req['subresource']}" if req["subresource"] else "")
        for r in matching:
            used.add((r["origin"], req["group"], resource, req["verb"]))
    for r in rules:
        for group in r.get("apiGroups", []):
            for resource in r.get("resources", []):
                for verb in r.get("verbs", []):
                    if (r["origin"], group, resource, verb) in used:
                        continue
                    if (component, group, resource, verb) in NOT_EXERCISED:
                        continue
                    problems.append(f"{component}: EXTRA {verb} {group or 'core'}/{resource} ({r['origin']}, "
                                    f"scope {r['scope'] or 'cluster'}) was never used")
    return problems


# ---- the platform ------------------------------------------------------------------------------

def chart_args(objects: list[dict], component: str) -> list[str]:
    for o in objects:
        if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{RELEASE}-{component}":
            return list(o["spec"]["template"]["spec"]["containers"][0]["args"])
    fail(f"the chart rendered no {component} Deployment")


def known_flags(binary: str) -> set[str]:
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"(--[a-z0-9-]+)", out))


def override(args: list[str], replace: dict[str, str | None], known: set[str]) -> list[str]:
    """The chart's `--flag=value` arguments with some replaced (None drops the flag). Flags this
    build of the binary does not have (the chart may be ahead of it) are dropped and said so."""
    out, seen = [], set()
    for a in args:
        flag = a.split("=", 1)[0]
        if flag not in known:
            print(f"rbac-proof: {a} left out: this build has no {flag}")
            continue
        if flag in replace:
            seen.add(flag)
            if replace[flag] is not None:
                out.append(f"{flag}={replace[flag]}")
        else:
            out.append(a)
    out += [f"{f}={v}" for f, v in replace.items() if f not in seen and v is not None]
    return out


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: dict | None = None, expect=(200, 201, 202), headers=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        if status not in expect:
            raise RuntimeError(f"{method} {path}: {status} {text[:500]}")
        return json.loads(text) if text else None


def terminal(api: Api, sid: str) -> None:
    """Opens the control plane's terminal and runs `hostname` in it: the gateway reads the pool's
    SSH key Secret and the cluster's host-key Secret, and reaches SSH through the VMI's
    portforward subresource, each as its ServiceAccount."""
    t = api.call("POST", f"/sessions/{sid}/terminals", {"target": "control-plane"})
    url = re.sub(r"^http", "ws", t["terminalUrl"]) + "/ws"
    out = b""
    with ws_connect(url, open_timeout=60, max_size=None) as ws:
        ws.send(json.dumps({"type": "resize", "cols": 100, "rows": 30}))

        def until(what: str, done, timeout: float):
            nonlocal out
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                Forbidden.check()
                try:
                    msg = ws.recv(timeout=1)
                except TimeoutError:
                    continue
                if isinstance(msg, bytes):
                    out += msg
                    if done(None):
                        return
                else:
                    control = json.loads(msg)
                    if control["type"] == "closed":
                        Forbidden.check()  # a refused Secret read or port-forward, by name
                        fail(f"the terminal closed before {what}: {control}")
                    if done(control):
                        return
            fail(f"{what} within {timeout:.0f} s (terminal output: {out[-500:]!r})")

        until("the terminal ready", lambda c: c is not None and c["type"] == "ready", 60)
        out = b""
        ws.send(b"hostname\r")
        # The command's own output line (the prompt holds the name too, but after `@`); bash
        # ends bracketed-paste mode with `ESC[?2004l` and a carriage return before it.
        until("`hostname` answered control-plane", lambda c: re.search(rb"[\r\n]control-plane\r\n", out), 60)


def flow(api: Api, kubectl) -> None:
    def clusters():
        return api.call("GET", "/admin/clusters")

    def free_available():
        return sorted(n for n, c in clusters()["detailedClusters"].items() if c["status"] == "available")

    wait_for("two clusters Available", lambda: len(free_available()) >= 2, 240)
    scenario = "rbac-least-privilege"
    # With an Idempotency-Key the gateway looks the Session's name up before creating it.
    s = api.call("POST", "/sessions", {"scenarioId": scenario}, headers={"Idempotency-Key": "rbac-proof-1"})
    sid = s["sessionId"]
    wait_for("the session Ready", lambda: api.call("GET", f"/sessions/{sid}")["phase"] == "Ready", 180)
    task = api.call("GET", f"/scenarios/{scenario}")["tasks"][0]["id"]
    for _ in range(2):
        run = api.call("POST", f"/sessions/{sid}/tasks/{task}/validate")
        run_id = run["runId"]
        wait_for("the validation run finished",
                 lambda: api.call("GET", f"/sessions/{sid}/validations/{run_id}").get("finished"), 120)
    # The operator keeps one finished run per task: the first is pruned.
    wait_for("the older run pruned", lambda: len(api.call("GET", f"/sessions/{sid}/validations")) == 1, 60)
    # A run made with kubectl (no labels, no owner): the operator labels it and sets its owner.
    run = {"apiVersion": "cks.io/v1alpha1", "kind": "ValidationRun",
           "metadata": {"name": f"{sid}-by-hand", "namespace": NAMESPACE}, "spec": {"session": sid, "task": task}}
    kubectl("apply", "-f", "-", input=json.dumps(run))
    wait_for("the hand-made run owned by its Session", lambda: json.loads(kubectl(
        "get", "validationrun", f"{sid}-by-hand", "-n", NAMESPACE, "-o", "json"))["metadata"].get("ownerReferences"), 60)
    api.call("PUT", f"/sessions/{sid}/extend", {"minutes": 10})
    terminal(api, sid)
    # One event of the stream, then the connection is closed.
    with urllib.request.urlopen(api.base + f"/sessions/{sid}/events", timeout=30) as r:
        while b"event: session" not in r.readline():
            pass
    api.call("GET", "/admin/sessions?all=true")
    free = wait_for("two free clusters", lambda: (lambda f: f if len(f) >= 2 else None)(free_available()), 240)
    api.call("POST", f"/admin/clusters/{free[1]}/recreate")
    # Two resets of one cluster: the second deletes the first's restores and the restore-* PVCs
    # no VM uses any more.
    for n in (1, 2):
        # The gateway's cache may still hold the version before the last reset (409: try again).
        wait_for(f"reset {n} of {free[0]} accepted",
                 lambda: api.call("POST", f"/admin/clusters/{free[0]}/reset", expect=(200, 409)).get("error") is None, 30)
        wait_for(f"reset {n} of {free[0]} finished", lambda: any(
            c["status"] == "available" for name, c in clusters()["detailedClusters"].items()
            if name == free[0]) and cluster_resets(kubectl, free[0]) >= n, 240)
    api.call("POST", "/admin/bootstrap-pool")
    api.call("POST", f"/admin/sessions/{sid}/end")
    wait_for("the session Ended", lambda: api.call("GET", f"/sessions/{sid}")["phase"] == "Ended", 60)
    # A released cluster is reset from its snapshots (restores, leftover PVCs deleted).
    wait_for("a reset finished", lambda: any(c.get("resets", 0) > 0 for c in kubectl_clusters(kubectl)), 240)
    s2 = api.call("POST", "/sessions", {"scenarioId": scenario})["sessionId"]
    wait_for("the second session has a cluster",
             lambda: api.call("GET", f"/sessions/{s2}")["phase"] in ("Initializing", "Ready"), 180)
    api.call("POST", "/admin/release-all-clusters")
    wait_for("the second session Ended", lambda: api.call("GET", f"/sessions/{s2}")["phase"] == "Ended", 60)
    s3 = api.call("POST", "/sessions", {"scenarioId": scenario})["sessionId"]
    wait_for("the third session has a cluster",
             lambda: api.call("GET", f"/sessions/{s3}")["phase"] in ("Initializing", "Ready"), 180)
    api.call("DELETE", f"/sessions/{s3}")
    wait_for("the third session gone", lambda: api.call("GET", f"/sessions/{s3}", expect=(200, 404)) is None
             or not any(x["sessionId"] == s3 for x in api.call("GET", "/sessions?all=true")), 60)


def cluster_resets(kubectl, name: str) -> int:
    out = kubectl("get", "practicecluster", name, "-n", NAMESPACE, "-o", "json")
    return json.loads(out).get("status", {}).get("resets", 0)


def kubectl_clusters(kubectl) -> list[dict]:
    out = kubectl("get", "practiceclusters", "-n", NAMESPACE, "-o", "json")
    return [i.get("status", {}) for i in json.loads(out)["items"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="directory of cks-devcluster, cks-operator, cks-gateway")
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--keep", help="keep the audit log and process logs in this directory")
    args = ap.parse_args()
    started = time.monotonic()

    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(VALUES, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = [d for path, text in rendered.items() if not path.endswith("NOTES.txt")
               for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    users = {"operator": sa_user(f"{RELEASE}-operator"), "gateway": sa_user(f"{RELEASE}-gateway")}
    tokens = {c: secrets.token_hex(16) for c in users}

    state = Path(tempfile.mkdtemp(prefix="rbac-proof-"))
    procs: list[subprocess.Popen] = []
    passed = False

    def stop_all() -> None:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()

    def start(name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(state / f"{name}.log", "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        procs.append(p)
        return p

    try:
        key = state / "ssh-key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cks-rbac-proof", "-f", str(key)], check=True)
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cks-ssh-key", "namespace": NAMESPACE},
                  "stringData": {"ssh-privatekey": key.read_text(), "ssh-publickey": (state / "ssh-key.pub").read_text().strip()}}
        # The terminal key as the chart mounts it from its Secret (the gateway reads the file).
        tkey = VALUES["gateway"]["terminal"]["keySecret"]
        terminal_key = state / "terminal-key"
        terminal_key.write_text(secrets.token_hex(32) + "\n")
        terminal_secret = {"apiVersion": "v1", "kind": "Secret",
                           "metadata": {"name": tkey["name"], "namespace": NAMESPACE},
                           "stringData": {tkey["key"]: terminal_key.read_text()}}
        (state / "ssh-key-secret.yaml").write_text(yaml.safe_dump_all([secret, terminal_secret]))
        # The chart's objects, as an administrator would install them; its RBAC is enforced.
        (state / "chart.yaml").write_text(yaml.safe_dump_all(
            [o for o in objects if o["apiVersion"].split("/")[0] != "monitoring.coreos.com"]))
        kubeconfig = state / "kubeconfig"
        audit = state / "audit.jsonl"
        Forbidden.path = audit
        start("devcluster", [
            f"{args.bin}/cks-devcluster", "--addr", "127.0.0.1:0", "--kubeconfig", str(kubeconfig),
            "--simulate-kubevirt", "--kubevirt-profile", "fast", "--vm-ssh-port", str(VM_SSH_PORT),
            "--golden-image", "vm-templates/ubuntu-2204-kube-1-33",
            "--apply", str(CHART / "crds"), "--apply", str(ROOT / "config/samples/00-namespace.yaml"),
            "--apply", str(ROOT / "config/samples/clusterpool.yaml"), "--apply", str(state / "ssh-key-secret.yaml"),
            "--audit-log", str(audit), "--enforce-rbac", "--log", "warn",
            *[a for c in users for a in ("--identity", f"{tokens[c]}={users[c]}")],
        ])
        wait_for("cks-devcluster's kubeconfig", lambda: kubeconfig.exists() and kubeconfig.stat().st_size > 0
                 and procs[0].poll() is None, 60, 0.05)

        def kubectl(*a: str, input: str | None = None) -> str:
            p = subprocess.run([args.kubectl, "--kubeconfig", str(kubeconfig), *a],
                               capture_output=True, text=True, input=input)
            if p.returncode != 0:
                raise RuntimeError(f"kubectl {' '.join(a)}: {p.stderr.strip()}")
            return p.stdout

        # The chart's objects before anything runs as a ServiceAccount (its RBAC is enforced).
        def namespaces_there() -> bool:
            kubectl("get", "namespace", NAMESPACE, "vm-templates")
            return True
        wait_for("the namespaces", namespaces_there, 60)
        kubectl("apply", "--server-side", "--field-manager=helm", "-f", str(state / "chart.yaml"))
        for c in users:
            kc = yaml.safe_load(kubeconfig.read_text())
            kc["users"][0]["user"]["token"] = tokens[c]
            (state / f"kubeconfig-{c}").write_text(yaml.safe_dump(kc))

        operator_args = override(chart_args(objects, "operator"), {
            "--metrics-addr": "127.0.0.1:0", "--practice-api": "vmi-ip", "--ssh-port": str(VM_SSH_PORT),
            "--scenarios": str(ROOT / "scenarios"), "--log-format": "human", "--poll-seconds": "0.5",
            "--retry-base-seconds": "0.5", "--log": "warn",
        }, known_flags(f"{args.bin}/cks-operator"))
        for i in range(2):
            start(f"operator-{i}", [f"{args.bin}/cks-operator", *operator_args],
                  {"KUBECONFIG": str(state / "kubeconfig-operator"), "POD_NAME": f"operator-{i}"})
        port = free_port()
        gateway_args = override(chart_args(objects, "gateway"), {
            "--listen": f"127.0.0.1:{port}", "--auth": "dev", "--token-file": None,
            "--terminal-key-file": str(terminal_key), "--ssh-port": str(VM_SSH_PORT),
            "--scenarios": str(ROOT / "scenarios"), "--log-format": "human", "--log": "warn",
        }, known_flags(f"{args.bin}/cks-gateway"))
        start("gateway", [f"{args.bin}/cks-gateway", *gateway_args], {"KUBECONFIG": str(state / "kubeconfig-gateway")})
        print(f"rbac-proof: operator {' '.join(operator_args)}")
        print(f"rbac-proof: gateway {' '.join(gateway_args)}")

        def ready() -> bool:
            for p in procs:
                if p.poll() is not None:
                    fail("a platform process exited")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                return r.status == 200
        wait_for("the gateway ready", ready, 60)
        flow(Api(f"http://127.0.0.1:{port}/api/v1"), kubectl)
        # Scaled to nothing, the pool deletes its idle clusters; deleting it then tears down the
        # rest (the operator deletes their namespaces).
        kubectl("patch", "clusterpool", "cks-standard", "-n", NAMESPACE, "--type=merge",
                "-p", json.dumps({"spec": {"minAvailable": 0}}))
        wait_for("the pool scaled down to nothing", lambda: not kubectl_clusters(kubectl), 240)
        kubectl("delete", "clusterpool", "cks-standard", "-n", NAMESPACE, "--wait=false")
        wait_for("every practice cluster torn down", lambda: not kubectl_clusters(kubectl), 120)
        stop_all()

        requests = [json.loads(line) for line in audit.read_text().splitlines()]
        problems = []
        for component, user in users.items():
            mine = [r for r in requests if r["user"] == user]
            if not mine:
                fail(f"no request of the {component} was recorded")
            rules = rules_for(objects, user)
            problems += compare(component, rules, mine)
            kinds = {(r["verb"], r["group"], r["resource"], r["subresource"]) for r in mine if r["resource"]}
            print(f"rbac-proof: {component}: {len(mine)} requests, {len(kinds)} distinct (verb, resource), "
                  f"{len(rules)} rules")
        for (component, group, resource, verb), why in sorted(NOT_EXERCISED.items()):
            print(f"rbac-proof: not exercised here: {component} {verb} {group}/{resource}: {why}")
        if problems:
            print("\n".join(dict.fromkeys(problems)), file=sys.stderr)
            fail(f"the chart's RBAC and the requests differ ({len(problems)})")
        print(f"rbac-proof: every request allowed by the chart's rules and every other rule used; "
              f"{time.monotonic() - started:.0f} s")
        passed = True
    finally:
        stop_all()
        if args.keep:
            shutil.copytree(state, args.keep, dirs_exist_ok=True)
        if passed:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"rbac-proof: logs and the audit log kept in {state}", file=sys.stderr)


if __name__ == "__main__":
    main()
