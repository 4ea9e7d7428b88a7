//! The VRRPv3 advertisement for IPv4 on the wire (RFC 9568 §5, which obsoletes RFC 5798), and
//! the receive-side checks of RFC 9568 §7.1.
//!
//! Pure: bytes in, typed values or typed errors out. No sockets, no clocks. `decode` is total:
//! it returns an error, never panics, for any input (a property test feeds it random bytes).
//!
//! Layout (RFC 9568 §5.1, IPv4 only here):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |IPvX Addr Count|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      IPv4 Address(es)                         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The checksum (RFC 9568 §5.2.8) is the one place where the two VRRPv3 texts disagree for IPv4:
//! RFC 5798 §5.2.8 sums a pseudo-header (source, destination, zero, protocol 112, VRRP length)
//! in front of the message, which is what keepalived and the deployed base send and require;
//! RFC 9568 §5.2.8 says the IPv4 checksum covers the VRRP message only (holo-vrrp sends that).
//! We send the pseudo-header form (keepalived is our interop witness in the lab) and accept
//! either form on receipt, so that both kinds of peer are heard. See [`ChecksumForm`].

use std::net::Ipv4Addr;
use std::time::Duration;

/// IP protocol number of VRRP (RFC 9568 §5.1.1.4).
pub const IPPROTO_VRRP: u8 = 112;
/// The IPv4 multicast group VRRP advertisements go to (RFC 9568 §5.1.1.2).
pub const VRRP_MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The only TTL an advertisement may be sent or received with (RFC 9568 §5.1.1.3, GTSM):
/// a packet that crossed a router has a lower TTL and is refused.
pub const VRRP_TTL: u8 = 255;
/// The protocol version this module speaks (RFC 9568 §5.2.1).
pub const VERSION: u8 = 3;
/// The only packet type VRRPv3 defines: ADVERTISEMENT (RFC 9568 §5.2.2).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// The largest Max Adver Int the 12-bit field holds, in centiseconds (RFC 9568 §5.2.7).
pub const MAX_ADVER_INT_CS: u16 = 0x0fff;
/// Fixed part of the message before the address list.
const HEADER_LEN: usize = 8;
/// Offset of the checksum field in the message.
const CHECKSUM_OFFSET: usize = 6;

/// Why a byte string is not a VRRPv3 IPv4 advertisement (or why one cannot be built).
///
/// Each variant is a fixed, bounded category so that the driver can count drops by reason
/// without putting free text into metric labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than the fixed header, or than the address list the header announces
    /// (RFC 9568 §7.1: the receiver MUST verify it got the complete packet).
    #[error("truncated VRRP message: {len} bytes, need {need}")]
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes the header says there should be.
        need: usize,
    },
    /// Longer than the header announces. RFC 9568 §7.1 asks for the complete packet; keepalived
    /// also refuses extra bytes (`vrrp_in_chk`: "Received packet length mismatch"), and a
    /// trailing tail would be outside the checksum's length field.
    #[error("VRRP message is {len} bytes, header announces {expected}")]
    TrailingBytes {
        /// Bytes received.
        len: usize,
        /// Bytes the header announces.
        expected: usize,
    },
    /// Version field is not 3 (RFC 9568 §7.1). VRRPv2 peers are not spoken to.
    #[error("VRRP version {0}, expected 3")]
    BadVersion(u8),
    /// Type field is not 1 = ADVERTISEMENT (RFC 9568 §5.2.2: other types MUST be discarded).
    #[error("VRRP type {0}, expected 1 (advertisement)")]
    BadType(u8),
    /// Virtual Router ID 0 is not a valid VRID (RFC 9568 §5.2.3: 1-255).
    #[error("VRID 0 is not valid")]
    BadVrid,
    /// Address count 0 (RFC 9568 §5.2.5 with erratum 8299: such an advertisement is ignored),
    /// or, when building one, more addresses than the 8-bit count can say.
    #[error("bad IPv4 address count {0}")]
    BadAddrCount(usize),
    /// Max Adver Int is 0 (RFC 9568 §7.1 with erratum 8301: MUST verify it is non-zero), or,
    /// when building one, larger than the 12-bit field holds.
    #[error("bad max advertisement interval {0} cs (must be 1..=4095)")]
    BadInterval(u16),
    /// Neither checksum form adds up (RFC 9568 §7.1: MUST verify the checksum).
    #[error("bad VRRP checksum {found:#06x}")]
    BadChecksum {
        /// The checksum field as received.
        found: u16,
    },
}

