#!/usr/bin/env bash
# Runs as PID-1's child inside the kube-lvs test VM (started by vm-run.sh): prepares the
# kernel (IPVS and friends), loopback and the optional API-server NIC, then runs the
# command file given as $1 and exits with its status.
set -uo pipefail

cmd_file=${1:?usage: vm-init.sh <command-file>}
env_file="$(dirname "$cmd_file")/env.sh"
if [[ -r "$env_file" ]]; then
    # shellcheck source=/dev/null
    . "$env_file"
fi
boot_started=$(cut -d' ' -f1 /proc/uptime)

# Modules are best effort: a missing optional one must not hide the command's own result,
# but a missing ip_vs is fatal because every VM test depends on it.
required=(ip_vs veth bridge dummy nf_conntrack nf_tables)
optional=(ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_dh ip_vs_sh
    ip_vs_sed ip_vs_nq ip_vs_fo ip_vs_ovf ip_vs_mh ip_vs_ftp
    ipip ip_gre gre fou fou6 ip6_tunnel tunnel4 tunnel6 tun sit
    nft_nat nft_chain_nat nft_ct nft_masq nft_redir nft_reject nft_reject_inet nft_fib nft_fib_inet
    nft_compat nft_counter nft_limit nft_log nf_nat nfnetlink nfnetlink_queue
    xt_conntrack xt_mark xt_MASQUERADE 8021q macvlan ipv6 af_packet)
# One modprobe per list: under software emulation each modprobe process costs ~0.7 s, a single
# `modprobe -a` for the whole list about 1 s. `-a` keeps going past modules this kernel lacks.
modprobe -a "${required[@]}" 2>/dev/null
for m in "${required[@]}"; do
    if [[ ! -d /sys/module/$m ]]; then
        echo "vm-init: FATAL: module $m could not be loaded" >&2
        exit 120
    fi
done
modprobe -a -q "${optional[@]}" 2>/dev/null || true
# Root namespace only (IPVS sysctls are per namespace): lets NAT tests run straight in the VM.
sysctl -qw net.ipv4.vs.conntrack=1 2>/dev/null || true

ip link set lo up

if [[ -n "${KUBE_LVS_VM_APISERVER_PORT:-}" ]]; then
    modprobe virtio_net 2>/dev/null || true
    nic=""
    for dev in /sys/class/net/*; do
        name=$(basename "$dev")
        drv=$(basename "$(readlink -f "$dev/device/driver" 2>/dev/null)" 2>/dev/null || true)
        if [[ "$name" != lo && "$drv" == virtio_net ]]; then nic=$name; break; fi
    done
    if [[ -z "$nic" ]]; then
        echo "vm-init: FATAL: no virtio_net NIC for the API server" >&2
        exit 121
    fi
    ip addr add 198.51.100.15/24 dev "$nic"
    ip link set "$nic" up
    export KUBE_LVS_VM_NIC=$nic
    export KUBE_LVS_VM_APISERVER=https://198.51.100.2:6443
fi

export KUBE_LVS_IN_VM=1
if [[ -n "${KUBE_LVS_VM_TIMING:-}" ]]; then
    echo "vm-init: kernel up at ${boot_started}s, init step done at $(cut -d' ' -f1 /proc/uptime)s" >&2
fi
bash "$cmd_file"
exit $?
