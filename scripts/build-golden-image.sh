#!/usr/bin/env bash
# Builds the practice clusters' golden disk image (the contract is docs/golden-image.md) from an
# Ubuntu cloud image, then prints the commands that upload it as the CDI DataVolume/PVC a
# ClusterPool's `template.goldenImage` names.
#
# NOT RUN ON THIS PROJECT'S MACHINES: they have no network (no Ubuntu image, no apt, no
# registries) and no KVM. The script is written from the tools' documentation and the image
# contract; only its argument handling and `--print-plan` are tested (make golden-image-test).
# Run it on an amd64 Linux host with internet access and, for speed, /dev/kvm:
#   apt-get install libguestfs-tools qemu-utils qemu-system-x86 cloud-image-utils curl
#
# Steps: download and verify the cloud image; grow its root partition (virt-resize); install
# and configure everything offline (virt-customize); boot it once under QEMU with a NoCloud
# seed to pre-pull the container images (containerd cannot run inside virt-customize); reset
# it to a never-booted state (cloud-init clean, no host keys, no machine-id); sparsify and
# write a compressed qcow2.
set -euo pipefail

script_dir=$(cd "$(dirname "$0")" && pwd)

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

Builds the golden disk image of docs/golden-image.md (amd64) and prints how to upload it.

  --k8s-version X.Y.Z      Kubernetes version of kubeadm, kubelet and kubectl; the pool's
                           template.kubernetesVersion, in full (default: $k8s_version)
  --ubuntu-release R       Ubuntu cloud image release: 22.04 or 24.04 (default: $ubuntu_release)
  --output FILE            the qcow2 image to write (default: NAME.qcow2)
  --name NAME              DataVolume/PVC name the pool's template.goldenImage.name uses
                           (default: ubuntu-RRRR-kube-X-Y, for example ubuntu-2204-kube-1-33)
  --namespace NS           its namespace, template.goldenImage.namespace (default: $namespace)
  --storage-class SC       StorageClass of the upload; use the pool's storageClassName so CDI
                           can clone it efficiently (default: the cluster's default class)
  --disk-size GIB          virtual disk size in GiB; every pool's diskSize must be at least
                           the uploaded PVC (this + 2 GiB) (default: $disk_gib)
  --calico-version V       Calico release whose manifest is adapted (default: $calico_version)
  --calico-manifest FILE   use this Calico manifest (already VXLAN) instead of downloading one
  --kube-bench-version V   kube-bench release to install, or "none" (default: $kube_bench_version)
  --scenarios DIR          scenario catalog whose container images are pre-pulled
                           (default: $scenarios_dir)
  --work-dir DIR           scratch directory, kept for inspection (default: a new temporary one)
  --print-plan             print every step and generated file, run nothing
  -h, --help               this help
EOF
}

die_usage() {
    echo "$(basename "$0"): $*" >&2
    echo "Try '$(basename "$0") --help'." >&2
    exit 2
}

# Defaults: the sample pool (config/samples/clusterpool.yaml) and docs/golden-image.md.
k8s_version=1.33.0
ubuntu_release=22.04
output=""
name=""
namespace=vm-templates
storage_class=""
disk_gib=10
calico_version=v3.30.0
calico_manifest=""
kube_bench_version=0.10.0
scenarios_dir="$script_dir/../scenarios"
work_dir=""
plan=false

while (($#)); do
    opt=$1
    case $opt in
        -h | --help) usage; exit 0 ;;
        --print-plan) plan=true; shift; continue ;;
        --k8s-version | --ubuntu-release | --output | --name | --namespace | --storage-class | \
            --disk-size | --calico-version | --calico-manifest | --kube-bench-version | \
            --scenarios | --work-dir)
            if (($# < 2)) || [ -z "$2" ]; then die_usage "$opt needs a value"; fi
            val=$2
            shift 2
            ;;
        *) die_usage "unknown option: $opt" ;;
    esac
    case $opt in
        --k8s-version) k8s_version=$val ;;
        --ubuntu-release) ubuntu_release=$val ;;
        --output) output=$val ;;
        --name) name=$val ;;
        --namespace) namespace=$val ;;
        --storage-class) storage_class=$val ;;
        --disk-size) disk_gib=$val ;;
        --calico-version) calico_version=$val ;;
        --calico-manifest) calico_manifest=$val ;;
        --kube-bench-version) kube_bench_version=$val ;;
        --scenarios) scenarios_dir=$val ;;
        --work-dir) work_dir=$val ;;
    esac
