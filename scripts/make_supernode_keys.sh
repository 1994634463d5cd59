#!/usr/bin/env bash
# Create one SuperNode authentication key pair per site (Flower 1.42 SuperNode authentication).
#
# Each key pair is an ECDSA P-384 key in OpenSSH format (NIST curve, as `flwr supernode register`
# requires):
#   DIR/<site>      private key: stays at the site; the SuperNode reads it with
#                   --auth-supernode-private-key DIR/<site>. Secret (mode 0600).
#   DIR/<site>.pub  public key: sent to the server operator, who registers it with
#                   flwr supernode register DIR/<site>.pub <connection> --name <site>
#                   (scripts/register_supernodes.sh does this for a whole folder).
# A SuperLink started with --enable-supernode-auth only lets registered public keys connect.
#
# Usage:
#   scripts/make_supernode_keys.sh [--out DIR] [--force] SITE [SITE...]
# SITE: a name made of letters, digits, '.', '_' and '-' (e.g. hospital-a). DIR defaults to keys/.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

out_dir="keys"
force=0
sites=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out_dir="${2:?--out needs a directory}"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "error: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) sites+=("$1"); shift ;;
  esac
done
if [[ ${#sites[@]} -eq 0 ]]; then
  echo "error: name at least one site, e.g. scripts/make_supernode_keys.sh hospital-a hospital-b" >&2
  exit 2
fi
command -v ssh-keygen >/dev/null || {
  echo "error: ssh-keygen not found; install it (apt-get install openssh-client)" >&2; exit 1; }

# Check every name before writing anything, so a bad name leaves no half-made set behind.
for site in "${sites[@]}"; do
  if ! [[ "$site" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
    echo "error: site name '$site' may only contain letters, digits, '.', '_' and '-'" >&2; exit 2
  fi
  if [[ ( -e "$out_dir/$site" || -e "$out_dir/$site.pub" ) && "$force" -ne 1 ]]; then
    echo "error: $out_dir/$site exists; pass --force to replace it (the old public key must then be unregistered)" >&2
    exit 1
  fi
done

mkdir -p "$out_dir"
for site in "${sites[@]}"; do
  key="$out_dir/$site"
  rm -f "$key" "$key.pub"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "$site" -f "$key"
  chmod 600 "$key"
  chmod 644 "$key.pub"
  echo "wrote $key (private, keep at the site) and $key.pub (public, send to the server operator)"
done

cat <<MSG

Server operator, register each public key (the flwr connection must point at the SuperLink):
MSG
for site in "${sites[@]}"; do
  echo "  flwr supernode register $out_dir/$site.pub <connection> --name $site"
done
echo "Site operator: start the SuperNode with --auth-supernode-private-key $out_dir/<site>."
