//! Fuzzes `Advertisement::decode` (VRRPv3, RFC 9568 §5) and the receive filter with arbitrary
//! bytes: neither may panic, and whatever decodes must re-encode to bytes that decode to the
//! same advertisement (the checksum form chosen by the input's first byte).
//!
//! The codec comes from the VRRP crate (`lvstun_vrrp::packet`), the same code the daemon runs.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use lvstun_vrrp::packet::{Advertisement, ChecksumForm, ReceiveFilter};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let src = Ipv4Addr::new(192, 0, 2, 1);
    let dst = Ipv4Addr::new(224, 0, 0, 18);
    if let Ok(advert) = Advertisement::decode(rest, src, dst) {
        let form = if sel & 1 == 0 {
            ChecksumForm::PseudoHeader
        } else {
            ChecksumForm::MessageOnly
        };
        let again = advert.encode_with(src, dst, form);
        assert_eq!(Advertisement::decode(&again, src, dst).ok(), Some(advert));
    }
    let filter = ReceiveFilter::multicast(51, Ipv4Addr::new(192, 0, 2, 2), vec![Ipv4Addr::new(192, 0, 2, 100)]);
    let _ = filter.accept(sel, src, dst, rest);
});
