//! The web role's operations: one step of a plan ([`Op`]), and what a step does to lvstun's
//! record ([`Record`], [`Saved`]). The vocabulary the planner (`plan`) speaks, the record
//! (`state`) keeps and the applier (`apply`) carries out; pure data.

use std::fmt;
use std::net::Ipv4Addr;

use nftables::schema::NfListObject;
use serde::{Deserialize, Serialize};

use crate::net::devconf::Knob;

/// A sysctl lvstun changed: its value before, and the value lvstun set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The value before lvstun changed it (restored on cleanup).
    pub original: u32,
    /// The value lvstun set (restored only while the knob still has it: if someone else
    /// changed it since, theirs is kept).
    pub set: u32,
}

/// How a sysctl write changes the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Remember the original and the value set.
    Save(Saved),
    /// The value is back to the original: forget it.
    Forget,
}

/// One step of a plan. All but the `Forget*` ones make exactly one kernel write.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Ask for an ipip link so that the kernel loads `ipip` and makes `tunl0`.
    LoadIpip,
    /// `ip link add NAME type dummy`.
    CreateDummy {
        /// Device name.
        name: String,
    },
    /// `ip link set NAME up|down`.
    SetUp {
        /// Device name.
        name: String,
        /// Up or down.
        up: bool,
    },
    /// `ip link del NAME` (only devices lvstun created).
    DeleteLink {
        /// Device name.
        name: String,
    },
    /// `sysctl net.ipv4.conf.DEV.KNOB=VALUE`, over rtnetlink.
    SetConf {
        /// Device name.
        dev: String,
        /// The knob.
        knob: Knob,
        /// The new value.
        value: u32,
        /// How the record changes.
        record: Record,
    },
    /// State only: someone else changed a knob lvstun had set, or it is back to the original.
    ForgetConf {
        /// Device name.
        dev: String,
        /// The knob.
        knob: Knob,
    },
    /// `ip addr add VIP/32 dev DEV`.
    AddVip {
        /// Device name.
        dev: String,
        /// The VIP.
        vip: Ipv4Addr,
    },
    /// `ip addr del VIP/32 dev DEV`.
    DelVip {
        /// Device name.
        dev: String,
        /// The VIP.
        vip: Ipv4Addr,
    },
    /// State only: an address lvstun added is gone already.
    ForgetVip {
        /// Device name.
        dev: String,
        /// The VIP.
        vip: Ipv4Addr,
    },
    /// Replace lvstun's nft tables with these objects (empty: delete them), in one transaction.
    ReplaceGuard {
        /// The new content.
        objects: Vec<NfListObject<'static>>,
    },
}

impl Op {
    /// Whether the operation writes to the kernel (as opposed to the record only).
    pub fn writes(&self) -> bool {
        !matches!(self, Op::ForgetConf { .. } | Op::ForgetVip { .. })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::LoadIpip => f.write_str("load ipip (ask for an ipip link; tunl0 appears)"),
            Op::CreateDummy { name } => write!(f, "ip link add {name} type dummy"),
            Op::SetUp { name, up } => {
                write!(f, "ip link set {name} {}", if *up { "up" } else { "down" })
            }
            Op::DeleteLink { name } => write!(f, "ip link del {name}"),
            Op::SetConf {
                dev, knob, value, ..
            } => write!(f, "sysctl net.ipv4.conf.{dev}.{knob}={value}"),
            Op::ForgetConf { dev, knob } => write!(f, "forget net.ipv4.conf.{dev}.{knob}"),
            Op::AddVip { dev, vip } => write!(f, "ip addr add {vip}/32 dev {dev}"),
            Op::DelVip { dev, vip } => write!(f, "ip addr del {vip}/32 dev {dev}"),
            Op::ForgetVip { dev, vip } => write!(f, "forget {vip}/32 on {dev} (gone)"),
            Op::ReplaceGuard { objects } if objects.is_empty() => {
                f.write_str("nft delete lvstun_web tables")
            }
            Op::ReplaceGuard { objects } => write!(
                f,
                "nft replace lvstun_web tables ({} rules)",
                objects
                    .iter()
                    .filter(|o| matches!(o, NfListObject::Rule(_)))
                    .count()
            ),
        }
    }
}
