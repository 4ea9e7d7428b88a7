//! A whole IPVS table without counters ([`Table`], its [`ServiceEntry`]s), and applying an
//! [`Op`] to it with the kernel's semantics and errnos. Pure data, no I/O.

use std::collections::{BTreeMap, VecDeque};

use super::dest::{DestConfig, DestKey};
use super::op::Op;
use super::service::{ServiceConfig, ServiceKey};
use crate::error::Errno;

/// A service's configuration and destinations, as held in a [`Table`].
///
/// Two entries are equal when their configuration and destinations are: the list order is an
/// observation about one kernel, not part of what is wanted.
#[derive(Clone, Debug, Eq)]
pub struct ServiceEntry {
    /// The service's configuration.
    pub config: ServiceConfig,
    /// Its destinations.
    pub dests: BTreeMap<DestKey, DestConfig>,
    /// The kernel's destination list, first to last (the order a dump returns them), when this
    /// entry mirrors a kernel: read from one ([`Table::push_read_dest`]) or built by applying
    /// operations from empty ([`Table::apply`], which inserts new destinations at the head of
    /// the list as the kernel's `list_add_rcu` does). `None` for a wanted table, which has no
    /// order of its own. Hashing schedulers depend on it
    /// ([`Scheduler::follows_list_order`](super::Scheduler::follows_list_order)).
    pub order: Option<VecDeque<DestKey>>,
}

impl PartialEq for ServiceEntry {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.dests == other.dests
    }
}

/// A whole IPVS table without counters: what the kernel holds or what lvstun
/// wants it to hold. Ordered maps so that plans and printouts are
/// deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    services: BTreeMap<ServiceKey, ServiceEntry>,
}

impl Table {
    /// An empty table.
    pub fn new() -> Table {
        Table::default()
    }

    /// Adds or replaces a service's configuration, keeping its destinations.
    pub fn upsert_service(&mut self, key: ServiceKey, config: ServiceConfig) {
        self.services
            .entry(key)
            .and_modify(|entry| entry.config = config)
            .or_insert_with(|| ServiceEntry {
                config,
                dests: BTreeMap::new(),
                order: None,
            });
    }

    /// Adds a service read from the kernel: like [`Table::upsert_service`], but the entry
    /// records the kernel's list order from here on (its destinations follow through
    /// [`Table::push_read_dest`]).
    pub fn insert_read_service(&mut self, key: ServiceKey, config: ServiceConfig) {
        self.services.insert(
            key,
            ServiceEntry {
                config,
                dests: BTreeMap::new(),
                order: Some(VecDeque::new()),
            },
        );
    }

    /// Adds a destination read from the kernel, in the order the dump returned it: it goes at
    /// the tail of the service's recorded list order. `false` when the service is not in the
    /// table.
    pub fn push_read_dest(
        &mut self,
        service: &ServiceKey,
        dest: DestKey,
        config: DestConfig,
    ) -> bool {
        match self.services.get_mut(service) {
            Some(entry) => {
                if entry.dests.insert(dest, config).is_none() {
                    entry
                        .order
                        .get_or_insert_with(VecDeque::new)
                        .push_back(dest);
                }
                true
            }
            None => false,
        }
    }

    /// Adds or replaces a destination of an existing service; `false` when
    /// the service is not in the table.
    pub fn upsert_dest(&mut self, service: &ServiceKey, dest: DestKey, config: DestConfig) -> bool {
        match self.services.get_mut(service) {
            Some(entry) => {
                entry.dests.insert(dest, config);
                true
            }
            None => false,
        }
    }

    /// The entry of a service.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceEntry> {
        self.services.get(key)
    }

    /// All services in key order.
    pub fn services(&self) -> impl Iterator<Item = (&ServiceKey, &ServiceEntry)> {
        self.services.iter()
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether the table has no service.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Applies one operation with the kernel's semantics and errnos: adding
    /// what exists is `EEXIST`, touching a missing service is `ESRCH`, a
    /// missing destination `ENOENT`. The in-memory fake relies on this, and
    /// the balancer keeps its model of the kernel's table with it between
    /// full reads.
    pub fn apply(&mut self, op: &Op) -> Result<(), Errno> {
        match op {
            Op::NewService { key, config } => {
                if self.services.contains_key(key) {
                    return Err(Errno::EEXIST);
                }
                self.services.insert(
                    *key,
                    ServiceEntry {
                        config: *config,
                        dests: BTreeMap::new(),
                        order: Some(VecDeque::new()),
                    },
                );
            }
            Op::SetService { key, config } => {
                self.services.get_mut(key).ok_or(Errno::ESRCH)?.config = *config;
            }
            Op::DelService { key } => {
                self.services.remove(key).ok_or(Errno::ESRCH)?;
            }
            Op::NewDest {
                service,
                dest,
                config,
            } => {
                let entry = self.services.get_mut(service).ok_or(Errno::ESRCH)?;
                if entry.dests.contains_key(dest) {
                    return Err(Errno::EEXIST);
                }
                entry.dests.insert(*dest, *config);
                // The kernel's __ip_vs_update_dest: list_add_rcu, at the head.
                if let Some(order) = entry.order.as_mut() {
                    order.push_front(*dest);
                }
            }
            Op::SetDest {
                service,
                dest,
                config,
            } => {
                let entry = self.services.get_mut(service).ok_or(Errno::ESRCH)?;
                *entry.dests.get_mut(dest).ok_or(Errno::ENOENT)? = *config;
            }
            Op::DelDest { service, dest } => {
                let entry = self.services.get_mut(service).ok_or(Errno::ESRCH)?;
                entry.dests.remove(dest).ok_or(Errno::ENOENT)?;
                if let Some(order) = entry.order.as_mut() {
                    order.retain(|d| d != dest);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::addr::Protocol;
    use crate::model::dest::Weight;
    use crate::model::service::Scheduler;

    #[test]
    fn table_apply_uses_kernel_errnos() {
        let key = ServiceKey::Addr {
            address: "192.0.2.10".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
        };
        let dest = DestKey {
            address: "198.51.100.11".parse().unwrap(),
            port: 80,
        };
        let cfg = DestConfig::tunnel(Weight::new(1).unwrap());
        let mut t = Table::new();
        let new_dest = Op::NewDest {
            service: key,
            dest,
            config: cfg,
        };
        assert_eq!(t.apply(&new_dest), Err(Errno::ESRCH));
        let new_svc = Op::NewService {
            key,
            config: ServiceConfig::new(Scheduler::RR),
        };
        assert_eq!(t.apply(&new_svc), Ok(()));
        assert_eq!(t.apply(&new_svc), Err(Errno::EEXIST));
        assert_eq!(t.apply(&new_dest), Ok(()));
        assert_eq!(t.apply(&new_dest), Err(Errno::EEXIST));
        let del_dest = Op::DelDest { service: key, dest };
        assert_eq!(t.apply(&del_dest), Ok(()));
        assert_eq!(t.apply(&del_dest), Err(Errno::ENOENT));
        assert_eq!(t.apply(&Op::DelService { key }), Ok(()));
        assert!(t.is_empty());
    }
}