impl PacketError {
    /// A short fixed name for counters and logs (bounded cardinality by construction).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::TrailingBytes { .. } => "trailing_bytes",
            Self::BadVersion(_) => "bad_version",
            Self::BadType(_) => "bad_type",
            Self::BadVrid => "bad_vrid",
            Self::BadAddrCount(_) => "bad_addr_count",
            Self::BadInterval(_) => "bad_interval",
            Self::BadChecksum { .. } => "bad_checksum",
        }
    }
}

/// Which IPv4 checksum computation an advertisement carries (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumForm {
    /// RFC 5798 §5.2.8: IPv4 pseudo-header + message. keepalived's form; what we send.
    PseudoHeader,
    /// RFC 9568 §5.2.8: the VRRP message alone.
    MessageOnly,
}

/// One VRRPv3 IPv4 advertisement, valid by construction: VRID 1..=255, interval 1..=4095 cs,
/// 1..=255 addresses. Building one that cannot be put on the wire is refused rather than
/// silently truncated, so `encode` cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    vrid: u8,
    priority: u8,
    max_adver_int_cs: u16,
    addresses: Vec<Ipv4Addr>,
}

impl Advertisement {
    /// Builds an advertisement, refusing values the wire format cannot carry.
    ///
    /// `priority` is the raw field: 0 means "the Master is leaving" (RFC 9568 §5.2.4), 255 the
    /// address owner; the state machine decides which values it sends.
    pub fn new(
        vrid: u8,
        priority: u8,
        max_adver_int_cs: u16,
        addresses: Vec<Ipv4Addr>,
    ) -> Result<Self, PacketError> {
        if vrid == 0 {
            return Err(PacketError::BadVrid);
        }
        if max_adver_int_cs == 0 || max_adver_int_cs > MAX_ADVER_INT_CS {
            return Err(PacketError::BadInterval(max_adver_int_cs));
        }
        if addresses.is_empty() || addresses.len() > usize::from(u8::MAX) {
            return Err(PacketError::BadAddrCount(addresses.len()));
        }
        Ok(Self {
            vrid,
            priority,
            max_adver_int_cs,
            addresses,
        })
    }

    /// Always 3: this type only exists for VRRPv3 (RFC 9568 §5.2.1).
    pub fn version(&self) -> u8 {
        VERSION
    }

    /// Virtual Router ID (RFC 9568 §5.2.3).
    pub fn vrid(&self) -> u8 {
        self.vrid
    }

    /// Sender's priority (RFC 9568 §5.2.4): 0 = Master leaving, 255 = address owner.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Max Adver Int in centiseconds (RFC 9568 §5.2.7).
    pub fn max_adver_int_cs(&self) -> u16 {
        self.max_adver_int_cs
    }

    /// Max Adver Int as a duration: what a Backup learns as Master_Adver_Interval
    /// (RFC 9568 §6.4.2).
    pub fn max_adver_int(&self) -> Duration {
        Duration::from_millis(u64::from(self.max_adver_int_cs) * 10)
    }

    /// The virtual IPv4 addresses the sender protects (RFC 9568 §5.2.9).
    pub fn addresses(&self) -> &[Ipv4Addr] {
        &self.addresses
    }

