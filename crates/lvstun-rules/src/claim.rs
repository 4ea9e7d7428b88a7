//! Who keeps a contested claim. A VirtualService claims VIP:port:protocol pairs (the operator
//! names them with [`ClaimKey`], a balancer with the IPVS service key it would program); when
//! two claim the same pair, the senior one keeps all of its claims and the other claims nothing
//! (a VirtualService is never half-programmed), so a third, newer one is only ever blocked by
//! an owner, never by another loser.
//!
//! Seniority: older creation time first, then namespace/name, so ties (the same second) are
//! decided the same way by everyone. An object without a creation time (a standalone file,
//! never an object read from the API) counts as newest. Objects being deleted claim nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use lvstun_crds::v1alpha1::{Protocol, VirtualService};

use crate::ObjectKey;

/// One VIP:port:protocol that a VirtualService wants to serve, as written in its spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimKey {
    /// The VIP as written (the schema already refuses anything but a canonical dotted quad).
    pub vip: String,
    /// The port.
    pub port: i32,
    /// The protocol.
    pub protocol: Protocol,
}

impl ClaimKey {
    fn sort_key(&self) -> (&str, i32, u8) {
        let proto = match self.protocol {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
        };
        (&self.vip, self.port, proto)
    }
}

impl PartialOrd for ClaimKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ClaimKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        };
        write!(f, "{}:{}/{}", self.vip, self.port, proto)
    }
}

/// The VIP:port:protocol pairs a VirtualService asks for, in [`ClaimKey`] order.
pub fn claim_keys(vs: &VirtualService) -> BTreeSet<ClaimKey> {
    vs.spec
        .ports
        .iter()
        .map(|p| ClaimKey {
            vip: vs.spec.vip.clone(),
            port: p.port,
            protocol: p.protocol,
        })
        .collect()
}

/// The seniority of an object: the smaller, the more senior (see the module comment).
pub fn seniority(meta: &ObjectMeta) -> (Timestamp, ObjectKey) {
    let created = meta
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::MAX, |t| t.0);
    (created, ObjectKey::of(meta))
}

/// Sort VirtualServices most senior first.
pub fn oldest_first(list: &mut [&VirtualService]) {
    list.sort_by_key(|vs| seniority(&vs.metadata));
}

/// The owners of claims so far: each key with the object that keeps it.
#[derive(Debug, Clone)]
pub struct Claims<K> {
    owners: BTreeMap<K, ObjectKey>,
}

