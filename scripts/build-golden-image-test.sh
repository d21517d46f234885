#!/usr/bin/env bash
# `make golden-image-test`: what of scripts/build-golden-image.sh can be checked without network
# or KVM. shellcheck on both scripts; `--print-plan` runs no tool (stubs on PATH record any call)
# and shows the steps, pinned versions and upload names of docs/golden-image.md; wrong
# arguments exit 2 with a message naming the argument; a run with every tool stubbed calls them
# in order, writes its files, and stops on a failed pre-pull or a non-VXLAN Calico manifest.
set -euo pipefail
cd "$(dirname "$0")/.."

script=scripts/build-golden-image.sh
failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

if command -v shellcheck >/dev/null; then
    shellcheck "$script" scripts/build-golden-image-test.sh || fail "shellcheck"
else
    fail "shellcheck not installed (.ci/run installs it)"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Every tool the real run uses, as a stub that records its call.
mkdir "$tmp/bin"
for tool in curl sha256sum qemu-img qemu-system-x86_64 virt-resize virt-customize virt-cat \
    virt-sparsify cloud-localds virtctl kubectl; do
    printf '#!/bin/sh\necho "%s $*" >>"%s/called"\n' "$tool" "$tmp" >"$tmp/bin/$tool"
    chmod +x "$tmp/bin/$tool"
done

# Runs the script with the stubs first on PATH; stdout to $tmp/out, stderr to $tmp/err.
build() {
    set +e
    PATH="$tmp/bin:$PATH" "$script" "$@" >"$tmp/out" 2>"$tmp/err"
    status=$?
    set -e
}

expect_in_out() {
    grep -qF -- "$1" "$tmp/out" || fail "$2: output lacks '$1'"
}

# The sample pool's image (config/samples/clusterpool.yaml): defaults only.
build --print-plan --work-dir "$tmp/work"
[ "$status" -eq 0 ] || fail "--print-plan exited $status: $(cat "$tmp/err")"
[ ! -e "$tmp/called" ] || fail "--print-plan ran tools: $(cat "$tmp/called")"
[ ! -e "$tmp/work" ] || fail "--print-plan created the work directory"
for want in \
    "https://cloud-images.ubuntu.com/releases/22.04/release/ubuntu-22.04-server-cloudimg-amd64.img" \
    "sha256sum --check" \
    "virt-resize --expand /dev/sda1" \
    "pkgs.k8s.io/core:/stable:/v1.33/deb/" \
    '"kubelet=1.33.0-*" "kubeadm=1.33.0-*" "kubectl=1.33.0-*"' \
    "apt-mark hold kubelet kubeadm kubectl" \
    "SystemdCgroup = true" \
    'config_path = "/etc/containerd/certs.d"' \
    'calico_backend:\ \"vxlan\"' \
    "--upload $tmp/work/calico.yaml:/opt/cks/calico.yaml" \
    "kubeadm config images pull --kubernetes-version v1.33.0" \
    "| nginx:1.27" \
    'cloud-init\ clean\ --logs\ --machine-id' \
    "--delete /etc/ssh/ssh_host_\\*" \
    "qemu-img convert -c -O qcow2 $tmp/work/golden.qcow2 ubuntu-2204-kube-1-33.qcow2" \
    "virtctl image-upload dv ubuntu-2204-kube-1-33 --namespace vm-templates --size 12Gi"; do
    expect_in_out "$want" "default plan"
done
# The sample pool names this PVC; the default must stay in step with it.
grep -q 'name: ubuntu-2204-kube-1-33' config/samples/clusterpool.yaml ||
    fail "config/samples/clusterpool.yaml no longer names ubuntu-2204-kube-1-33: change the script's default name with it"

# Other versions flow into the packages, the repository, the name and the upload.
build --print-plan --k8s-version 1.32.4 --ubuntu-release 24.04 --output /srv/img/g.qcow2 \
    --storage-class longhorn --disk-size 16 --kube-bench-version none
[ "$status" -eq 0 ] || fail "--print-plan with options exited $status: $(cat "$tmp/err")"
for want in "ubuntu-24.04-server-cloudimg-amd64.img" "v1.32/deb/" '"kubeadm=1.32.4-*"' \
    "qemu-img create -f qcow2" "16G" "/srv/img/g.qcow2" \
    "virtctl image-upload dv ubuntu-2404-kube-1-32 --namespace vm-templates --size 18Gi" \
    "--storage-class longhorn"; do
    expect_in_out "$want" "plan with options"
