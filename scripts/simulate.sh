#!/usr/bin/env bash
# Run a federated simulation with `flwr run .` on Flower's Ray backend, then stop the local SuperLink
# that `flwr run` leaves in the background, so later runs and tests start from a clean slate.
#
# Usage: scripts/simulate.sh [EXPERIMENT_YAML] [NUM_SUPERNODES] [extra flwr run args...]
# Results: runs/federated/<timestamp>/ (report.md, rounds.csv, sites.csv, plots/, checkpoints/).
set -euo pipefail
cd "$(dirname "$0")/.."
experiment="${1:-configs/federated_demo.yaml}"
supernodes="${2:-3}"
shift $(( $# > 2 ? 2 : $# )) || true
bin="$(cd "${VENV:-.venv}/bin" && pwd)"
# `flwr run` starts `flower-superlink` by name: it must come from this environment.
export PATH="$bin:$PATH"
export FLWR_HOME="${FLWR_HOME:-$PWD/.flwr}"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 FLWR_TELEMETRY_ENABLED=0
run_name="$(date +%Y%m%d-%H%M%S)"
out="${MTMEDFORMER_RUNS:-$PWD/runs/federated}"  # results root (tests point it elsewhere)
site_state="${MTMEDFORMER_SITE_STATE:-$(dirname "$out")/site-state}"  # the simulated sites' own state
database="$FLWR_HOME/local-superlink/state.db"

stop_local_superlink() {
  # Only the SuperLink that uses this FLWR_HOME's database: never someone else's. Wait until it has exited
  # (at most 15 s), so its ports are free when this script returns.
  local pattern="flower-superlink.*--database $database"
  pkill -f -- "$pattern" 2>/dev/null || return 0
  for _ in $(seq 30); do pgrep -f -- "$pattern" >/dev/null || return 0; sleep 0.5; done
  pkill -KILL -f -- "$pattern" 2>/dev/null || true
}
trap stop_local_superlink EXIT
stop_local_superlink  # a stale one from an earlier, interrupted run may hold the ports
# A local SuperLink started from another FLWR_HOME (another checkout, a manual `flwr run`) holds the same
# ports, and `flwr run` would silently submit to it, running that environment's code. Refuse instead.
if other=$(pgrep -af "flower-superlink.*--simulation" | grep -v -- "--database $database"); then
  echo "Another local Flower SuperLink is running and holds ports 39091/39093:" >&2
  echo "$other" >&2
  echo "Stop it (kill <pid>) or run with the FLWR_HOME it uses, then try again." >&2
  exit 1
fi

"$bin/flwr" run . --stream \
  --federation-config "num-supernodes=$supernodes client-resources-num-cpus=1" \
  --run-config "experiment='$experiment' output-dir='$out' run-name='$run_name' site-state-dir='$site_state'" "$@"

if [ -f "$out/$run_name/report.md" ]; then
  echo
  echo "Federated run finished. Results: $out/$run_name"
  echo "Report: $out/$run_name/report.md   (plots in $out/$run_name/plots/)"
else
  echo "The run did not produce a report; see the log above and $FLWR_HOME/local-superlink/superlink.log" >&2
  exit 1
fi
