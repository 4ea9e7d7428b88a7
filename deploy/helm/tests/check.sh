#!/usr/bin/env bash
# Checks the lvstun Helm chart without a cluster:
#   1. `helm lint --strict` (warnings count as failures);
#   2. `helm template` with the default values (whose Roles and ClusterRoles must hold no
#      wildcard, Secrets, pods/exec, impersonate, escalate or bind), and with each
#      good-values/*.yaml;
#   3. each bad-values/*.yaml must be refused, and the error must contain the substring given on
#      the file's first line as "# expect: <substring>".
# Exits non-zero if any result is not the expected one. Prints one line per case.
#
# Helm: $HELM if set, else ${LVSTUN_CACHE:-~/.cache/lvstun}/bin/current/helm.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CHART="$(cd "$HERE/../lvstun" && pwd)"
HELM="${HELM:-${LVSTUN_CACHE:-$HOME/.cache/lvstun}/bin/current/helm}"

if [[ ! -x "$HELM" ]]; then
  echo "check: no helm at $HELM; run tests/controlplane/build.sh or set HELM=/path/to/helm" >&2
  exit 2
fi

HELM_HOME="$(mktemp -d)"
trap 'rm -rf "$HELM_HOME"' EXIT
export HELM_CONFIG_HOME="$HELM_HOME/config" HELM_CACHE_HOME="$HELM_HOME/cache" HELM_DATA_HOME="$HELM_HOME/data"
unset HELM_NAMESPACE HELM_KUBECONTEXT HELM_DEBUG

failures=0
pass() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; failures=$((failures + 1)); }
indent() { sed 's/^/        /'; }

# 1. lint
if out="$("$HELM" lint --strict "$CHART" 2>&1)"; then
  pass "helm lint --strict"
else
  fail "helm lint --strict"; echo "$out" | indent
fi

# 2. renders that must succeed
template() { "$HELM" template lvstun "$CHART" --namespace lvstun-system "$@" 2>&1; }
if out="$(template)"; then
  pass "helm template (defaults)"
  # Least privilege: no wildcard, no Secrets, no exec/attach into pods, no impersonation.
  forbidden='(^|[][",[:space:]])(\*|secrets|pods/exec|pods/attach|pods/portforward|impersonate|escalate|bind)($|[][",[:space:]])'
  # Only the Roles and ClusterRoles grant anything (the VIPPolicy's namespaces may be "*").
  rbac="$(awk '/^---/ { if (doc ~ /\nkind: (Cluster)?Role\n/) printf "%s", doc; doc = ""; next }
               { doc = doc "\n" $0 }
               END { if (doc ~ /\nkind: (Cluster)?Role\n/) printf "%s", doc }' <<<"$out")"
  if [[ "$rbac" != *"kind: ClusterRole"* ]]; then
    fail "no ClusterRole found in the rendered chart"
  elif bad="$(grep -vE '^[[:space:]]*#' <<<"$rbac" | grep -nE "$forbidden")"; then
    fail "rendered RBAC grants something it must not:"; echo "$bad" | indent
  else
    pass "rendered RBAC: no wildcards, secrets, pods/exec, impersonate, escalate, bind"
  fi
  # The address pools are the cluster admin's alone: the chart's roles may only read them (the
  # operator, to say which stored VirtualServices lie outside them), never write.
  pools="$(grep -vE '^[[:space:]]*#' <<<"$rbac" | grep -A1 'vippolicies')"
  if [[ -z "$pools" ]]; then
    fail "rendered RBAC: the operator cannot read vippolicies"
  elif bad="$(grep -E 'verbs:' <<<"$pools" | grep -vxE '[[:space:]]*verbs: \["get", "list", "watch"\]')"; then
    fail "rendered RBAC grants more than reading vippolicies (the admin's address pools):"; echo "$bad" | indent
  else
    pass "rendered RBAC: vippolicies read only"
  fi
else
  fail "helm template (defaults)"; echo "$out" | indent
fi
for f in "$HERE"/good-values/*.yaml; do
  [[ -e "$f" ]] || continue
  name="good-values/$(basename "$f")"
  if out="$(template -f "$f")"; then
    pass "$name renders"
  else
    fail "$name was refused"; echo "$out" | indent
  fi
done

# 3. renders that must be refused with a given message
for f in "$HERE"/bad-values/*.yaml; do
  [[ -e "$f" ]] || continue
  name="bad-values/$(basename "$f")"
  expect="$(head -n 1 "$f" | sed -n 's/^# expect: //p')"
  if [[ -z "$expect" ]]; then
    fail "$name: first line must be '# expect: <error substring>'"
    continue
  fi
  if out="$(template -f "$f")"; then
    fail "$name was accepted; expected an error containing: $expect"
  elif [[ "$out" != *"$expect"* ]]; then
    fail "$name refused, but without: $expect"; echo "$out" | indent
  else
    pass "$name refused: $(grep -F -m 1 -- "$expect" <<<"$out" | sed 's/^[[:space:]]*//')"
  fi
done

if ((failures)); then
  echo "check: $failures failure(s)"
  exit 1
fi
echo "check: all passed"