impl<K> Default for Claims<K> {
    fn default() -> Self {
        Claims {
            owners: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Claims<K> {
    /// `who` claims every one of `keys`, all or nothing: when one is owned already, the first
    /// such key (in the order given) and its owner come back, and nothing is claimed.
    pub fn claim(&mut self, who: &ObjectKey, keys: &[K]) -> Result<(), (K, ObjectKey)> {
        if let Some(taken) = keys
            .iter()
            .find_map(|k| self.owners.get(k).map(|o| (k.clone(), o.clone())))
        {
            return Err(taken);
        }
        for k in keys {
            self.owners.insert(k.clone(), who.clone());
        }
        Ok(())
    }
}

/// What [`resolve`] decided for one VirtualService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T, K, E> {
    /// It owns every key it claimed; `T` is what the judge made of it.
    Owner(T),
    /// A more senior VirtualService owns `key`; it claims nothing.
    Conflict {
        /// The first contested key, in the order the judge listed its claims.
        key: K,
        /// The VirtualService that keeps it.
        owner: ObjectKey,
    },
    /// The judge refused it, for reason `E`; it claims nothing.
    Refused(E),
}

/// One VirtualService and what [`resolve`] decided for it.
#[derive(Debug, Clone)]
pub struct Resolved<'a, T, K, E> {
    /// The object.
    pub object: &'a VirtualService,
    /// Its key.
    pub key: ObjectKey,
    /// The decision.
    pub outcome: Outcome<T, K, E>,
}

/// Decide every VirtualService's claims. Objects being deleted are left out; the rest are
/// taken most senior first, and `judge` says of each what it claims (`Ok((made, keys))`, keys in
/// the order a contested one is looked for) or why it claims nothing (`Err`). The result is in
/// seniority order.
pub fn resolve<'a, T, K, E>(
    all: impl IntoIterator<Item = &'a VirtualService>,
    mut judge: impl FnMut(&'a VirtualService) -> Result<(T, Vec<K>), E>,
) -> Vec<Resolved<'a, T, K, E>>
where
    K: Ord + Clone,
{
    let mut ordered: Vec<&VirtualService> = all
        .into_iter()
        .filter(|vs| vs.metadata.deletion_timestamp.is_none())
        .collect();
    oldest_first(&mut ordered);
    let mut claims = Claims::default();
    ordered
        .into_iter()
        .map(|vs| {
            let key = ObjectKey::of(&vs.metadata);
            let outcome = match judge(vs) {
                Err(why) => Outcome::Refused(why),
                Ok((made, keys)) => match claims.claim(&key, &keys) {
                    Ok(()) => Outcome::Owner(made),
                    Err((key, owner)) => Outcome::Conflict { key, owner },
                },
            };
            Resolved {
                object: vs,
                key,
                outcome,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const TCP: Protocol = Protocol::Tcp;
    const UDP: Protocol = Protocol::Udp;

    /// What a test VirtualService is: namespace/name, creation second (`None`: no creation
    /// time), VIP, ports.
    struct Obj {
        ns: &'static str,
        name: &'static str,
        created: Option<i64>,
        vip: &'static str,
        ports: &'static [(i32, Protocol)],
        deleting: bool,
        refused: bool,
    }

    const fn obj(
        ns: &'static str,
        name: &'static str,
        created: i64,
        vip: &'static str,
        ports: &'static [(i32, Protocol)],
    ) -> Obj {
        Obj {
            ns,
            name,
            created: Some(created),
            vip,
            ports,
            deleting: false,
            refused: false,
        }
    }

    fn build(o: &Obj) -> VirtualService {
        let ports: Vec<serde_json::Value> = o
            .ports
            .iter()
            .map(|(port, protocol)| {
                let protocol = match protocol {
                    Protocol::Tcp => "TCP",
                    Protocol::Udp => "UDP",
                };
                serde_json::json!({ "port": port, "protocol": protocol })
            })
            .collect();
        let mut vs: VirtualService = serde_json::from_value(serde_json::json!({
            "apiVersion": "lvstun.io/v1alpha1",
            "kind": "VirtualService",
            "metadata": { "namespace": o.ns, "name": o.name },
            "spec": {
                "vip": o.vip,
                "ports": ports,
                "realServerSelector": {},
                "balancers": { "nodeSelector": {}, "virtualRouterID": 51 },
            },
        }))
        .unwrap();
        let at = |s: i64| Time(Timestamp::from_second(s).unwrap());
        vs.metadata.creation_timestamp = o.created.map(at);
        if o.deleting {
            vs.metadata.deletion_timestamp = Some(at(1000));
        }
        vs
    }

    /// The expected outcome of one object, by name (all test objects of a case share a
    /// namespace unless the case is about namespaces).
    #[derive(Debug, PartialEq, Eq)]
    enum Expect {
        Owner,
        Conflict {
            port: i32,
            protocol: Protocol,
            owner: &'static str,
        },
        Refused,
        /// Left out: being deleted.
        Absent,
    }

    struct Case {
        name: &'static str,
        objects: Vec<Obj>,
        expect: &'static [(&'static str, Expect)],
    }

    fn cases() -> Vec<Case> {
        use Expect::*;
        vec![
            Case {
                name: "the older keeps the VIP:port, the newer names the owner",
                objects: vec![
                    obj("ns", "b", 200, "192.0.2.100", &[(80, TCP)]),
                    obj("ns", "a", 100, "192.0.2.100", &[(80, TCP)]),
                ],
                expect: &[
                    ("a", Owner),
                    (
                        "b",
                        Conflict {
                            port: 80,
                            protocol: TCP,
                            owner: "a",
                        },
                    ),
                ],
            },
            Case {
                name: "the same second is decided by namespace then name",
                objects: vec![
                    obj("ns", "b", 100, "192.0.2.1", &[(80, TCP)]),
                    obj("ns", "a", 100, "192.0.2.1", &[(80, TCP)]),
                ],
                expect: &[
                    ("a", Owner),
                    (
                        "b",
                        Conflict {
                            port: 80,
                            protocol: TCP,
                            owner: "a",
                        },
                    ),
                ],
            },
            Case {
                name: "another port, protocol or VIP does not conflict",
                objects: vec![
                    obj("ns", "a", 1, "192.0.2.1", &[(80, TCP)]),
                    obj("ns", "b", 2, "192.0.2.1", &[(443, TCP)]),
                    obj("ns", "c", 3, "192.0.2.1", &[(80, UDP)]),
                    obj("ns", "d", 4, "192.0.2.2", &[(80, TCP)]),
                ],
                expect: &[("a", Owner), ("b", Owner), ("c", Owner), ("d", Owner)],
            },
            Case {
                name: "a loser blocks nobody",
                objects: vec![
                    obj("ns", "c", 3, "192.0.2.1", &[(443, TCP)]),
                    obj("ns", "b", 2, "192.0.2.1", &[(80, TCP), (443, TCP)]),
                    obj("ns", "a", 1, "192.0.2.1", &[(80, TCP)]),
                ],
                expect: &[
                    ("a", Owner),
                    (
                        "b",
                        Conflict {
                            port: 80,
                            protocol: TCP,
                            owner: "a",
                        },
                    ),
                    ("c", Owner),
                ],
            },
            Case {
                name: "the first contested claim is named",
                objects: vec![
                    obj("ns", "a", 1, "192.0.2.1", &[(443, TCP), (80, UDP)]),
                    obj(
                        "ns",
                        "b",
                        2,
                        "192.0.2.1",
                        &[(80, TCP), (80, UDP), (443, TCP)],
                    ),
                ],
                expect: &[
                    ("a", Owner),
                    (
                        "b",
                        Conflict {
                            port: 80,
                            protocol: UDP,
                            owner: "a",
                        },
                    ),
                ],
            },
            Case {
                name: "deleting the owner hands the claim to the next oldest",
                objects: vec![
                    Obj {
                        deleting: true,
                        ..obj("ns", "a", 1, "192.0.2.1", &[(80, TCP)])
                    },
                    obj("ns", "b", 2, "192.0.2.1", &[(80, TCP)]),
                ],
                expect: &[("a", Absent), ("b", Owner)],
            },
            Case {
                name: "a refused object claims nothing",
                objects: vec![
                    Obj {
                        refused: true,
                        ..obj("ns", "a", 1, "192.0.2.1", &[(80, TCP)])
                    },
                    obj("ns", "b", 2, "192.0.2.1", &[(80, TCP)]),
                ],
                expect: &[("a", Refused), ("b", Owner)],
            },
            Case {
                name: "no creation time counts as newest",
                objects: vec![
                    Obj {
                        created: None,
                        ..obj("ns", "a", 0, "192.0.2.1", &[(80, TCP)])
                    },
                    obj("ns", "b", 2, "192.0.2.1", &[(80, TCP)]),
                ],
                expect: &[
                    (
                        "a",
                        Conflict {
                            port: 80,
                            protocol: TCP,
                            owner: "b",
                        },
                    ),
                    ("b", Owner),
                ],
            },
        ]
    }

    #[test]
    fn resolution() {
        for case in cases() {
            let built: Vec<VirtualService> = case.objects.iter().map(build).collect();
            let refused: BTreeSet<&str> = case
                .objects
                .iter()
                .filter(|o| o.refused)
                .map(|o| o.name)
                .collect();
            let resolved = resolve(&built, |vs| {
                if refused.contains(vs.metadata.name.as_deref().unwrap_or_default()) {
                    Err(())
                } else {
                    Ok(((), claim_keys(vs).into_iter().collect()))
                }
            });
            let order: Vec<&str> = resolved.iter().map(|r| r.key.name.as_str()).collect();
            let mut sorted = order.clone();
            sorted.sort_by_key(|n| {
                let o = case.objects.iter().find(|o| o.name == *n).unwrap();
                (o.created.unwrap_or(i64::MAX), o.ns, o.name)
            });
            assert_eq!(order, sorted, "{}: most senior first", case.name);
            for (name, want) in case.expect {
                let got = match resolved.iter().find(|r| r.key.name == *name) {
                    None => Expect::Absent,
                    Some(r) => match &r.outcome {
                        Outcome::Owner(()) => Expect::Owner,
                        Outcome::Refused(()) => Expect::Refused,
                        Outcome::Conflict { key, owner } => {
                            assert_eq!(key.vip, r.object.spec.vip, "{}", case.name);
                            Expect::Conflict {
                                port: key.port,
                                protocol: key.protocol,
                                owner: case
                                    .objects
                                    .iter()
                                    .find(|o| o.name == owner.name)
                                    .unwrap()
                                    .name,
                            }
                        }
                    },
                };
                assert_eq!(&got, want, "{}: {name}", case.name);
            }
        }
    }

    #[test]
    fn claim_keys_read_as_vip_port_protocol() {
        let key = ClaimKey {
            vip: "192.0.2.100".into(),
            port: 80,
            protocol: TCP,
        };
        assert_eq!(key.to_string(), "192.0.2.100:80/TCP");
        assert_eq!(ObjectKey::new("ns", "www").to_string(), "ns/www");
    }
}
