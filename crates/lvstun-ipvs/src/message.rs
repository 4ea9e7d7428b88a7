//! The `IPVS` generic netlink family (version 1) on the wire: commands, the
//! top-level attributes, and the nested service, destination, daemon and
//! stats attributes (submodules). Numbers and types come from the kernel's
//! `include/uapi/linux/ip_vs.h` and the policies in
//! `net/netfilter/ipvs/ip_vs_ctl.c`. Pure encoding and decoding, no I/O.
//!
//! Unknown attributes parse into an `Other` variant and emit back unchanged,
//! so newer kernels never break parsing. Nests are emitted without
//! `NLA_F_NESTED`, exactly as the kernel itself emits them (IPVS parses
//! non-strictly and accepts both).

pub mod daemon;
pub mod dest;
pub mod service;
pub mod stats;

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer, NlasIterator, Parseable,
    ParseableParametrized, parse_u32,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

pub use daemon::DaemonAttr;
pub use dest::DestAttr;
pub use service::{FlagsMask, InetAddr, ServiceAttr};

/// `IPVS_GENL_NAME`.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
pub const IPVS_GENL_VERSION: u8 = 1;

const IPVS_CMD_NEW_SERVICE: u8 = 1;
const IPVS_CMD_SET_SERVICE: u8 = 2;
const IPVS_CMD_DEL_SERVICE: u8 = 3;
const IPVS_CMD_GET_SERVICE: u8 = 4;
const IPVS_CMD_NEW_DEST: u8 = 5;
const IPVS_CMD_SET_DEST: u8 = 6;
const IPVS_CMD_DEL_DEST: u8 = 7;
const IPVS_CMD_GET_DEST: u8 = 8;
const IPVS_CMD_NEW_DAEMON: u8 = 9;
const IPVS_CMD_DEL_DAEMON: u8 = 10;
const IPVS_CMD_GET_DAEMON: u8 = 11;
const IPVS_CMD_SET_CONFIG: u8 = 12;
const IPVS_CMD_GET_CONFIG: u8 = 13;
const IPVS_CMD_SET_INFO: u8 = 14;
const IPVS_CMD_GET_INFO: u8 = 15;
const IPVS_CMD_ZERO: u8 = 16;
const IPVS_CMD_FLUSH: u8 = 17;

const IPVS_CMD_ATTR_SERVICE: u16 = 1;
const IPVS_CMD_ATTR_DEST: u16 = 2;
const IPVS_CMD_ATTR_DAEMON: u16 = 3;
const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

const IPVS_INFO_ATTR_VERSION: u16 = 1;
const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// An IPVS generic netlink command (`IPVS_CMD_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpvsCmd {
    /// Add a service; also the command of every service dump reply.
    NewService,
    /// Edit a service.
    SetService,
    /// Delete a service.
    DelService,
    /// Get one service, or dump all with `NLM_F_DUMP`.
    GetService,
    /// Add a destination; also the command of destination dump replies.
    NewDest,
    /// Edit a destination.
    SetDest,
    /// Delete a destination.
    DelDest,
    /// Dump the destinations of one service.
    GetDest,
    /// Start a sync daemon; also the command of daemon dump replies.
    NewDaemon,
    /// Stop a sync daemon.
    DelDaemon,
    /// Dump the sync daemons.
    GetDaemon,
    /// Set the TCP/UDP timeouts; also the reply to `GetConfig`.
    SetConfig,
    /// Get the TCP/UDP timeouts.
    GetConfig,
    /// Only the reply to `GetInfo`.
    SetInfo,
    /// Get the IPVS version and connection table size.
    GetInfo,
    /// Zero counters.
    Zero,
    /// Delete every service. Listed for completeness: lvstun never flushes,
    /// because the table is shared with services it does not own.
    Flush,
    /// A command this code does not know.
    Other(u8),
}

impl From<IpvsCmd> for u8 {
    fn from(cmd: IpvsCmd) -> u8 {
        match cmd {
            IpvsCmd::NewService => IPVS_CMD_NEW_SERVICE,
            IpvsCmd::SetService => IPVS_CMD_SET_SERVICE,
            IpvsCmd::DelService => IPVS_CMD_DEL_SERVICE,
            IpvsCmd::GetService => IPVS_CMD_GET_SERVICE,
            IpvsCmd::NewDest => IPVS_CMD_NEW_DEST,
            IpvsCmd::SetDest => IPVS_CMD_SET_DEST,
            IpvsCmd::DelDest => IPVS_CMD_DEL_DEST,
            IpvsCmd::GetDest => IPVS_CMD_GET_DEST,
            IpvsCmd::NewDaemon => IPVS_CMD_NEW_DAEMON,
            IpvsCmd::DelDaemon => IPVS_CMD_DEL_DAEMON,
            IpvsCmd::GetDaemon => IPVS_CMD_GET_DAEMON,
            IpvsCmd::SetConfig => IPVS_CMD_SET_CONFIG,
            IpvsCmd::GetConfig => IPVS_CMD_GET_CONFIG,
            IpvsCmd::SetInfo => IPVS_CMD_SET_INFO,
            IpvsCmd::GetInfo => IPVS_CMD_GET_INFO,
            IpvsCmd::Zero => IPVS_CMD_ZERO,
            IpvsCmd::Flush => IPVS_CMD_FLUSH,
            IpvsCmd::Other(other) => other,
        }
    }
}

