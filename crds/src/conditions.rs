//! Condition types and reasons used in lvstun status, and a pure helper that updates a condition
//! list the way `metav1.Condition` semantics require (transition time moves only on a change of
//! status), so writers never produce spurious status churn.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// VirtualService: everything needed to serve traffic is in place.
pub const READY: &str = "Ready";
/// VirtualService: exactly one balancer holds the VIP.
pub const VIP_ACTIVE: &str = "VIPActive";
/// VirtualService: serving, but some real servers are unhealthy or not tunnel-ready, or a
/// balancer could not make a kernel setting lvstun wants (reason `KernelSettingRefused`).
pub const DEGRADED: &str = "Degraded";
/// VirtualService: another VirtualService already claims this VIP:port:protocol.
pub const CONFLICT: &str = "Conflict";
/// RealServer: passes health checks as seen by the active balancer.
pub const HEALTHY: &str = "Healthy";
/// RealServer: the web daemon on that host has prepared tunnel decapsulation and the VIPs.
pub const TUNNEL_READY: &str = "TunnelReady";
/// Reason of the `TunnelReady=Unknown` the operator writes on a RealServer without
/// `spec.nodeName`: no web daemon runs for a host outside the cluster, so nobody else could say
/// anything, and an absent condition would read as "not reported yet" forever. Named here so the
/// operator (writer) and anyone reading the condition agree on it.
pub const OUTSIDE_CLUSTER: &str = "OutsideCluster";
/// Reason of the `TunnelReady=Unknown` the operator writes on a RealServer whose
/// `spec.nodeName` names a node that runs no web daemon (it lacks the chart's web label, or no
/// such node exists): the condition its web daemon would write will never come, and the
/// message says which label to add (ADR 0007). Released to the web daemon once the node runs one.
pub const NO_WEB_DAEMON: &str = "NoWebDaemon";

/// Reason of the `Degraded=True` (and of the Warning Event) the operator writes on a
/// VirtualService when a balancer reports that IPVS services it had programmed were deleted by
/// another program (`status.balancers[].deletedExternally`): kube-proxy in IPVS mode does that
/// to every service whose address is not in its `ipvs.excludeCIDRs` (see [`crate::kube_proxy`]).
pub const IPVS_SERVICE_DELETED_EXTERNALLY: &str = "IPVSServiceDeletedExternally";

/// Reason of a RealServer left out of a VirtualService because its `spec.nodeName` is one of
/// that VirtualService's balancer nodes (ADR 0009): in `status.excludedRealServers[]`, in the
/// RealServer's `Healthy=Unknown` when every VirtualService selecting it leaves it out, and in
/// the web daemon's `TunnelReady=False` when it holds no VIP because of it.
pub const NODE_IS_BALANCER: &str = "NodeIsBalancer";
/// Reason of the `Degraded=True` (and of the Warning Event) on a VirtualService that left some
/// of its RealServers out because they run on its balancer nodes (see [`NODE_IS_BALANCER`]).
pub const REAL_SERVER_ON_BALANCER: &str = "RealServerOnBalancer";

/// Why a node cannot be a balancer and a real server of the same VIP, and what to do, for a
/// RealServer `rs` on `node` (ADR 0009). Shared by the operator's conditions and the web
/// daemon's `TunnelReady`, so both say the same.
pub fn node_is_balancer_message(rs: &str, node: &str) -> String {
    format!(
        "RealServer {rs} is on node {node}, which spec.balancers.nodeSelector also selects as a balancer, \
         so it is left out of this VIP: its web role would hold the VIP with ARP suppressed and \
         keep {node} from answering ARP for it as Master, and {node}'s IPVS would schedule again \
         what the other balancers tunnel to it; fix: name another node in the RealServer's \
         spec.nodeName, or keep {node} out of spec.balancers.nodeSelector (a label only the \
         balancer nodes carry, or a NotIn expression)"
    )
}

/// Set `new` in `conditions`, keeping the old `lastTransitionTime` when the status did not
/// change. Returns whether anything visible changed (status, reason, message, generation), so
/// callers can skip a no-op status write.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) => {
            let changed = old.status != new.status
                || old.reason != new.reason
                || old.message != new.message
                || old.observed_generation != new.observed_generation;
            if !changed {
                return false;
            }
            let keep_time = old.status == new.status;
            let last_transition_time: Time = if keep_time {
                old.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            *old = Condition {
                last_transition_time,
                ..new
            };
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn cond(status: &str, reason: &str, secs: i64) -> Condition {
        Condition {
            type_: READY.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::from_second(secs).unwrap()),
        }
    }

    #[test]
    fn adds_missing_condition() {
        let mut list = vec![];
        assert!(set_condition(&mut list, cond("True", "Serving", 10)));
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn same_status_and_reason_is_no_change() {
        let mut list = vec![cond("True", "Serving", 10)];
        assert!(!set_condition(&mut list, cond("True", "Serving", 20)));
        assert_eq!(
            list[0].last_transition_time,
            cond("True", "Serving", 10).last_transition_time
        );
    }

    #[test]
    fn reason_change_keeps_transition_time() {
        let mut list = vec![cond("True", "Serving", 10)];
        assert!(set_condition(&mut list, cond("True", "Other", 20)));
        assert_eq!(list[0].reason, "Other");
        assert_eq!(
            list[0].last_transition_time,
            cond("True", "x", 10).last_transition_time
        );
    }

    #[test]
    fn status_change_moves_transition_time() {
        let mut list = vec![cond("True", "Serving", 10)];
        assert!(set_condition(
            &mut list,
            cond("False", "NoHealthyServers", 20)
        ));
        assert_eq!(
            list[0].last_transition_time,
            cond("False", "x", 20).last_transition_time
        );
    }
}
