#!/usr/bin/env bash
# `make run`: the whole platform on this machine. Starts the development control plane with the
# KubeVirt simulator and a golden image, applies the CRDs, the samples and an SSH key for the
# sample pool, then runs the operator and the HTTP gateway (dev auth, http://127.0.0.1:8081)
# against it, serving the web page from web/dist (`make run` builds it first). Ctrl-C stops
# everything.
set -euo pipefail
cd "$(dirname "$0")/.."

state=target/devcluster
kubeconfig="$state/kubeconfig"
profile="${CKS_KUBEVIRT_PROFILE:-realistic}"
mkdir -p "$state"

command -v ssh-keygen >/dev/null || { echo "make run needs ssh-keygen (Debian: apt-get install openssh-client)" >&2; exit 1; }
command -v bwrap >/dev/null || echo "note: without bwrap (Debian: apt-get install bubblewrap) the simulated VMs' SSH shells fail" >&2

source scripts/build-platform.sh

# The sample pool's VM key: generated once per checkout, never committed.
if [ ! -f "$state/ssh-key" ]; then
    ssh-keygen -q -t ed25519 -N '' -C cks-lab-dev -f "$state/ssh-key"
fi
{
    echo "apiVersion: v1"
    echo "kind: Secret"
    echo "metadata: {name: cks-ssh-key, namespace: cks-lab}"
    echo "stringData:"
    echo "  ssh-privatekey: |"
    sed 's/^/    /' "$state/ssh-key"
    echo "  ssh-publickey: $(cat "$state/ssh-key.pub")"
} > "$state/ssh-key-secret.yaml"

pids=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

rm -f "$kubeconfig"
"$bin/cks-devcluster" --kubeconfig "$kubeconfig" --simulate-kubevirt \
    --kubevirt-profile "$profile" --golden-image vm-templates/ubuntu-2204-kube-1-33 \
    --apply crds --apply config/samples/00-namespace.yaml \
    --apply config/samples/clusterpool.yaml --apply config/samples/session.yaml \
    --apply "$state/ssh-key-secret.yaml" &
pids+=($!)

# The kubeconfig is written once the server listens; the operator retries until CRDs exist.
for _ in $(seq 1 100); do
    [ -s "$kubeconfig" ] && break
    kill -0 "${pids[0]}" 2>/dev/null || { echo "cks-devcluster exited" >&2; exit 1; }
    sleep 0.1
done

# The simulated VMs serve SSH on 2222 (port 22 needs root).
KUBECONFIG="$kubeconfig" "$bin/cks-operator" --namespace cks-lab --practice-api vmi-ip \
    --scenarios scenarios --ssh-port 2222 --metrics-addr 127.0.0.1:8080 --log-format human &
pids+=($!)

# The API and the web page: dev auth makes every caller the admin "developer" (loopback only).
# CORS allows the reference frontend's dev server (npm run dev on port 3000).
web=()
if [ -f web/dist/index.html ]; then
    web=(--web-dir web/dist)
else
    echo "note: no web/dist (run make web, or make run, which builds it): the gateway serves the API only" >&2
fi
# Terminals sign their URLs with a key kept in the state directory (a real deployment mounts
# one from a Secret); they reach the simulated VMs' SSH on 2222.
[ -s "$state/terminal-key" ] || head -c 48 /dev/urandom | base64 -w0 > "$state/terminal-key"
KUBECONFIG="$kubeconfig" "$bin/cks-gateway" --auth dev --listen 127.0.0.1:8081 \
    --namespace cks-lab --scenarios scenarios --pool cks-standard "${web[@]}" \
    --terminal-key-file "$state/terminal-key" --ssh-port 2222 \
    --cors-origins http://localhost:3000 --log-format human &
pids+=($!)

cat <<MSG

cks-lab is running on the development control plane (a dev/test tool, not a real cluster).
  open:       http://127.0.0.1:8081/   (the web page: catalogue, lab, admin console)
  kubeconfig: $kubeconfig
  try:        KUBECONFIG=$kubeconfig kubectl get cks -A
              KUBECONFIG=$kubeconfig kubectl get vm,vmi,dv -A
  a student:  the sample Session alice-pod-security gets a cluster as soon as one is Available;
              KUBECONFIG=$kubeconfig kubectl get session -n cks-lab -w
              KUBECONFIG=$kubeconfig kubectl apply -f config/samples/validationrun.yaml
  API:        http://127.0.0.1:8081/api/v1  (dev auth: you are the admin "developer")
              curl http://127.0.0.1:8081/api/v1/scenarios
              curl -X POST -d '{"scenarioId":"rbac-least-privilege"}' http://127.0.0.1:8081/api/v1/sessions
  metrics:    http://127.0.0.1:8080/metrics (operator), http://127.0.0.1:8081/metrics (gateway)
The simulated VMs share this machine's kernel and network: never let real students use them.
Stop with Ctrl-C.

MSG
# Stop when either process stops; the trap stops the other.
wait -n "${pids[@]}"