    /// The same advertisement with another priority field: the state machine sends its
    /// current priority, or 0 when leaving (RFC 9568 §6.4.3).
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Length of the VRRP message on the wire (without the IP header).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + 4 * self.addresses.len()
    }

    /// The VRRP message (no IP header: the kernel adds it on a raw socket) with the RFC 5798
    /// pseudo-header checksum, which keepalived requires. `src`/`dst` must be the addresses the
    /// packet will really carry (for unicast peers, the peer's address, as keepalived does).
    pub fn encode(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        self.encode_with(src, dst, ChecksumForm::PseudoHeader)
    }

    /// Like [`Advertisement::encode`] but with a chosen checksum form, for peers that follow
    /// RFC 9568 §5.2.8 literally (and for tests).
    pub fn encode_with(&self, src: Ipv4Addr, dst: Ipv4Addr, form: ChecksumForm) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push((VERSION << 4) | TYPE_ADVERTISEMENT);
        out.push(self.vrid);
        out.push(self.priority);
        // Cannot truncate: `new` and `decode` keep the list at 1..=255 entries.
        out.push(u8::try_from(self.addresses.len()).unwrap_or(u8::MAX));
        // RFC 9568 §5.2.6: the 4 reserved bits MUST be sent as zero.
        out.extend_from_slice(&(self.max_adver_int_cs & MAX_ADVER_INT_CS).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        for addr in &self.addresses {
            out.extend_from_slice(&addr.octets());
        }
        let sum = checksum(&out, src, dst, form);
        out[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2].copy_from_slice(&sum.to_be_bytes());
        out
    }

    /// Parses and verifies a VRRP message (the IP payload). `src`/`dst` come from the IP header
    /// and enter the pseudo-header checksum. Checks follow RFC 9568 §7.1's order: version, type,
    /// completeness, checksum, then the field values (VRID, count, interval).
    ///
    /// Total: every input yields `Ok` or a typed `Err`; no index can go out of bounds because
    /// every read goes through `get`.
    pub fn decode(bytes: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<Self, PacketError> {
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Err(PacketError::Truncated {
                len: bytes.len(),
                need: HEADER_LEN,
            });
        };
        let version = header[0] >> 4;
        let kind = header[0] & 0x0f;
        let vrid = header[1];
        let priority = header[2];
        let count = usize::from(header[3]);
        // RFC 9568 §5.2.6/§5.2.7: the top 4 bits are reserved and ignored on receipt.
        let max_adver_int_cs = u16::from_be_bytes([header[4], header[5]]) & MAX_ADVER_INT_CS;
        let found = u16::from_be_bytes([header[6], header[7]]);

        if version != VERSION {
            return Err(PacketError::BadVersion(version));
        }
        if kind != TYPE_ADVERTISEMENT {
            return Err(PacketError::BadType(kind));
        }
        let expected = HEADER_LEN + 4 * count;
        if bytes.len() < expected {
            return Err(PacketError::Truncated {
                len: bytes.len(),
                need: expected,
            });
        }
        if bytes.len() > expected {
            return Err(PacketError::TrailingBytes {
                len: bytes.len(),
                expected,
            });
        }
        // A correct checksum makes the one's-complement sum over everything (checksum field
        // included) come out as all ones, i.e. `checksum(...)` of it is zero.
        let pseudo_ok = ones_complement_sum(bytes, Some((src, dst))) == 0xffff;
        let message_ok = ones_complement_sum(bytes, None) == 0xffff;
        if !pseudo_ok && !message_ok {
            return Err(PacketError::BadChecksum { found });
        }
        if vrid == 0 {
            return Err(PacketError::BadVrid);
        }
        if count == 0 {
            return Err(PacketError::BadAddrCount(0));
        }
        if max_adver_int_cs == 0 {
            return Err(PacketError::BadInterval(0));
        }
        let addresses = bytes
            .get(HEADER_LEN..)
            .unwrap_or_default()
            .chunks_exact(4)
            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            .collect();
        Ok(Self {
            vrid,
            priority,
            max_adver_int_cs,
            addresses,
        })
    }
}

/// The checksum value to put in the field: RFC 1071 one's complement of the one's-complement
/// sum, over the pseudo-header (if that form) and the message with its checksum field zero.
fn checksum(message: &[u8], src: Ipv4Addr, dst: Ipv4Addr, form: ChecksumForm) -> u16 {
    let pseudo = match form {
        ChecksumForm::PseudoHeader => Some((src, dst)),
        ChecksumForm::MessageOnly => None,
    };
    !ones_complement_sum(message, pseudo)
}

/// Folded 16-bit one's-complement sum of `message`, preceded by the IPv4 pseudo-header of
/// RFC 5798 §5.2.8 (source, destination, zero, protocol, VRRP length) when `pseudo` is given.
fn ones_complement_sum(message: &[u8], pseudo: Option<(Ipv4Addr, Ipv4Addr)>) -> u16 {
    let mut sum: u64 = 0;
    if let Some((src, dst)) = pseudo {
        let [a, b, c, d] = src.octets();
        let [e, f, g, h] = dst.octets();
        sum += u64::from(u16::from_be_bytes([a, b]));
        sum += u64::from(u16::from_be_bytes([c, d]));
        sum += u64::from(u16::from_be_bytes([e, f]));
        sum += u64::from(u16::from_be_bytes([g, h]));
        sum += u64::from(IPPROTO_VRRP);
        // The length field is 16 bits; a longer message cannot be a valid VRRP packet anyway,
        // and `decode` refuses anything but HEADER_LEN + 4 * (<= 255) bytes before summing.
        sum += (message.len() as u64) & 0xffff;
    }
    let mut words = message.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    (sum & 0xffff) as u16
}

