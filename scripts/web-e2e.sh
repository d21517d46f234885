#!/usr/bin/env bash
# `make web-e2e` (part of `make test`): the web page in headless Chromium (Playwright) against
# the whole platform started as `make run` starts it: the development control plane with the
# KubeVirt simulator (fast profile), the operator, and two gateways serving the built page
# (web/dist): one in dev auth (the single admin "developer", as `make run`) and one in token
# auth (students alice and bob, admin root: the sign-in form, and an admin acting on another
# user's session). The catalog is the shipped one plus web/e2e/scenario (a task to fix through
# the terminal, and task text that tries to run script). Loopback ports that clash neither with
# `make run` nor with `make schemathesis`. Everything stops whatever the outcome; screenshots
# and logs stay in web/test-results. `--bench` prints the page's figures instead (make web-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

dev_port="${CKS_WEB_E2E_PORT:-18090}"
token_port=$((dev_port + 1))
ssh_port="${CKS_WEB_E2E_SSH_PORT:-2231}"
out=web/test-results

command -v ssh-keygen >/dev/null || { echo "needs ssh-keygen (Debian: apt-get install openssh-client)" >&2; exit 1; }
chromium="${CKS_CHROMIUM:-/usr/bin/chromium}"
[ -x "$chromium" ] || { echo "needs Chromium at $chromium (Debian: apt-get install chromium)" >&2; exit 1; }
[ -f web/dist/index.html ] && [ -d web/node_modules ] || { echo "build the page first: make web" >&2; exit 1; }

source scripts/build-platform.sh

state=$(mktemp -d)
pids=()
cleanup() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    mkdir -p "$out" && cp "$state"/*.log "$out"/ 2>/dev/null || true
    rm -rf "$state"
}
trap cleanup INT TERM EXIT

ssh-keygen -q -t ed25519 -N '' -C cks-lab-web-e2e -f "$state/ssh-key"
{
    echo "apiVersion: v1"
    echo "kind: Secret"
    echo "metadata: {name: cks-ssh-key, namespace: cks-lab}"
    echo "stringData:"
    echo "  ssh-privatekey: |"
    sed 's/^/    /' "$state/ssh-key"
    echo "  ssh-publickey: $(cat "$state/ssh-key.pub")"
} > "$state/ssh-key-secret.yaml"
mkdir "$state/scenarios"
cp -r scenarios/. web/e2e/scenario/. "$state/scenarios/"
printf '%s\n' "alice-e2e-token,alice" "bob-e2e-token,bob" "root-e2e-token,root,admin" > "$state/tokens"

"$bin/cks-devcluster" --addr 127.0.0.1:0 --kubeconfig "$state/kubeconfig" \
    --simulate-kubevirt --kubevirt-profile fast --vm-ssh-port "$ssh_port" \
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
    --scenarios "$state/scenarios" --ssh-port "$ssh_port" --metrics-addr 127.0.0.1:0 \
    --log-format human --log warn >"$state/operator.log" 2>&1 &
pids+=($!)
# exec: the background job is the gateway itself, so the cleanup's kill reaches it.
gateway() {
    KUBECONFIG="$state/kubeconfig" exec "$bin/cks-gateway" --namespace cks-lab \
        --scenarios "$state/scenarios" --pool cks-standard --web-dir web/dist --ssh-port "$ssh_port" \
        --log-format human --log warn "$@"
}
gateway --auth dev --listen "127.0.0.1:$dev_port" >"$state/gateway-dev.log" 2>&1 &
pids+=($!)
dev_gateway=$!
gateway --auth token --token-file "$state/tokens" --listen "127.0.0.1:$token_port" \
    >"$state/gateway-token.log" 2>&1 &
pids+=($!)

for port in "$dev_port" "$token_port"; do
    ready=
    for _ in $(seq 1 600); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; then ready=1; break; fi
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null || { tail -n 20 "$state"/*.log >&2; echo "a platform process exited" >&2; exit 1; }
        done
        sleep 0.1
    done
    [ -n "$ready" ] || { tail -n 20 "$state"/*.log >&2; echo "the gateway on $port was not ready within 60 s" >&2; exit 1; }
done

export CKS_WEB_DEV_URL="http://127.0.0.1:$dev_port" CKS_WEB_TOKEN_URL="http://127.0.0.1:$token_port" \
    CKS_WEB_TOKENS="alice-e2e-token,bob-e2e-token,root-e2e-token" CKS_CHROMIUM="$chromium" \
    CKS_WEB_OUT="$out" CKS_WEB_GATEWAY_PID="$dev_gateway"
if [ "${1:-}" = --bench ]; then
    node web/e2e/bench.mjs
else
    node web/e2e/run.mjs "$@"
fi