done

# A full version: kubeadm otherwise looks the latest patch up online (docs/golden-image.md).
[[ $k8s_version =~ ^1\.(2[2-9]|[3-9][0-9])\.[0-9]+$ ]] ||
    die_usage "--k8s-version must be a full version 1.MINOR.PATCH, 1.22 or later (got '$k8s_version')"
case $ubuntu_release in
    22.04) codename=jammy ;;
    24.04) codename=noble ;;
    *) die_usage "--ubuntu-release must be 22.04 or 24.04 (got '$ubuntu_release')" ;;
esac
if ! [[ $disk_gib =~ ^[0-9]+$ ]] || ((disk_gib < 8)); then
    die_usage "--disk-size must be a whole number of GiB, at least 8 (got '$disk_gib')"
fi
[[ $calico_version =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die_usage "--calico-version must look like v3.30.0 (got '$calico_version')"
[[ $kube_bench_version == none || $kube_bench_version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
    die_usage "--kube-bench-version must look like 0.10.0 or be none (got '$kube_bench_version')"
[ -z "$calico_manifest" ] || [ -f "$calico_manifest" ] || $plan || die_usage "--calico-manifest: no such file: $calico_manifest"

k8s_minor=${k8s_version%.*}
[ -n "$name" ] || name="ubuntu-${ubuntu_release//./}-kube-${k8s_minor//./-}"
[[ $name =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die_usage "--name must be a DNS-1123 label (got '$name')"
[ -n "$output" ] || output="$name.qcow2"
pvc_gib=$((disk_gib + 2)) # CDI's filesystem overhead (5.5 % by default) on top of the disk
image_file="ubuntu-${ubuntu_release}-server-cloudimg-amd64.img"
image_url="https://cloud-images.ubuntu.com/releases/${ubuntu_release}/release"

if $plan; then
    work=${work_dir:-"${TMPDIR:-/tmp}/golden-image.XXXXXX"}
else
    for tool in curl sha256sum qemu-img qemu-system-x86_64 virt-resize virt-customize virt-cat \
        virt-sparsify cloud-localds timeout; do
        command -v "$tool" >/dev/null ||
            { echo "$(basename "$0"): $tool not found (see the header of this script for the packages)" >&2; exit 1; }
    done
    [ -e /dev/kvm ] || echo "warning: no /dev/kvm: the pre-pull boot runs emulated (TCG) and takes long" >&2
    if [ -n "$work_dir" ]; then
        mkdir -p "$work_dir"
        work=$(cd "$work_dir" && pwd)
    else
        work=$(mktemp -d "${TMPDIR:-/tmp}/golden-image.XXXXXX")
    fi
fi

step_no=0
step() {
    step_no=$((step_no + 1))
    printf '\n==> %d. %s\n' "$step_no" "$*"
}

# Prints a command; runs it unless planning.
run() {
    printf '  $'
    printf ' %q' "$@"
    printf '\n'
    $plan || "$@"
}

# Prints a command and where its output goes; runs it unless planning.
run_to() {
    local out=$1
    shift
    printf '  $'
    printf ' %q' "$@"
    printf ' > %q\n' "$out"
    $plan || "$@" >"$out"
}

# Writes stdin to a file, or prints it when planning.
emit_file() {
    if $plan; then
        printf '  write %s:\n' "$1"
        sed 's/^/    | /'
    else
        cat >"$1"
    fi
}

echo "Golden image $name: Ubuntu $ubuntu_release ($codename), Kubernetes $k8s_version, ${disk_gib} GiB -> $output"
$plan && echo "(--print-plan: nothing is run)"

step "Download the Ubuntu $ubuntu_release cloud image and check it against SHA256SUMS"
run curl -fL --retry 3 -o "$work/$image_file" "$image_url/$image_file"
run curl -fL --retry 3 -o "$work/SHA256SUMS" "$image_url/SHA256SUMS"
printf '  $ (cd %q && sha256sum --check --ignore-missing SHA256SUMS)\n' "$work"
$plan || (cd "$work" && sha256sum --check --ignore-missing SHA256SUMS)

step "Grow the root partition to ${disk_gib} GiB (the cloud image's is about 2 GiB)"
run qemu-img create -f qcow2 "$work/golden.qcow2" "${disk_gib}G"
# /dev/sda1 is the root file system and the last partition of Ubuntu's cloud images.
run virt-resize --expand /dev/sda1 "$work/$image_file" "$work/golden.qcow2"

step "Calico manifest in VXLAN mode (docs/golden-image.md, 'Calico manifest')"
if [ -n "$calico_manifest" ]; then
    run cp "$calico_manifest" "$work/calico.yaml"
else
    run curl -fL --retry 3 -o "$work/calico-upstream.yaml" \
        "https://raw.githubusercontent.com/projectcalico/calico/$calico_version/manifests/calico.yaml"
    # BGP (bird) off, VXLAN always, IP-in-IP never; the pool CIDR stays commented out so
    # Calico takes kubeadm's podSubnet (the template's podCidr).
    run_to "$work/calico.yaml" sed -e 's/calico_backend: "bird"/calico_backend: "vxlan"/' \
        -e '/- -bird-live/d' -e '/- -bird-ready/d' \
        -e '/name: CALICO_IPV4POOL_IPIP$/{n;s/"Always"/"Never"/}' \
        -e '/name: CALICO_IPV4POOL_VXLAN$/{n;s/"Never"/"Always"/}' \
        "$work/calico-upstream.yaml"
fi
if ! $plan; then
    # Fail loudly when an upstream manifest no longer has the lines edited above.
    if ! grep -q 'calico_backend: "vxlan"' "$work/calico.yaml" ||
        ! grep -A1 'name: CALICO_IPV4POOL_VXLAN$' "$work/calico.yaml" | grep -q '"Always"' ||
        grep -qE -- '- -bird-(live|ready)' "$work/calico.yaml"; then
        echo "calico.yaml is not in VXLAN mode: adapt it by hand and pass --calico-manifest" >&2
        exit 1
    fi
fi

step "Container images the scenarios use, pre-pulled next to Kubernetes' and Calico's"
images=()
if [ -d "$scenarios_dir" ]; then
    mapfile -t images < <(grep -rhoE '^[[:space:]]*(- )?image:[[:space:]]*"?[^[:space:]"]+' "$scenarios_dir" |
        sed -E 's/.*image:[[:space:]]*"?//' | sort -u)
else
    echo "  (no scenario catalog at $scenarios_dir: no scenario images)"
fi
printf '%s\n' "${images[@]}" | emit_file "$work/images.txt"

step "Kernel settings, containerd's and crictl's configuration"
emit_file "$work/modules-k8s.conf" <<'EOF'
overlay
br_netfilter
EOF
emit_file "$work/sysctl-k8s.conf" <<'EOF'
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward = 1
EOF
emit_file "$work/crictl.yaml" <<'EOF'
runtime-endpoint: unix:///run/containerd/containerd.sock
image-endpoint: unix:///run/containerd/containerd.sock
timeout: 10
EOF

# Runs inside the image under virt-customize (network through libguestfs' user networking).
step "Install script run inside the image (virt-customize --run)"
kube_bench_block=""
if [ "$kube_bench_version" != none ]; then
    kube_bench_block="curl -fsSLo /tmp/kube-bench.deb https://github.com/aquasecurity/kube-bench/releases/download/v${kube_bench_version}/kube-bench_${kube_bench_version}_linux_amd64.deb
apt-get install -y /tmp/kube-bench.deb
rm -f /tmp/kube-bench.deb"
fi
emit_file "$work/install.sh" <<EOF
#!/bin/bash
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends ca-certificates curl gpg
install -d -m 0755 /etc/apt/keyrings

# Kubernetes from pkgs.k8s.io, the minor's own repository.
curl -fsSL https://pkgs.k8s.io/core:/stable:/v${k8s_minor}/deb/Release.key |
    gpg --batch --yes --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v${k8s_minor}/deb/ /" \\
    >/etc/apt/sources.list.d/kubernetes.list
# Falco and gVisor: the scenarios' setup installs them only when missing (falco-custom-rule,
# runtimeclass-gvisor), which needs egress the pool's NetworkPolicies may not give.
curl -fsSL https://falco.org/repo/falcosecurity-packages.asc |
    gpg --batch --yes --dearmor -o /usr/share/keyrings/falco-archive-keyring.gpg
echo "deb [signed-by=/usr/share/keyrings/falco-archive-keyring.gpg] https://download.falco.org/packages/deb stable main" \\
    >/etc/apt/sources.list.d/falcosecurity.list
curl -fsSL https://gvisor.dev/archive.key |
    gpg --batch --yes --dearmor -o /usr/share/keyrings/gvisor-archive-keyring.gpg
echo "deb [arch=amd64 signed-by=/usr/share/keyrings/gvisor-archive-keyring.gpg] https://storage.googleapis.com/gvisor/releases release main" \\
    >/etc/apt/sources.list.d/gvisor.list
apt-get update

apt-get install -y containerd cri-tools "kubelet=${k8s_version}-*" "kubeadm=${k8s_version}-*" "kubectl=${k8s_version}-*" \\
    cloud-init openssh-server iproute2 sed curl jq apparmor apparmor-utils auditd
apt-mark hold kubelet kubeadm kubectl
# Falco installed but not started (no driver chosen, so its package neither builds a kernel
# module nor enables a unit, which a chroot could not start anyway): the scenario's setup
# enables falco-modern-bpf.service, whose eBPF probe is built into falco, on the worker.
FALCO_FRONTEND=noninteractive FALCO_DRIVER_CHOICE=none FALCOCTL_ENABLED=no \\
    apt-get install -y dialog falco
systemctl disable falco-modern-bpf.service falcoctl-artifact-follow.service 2>/dev/null || true
# runsc installed; the scenario registers it with containerd on the worker.
apt-get install -y runsc
${kube_bench_block}

# containerd: systemd cgroups (the kubelet's driver) and kubeadm's own pause image, which is
# pre-pulled (containerd's default sandbox image may be another tag: pods would then need a
# registry).
install -d /etc/containerd
containerd config default >/etc/containerd/config.toml
sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' /etc/containerd/config.toml
pause=\$(kubeadm config images list --kubernetes-version v${k8s_version} | grep '/pause:')
sed -i "s#sandbox_image = .*#sandbox_image = \"\$pause\"#" /etc/containerd/config.toml
# Registry mirrors as files under /etc/containerd/certs.d, which a pool's extraCloudInit can
# write (hosts.toml per registry) without editing config.toml.
sed -i 's#config_path = ""#config_path = "/etc/containerd/certs.d"#' /etc/containerd/config.toml
grep -q 'SystemdCgroup = true' /etc/containerd/config.toml
grep -qF 'config_path = "/etc/containerd/certs.d"' /etc/containerd/config.toml
grep -qF "sandbox_image = \"\$pause\"" /etc/containerd/config.toml

# No swap (the kubelet refuses it by default).
sed -i '/[[:space:]]swap[[:space:]]/d' /etc/fstab
rm -f /swap.img /swapfile

systemctl enable containerd kubelet ssh
install -d -m 0755 /opt/cks
EOF

# Runs on the one boot under QEMU, from the NoCloud seed's runcmd.
emit_file "$work/prepull.sh" <<EOF
#!/bin/bash
set -euxo pipefail
exec >/var/log/cks-prepull.log 2>&1
systemctl start containerd
kubeadm config images pull --kubernetes-version v${k8s_version} --cri-socket unix:///run/containerd/containerd.sock
for image in \$(grep -oE 'image:[[:space:]]*[^[:space:]]+' /opt/cks/calico.yaml | awk '{print \$2}' | tr -d '"' | sort -u) \\
    \$(cat /opt/cks/build/images.txt); do
    crictl pull "\$image"
done
crictl images
echo CKS-PREPULL-OK
EOF
# No default user: the clones' cloud-init creates the pool's sshUser.
emit_file "$work/user-data" <<'EOF'
#cloud-config
users: []
runcmd:
  - [bash, /opt/cks/build/prepull.sh]
power_state:
  mode: poweroff
  condition: true
EOF
emit_file "$work/meta-data" <<'EOF'
instance-id: cks-golden-build
local-hostname: cks-golden-build
EOF

step "Install and configure offline (virt-customize)"
run virt-customize -a "$work/golden.qcow2" \
    --upload "$work/modules-k8s.conf:/etc/modules-load.d/k8s.conf" \
    --upload "$work/sysctl-k8s.conf:/etc/sysctl.d/k8s.conf" \
    --upload "$work/crictl.yaml:/etc/crictl.yaml" \
    --run "$work/install.sh" \
    --mkdir /opt/cks/build \
    --upload "$work/calico.yaml:/opt/cks/calico.yaml" \
    --upload "$work/images.txt:/opt/cks/build/images.txt" \
    --upload "$work/prepull.sh:/opt/cks/build/prepull.sh"

step "Boot once with a NoCloud seed to pre-pull the images, then power off"
run cloud-localds "$work/seed.iso" "$work/user-data" "$work/meta-data"
# Runs until cloud-init's power_state powers the VM off; the hour is for emulation (TCG).
if ! run timeout 3600 qemu-system-x86_64 -machine accel=kvm:tcg -cpu max -smp 2 -m 4096 \
    -display none -serial "file:$work/console.log" \
    -drive "file=$work/golden.qcow2,if=virtio,format=qcow2" \
    -drive "file=$work/seed.iso,if=virtio,format=raw,readonly=on" \
    -netdev user,id=net0 -device virtio-net-pci,netdev=net0; then
    echo "the build boot failed or did not power off within an hour: see $work/console.log" >&2
    exit 1
fi
printf '  $ virt-cat -a %q /var/log/cks-prepull.log | grep -q CKS-PREPULL-OK\n' "$work/golden.qcow2"
if ! $plan && ! virt-cat -a "$work/golden.qcow2" /var/log/cks-prepull.log | grep -q CKS-PREPULL-OK; then
    echo "pre-pull failed: see $work/console.log and /var/log/cks-prepull.log in $work/golden.qcow2 (virt-cat)" >&2
    exit 1
fi

step "Reset to a never-booted instance: cloud-init state, machine-id, SSH host keys, build files"
run virt-customize -a "$work/golden.qcow2" \
    --run-command 'cloud-init clean --logs --machine-id || { cloud-init clean --logs && truncate -s 0 /etc/machine-id; }' \
    --run-command 'rm -f /var/lib/dbus/machine-id /etc/netplan/50-cloud-init.yaml /var/log/cks-prepull.log' \
    --run-command 'rm -rf /opt/cks/build /etc/kubernetes/* /var/lib/kubelet/* && mkdir -p /etc/kubernetes/manifests' \
    --delete '/etc/ssh/ssh_host_*' \
    --run-command 'apt-get clean'

step "Sparsify and write the compressed image"
run virt-sparsify --in-place "$work/golden.qcow2"
run qemu-img convert -c -O qcow2 "$work/golden.qcow2" "$output"
run qemu-img info "$output"

cat <<EOF

==> Upload as the golden image (not run by this script)
The pool's template.goldenImage is {name: $name, namespace: $namespace}. With virtctl and CDI's
upload proxy reachable (see 'virtctl image-upload --help' for --uploadproxy-url):

  kubectl create namespace $namespace --dry-run=client -o yaml | kubectl apply -f -
  virtctl image-upload dv $name --namespace $namespace --size ${pvc_gib}Gi \\
      ${storage_class:+--storage-class $storage_class }--image-path $output --force-bind

The same as a manifest (a DataVolume waiting for an upload), then the upload into it:

  kubectl apply -f - <<'YAML'
  apiVersion: cdi.kubevirt.io/v1beta1
  kind: DataVolume
  metadata:
    name: $name
    namespace: $namespace
  spec:
    source:
      upload: {}
    storage:${storage_class:+
      storageClassName: $storage_class}
      resources:
        requests:
          storage: ${pvc_gib}Gi
  YAML
  virtctl image-upload dv $name --namespace $namespace --no-create --image-path $output

Then: every pool's controlPlane and workers diskSize at least ${pvc_gib}Gi; no running VM
uses the PVC while pools clone it; check it as docs/golden-image.md ('Checking an image') says.
EOF