/// Why a received packet was not handed to the state machine (RFC 9568 §7.1). Bounded set,
/// so the driver can count drops per [`DropReason::label`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// IP TTL was not 255 (RFC 9568 §5.1.1.3 / §7.1): the packet crossed a router or was forged
    /// off-link.
    #[error("IP TTL {0}, expected 255")]
    BadTtl(u8),
    /// Our own advertisement looped back (multicast loop, or a mirrored port).
    #[error("our own advertisement")]
    FromSelf,
    /// Not a valid VRRPv3 message (see [`PacketError`]).
    #[error("malformed: {0}")]
    Malformed(PacketError),
    /// A valid advertisement for another virtual router on the same segment: normal traffic,
    /// not an error (RFC 9568 §7.1: VRID must be configured on the receiving interface).
    #[error("VRID {0} is not ours")]
    OtherVrid(u8),
    /// The address list differs from ours. RFC 5798 §7.1 says a non-owner's such packet MUST be
    /// dropped; RFC 9568 §7.1 only asks to log it. We drop, as keepalived does (`vrrp_in_chk`,
    /// "ip address associated with VRID not present"): two routers that disagree about the
    /// VIPs are misconfigured, and letting one silence the other would leave VIPs unserved.
    #[error("address list differs from ours")]
    AddressMismatch,
    /// Unicast mode only: the sender is not one of the configured peers (keepalived's
    /// `vrrp_check_unicast_src`).
    #[error("sender {0} is not a configured unicast peer")]
    UnknownPeer(Ipv4Addr),
    /// An advertisement for our VRID from a sender that is not among the known peers
    /// ([`Sources::Only`]), in multicast mode as in unicast: a host on the segment that is
    /// not one of the balancers (RFC 9568 §9 leaves authentication out; knowing the peers is
    /// what we can do instead).
    #[error("sender {0} is not one of the known peers")]
    UnknownSource(Ipv4Addr),
}

impl DropReason {
    /// A short fixed name for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadTtl(_) => "bad_ttl",
            Self::FromSelf => "from_self",
            Self::Malformed(e) => e.label(),
            Self::OtherVrid(_) => "other_vrid",
            Self::AddressMismatch => "address_mismatch",
            Self::UnknownPeer(_) => "unknown_peer",
            Self::UnknownSource(_) => "unknown_source",
        }
    }
}

/// Whose advertisements a virtual router hears: the source allowlist.
///
/// `Any` is the state before the peers are known (a balancer that has not yet read its
/// peers' Node addresses, a standalone host given no list): then every sender on the link is
/// heard, as RFC 9568 has it. Refusing everyone instead would make a Backup deaf to the real
/// Master and take the VIP over after Master_Down_Interval: a split brain caused by our own
/// ignorance, worse than the rogue host the list guards against. The driver logs which one is
/// in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sources {
    /// The peers are not known: every sender is heard.
    #[default]
    Any,
    /// Only these senders are heard (our own address may be among them: it is dropped as
    /// [`DropReason::FromSelf`] first). An empty list hears nobody: a router with no peer at
    /// all, the only balancer of its VIP.
    Only(Vec<Ipv4Addr>),
}

impl Sources {
    /// Whether an advertisement from `src` may reach the state machine. Pure.
    pub fn check(&self, src: Ipv4Addr) -> Result<(), DropReason> {
        match self {
            Self::Any => Ok(()),
            Self::Only(peers) if peers.contains(&src) => Ok(()),
            Self::Only(_) => Err(DropReason::UnknownSource(src)),
        }
    }
}

/// The receive-side checks for one virtual router, applied by the driver to every protocol-112
/// packet before the state machine sees it (RFC 9568 §7.1).
#[derive(Debug, Clone)]
pub struct ReceiveFilter {
    /// Our virtual router ID.
    pub vrid: u8,
    /// Our own primary address (packets from it are our own, looped back).
    pub primary_ip: Ipv4Addr,
    /// The VIPs we protect; an advertisement must list exactly these (in any order).
    pub vips: Vec<Ipv4Addr>,
    /// Unicast peers, if configured: then only they are heard.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Whether to insist on TTL 255. Always on for multicast (RFC 9568 §5.1.1.3). For unicast
    /// peers across a routed hop it has to be off, as keepalived does (it checks TTL only
    /// without unicast peers); the peer list then takes the TTL check's place.
    pub require_ttl_255: bool,
    /// Whose advertisements for our VRID are heard, in either mode.
    pub sources: Sources,
}

impl ReceiveFilter {
    /// A multicast-mode filter: TTL 255 required, any sender on the link heard.
    pub fn multicast(vrid: u8, primary_ip: Ipv4Addr, vips: Vec<Ipv4Addr>) -> Self {
        Self {
            vrid,
            primary_ip,
            vips,
            unicast_peers: Vec::new(),
            require_ttl_255: true,
            sources: Sources::Any,
        }
    }

