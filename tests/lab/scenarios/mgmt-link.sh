#!/usr/bin/env bash
# The management link from the guest to the host (run-guest.sh --mgmt-port PORT): the path the
# product's daemons in the lab will take to reach a control plane running on the host.
#   - the guest's root namespace reaches the host's 127.0.0.1:PORT at
#     http://203.0.113.100:$LAB_MGMT_GUEST_PORT/ (qemu guestfwd, user networking restrict=on);
#   - the user network's host address 203.0.113.2 stays unreachable (restrict=on);
#   - a namespace reaches the same service at 127.0.0.1:$LAB_MGMT_GUEST_PORT through
#     lab_mgmt_expose, with no interface or route toward the host.
# Artifacts: mgmt-root.txt, mgmt-ns.txt (the host's answers), mgmt-blocked.txt (curl's error).
# results.txt: host_address_reachable=yes|no.
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

lab_mgmt_up
url="http://203.0.113.100:$LAB_MGMT_GUEST_PORT/"
lab_artifact mgmt-root.txt curl -sS --max-time 30 --connect-timeout 20 "$url"

if curl -sS --max-time 6 --connect-timeout 5 "http://203.0.113.2:$LAB_MGMT_GUEST_PORT/" \
  >"$LAB_OUT/mgmt-blocked.txt" 2>&1; then
  lab_result host_address_reachable yes
else
  lab_result host_address_reachable no
fi

ip netns add client
ip -n client link set lo up
lab_mgmt_expose client
lab_wait_tcp client 127.0.0.1 "$LAB_MGMT_GUEST_PORT" 20
lab_artifact mgmt-ns.txt lab_exec client curl -sS --max-time 30 --connect-timeout 20 \
  "http://127.0.0.1:$LAB_MGMT_GUEST_PORT/"
lab_log "done"