done
grep -q kube-bench "$tmp/out" && fail "--kube-bench-version none still installs kube-bench"

# Wrong arguments: exit 2, the argument named on stderr, nothing run.
expect_usage_error() {
    local want=$1
    shift
    build "$@"
    [ "$status" -eq 2 ] || fail "'$*' exited $status, not 2"
    grep -qF -- "$want" "$tmp/err" || fail "'$*': stderr lacks '$want': $(cat "$tmp/err")"
}
expect_usage_error "--k8s-version must be a full version" --print-plan --k8s-version 1.33
expect_usage_error "--k8s-version must be a full version" --k8s-version 1.21.0
expect_usage_error "--k8s-version needs a value" --print-plan --k8s-version
expect_usage_error "--output needs a value" --output "" --print-plan
expect_usage_error "--ubuntu-release must be 22.04 or 24.04" --ubuntu-release 20.04
expect_usage_error "--disk-size must be a whole number of GiB" --disk-size 10G
expect_usage_error "--name must be a DNS-1123 label" --name Golden_Image
expect_usage_error "unknown option: --frobnicate" --print-plan --frobnicate
[ ! -e "$tmp/called" ] || fail "an argument error ran tools: $(cat "$tmp/called")"

# The real path with every tool stubbed: the shell logic between the tools runs (files written,
# steps in order, the pre-pull check), nothing is downloaded or booted.
printf '%s\n' 'calico_backend: "vxlan"' '            - name: CALICO_IPV4POOL_VXLAN' '              value: "Always"' \
    >"$tmp/calico.yaml"
printf '#!/bin/sh\necho "virt-cat $*" >>"%s/called"\necho CKS-PREPULL-OK\n' "$tmp" >"$tmp/bin/virt-cat"
build --work-dir "$tmp/real" --calico-manifest "$tmp/calico.yaml" --output "$tmp/out.qcow2"
[ "$status" -eq 0 ] || fail "stubbed run exited $status: $(cat "$tmp/err")"
order=$(cut -d' ' -f1 "$tmp/called" 2>/dev/null | uniq | tr '\n' ' ')
[ "$order" = "curl sha256sum qemu-img virt-resize virt-customize cloud-localds qemu-system-x86_64 virt-cat virt-customize virt-sparsify qemu-img " ] ||
    fail "stubbed run called the tools in this order: $order"
grep -qF '"kubelet=1.33.0-*"' "$tmp/real/install.sh" 2>/dev/null || fail "stubbed run: install.sh not written"
grep -qx 'nginx:1.27' "$tmp/real/images.txt" 2>/dev/null || fail "stubbed run: images.txt not written"
grep -qF 'CALICO_IPV4POOL_VXLAN' "$tmp/real/calico.yaml" 2>/dev/null || fail "stubbed run: calico.yaml not copied"
# A pre-pull that did not finish stops the build before the cleanup.
printf '#!/bin/sh\necho "virt-cat $*" >>"%s/called"\n' "$tmp" >"$tmp/bin/virt-cat"
rm -f "$tmp/called"
build --work-dir "$tmp/real2" --calico-manifest "$tmp/calico.yaml" --output "$tmp/out.qcow2"
if [ "$status" -ne 1 ] || ! grep -q "pre-pull failed" "$tmp/err"; then
    fail "a failed pre-pull: exit $status, $(cat "$tmp/err")"
fi
grep -q virt-sparsify "$tmp/called" && fail "a failed pre-pull still went on to virt-sparsify"
# A Calico manifest not in VXLAN mode is refused.
echo 'calico_backend: "bird"' >"$tmp/bird.yaml"
build --work-dir "$tmp/real3" --calico-manifest "$tmp/bird.yaml"
if [ "$status" -ne 1 ] || ! grep -q "not in VXLAN mode" "$tmp/err"; then
    fail "a BGP Calico manifest: exit $status, $(cat "$tmp/err")"
fi

build --help
if [ "$status" -ne 0 ] || ! grep -q -- "--print-plan" "$tmp/out"; then fail "--help"; fi

if ((failures)); then
    echo "build-golden-image: $failures check(s) failed" >&2
    exit 1
fi
echo "build-golden-image: shellcheck clean, plan and argument checks pass"
