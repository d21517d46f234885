"""The real-cluster mode (E2E_KUBECONFIG) cannot run on this machine: these check, without a
cluster, that it reads its configuration and turns "kill a replica" into the right kubectl
commands (a fake kubectl answers)."""

from __future__ import annotations

import json

import pytest

from e2e.platform import ClusterPlatform, from_env


def make(tmp_path, answers: dict[str, str]):
    tokens = tmp_path / "tokens"
    tokens.write_text("# token,user[,role]\nt-admin,ops@example.org,admin\n"
                      + "".join(f"t-{i},s{i}@example.org\n" for i in range(8)))
    calls: list[list[str]] = []

    def run(cmd: list[str]) -> str:
        calls.append(cmd)
        for needle, out in answers.items():
            if needle in " ".join(cmd):
                return out
        return ""
    env = {"E2E_KUBECONFIG": "/k/config", "E2E_GATEWAY_URL": "https://cks.example.org/", "E2E_TOKEN_FILE": str(tokens),
           "E2E_NAMESPACE": "lab", "E2E_RELEASE": "cks", "KUBECTL": "/usr/bin/kubectl"}
    return ClusterPlatform(env, run), calls


def test_configuration(tmp_path):
    p, _ = make(tmp_path, {})
    assert p.gateways == ["https://cks.example.org", "https://cks.example.org"]
    assert p.tokens["admin"] == "t-admin" and p.tokens["student-1"] == "t-0" and p.tokens["student-8"] == "t-7"
    assert p.users["admin"] == "ops@example.org" and p.users["student-8"] == "s7@example.org"
    assert p.kubectl_cmd("get", "pods") == ["/usr/bin/kubectl", "--kubeconfig", "/k/config", "get", "pods"]
    assert p.namespace == "lab" and not p.disruptive


def test_missing_settings_are_named(tmp_path):
    with pytest.raises(SystemExit, match="E2E_GATEWAY_URL and E2E_TOKEN_FILE"):
        from_env({"E2E_KUBECONFIG": "/k/config"})


def test_kill_operator_deletes_the_lease_holders_pod(tmp_path):
    lease = {"spec": {"holderIdentity": "cks-operator-7d9f-abcde"}}
    p, calls = make(tmp_path, {"get lease": json.dumps(lease)})
    leader = p.operator_leader()
    p.kill_operator(leader)
    assert calls == [
        ["/usr/bin/kubectl", "--kubeconfig", "/k/config", "get", "lease", "cks-operator", "-n", "lab", "-o", "json"],
        ["/usr/bin/kubectl", "--kubeconfig", "/k/config", "delete", "pod", "cks-operator-7d9f-abcde", "-n", "lab",
         "--grace-period=0", "--force", "--wait=false"],
    ]


def test_kill_gateway_deletes_the_pod_holding_the_terminal(tmp_path):
    p, calls = make(tmp_path, {
        "get pods": "pod/cks-gateway-a\npod/cks-gateway-b\n",
        "cks-gateway-a:8081": "# TYPE cks_gateway_terminals_open gauge\ncks_gateway_terminals_open 0\n",
        "cks-gateway-b:8081": "cks_gateway_terminals_open 1\n",
    })
    p.kill_gateway(0)
    assert calls[0][3:] == ["get", "pods", "-n", "lab", "-o", "name", "-l",
                            "app.kubernetes.io/instance=cks,app.kubernetes.io/component=gateway"]
    assert calls[1][3:] == ["get", "--raw", "/api/v1/namespaces/lab/pods/cks-gateway-a:8081/proxy/metrics"]
    assert calls[-1][3:] == ["delete", "pod", "cks-gateway-b", "-n", "lab", "--grace-period=0", "--force",
                             "--wait=false"]


def test_kill_gateway_without_an_open_terminal_fails(tmp_path):
    p, _ = make(tmp_path, {"get pods": "pod/cks-gateway-a\n", "proxy/metrics": "cks_gateway_terminals_open 0\n"})
    with pytest.raises(AssertionError, match="no gateway pod"):
        p.kill_gateway(0)
