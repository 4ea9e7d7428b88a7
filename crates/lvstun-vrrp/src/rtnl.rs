//! One rtnetlink request, bounded in time, its refusal as a typed errno: the one rule for every
//! rtnetlink call of lvstun (this crate's VIPs, and the node daemon's links, addresses and
//! interface settings, which import it from here). Does no I/O of its own: it awaits the
//! request it is given.

use std::future::Future;
use std::time::Duration;

use crate::error::{Errno, Error};

/// How long one rtnetlink request may take. The kernel always answers; a request that hangs
/// means a wedged socket, and the caller must not hang with it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Turns an rtnetlink error into this crate's error, keeping the kernel's errno as a number.
pub fn rtnl_error(op: impl Into<String>, err: rtnetlink::Error) -> Error {
    let op = op.into();
    match err {
        rtnetlink::Error::NetlinkError(msg) => Error::Kernel {
            op,
            errno: Errno::from_code(msg.raw_code()),
        },
        other => Error::decode("rtnetlink answer", format!("{op}: {other}")),
    }
}

/// Runs one rtnetlink request (`op` names it in errors) with [`REQUEST_TIMEOUT`].
pub async fn bounded<T>(
    op: &str,
    fut: impl Future<Output = Result<T, rtnetlink::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(result) => result.map_err(|e| rtnl_error(op, e)),
        Err(_) => Err(Error::Timeout(op.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_without_an_answer_times_out_with_its_name() {
        let never = std::future::pending::<Result<(), rtnetlink::Error>>();
        let err = bounded("add 192.0.2.100/32 on v0", never)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Timeout(op) if op == "add 192.0.2.100/32 on v0"),
            "{err:?}"
        );
    }

    #[test]
    fn a_refusal_keeps_the_kernels_errno() {
        let mut msg = rtnetlink::packet_core::ErrorMessage::default();
        msg.code = std::num::NonZeroI32::new(-99);
        let err = rtnl_error(
            "delete 192.0.2.100/32 on v0",
            rtnetlink::Error::NetlinkError(msg),
        );
        assert_eq!(err.errno(), Some(Errno::EADDRNOTAVAIL));
        assert!(
            err.to_string()
                .starts_with("delete 192.0.2.100/32 on v0: kernel refused with EADDRNOTAVAIL"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_answer_within_the_bound_is_passed_on() {
        let answer = async { Ok::<u32, rtnetlink::Error>(7) };
        assert_eq!(bounded("read", answer).await.unwrap(), 7);
    }
}
