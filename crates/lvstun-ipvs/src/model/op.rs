//! The operations that change the kernel's table ([`Op`]), each one netlink request. Pure
//! data, no I/O.

use std::fmt;

use super::dest::{DestConfig, DestKey};
use super::service::{ServiceConfig, ServiceKey};

/// One change to the kernel's table; each is one netlink request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Add a service (`ipvsadm -A`).
    NewService {
        /// Which service.
        key: ServiceKey,
        /// Its configuration.
        config: ServiceConfig,
    },
    /// Edit a service in place (`ipvsadm -E`).
    SetService {
        /// Which service.
        key: ServiceKey,
        /// Its new configuration.
        config: ServiceConfig,
    },
    /// Delete a service and its destinations (`ipvsadm -D`).
    DelService {
        /// Which service.
        key: ServiceKey,
    },
    /// Add a destination (`ipvsadm -a`).
    NewDest {
        /// Its service.
        service: ServiceKey,
        /// Which destination.
        dest: DestKey,
        /// Its configuration.
        config: DestConfig,
    },
    /// Edit a destination in place (`ipvsadm -e`).
    SetDest {
        /// Its service.
        service: ServiceKey,
        /// Which destination.
        dest: DestKey,
        /// Its new configuration.
        config: DestConfig,
    },
    /// Delete a destination (`ipvsadm -d`).
    DelDest {
        /// Its service.
        service: ServiceKey,
        /// Which destination.
        dest: DestKey,
    },
}

impl Op {
    /// The service this operation concerns.
    pub fn service(&self) -> &ServiceKey {
        match self {
            Op::NewService { key, .. } | Op::SetService { key, .. } | Op::DelService { key } => key,
            Op::NewDest { service, .. }
            | Op::SetDest { service, .. }
            | Op::DelDest { service, .. } => service,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::NewService { key, config } => {
                write!(f, "add service {key} {}", config.scheduler)
            }
            Op::SetService { key, config } => {
                write!(f, "edit service {key} {}", config.scheduler)
            }
            Op::DelService { key } => write!(f, "delete service {key}"),
            Op::NewDest {
                service,
                dest,
                config,
            } => write!(
                f,
                "add destination {dest} to {service} weight {}",
                config.weight.get()
            ),
            Op::SetDest {
                service,
                dest,
                config,
            } => write!(
                f,
                "edit destination {dest} of {service} weight {}",
                config.weight.get()
            ),
            Op::DelDest { service, dest } => {
                write!(f, "delete destination {dest} from {service}")
            }
        }
    }
}