    /// Applies RFC 9568 §7.1 to one received packet: `ip_ttl`, `src` and `dst` from its IP
    /// header, `payload` the bytes after it. Returns the advertisement to feed the state
    /// machine, or the reason to drop it (which the driver counts).
    pub fn accept(
        &self,
        ip_ttl: u8,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        payload: &[u8],
    ) -> Result<Advertisement, DropReason> {
        if src == self.primary_ip {
            return Err(DropReason::FromSelf);
        }
        // RFC 9568 §7.1: "MUST verify that the IPv4 TTL is 255".
        if self.require_ttl_255 && ip_ttl != VRRP_TTL {
            return Err(DropReason::BadTtl(ip_ttl));
        }
        if !self.unicast_peers.is_empty() && !self.unicast_peers.contains(&src) {
            return Err(DropReason::UnknownPeer(src));
        }
        // RFC 9568 §7.1: version, completeness, checksum (and type, §5.2.2).
        let advert = Advertisement::decode(payload, src, dst).map_err(DropReason::Malformed)?;
        // RFC 9568 §7.1: "MUST verify that the VRID is configured on the receiving interface".
        if advert.vrid() != self.vrid {
            return Err(DropReason::OtherVrid(advert.vrid()));
        }
        // Not in RFC 9568 (§9 leaves authentication out): an advertisement for our VRID from a
        // host that is not one of our peers never reaches the state machine. Checked after the
        // VRID, so another virtual router's traffic on the segment still counts as `other_vrid`.
        self.sources.check(src)?;
        // RFC 9568 §7.1: "MAY verify that Count IPvX Addrs and the list of IPvX address(es)
        // match"; see `DropReason::AddressMismatch` for why we drop.
        if !same_set(advert.addresses(), &self.vips) {
            return Err(DropReason::AddressMismatch);
        }
        Ok(advert)
    }
}