impl From<u8> for IpvsCmd {
    fn from(raw: u8) -> IpvsCmd {
        match raw {
            IPVS_CMD_NEW_SERVICE => IpvsCmd::NewService,
            IPVS_CMD_SET_SERVICE => IpvsCmd::SetService,
            IPVS_CMD_DEL_SERVICE => IpvsCmd::DelService,
            IPVS_CMD_GET_SERVICE => IpvsCmd::GetService,
            IPVS_CMD_NEW_DEST => IpvsCmd::NewDest,
            IPVS_CMD_SET_DEST => IpvsCmd::SetDest,
            IPVS_CMD_DEL_DEST => IpvsCmd::DelDest,
            IPVS_CMD_GET_DEST => IpvsCmd::GetDest,
            IPVS_CMD_NEW_DAEMON => IpvsCmd::NewDaemon,
            IPVS_CMD_DEL_DAEMON => IpvsCmd::DelDaemon,
            IPVS_CMD_GET_DAEMON => IpvsCmd::GetDaemon,
            IPVS_CMD_SET_CONFIG => IpvsCmd::SetConfig,
            IPVS_CMD_GET_CONFIG => IpvsCmd::GetConfig,
            IPVS_CMD_SET_INFO => IpvsCmd::SetInfo,
            IPVS_CMD_GET_INFO => IpvsCmd::GetInfo,
            IPVS_CMD_ZERO => IpvsCmd::Zero,
            IPVS_CMD_FLUSH => IpvsCmd::Flush,
            other => IpvsCmd::Other(other),
        }
    }
}

