#!/usr/bin/env bash
# Create a private certificate authority (CA) and a SuperLink server certificate signed by it.
#
# The SuperLink serves its Fleet, Control and Runtime APIs over one TLS port; SuperNodes and the
# `flwr` CLI verify the server certificate against ca.crt, so the certificate must name every host
# name or IP address they dial (subjectAltName). localhost, 127.0.0.1 and ::1 are always included
# (the SuperLink's own SuperExec connects to 127.0.0.1 and stops the SuperLink if that fails);
# add the server's DNS name / public IP with --host (repeatable).
#
# Usage:
#   scripts/make_certificates.sh [--out DIR] [--host NAME_OR_IP]... [--days N] [--force]
#
# Writes to DIR (default: certificates/):
#   ca.crt      CA certificate: give it to every site (SuperNode --root-certificates) and to the
#               `flwr` CLI (root-certificates in $FLWR_HOME/config.toml). Public.
#   ca.key      CA private key: keep offline; only needed to issue new server certificates.
#   server.pem  SuperLink certificate (--ssl-certfile).
#   server.key  SuperLink private key (--ssl-keyfile). Secret; stays on the server.
# The SuperLink also takes ca.crt as --ssl-ca-certfile.
#
# Keys are ECDSA P-256 (fast to create, supported by gRPC, Python's ssl and every TLS 1.2+ client).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

out_dir="certificates"
days=365
force=0
hosts=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out_dir="${2:?--out needs a directory}"; shift 2 ;;
    --host) hosts+=("${2:?--host needs a host name or IP address}"); shift 2 ;;
    --days) days="${2:?--days needs a number}"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ "$days" =~ ^[0-9]+$ ]] || [[ "$days" -lt 1 ]]; then
  echo "error: --days must be a positive integer, got '$days'" >&2; exit 2
fi
command -v openssl >/dev/null || { echo "error: openssl not found; install it (apt-get install openssl)" >&2; exit 1; }

mkdir -p "$out_dir"
for f in ca.crt ca.key server.pem server.key; do
  if [[ -e "$out_dir/$f" && "$force" -ne 1 ]]; then
    echo "error: $out_dir/$f exists; pass --force to overwrite (sites must then receive the new ca.crt)" >&2
    exit 1
  fi
done

# subjectAltName: DNS entries for names, IP entries for IPv4/IPv6 literals.
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for h in ${hosts[@]+"${hosts[@]}"}; do  # (this form also works with an empty array in bash 3.2)
  if [[ "$h" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || "$h" == *:* ]]; then
    san+=",IP:$h"
  elif [[ "$h" =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
    san+=",DNS:$h"
  else
    echo "error: --host '$h' is neither a DNS name nor an IP address" >&2; exit 2
  fi
done
cn="${hosts[0]:-localhost}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umask 077  # private keys readable by the owner only

openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca.key"
openssl req -x509 -new -key "$work/ca.key" -sha256 -days "$days" \
  -subj "/O=MTMedFormer-FL/CN=MTMedFormer-FL federation CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$work/ca.crt"

openssl ecparam -name prime256v1 -genkey -noout -out "$work/server.key"
openssl req -new -key "$work/server.key" -subj "/O=MTMedFormer-FL/CN=$cn" -out "$work/server.csr"
cat > "$work/server.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
EXT
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
  -days "$days" -sha256 -extfile "$work/server.ext" -out "$work/server.pem" 2>/dev/null
openssl verify -CAfile "$work/ca.crt" "$work/server.pem" >/dev/null

# Certificates are public; keys stay 0600.
chmod 644 "$work/ca.crt" "$work/server.pem"
mv -f "$work/ca.crt" "$work/ca.key" "$work/server.pem" "$work/server.key" "$out_dir/"
echo "wrote $out_dir/{ca.crt,ca.key,server.pem,server.key}; server certificate names: $san"
