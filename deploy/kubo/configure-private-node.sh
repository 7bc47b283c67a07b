#!/usr/bin/env bash
# Make a kubo (go-ipfs) repository a node of the federation's private IPFS network: its RPC API on
# 127.0.0.1 only (the API can pin and delete anything: never expose it), a swarm key shared by the
# federation's nodes only, no public bootstrap peers, nothing that calls out to public services.
#
#   deploy/kubo/configure-private-node.sh --generate-swarm-key > swarm.key     once per federation
#   sudo -u ipfs IPFS_PATH=/var/lib/ipfs deploy/kubo/configure-private-node.sh --swarm-key swarm.key \
#       [--bootstrap /ip4/192.0.2.10/tcp/4001/p2p/12D3KooW...]...
#
# Idempotent. Run the daemon with LIBP2P_FORCE_PNET=1 (deploy/kubo/ipfs.service does), so that it refuses
# to start at all without the swarm key instead of joining the public network.
set -euo pipefail

swarm_key=""
bootstrap=()

generate_swarm_key() {
  # kubo's pre-shared key format: a header, the encoding, then 32 random bytes in hex.
  printf '/key/swarm/psk/1.0.0/\n/base16/\n%s\n' "$(od -vN 32 -An -tx1 /dev/urandom | tr -d ' \n')"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --generate-swarm-key) generate_swarm_key; exit 0 ;;
    --swarm-key) swarm_key="${2:?--swarm-key needs a file}"; shift 2 ;;
    --bootstrap) bootstrap+=("${2:?--bootstrap needs a multiaddress}"); shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "configure-private-node.sh: unknown option $1" >&2; exit 64 ;;
  esac
done

[ -n "$swarm_key" ] || { echo "configure-private-node.sh: --swarm-key FILE is required" >&2; exit 64; }
command -v ipfs >/dev/null || { echo "configure-private-node.sh: kubo's ipfs is not on PATH" >&2; exit 69; }
repository="${IPFS_PATH:-$HOME/.ipfs}"

if [ ! -f "$repository/config" ]; then
  ipfs init --empty-repo
fi
install -m 600 "$swarm_key" "$repository/swarm.key"

# The RPC API (layerfed's store.address) and the gateway on loopback only.
ipfs config Addresses.API /ip4/127.0.0.1/tcp/5001
ipfs config Addresses.Gateway /ip4/127.0.0.1/tcp/8080

# Only the federation's own peers.
ipfs bootstrap rm --all >/dev/null
for address in "${bootstrap[@]}"; do
  ipfs bootstrap add "$address" >/dev/null
done
ipfs config Routing.Type dht
# kubo 0.37 and newer fetch bootstrap peers, routers and DNS resolvers from a public URL (AutoConf) and
# obtain a public TLS certificate (AutoTLS); a private network wants none of it. Older kubo lacks these
# keys, hence `|| true`.
ipfs config --json AutoConf.Enabled false 2>/dev/null || true
ipfs config --json AutoTLS.Enabled false 2>/dev/null || true
ipfs config --json Routing.DelegatedRouters '[]' 2>/dev/null || true
ipfs config --json Ipns.DelegatedPublishers '[]' 2>/dev/null || true
ipfs config --json DNS.Resolvers '{}' 2>/dev/null || true

echo "private node configured in $repository; peers bootstrap to it with:"
echo "  /ip4/<this host's address>/tcp/4001/p2p/$(ipfs config Identity.PeerID)"
