"""The platform the e2e suite (and `make rbac-proof`, which reads its audit log) drives.

`LocalPlatform` starts it the way the Helm chart wires it, as separate processes: the development
control plane (KubeVirt simulator, fast profile) with an audit log, one bearer token per
component authenticating as that component's ServiceAccount and the chart's RBAC enforced
(`--enforce-rbac`); the chart's objects applied as an administrator would install them; two
operator replicas and two gateway replicas with the arguments of the chart's own Deployments.
Only what cannot work on this machine is replaced: listen addresses, the files the chart mounts
from Secrets (token file, terminal key), the practice-API mode and the simulated VMs' SSH port.

`ClusterPlatform` is a real cluster with the chart installed (`E2E_KUBECONFIG`,
`E2E_GATEWAY_URL`, `E2E_TOKEN_FILE`; e2e/README.md): nothing is started, and killing a replica
is deleting its pod.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "cks-lab"
RELEASE, NAMESPACE = "cks-lab", "cks-lab"
GOLDEN_IMAGE = "vm-templates/ubuntu-2204-kube-1-33"
# The rollout flow's new golden image: the same Kubernetes, a rebuilt image under a new name.
ROLLOUT_IMAGE = "vm-templates/ubuntu-2204-kube-1-33-r2"
VM_SSH_PORT = int(os.environ.get("CKS_E2E_SSH_PORT", "2224"))

# The chart's values for the local platform.
VALUES = {
    "pools": {"goldenImageNamespaces": ["vm-templates"]},
    # Port-forward SSH, so the subresource rule is exercised too (direct needs no permission).
    "ssh": {"transport": "port-forward"},
    # One kept run per task: the second validation makes the operator delete the first.
    "operator": {"validationRunsKept": 1},
    # Token auth (the chart's default) from the Secret below; terminals on, signed with the key
    # of the Secret below; no web page (make web-e2e tests it).
    "gateway": {"web": {"enabled": False},
                "terminal": {"enabled": True, "keySecret": {"name": "cks-lab-terminal-key", "key": "key"}}},
}

# Users of the suite: each test has its own students (the chart allows one active session per
# user), and one admin.
USERS = [("admin", "admin")] + [(f"student-{i}", "student") for i in range(1, 9)]


class Forbidden(Exception):
    """A request refused by RBAC: a rule the chart misses (raised at once by `wait_for`, with the
    request named, instead of as a timeout of whatever waited on it)."""

    audit: Path | None = None
    read = 0  # bytes of the audit log already checked

    @classmethod
    def check(cls) -> None:
        if cls.audit is None or not cls.audit.exists():
            return
        with cls.audit.open("rb") as f:
            f.seek(cls.read)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # being written: read again next time
                cls.read += len(line)
                r = json.loads(line)
                if r.get("code") == 403:
                    sub = f"/{r['subresource']}" if r["subresource"] else ""
                    raise cls(f"RBAC refused {r['user']}: {r['verb']} {r['group'] or 'core'}/{r['resource']}{sub} "
                              f"in {r['namespace'] or '(cluster)'} (name {r['name'] or '-'}): a rule is MISSING in the chart")


# Deadlines are written for the simulator's fast profile; a real cluster's are this many times
# longer (E2E_TIME_SCALE, set by from_env).
time_scale = 1.0


def wait_for(what: str, check: Callable, timeout: float, interval: float = 0.2):
    """`check()` until it returns something truthy (returned), or fail after `timeout` seconds
    (times `time_scale`) with the last exception it raised."""
    timeout *= time_scale
    deadline = time.monotonic() + timeout
    last = None
    while True:
        Forbidden.check()
        try:
            got = check()
            if got:
                return got
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - retried until the deadline; the last one is reported
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s" + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the chart ---------------------------------------------------------------------------------

def render_chart(values: dict | None = None) -> list[dict]:
    import helm_python as helm  # pinned in .tools/chart; only the local platform needs it

    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(VALUES if values is None else values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [d for path, text in rendered.items() if not path.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def sa_user(name: str) -> str:
    return f"system:serviceaccount:{NAMESPACE}:{name}"


COMPONENT_USERS = {"operator": sa_user(f"{RELEASE}-operator"), "gateway": sa_user(f"{RELEASE}-gateway")}


def chart_args(objects: list[dict], component: str) -> list[str]:
    for o in objects:
        if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{RELEASE}-{component}":
            return list(o["spec"]["template"]["spec"]["containers"][0]["args"])
    raise RuntimeError(f"the chart rendered no {component} Deployment")


def chart_replicas(objects: list[dict], component: str) -> int:
    for o in objects:
        if o["kind"] == "Deployment" and o["metadata"]["name"] == f"{RELEASE}-{component}":
            return int(o["spec"]["replicas"])
    raise RuntimeError(f"the chart rendered no {component} Deployment")


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
            print(f"e2e: {a} left out: this build has no {flag}")
            continue
        if flag in replace:
            seen.add(flag)
            if replace[flag] is not None:
                out.append(f"{flag}={replace[flag]}")
        else:
            out.append(a)
    out += [f"{f}={v}" for f, v in replace.items() if f not in seen and v is not None]
    return out


# ---- what the tests use ------------------------------------------------------------------------

class Platform:
    """What a test may use, whichever platform runs: kubectl as an administrator, the gateway's
    URLs (two replicas), the users' tokens, and killing replicas."""

    namespace = NAMESPACE
    golden_image = GOLDEN_IMAGE
    # A second golden image the rollout flow moves its pool to (None: it changes memory instead).
    rollout_image: str | None = ROLLOUT_IMAGE
    ssh_key_secret = "cks-ssh-key"
    storage_class = "longhorn"
    # Whether the admin actions that touch every pool or session of the namespace may run.
    disruptive = True
    gateways: list[str]
    users: dict[str, str]  # the tests' names (admin, student-N) -> the gateway's user names
    tokens: dict[str, str]  # the tests' names -> bearer tokens

    def kubectl_cmd(self, *args: str) -> list[str]:
        raise NotImplementedError

    def kubectl(self, *args: str, input: str | None = None) -> str:
        p = subprocess.run(self.kubectl_cmd(*args), capture_output=True, text=True, input=input)
        if p.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def get(self, kind: str, name: str | None = None, namespace: str | None = None) -> dict:
        args = ["get", kind, *([name] if name else []), "-n", namespace or self.namespace, "-o", "json"]
        return json.loads(self.kubectl(*args))

    def operator_leader(self) -> str:
        lease = self.get("lease", f"{RELEASE}-operator")
        return lease["spec"]["holderIdentity"]

    def kill_operator(self, name: str) -> None:
        raise NotImplementedError

    def kill_gateway(self, index: int) -> None:
        """Kills the gateway replica `index` of `gateways` (or, on a real cluster, the pod that
        holds the open terminal)."""
        raise NotImplementedError

    def restore_replicas(self) -> None:
        """After a kill: the replicas back, as the Deployment would bring them."""

    def stop(self) -> None:
        pass