/// A top-level attribute (`IPVS_CMD_ATTR_*`, or `IPVS_INFO_ATTR_*` in the
/// reply to `GET_INFO`, whose numbers overlap: which one applies depends on
/// the command).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpvsAttr {
    /// `IPVS_CMD_ATTR_SERVICE` nest.
    Service(Vec<ServiceAttr>),
    /// `IPVS_CMD_ATTR_DEST` nest.
    Dest(Vec<DestAttr>),
    /// `IPVS_CMD_ATTR_DAEMON` nest.
    Daemon(Vec<DaemonAttr>),
    /// TCP established timeout, seconds.
    TimeoutTcp(u32),
    /// TCP FIN-wait timeout, seconds.
    TimeoutTcpFin(u32),
    /// UDP timeout, seconds.
    TimeoutUdp(u32),
    /// `IPVS_INFO_ATTR_VERSION` (only with `SetInfo`).
    InfoVersion(u32),
    /// `IPVS_INFO_ATTR_CONN_TAB_SIZE` (only with `SetInfo`).
    InfoConnTabSize(u32),
    /// Anything else, kept as raw bytes.
    Other(DefaultNla),
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        match self {
            IpvsAttr::Service(attrs) => attrs.as_slice().buffer_len(),
            IpvsAttr::Dest(attrs) => attrs.as_slice().buffer_len(),
            IpvsAttr::Daemon(attrs) => attrs.as_slice().buffer_len(),
            IpvsAttr::TimeoutTcp(_)
            | IpvsAttr::TimeoutTcpFin(_)
            | IpvsAttr::TimeoutUdp(_)
            | IpvsAttr::InfoVersion(_)
            | IpvsAttr::InfoConnTabSize(_) => 4,
            IpvsAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            IpvsAttr::Service(_) => IPVS_CMD_ATTR_SERVICE,
            IpvsAttr::Dest(_) => IPVS_CMD_ATTR_DEST,
            IpvsAttr::Daemon(_) => IPVS_CMD_ATTR_DAEMON,
            IpvsAttr::TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            IpvsAttr::TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            IpvsAttr::TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            IpvsAttr::InfoVersion(_) => IPVS_INFO_ATTR_VERSION,
            IpvsAttr::InfoConnTabSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            IpvsAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            IpvsAttr::Service(attrs) => attrs.as_slice().emit(buffer),
            IpvsAttr::Dest(attrs) => attrs.as_slice().emit(buffer),
            IpvsAttr::Daemon(attrs) => attrs.as_slice().emit(buffer),
            IpvsAttr::TimeoutTcp(v)
            | IpvsAttr::TimeoutTcpFin(v)
            | IpvsAttr::TimeoutUdp(v)
            | IpvsAttr::InfoVersion(v)
            | IpvsAttr::InfoConnTabSize(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            IpvsAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

/// Parses every attribute of a nest with `parse`.
pub(crate) fn parse_nest<A>(
    buf: &[u8],
    what: &'static str,
    parse: impl Fn(&NlaBuffer<&[u8]>) -> Result<A, DecodeError>,
) -> Result<Vec<A>, DecodeError> {
    let mut attrs = Vec::new();
    for nla in NlasIterator::new(buf) {
        let nla = nla.context(what)?;
        attrs.push(parse(&nla).context(what)?);
    }
    Ok(attrs)
}

fn parse_attr(nla: &NlaBuffer<&[u8]>, cmd: IpvsCmd) -> Result<IpvsAttr, DecodeError> {
    let value = nla.value();
    if cmd == IpvsCmd::SetInfo {
        return Ok(match nla.kind() {
            IPVS_INFO_ATTR_VERSION => IpvsAttr::InfoVersion(parse_u32(value)?),
            IPVS_INFO_ATTR_CONN_TAB_SIZE => IpvsAttr::InfoConnTabSize(parse_u32(value)?),
            _ => IpvsAttr::Other(DefaultNla::parse(nla)?),
        });
    }
    Ok(match nla.kind() {
        IPVS_CMD_ATTR_SERVICE => {
            IpvsAttr::Service(parse_nest(value, "IPVS_CMD_ATTR_SERVICE", |nla| {
                ServiceAttr::parse(nla)
            })?)
        }
        IPVS_CMD_ATTR_DEST => IpvsAttr::Dest(parse_nest(value, "IPVS_CMD_ATTR_DEST", |nla| {
            DestAttr::parse(nla)
        })?),
        IPVS_CMD_ATTR_DAEMON => {
            IpvsAttr::Daemon(parse_nest(value, "IPVS_CMD_ATTR_DAEMON", |nla| {
                DaemonAttr::parse(nla)
            })?)
        }
        IPVS_CMD_ATTR_TIMEOUT_TCP => IpvsAttr::TimeoutTcp(parse_u32(value)?),
        IPVS_CMD_ATTR_TIMEOUT_TCP_FIN => IpvsAttr::TimeoutTcpFin(parse_u32(value)?),
        IPVS_CMD_ATTR_TIMEOUT_UDP => IpvsAttr::TimeoutUdp(parse_u32(value)?),
        _ => IpvsAttr::Other(DefaultNla::parse(nla)?),
    })
}

/// The payload of one IPVS generic netlink message: a command and its
/// attributes. The generic netlink header around it is
/// [`netlink_packet_generic::GenlMessage`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command.
    pub cmd: IpvsCmd,
    /// The top-level attributes.
    pub attrs: Vec<IpvsAttr>,
}

impl IpvsMessage {
    /// A message with `cmd` and `attrs`.
    pub fn new(cmd: IpvsCmd, attrs: Vec<IpvsAttr>) -> IpvsMessage {
        IpvsMessage { cmd, attrs }
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = IpvsCmd::from(header.cmd);
        let attrs = parse_nest(buf, "IPVS message attribute", |nla| parse_attr(nla, cmd))?;
        Ok(IpvsMessage { cmd, attrs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_numbers() {
        for raw in 0..=20u8 {
            assert_eq!(u8::from(IpvsCmd::from(raw)), raw);
        }
        assert_eq!(IpvsCmd::from(17), IpvsCmd::Flush);
        assert_eq!(u8::from(IpvsCmd::GetDest), 8);
    }

    #[test]
    fn info_reply_uses_info_attribute_numbers() {
        // GET_INFO reply: IPVS_INFO_ATTR_VERSION = 0x010201, CONN_TAB_SIZE = 4096.
        let mut bytes = vec![8, 0, 1, 0];
        bytes.extend_from_slice(&0x0001_0201u32.to_ne_bytes());
        bytes.extend_from_slice(&[8, 0, 2, 0]);
        bytes.extend_from_slice(&4096u32.to_ne_bytes());
        let header = GenlHeader {
            cmd: IPVS_CMD_SET_INFO,
            version: 1,
        };
        let msg = IpvsMessage::parse_with_param(&bytes, header).unwrap();
        assert_eq!(
            msg.attrs,
            vec![
                IpvsAttr::InfoVersion(0x0001_0201),
                IpvsAttr::InfoConnTabSize(4096)
            ]
        );
        let mut out = vec![0; msg.buffer_len()];
        msg.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn unknown_top_level_attribute_is_kept() {
        let bytes = [8, 0, 42, 0, 1, 2, 3, 4];
        let header = GenlHeader {
            cmd: IPVS_CMD_NEW_SERVICE,
            version: 1,
        };
        let msg = IpvsMessage::parse_with_param(&bytes, header).unwrap();
        assert!(matches!(&msg.attrs[..], [IpvsAttr::Other(nla)] if nla.kind() == 42));
        let mut out = vec![0; msg.buffer_len()];
        msg.emit(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn unknown_command_is_kept() {
        let header = GenlHeader {
            cmd: 99,
            version: 1,
        };
        let msg = IpvsMessage::parse_with_param(&[], header).unwrap();
        assert_eq!(msg.cmd, IpvsCmd::Other(99));
        assert_eq!(msg.command(), 99);
    }
}
