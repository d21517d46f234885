#!/usr/bin/env bash
# `make schemathesis` (part of `make test`): tests the gateway against its own OpenAPI document.
# Starts the platform as `make run` does (development control plane with the KubeVirt simulator,
# here with the fast profile; the operator; the gateway with dev auth) on loopback ports that do
# not clash with `make run`'s, waits for /readyz, runs schemathesis (no server errors, responses
# match their schemas, status codes are documented) with a bounded number of examples, and
# stops everything whatever the outcome. Needs schemathesis (.ci/run installs the pinned version).
set -euo pipefail
cd "$(dirname "$0")/.."

port="${CKS_SCHEMATHESIS_PORT:-18081}"
examples="${CKS_SCHEMATHESIS_EXAMPLES:-50}"
seed="${CKS_SCHEMATHESIS_SEED:-1}"
base="http://127.0.0.1:$port"

# .ci/run installs the pinned version into .tools/schemathesis; else one on PATH.
st=.tools/schemathesis/bin/schemathesis
[ -x "$st" ] || st=$(command -v schemathesis) || {
    echo "make schemathesis needs schemathesis: pip install schemathesis==4.32.5 (.ci/run installs it)" >&2
    exit 1
}
command -v ssh-keygen >/dev/null || { echo "needs ssh-keygen (Debian: apt-get install openssh-client)" >&2; exit 1; }

source scripts/build-platform.sh

state=$(mktemp -d)
pids=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$state"
}
trap cleanup INT TERM EXIT

ssh-keygen -q -t ed25519 -N '' -C cks-lab-schemathesis -f "$state/ssh-key"
{
    echo "apiVersion: v1"
    echo "kind: Secret"
    echo "metadata: {name: cks-ssh-key, namespace: cks-lab}"
    echo "stringData:"
    echo "  ssh-privatekey: |"
    sed 's/^/    /' "$state/ssh-key"
    echo "  ssh-publickey: $(cat "$state/ssh-key.pub")"
} > "$state/ssh-key-secret.yaml"

# Port 0 for the control plane and the operator's metrics; another SSH port than make run's
# simulated VMs (2222) so both can run at once.
"$bin/cks-devcluster" --addr 127.0.0.1:0 --kubeconfig "$state/kubeconfig" \
    --simulate-kubevirt --kubevirt-profile fast --vm-ssh-port 2223 \
    --golden-image vm-templates/ubuntu-2204-kube-1-33 \
    --apply crds --apply config/samples/00-namespace.yaml --apply config/samples/clusterpool.yaml \
    --apply "$state/ssh-key-secret.yaml" \
    --log warn >"$state/devcluster.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
    [ -s "$state/kubeconfig" ] && break
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$state/devcluster.log" >&2; echo "cks-devcluster exited" >&2; exit 1; }
    sleep 0.1
done

KUBECONFIG="$state/kubeconfig" "$bin/cks-operator" --namespace cks-lab --practice-api vmi-ip \
    --scenarios scenarios --ssh-port 2223 --metrics-addr 127.0.0.1:0 --log-format human \
    --log warn >"$state/operator.log" 2>&1 &
pids+=($!)
KUBECONFIG="$state/kubeconfig" "$bin/cks-gateway" --auth dev --listen "127.0.0.1:$port" \
    --namespace cks-lab --scenarios scenarios --pool cks-standard --log-format human \
    --validate-wait-seconds 5 --ssh-port 2223 --log warn >"$state/gateway.log" 2>&1 &
pids+=($!)

ready=
for _ in $(seq 1 600); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ]; then ready=1; break; fi
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$state"/*.log >&2; echo "a platform process exited" >&2; exit 1; }
    done
    sleep 0.1
done
[ -n "$ready" ] || { tail -n 20 "$state"/*.log >&2; echo "the gateway was not ready within 60 s" >&2; exit 1; }

# Real ids for schemathesis to use half of the time (the other half it makes up ids, which
# must answer 404): a session started over the API once a cluster is Available, its
# scenario's task ids, the clusters and the scenarios.
api="$base/api/v1"
for _ in $(seq 1 600); do
    curl -s "$api/admin/clusters" | grep -q '"availableClusters":[1-9]' && break
    sleep 0.1
done
scenario=$(curl -s "$api/scenarios" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
session=$(curl -s -X POST -d "{\"scenarioId\":\"$scenario\"}" "$api/sessions" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["sessionId"])')
python3 - "$api" "$scenario" "$session" >"$state/schemathesis.toml" <<'PY'
import json, sys, urllib.request
api, scenario, session = sys.argv[1:]
get = lambda path: json.load(urllib.request.urlopen(api + path))
clusters = sorted(get("/admin/clusters")["statusByCluster"])
scenarios = [s["id"] for s in get("/scenarios")]
tasks = [t["id"] for t in get("/scenarios/" + scenario)["tasks"]]
def dictionary(name, values):
    print(f"[dictionaries.{name}]\nvalues = {json.dumps(values)}\n")
dictionary("ids", [session] + clusters)
dictionary("tasks", tasks)
dictionary("scenarios", scenarios)
dictionary("clusters", clusters)
print('[parameters]')
print('"path.id" = { dictionary = "ids", probability = 0.5 }')
print('"path.task_id" = { dictionary = "tasks", probability = 0.5 }')
print('"body.scenarioId" = { dictionary = "scenarios", probability = 0.5 }')
PY

# CKS_SCHEMATHESIS_REPORT_DIR=DIR keeps every request and answer (HAR) for a closer look.
report=()
[ -z "${CKS_SCHEMATHESIS_REPORT_DIR:-}" ] || report=(--report har --report-dir "$CKS_SCHEMATHESIS_REPORT_DIR")

# Two passes: first the student's routes except DELETE, while the session lives (an admin
# release-all or end, or a DELETE, would end it and leave the session routes nothing but 404s),
# then every route. The event streams (session and admin console) are left out: they never end
# by design.
run() {
    "$st" --config-file "$state/schemathesis.toml" run "$base/openapi.json" \
        --checks not_a_server_error,status_code_conformance,response_schema_conformance \
        --max-examples "$examples" --seed "$seed" --workers 1 --request-timeout 30 \
        --exclude-path "/api/v1/sessions/{id}/events" --exclude-path "/api/v1/admin/events" \
        --generation-database none --suppress-health-check all --no-color "${report[@]}" "$@"
}
status=0
echo "=== schemathesis: the session routes with a live session"
run --exclude-tag admin --exclude-method DELETE || status=$?
echo "=== schemathesis: every route"
run || status=$?
if [ "$status" != 0 ]; then
    echo "--- gateway log (last lines)" >&2
    tail -n 40 "$state/gateway.log" >&2
fi
exit "$status"
