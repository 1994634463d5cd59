#!/usr/bin/env bash
# Server operator: register SuperNode public keys with a running SuperLink (run on any machine
# whose `flwr` connection reaches the SuperLink's Control API).
#
# Usage:
#   scripts/register_supernodes.sh CONNECTION PUBLIC_KEY [PUBLIC_KEY...]
# CONNECTION: a [superlink.<name>] entry of $FLWR_HOME/config.toml (default FLWR_HOME: ~/.flwr).
# PUBLIC_KEY: a site's <site>.pub from scripts/make_supernode_keys.sh; the SuperNode is
#             registered under the file's base name (--name <site>).
# Prints each key's node id; lists the SuperNodes at the end (`flwr supernode list CONNECTION`).
set -euo pipefail

if [[ $# -lt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]] && exit 0 || exit 2
fi
connection="$1"; shift
flwr_bin="${FLWR_BIN:-flwr}"
command -v "$flwr_bin" >/dev/null || {
  echo "error: '$flwr_bin' not found; activate the project's environment (.venv/bin) or set FLWR_BIN" >&2; exit 1; }

for pub in "$@"; do
  [[ -f "$pub" ]] || { echo "error: public key file '$pub' not found" >&2; exit 1; }
  site="$(basename "$pub" .pub)"
  "$flwr_bin" supernode register "$pub" "$connection" --name "$site"
done
"$flwr_bin" supernode list "$connection"