class ClusterPlatform(Platform):
    """A real cluster with the chart installed: E2E_KUBECONFIG, E2E_GATEWAY_URL, E2E_TOKEN_FILE
    (the gateway's token file: `token,user[,role]` lines with an admin and 8 students), and
    optionally E2E_NAMESPACE, E2E_RELEASE, E2E_GOLDEN_IMAGE, E2E_SSH_KEY_SECRET,
    E2E_STORAGE_CLASS, E2E_GATEWAY_PORT, E2E_ROLLOUT_IMAGE, E2E_DISRUPTIVE, E2E_TIME_SCALE, KUBECTL."""

    def __init__(self, env: dict[str, str], run: Callable | None = None) -> None:
        self.kubeconfig = env["E2E_KUBECONFIG"]
        self.kubectl_bin = env.get("KUBECTL", "kubectl")
        self.namespace = env.get("E2E_NAMESPACE", NAMESPACE)
        self.release = env.get("E2E_RELEASE", RELEASE)
        self.golden_image = env.get("E2E_GOLDEN_IMAGE", GOLDEN_IMAGE)
        self.rollout_image = env.get("E2E_ROLLOUT_IMAGE") or None
        self.ssh_key_secret = env.get("E2E_SSH_KEY_SECRET", "cks-ssh-key")
        self.storage_class = env.get("E2E_STORAGE_CLASS", "longhorn")
        self.gateway_port = env.get("E2E_GATEWAY_PORT", "8081")
        # release-all-clusters and bootstrap-pool act on every pool and session of the namespace.
        self.disruptive = env.get("E2E_DISRUPTIVE") == "1"
        url = env["E2E_GATEWAY_URL"].rstrip("/")
        # One Service in front of both replicas: the same URL reaches whichever is left.
        self.gateways = [url, url]
        self.tokens = {}
        users = {}
        for line in Path(env["E2E_TOKEN_FILE"]).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                token, user, *role = [x.strip() for x in line.split(",")]
                users[user] = role[0] if role else "student"
                self.tokens[user] = token
        admins = [u for u, r in users.items() if r == "admin"]
        students = [u for u, r in users.items() if r != "admin"]
        if not admins or len(students) < 8:
            raise SystemExit("E2E_TOKEN_FILE needs an admin and 8 students (`token,user[,role]` lines)")
        # The tests name users `admin` and `student-N`: map them onto the file's.
        self.users = {"admin": admins[0], **{f"student-{i + 1}": s for i, s in enumerate(students[:8])}}
        self.tokens = {name: self.tokens[user] for name, user in self.users.items()}
        self._run = run or (lambda cmd: subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)

    def kubectl_cmd(self, *args: str) -> list[str]:
        return [self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args]

    def operator_leader(self) -> str:
        lease = json.loads(self._run(self.kubectl_cmd("get", "lease", f"{self.release}-operator",
                                                       "-n", self.namespace, "-o", "json")))
        return lease["spec"]["holderIdentity"]

    def _delete_pod(self, pod: str) -> None:
        # As close to SIGKILL as the API allows: no grace period.
        self._run(self.kubectl_cmd("delete", "pod", pod, "-n", self.namespace, "--grace-period=0", "--force",
                                   "--wait=false"))

    def kill_operator(self, name: str) -> None:
        # The Lease holder's identity is its pod's name (POD_NAME in the chart).
        self._delete_pod(name)

    def gateway_pods(self) -> list[str]:
        out = self._run(self.kubectl_cmd(
            "get", "pods", "-n", self.namespace, "-o", "name", "-l",
            f"app.kubernetes.io/instance={self.release},app.kubernetes.io/component=gateway"))
        return [line.split("/", 1)[1] for line in out.split() if line.startswith("pod/")]

    def kill_gateway(self, index: int) -> None:
        # Which replica holds the terminal: the one whose metrics count an open terminal.
        for pod in self.gateway_pods():
            metrics = self._run(self.kubectl_cmd(
                "get", "--raw", f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{self.gateway_port}/proxy/metrics"))
            m = re.search(r"^cks_gateway_terminals_open\s+(\d+)", metrics, re.M)
            if m and int(m.group(1)) > 0:
                self._delete_pod(pod)
                return
        raise AssertionError("no gateway pod reports an open terminal (cks_gateway_terminals_open)")


class LocalPlatform(Platform):
    def __init__(self, bin_dir: str, kubectl_bin: str, state: Path) -> None:
        self.bin = bin_dir
        self.kubectl_bin = kubectl_bin
        self.state = state
        self.procs: dict[str, subprocess.Popen] = {}
        self.cmds: dict[str, tuple[list[str], dict]] = {}
        self.killed: list[str] = []
        self.tokens = {user: secrets.token_hex(16) for user, _ in USERS}
        self.users = {user: user for user, _ in USERS}
        self.kubeconfig = state / "kubeconfig"
        self.audit = state / "audit.jsonl"

    def kubectl_cmd(self, *args: str) -> list[str]:
        return [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args]

    def _start(self, name: str, cmd: list[str], env: dict | None = None) -> None:
        self.cmds[name] = (cmd, env or {})
        log = open(self.state / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **(env or {})})
        log.close()

    def alive(self) -> None:
        for name, p in self.procs.items():
            if name not in self.killed and p.poll() is not None:
                raise AssertionError(f"{name} exited ({p.returncode}); see {self.state / (name + '.log')}")

    def start(self) -> None:
        state = self.state
        objects = render_chart()
        (state / "chart.json").write_text(json.dumps(objects))
        component_tokens = {c: secrets.token_hex(16) for c in COMPONENT_USERS}

        key = state / "ssh-key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cks-e2e", "-f", str(key)], check=True)
        ssh_secret = {"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": self.ssh_key_secret, "namespace": NAMESPACE},
                      "stringData": {"ssh-privatekey": key.read_text(),
                                     "ssh-publickey": (state / "ssh-key.pub").read_text().strip()}}
        # The files the chart mounts from Secrets (the gateway reads files), and the Secrets.
        tkey = VALUES["gateway"]["terminal"]["keySecret"]
        terminal_key = state / "terminal-key"
        terminal_key.write_text(secrets.token_hex(32) + "\n")
        token_file = state / "tokens"
        token_file.write_text("".join(f"{self.tokens[u]},{u},{role}\n" for u, role in USERS))
        secrets_ = [ssh_secret,
                    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": tkey["name"], "namespace": NAMESPACE},
                     "stringData": {tkey["key"]: terminal_key.read_text()}},
                    {"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "cks-lab-gateway-tokens", "namespace": NAMESPACE},
                     "stringData": {"tokens": token_file.read_text()}}]
        (state / "secrets.yaml").write_text(yaml.safe_dump_all(secrets_))
        (state / "chart.yaml").write_text(yaml.safe_dump_all(
            [o for o in objects if o["apiVersion"].split("/")[0] != "monitoring.coreos.com"]))
        Forbidden.audit = self.audit
        self._start("devcluster", [
            f"{self.bin}/cks-devcluster", "--addr", "127.0.0.1:0", "--kubeconfig", str(self.kubeconfig),
            "--simulate-kubevirt", "--kubevirt-profile", "fast", "--vm-ssh-port", str(VM_SSH_PORT),
            "--golden-image", GOLDEN_IMAGE, "--golden-image", ROLLOUT_IMAGE,
            "--apply", str(CHART / "crds"), "--apply", str(ROOT / "config/samples/00-namespace.yaml"),
            "--apply", str(state / "secrets.yaml"),
            "--audit-log", str(self.audit), "--enforce-rbac", "--log", "warn",
            *[a for c, u in COMPONENT_USERS.items() for a in ("--identity", f"{component_tokens[c]}={u}")],
        ])

        def kubeconfig_written() -> bool:
            self.alive()
            return self.kubeconfig.exists() and self.kubeconfig.stat().st_size > 0
        wait_for("cks-devcluster's kubeconfig", kubeconfig_written, 60, 0.05)
        wait_for("the namespaces", lambda: self.kubectl("get", "namespace", NAMESPACE, "vm-templates") or True, 60)
        # The chart's objects before anything runs as a ServiceAccount (its RBAC is enforced).
        self.kubectl("apply", "--server-side", "--field-manager=helm", "-f", str(state / "chart.yaml"))
        for c in COMPONENT_USERS:
            kc = yaml.safe_load(self.kubeconfig.read_text())
            kc["users"][0]["user"]["token"] = component_tokens[c]
            (state / f"kubeconfig-{c}").write_text(yaml.safe_dump(kc))

        self.operator_args = override(chart_args(objects, "operator"), {
            "--metrics-addr": "127.0.0.1:0", "--practice-api": "vmi-ip", "--ssh-port": str(VM_SSH_PORT),
            "--scenarios": str(ROOT / "scenarios"), "--log-format": "human", "--poll-seconds": "0.5",
            "--retry-base-seconds": "0.5", "--log": "warn",
        }, known_flags(f"{self.bin}/cks-operator"))
        for i in range(chart_replicas(objects, "operator")):
            self._start(f"operator-{i}", [f"{self.bin}/cks-operator", *self.operator_args],
                        {"KUBECONFIG": str(state / "kubeconfig-operator"), "POD_NAME": f"operator-{i}"})
        gateway_flags = known_flags(f"{self.bin}/cks-gateway")
        self.gateways = []
        for i in range(chart_replicas(objects, "gateway")):
            port = free_port()
            args = override(chart_args(objects, "gateway"), {
                "--listen": f"127.0.0.1:{port}", "--token-file": str(token_file),
                "--terminal-key-file": str(terminal_key), "--ssh-port": str(VM_SSH_PORT),
                "--scenarios": str(ROOT / "scenarios"), "--log-format": "human", "--log": "warn",
            }, gateway_flags)
            self._start(f"gateway-{i}", [f"{self.bin}/cks-gateway", *args],
                        {"KUBECONFIG": str(state / "kubeconfig-gateway")})
            self.gateways.append(f"http://127.0.0.1:{port}")
            self.gateway_args = args
        print(f"\ne2e: operator {' '.join(self.operator_args)}")
        print(f"e2e: gateway {' '.join(self.gateway_args)}")
        for url in self.gateways:
            self.wait_ready(url)

    def wait_ready(self, url: str) -> None:
        def ready() -> bool:
            self.alive()
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
                return r.status == 200
        wait_for(f"the gateway at {url} ready", ready, 60)

    def kill_operator(self, name: str) -> None:
        self.killed.append(name)
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def kill_gateway(self, index: int) -> None:
        name = f"gateway-{index}"
        self.killed.append(name)
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def restore_replicas(self) -> None:
        for name in self.killed:
            cmd, env = self.cmds[name]
            self._start(name, cmd, env)
        killed, self.killed = self.killed, []
        for name in killed:
            if name.startswith("gateway-"):
                self.wait_ready(self.gateways[int(name.split("-")[1])])

    def stop(self) -> None:
        # The operators and gateways first, while their API server still answers (the leader
        # releases its Lease), then the API server.
        components = [p for name, p in self.procs.items() if name != "devcluster"]
        for group in (components, [self.procs[n] for n in self.procs if n == "devcluster"]):
            for p in group:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in group:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def from_env(env: dict[str, str] | None = None) -> Platform:
    """The real cluster E2E_KUBECONFIG names, else a local platform from E2E_BIN (the directory of
    the built binaries) and KUBECTL; E2E_STATE_DIR keeps its logs and audit log."""
    env = dict(os.environ if env is None else env)
    if env.get("E2E_KUBECONFIG"):
        missing = [v for v in ("E2E_GATEWAY_URL", "E2E_TOKEN_FILE") if not env.get(v)]
        if missing:
            raise SystemExit(f"E2E_KUBECONFIG needs {' and '.join(missing)} too (e2e/README.md)")
        global time_scale
        time_scale = float(env.get("E2E_TIME_SCALE", "10"))
        return ClusterPlatform(env)
    if not env.get("E2E_BIN"):
        raise SystemExit("set E2E_BIN to the directory of the built binaries (make e2e does), or E2E_KUBECONFIG")
    state = Path(env.get("E2E_STATE_DIR") or tempfile.mkdtemp(prefix="cks-e2e-"))
    state.mkdir(parents=True, exist_ok=True)
    platform = LocalPlatform(env["E2E_BIN"], env.get("KUBECTL") or "kubectl", state)
    try:
        platform.start()
    except BaseException:
        platform.stop()
        raise
    return platform