/// Set equality for short address lists (order on the wire is not significant).
fn same_set(a: &[Ipv4Addr], b: &[Ipv4Addr]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sim::XorShift;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

    /// VRID 51, priority 100, 1 s (100 cs), one address 192.0.2.100, from 192.0.2.1 to
    /// 224.0.0.18, built by hand from the RFC 9568 §5.1 layout.
    ///
    /// Checksum, RFC 5798 §5.2.8 pseudo-header form, 16-bit words:
    ///   pseudo-header  c000 + 0201 + e000 + 0012 + 0070 (proto 112) + 000c (length 12) = 1a28f
    ///   message        3133 + 6401 + 0064 + 0000 (checksum) + c000 + 0264           = 157fc
    ///   total 2fa8b -> fold fa8b + 2 = fa8d -> complement 0572.
    /// Message-only form (RFC 9568 §5.2.8): 157fc -> 57fd -> complement a802.
    const KNOWN: [u8; 12] = [
        0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0x05, 0x72, 0xc0, 0x00, 0x02, 0x64,
    ];

    fn known() -> Advertisement {
        Advertisement::new(51, 100, 100, vec![VIP]).unwrap()
    }

    #[test]
    fn encodes_exact_bytes() {
        assert_eq!(known().encode(SRC, VRRP_MULTICAST_V4), KNOWN);
        let mut message_only = KNOWN;
        message_only[6..8].copy_from_slice(&[0xa8, 0x02]);
        assert_eq!(
            known().encode_with(SRC, VRRP_MULTICAST_V4, ChecksumForm::MessageOnly),
            message_only
        );
    }

    #[test]
    fn decodes_exact_bytes_in_both_checksum_forms() {
        assert_eq!(
            Advertisement::decode(&KNOWN, SRC, VRRP_MULTICAST_V4),
            Ok(known())
        );
        let mut message_only = KNOWN;
        message_only[6..8].copy_from_slice(&[0xa8, 0x02]);
        assert_eq!(
            Advertisement::decode(&message_only, SRC, VRRP_MULTICAST_V4),
            Ok(known())
        );
    }

    /// Two addresses, priority 200, 100 ms (10 cs), VRID 5, from 192.0.2.2: checksum e041
    /// (computed independently with a 5-line Python RFC 1071 sum, not with this module).
    #[test]
    fn two_address_vector() {
        let a = Advertisement::new(
            5,
            200,
            10,
            vec![Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11)],
        )
        .unwrap();
        let bytes = a.encode(Ipv4Addr::new(192, 0, 2, 2), VRRP_MULTICAST_V4);
        assert_eq!(
            bytes,
            [
                0x31, 0x05, 0xc8, 0x02, 0x00, 0x0a, 0xe0, 0x41, 192, 0, 2, 10, 192, 0, 2, 11
            ]
        );
        assert_eq!(a.max_adver_int(), Duration::from_millis(100));
    }

    /// An advertisement captured from keepalived 2.2.7 (Debian), `vrrp_version 3`, VRID 51,
    /// priority 150, `advert_int 0.1`, VIPs 192.0.2.100 and 192.0.2.101, sent from 192.0.2.1 to
    /// 224.0.0.18 and read with a raw socket in a network namespace (the IP header is in the
    /// driver's test). Its checksum 0x1161 is the RFC 5798 pseudo-header form.
    pub(crate) const KEEPALIVED: [u8; 16] = [
        0x31, 0x33, 0x96, 0x02, 0x00, 0x0a, 0x11, 0x61, 0xc0, 0x00, 0x02, 0x64, 0xc0, 0x00, 0x02,
        0x65,
    ];

    #[test]
    fn keepalived_capture_decodes_and_reencodes_bit_for_bit() {
        let ka = Ipv4Addr::new(192, 0, 2, 1);
        let expected = Advertisement::new(
            51,
            150,
            10,
            vec![Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 101)],
        )
        .unwrap();
        assert_eq!(
            Advertisement::decode(&KEEPALIVED, ka, VRRP_MULTICAST_V4),
            Ok(expected.clone())
        );
        assert_eq!(expected.encode(ka, VRRP_MULTICAST_V4), KEEPALIVED);
    }

    #[test]
    fn pseudo_header_binds_the_addresses() {
        // Same bytes claimed from another source: the pseudo-header sum no longer matches, and
        // the message-only sum does not either.
        assert_eq!(
            Advertisement::decode(&KNOWN, Ipv4Addr::new(192, 0, 2, 9), VRRP_MULTICAST_V4),
            Err(PacketError::BadChecksum { found: 0x0572 })
        );
    }

    #[test]
    fn round_trips() {
        let mut rng = XorShift(0x5eed_1234);
        for _ in 0..2_000 {
            let n = 1 + (rng.next() % 255) as usize;
            let addrs = (0..n)
                .map(|_| Ipv4Addr::from(rng.next() as u32))
                .collect::<Vec<_>>();
            let vrid = 1 + (rng.next() % 255) as u8;
            let prio = rng.next() as u8;
            let int = 1 + (rng.next() % 4095) as u16;
            let a = Advertisement::new(vrid, prio, int, addrs).unwrap();
            let src = Ipv4Addr::from(rng.next() as u32);
            let dst = Ipv4Addr::from(rng.next() as u32);
            let bytes = a.encode(src, dst);
            assert_eq!(bytes.len(), a.encoded_len());
            assert_eq!(Advertisement::decode(&bytes, src, dst), Ok(a));
        }
    }

    #[test]
    fn typed_errors() {
        let d = |b: &[u8]| Advertisement::decode(b, SRC, VRRP_MULTICAST_V4);
        assert_eq!(d(&[]), Err(PacketError::Truncated { len: 0, need: 8 }));
        assert_eq!(
            d(&KNOWN[..7]),
            Err(PacketError::Truncated { len: 7, need: 8 })
        );
        assert_eq!(
            d(&KNOWN[..11]),
            Err(PacketError::Truncated { len: 11, need: 12 })
        );
        let mut long = KNOWN.to_vec();
        long.push(0);
        assert_eq!(
            d(&long),
            Err(PacketError::TrailingBytes {
                len: 13,
                expected: 12
            })
        );
        let mut v2 = KNOWN;
        v2[0] = 0x21;
        assert_eq!(d(&v2), Err(PacketError::BadVersion(2)));
        let mut t2 = KNOWN;
        t2[0] = 0x32;
        assert_eq!(d(&t2), Err(PacketError::BadType(2)));
        let mut bad = KNOWN;
        bad[11] ^= 0x01;
        assert_eq!(d(&bad), Err(PacketError::BadChecksum { found: 0x0572 }));
    }

    /// Field-value errors come after the checksum (RFC 9568 §7.1 order), so these are built
    /// with a correct checksum.
    #[test]
    fn field_value_errors_with_valid_checksums() {
        let fix = |mut b: Vec<u8>| {
            b[6] = 0;
            b[7] = 0;
            let s = checksum(&b, SRC, VRRP_MULTICAST_V4, ChecksumForm::PseudoHeader);
            b[6..8].copy_from_slice(&s.to_be_bytes());
            Advertisement::decode(&b, SRC, VRRP_MULTICAST_V4)
        };
        let mut vrid0 = KNOWN.to_vec();
        vrid0[1] = 0;
        assert_eq!(fix(vrid0), Err(PacketError::BadVrid));
        // Count 0 (erratum 8299): only the 8-byte header.
        let count0 = vec![0x31, 0x33, 0x64, 0x00, 0x00, 0x64, 0, 0];
        assert_eq!(fix(count0), Err(PacketError::BadAddrCount(0)));
        // Interval 0 (erratum 8301), with reserved bits set to show they are ignored.
        let mut int0 = KNOWN.to_vec();
        int0[4] = 0xf0;
        int0[5] = 0x00;
        assert_eq!(fix(int0), Err(PacketError::BadInterval(0)));
        // Reserved bits set, interval 100 cs: accepted, reserved ignored (RFC 9568 §5.2.6).
        let mut rsvd = KNOWN.to_vec();
        rsvd[4] = 0xa0;
        assert_eq!(fix(rsvd), Ok(known()));
    }

    #[test]
    fn construction_refuses_what_the_wire_cannot_carry() {
        assert_eq!(
            Advertisement::new(0, 100, 100, vec![VIP]),
            Err(PacketError::BadVrid)
        );
        assert_eq!(
            Advertisement::new(1, 100, 0, vec![VIP]),
            Err(PacketError::BadInterval(0))
        );
        assert_eq!(
            Advertisement::new(1, 100, 4096, vec![VIP]),
            Err(PacketError::BadInterval(4096))
        );
        assert_eq!(
            Advertisement::new(1, 100, 100, vec![]),
            Err(PacketError::BadAddrCount(0))
        );
        assert_eq!(
            Advertisement::new(1, 100, 100, vec![VIP; 256]),
            Err(PacketError::BadAddrCount(256))
        );
    }

    /// `decode` is total: random lengths and bytes, plus mutations of a valid packet (which get
    /// past the early checks), never panic. Also: anything it accepts re-encodes to the same
    /// bytes in one of the two checksum forms (the reserved bits aside).
    #[test]
    fn decode_never_panics_on_random_input() {
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        let mut accepted = 0;
        for i in 0..200_000 {
            let mut buf: Vec<u8> = if i % 2 == 0 {
                let len = (rng.next() % 1100) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut b = KNOWN.to_vec();
                let flips = 1 + rng.next() % 3;
                for _ in 0..flips {
                    let at = (rng.next() as usize) % b.len();
                    b[at] = rng.next() as u8;
                }
                if rng.next().is_multiple_of(4) {
                    b.truncate((rng.next() as usize) % (b.len() + 1));
                }
                b
            };
            if i % 3 == 0 && !buf.is_empty() {
                buf[0] = 0x31; // get past the version/type check more often
            }
            let src = Ipv4Addr::from(rng.next() as u32);
            if let Ok(a) = Advertisement::decode(&buf, src, VRRP_MULTICAST_V4) {
                accepted += 1;
                let mut canonical = buf.clone();
                canonical[4] &= 0x0f;
                let p = a.encode_with(src, VRRP_MULTICAST_V4, ChecksumForm::PseudoHeader);
                let m = a.encode_with(src, VRRP_MULTICAST_V4, ChecksumForm::MessageOnly);
                // The checksum may differ only where the reserved bits were set.
                assert_eq!(p[..6], canonical[..6]);
                assert_eq!(p[8..], canonical[8..]);
                if buf[4] & 0xf0 == 0 {
                    assert!(p == buf || m == buf);
                }
            }
        }
        // The mutation half must reach the accept path sometimes, or the test proves little.
        assert!(accepted > 0);
    }

    fn filter() -> ReceiveFilter {
        ReceiveFilter::multicast(51, Ipv4Addr::new(192, 0, 2, 2), vec![VIP])
    }

    #[test]
    fn accept_passes_a_good_packet() {
        assert_eq!(
            filter().accept(255, SRC, VRRP_MULTICAST_V4, &KNOWN),
            Ok(known())
        );
    }

    #[test]
    fn accept_drops_with_typed_reasons() {
        let f = filter();
        let g = VRRP_MULTICAST_V4;
        assert_eq!(f.accept(254, SRC, g, &KNOWN), Err(DropReason::BadTtl(254)));
        assert_eq!(
            f.accept(255, Ipv4Addr::new(192, 0, 2, 2), g, &KNOWN),
            Err(DropReason::FromSelf)
        );
        assert_eq!(
            f.accept(255, SRC, g, &KNOWN[..5]),
            Err(DropReason::Malformed(PacketError::Truncated {
                len: 5,
                need: 8
            }))
        );
        let other = Advertisement::new(52, 100, 100, vec![VIP])
            .unwrap()
            .encode(SRC, g);
        assert_eq!(
            f.accept(255, SRC, g, &other),
            Err(DropReason::OtherVrid(52))
        );
        let wrong = Advertisement::new(51, 100, 100, vec![Ipv4Addr::new(192, 0, 2, 101)])
            .unwrap()
            .encode(SRC, g);
        assert_eq!(
            f.accept(255, SRC, g, &wrong),
            Err(DropReason::AddressMismatch)
        );
        let labels: Vec<_> = [
            DropReason::BadTtl(1),
            DropReason::FromSelf,
            DropReason::OtherVrid(2),
            DropReason::AddressMismatch,
            DropReason::UnknownPeer(SRC),
            DropReason::UnknownSource(SRC),
            DropReason::Malformed(PacketError::BadVrid),
        ]
        .iter()
        .map(DropReason::label)
        .collect();
        assert_eq!(
            labels,
            [
                "bad_ttl",
                "from_self",
                "other_vrid",
                "address_mismatch",
                "unknown_peer",
                "unknown_source",
                "bad_vrid"
            ]
        );
    }

    #[test]
    fn address_order_does_not_matter() {
        let a = Ipv4Addr::new(192, 0, 2, 10);
        let b = Ipv4Addr::new(192, 0, 2, 11);
        let f = ReceiveFilter::multicast(7, Ipv4Addr::new(192, 0, 2, 2), vec![a, b]);
        let bytes = Advertisement::new(7, 10, 10, vec![b, a])
            .unwrap()
            .encode(SRC, VRRP_MULTICAST_V4);
        assert!(f.accept(255, SRC, VRRP_MULTICAST_V4, &bytes).is_ok());
    }

    #[test]
    fn unicast_mode_hears_only_peers_and_any_ttl() {
        let peer = SRC;
        let mut f = filter();
        f.unicast_peers = vec![peer];
        f.require_ttl_255 = false;
        let to_us = Ipv4Addr::new(192, 0, 2, 2);
        let bytes = known().encode(peer, to_us);
        assert_eq!(f.accept(63, peer, to_us, &bytes), Ok(known()));
        let stranger = Ipv4Addr::new(192, 0, 2, 77);
        let bytes = known().encode(stranger, to_us);
        assert_eq!(
            f.accept(255, stranger, to_us, &bytes),
            Err(DropReason::UnknownPeer(stranger))
        );
    }

    #[test]
    fn sources_decide_who_is_heard() {
        let peer = Ipv4Addr::new(192, 0, 2, 3);
        let rogue = Ipv4Addr::new(192, 0, 2, 66);
        struct Case {
            name: &'static str,
            sources: Sources,
            src: Ipv4Addr,
            want: Result<(), DropReason>,
        }
        let cases = [
            Case {
                name: "peers not known yet: everyone is heard",
                sources: Sources::Any,
                src: rogue,
                want: Ok(()),
            },
            Case {
                name: "a listed peer is heard",
                sources: Sources::Only(vec![Ipv4Addr::new(192, 0, 2, 2), peer]),
                src: peer,
                want: Ok(()),
            },
            Case {
                name: "a stranger is dropped",
                sources: Sources::Only(vec![peer]),
                src: rogue,
                want: Err(DropReason::UnknownSource(rogue)),
            },
            Case {
                name: "no peer at all: nobody is heard",
                sources: Sources::Only(vec![]),
                src: peer,
                want: Err(DropReason::UnknownSource(peer)),
            },
        ];
        for c in cases {
            assert_eq!(c.sources.check(c.src), c.want, "{}", c.name);
        }
    }

    #[test]
    fn accept_drops_a_stranger_in_multicast_mode_but_not_another_vrid() {
        let g = VRRP_MULTICAST_V4;
        let rogue = Ipv4Addr::new(192, 0, 2, 66);
        let mut f = filter();
        f.sources = Sources::Only(vec![SRC]);
        assert_eq!(f.accept(255, SRC, g, &known().encode(SRC, g)), Ok(known()));
        assert_eq!(
            f.accept(255, rogue, g, &known().encode(rogue, g)),
            Err(DropReason::UnknownSource(rogue))
        );
        let other = Advertisement::new(52, 254, 100, vec![VIP])
            .unwrap()
            .encode(rogue, g);
        assert_eq!(
            f.accept(255, rogue, g, &other),
            Err(DropReason::OtherVrid(52))
        );
    }
}
