//! The real IPVS client over generic netlink. Does I/O.
//!
//! One netlink socket (a `netlink-proto` connection carrying genetlink's
//! [`RawGenlMessage`]) serves the family lookup, dumps and writes. Writes go
//! in batches: up to [`BATCH_SIZE`] requests, each with `NLM_F_ACK`, are
//! packed into one datagram (`ConnectionHandle::request_batch`); the kernel
//! processes them in order within that one `sendmsg` and answers each with
//! one ack or error, in the same order, so a batch costs one send and no
//! round trip per message. The connection forwards acks (`set_forward_ack`)
//! precisely so that the n-th answer can be matched to the n-th request.
//!
//! `genetlink::GenetlinkHandle` does not expose batching, which is why this
//! module drives `netlink-proto` directly and resolves the family itself
//! (one `CTRL_CMD_GETFAMILY`, as genetlink's resolver does).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use genetlink::message::{RawGenlMessage, map_from_rawgenlmsg, map_to_rawgenlmsg};
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_proto::sys::protocols::NETLINK_GENERIC;
use netlink_proto::sys::{AsyncSocket, SocketAddr};
use netlink_proto::{Connection, ConnectionHandle};
use tokio::sync::Mutex;

use super::convert;
use super::message::{IPVS_GENL_NAME, IpvsCmd, IpvsMessage};
use super::model::{
    DestConfig, DestKey, Destination, IpvsInfo, Op, Service, ServiceConfig, ServiceKey, SyncDaemon,
    SyncRole, Table,
};
use super::{ApplyReport, IpvsTable};
use crate::error::{Errno, Error};

/// Requests packed into one datagram. Bounded so that the acks of one batch
/// (a few hundred bytes of receive buffer each) always fit the socket's
/// default receive buffer: an overflow would lose acks.
pub const BATCH_SIZE: usize = 64;

/// How long the kernel gets to answer one batch or one dump. It answers in
/// microseconds to milliseconds; this only keeps a wedged connection from
/// hanging the daemon.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Receive buffer asked for (the kernel caps it at `rmem_max`); more room
/// than one batch of acks needs, as a margin.
const RX_BUF_BYTES: usize = 1 << 20;

/// The connection task: a future that owns the socket. Spawn it (e.g.
/// `tokio::spawn`) before using the handle; it ends when every handle is
/// dropped.
pub type IpvsConnection = Connection<RawGenlMessage>;

/// Opens a generic netlink socket for IPVS. Does not talk to the kernel yet:
/// spawn the returned connection, then call [`IpvsHandle::resolve`].
pub fn new_connection() -> Result<(IpvsConnection, ConnectionHandle<RawGenlMessage>), Error> {
    let (mut conn, handle, _unsolicited) =
        netlink_proto::new_connection::<RawGenlMessage>(NETLINK_GENERIC)?;
    // One answer per request, acks included, so batches can be matched.
    conn.set_forward_ack(true);
    let socket = conn.socket_mut().socket_mut();
    // Errors then echo only the request's header, not the whole request.
    socket.set_cap_ack(true)?;
    if let Err(err) = socket.set_rx_buf_sz(RX_BUF_BYTES) {
        tracing::warn!(%err, "cannot enlarge the netlink receive buffer; keeping the default");
    }
    Ok((conn, handle))
}

/// What each answer of a batch said, by position: `None` when the
/// connection ended before that request was answered.
pub(crate) fn acks_by_position(
    expected: usize,
    replies: Vec<NetlinkMessage<RawGenlMessage>>,
) -> Vec<Option<Result<(), Errno>>> {
    let mut out: Vec<Option<Result<(), Errno>>> = replies
        .into_iter()
        .filter_map(|reply| match reply.payload {
            NetlinkPayload::Error(err) => Some(Some(match err.code {
                None => Ok(()),
                Some(code) => Err(Errno::from_code(code.get())),
            })),
            _ => None,
        })
        .take(expected)
        .collect();
    out.resize(expected, None);
    out
}

/// A resolved handle on the kernel's IPVS table. Cheap to clone; clones share
/// the socket.
#[derive(Clone, Debug)]
pub struct IpvsHandle {
    conn: ConnectionHandle<RawGenlMessage>,
    family_id: u16,
    /// A netlink socket runs one dump at a time (a second gets `EBUSY`), so
    /// dumps from clones queue here.
    dump_lock: Arc<Mutex<()>>,
}

impl IpvsHandle {
    /// Looks up the `IPVS` generic netlink family (which also makes the
    /// kernel load `ip_vs` on demand) and returns a handle bound to it.
    /// Fails with [`Error::FamilyNotFound`] on a kernel without IPVS.
    pub async fn resolve(conn: ConnectionHandle<RawGenlMessage>) -> Result<IpvsHandle, Error> {
        const OP: &str = "resolve the IPVS family";
        let genl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.to_owned())],
        });
        let mut request = NetlinkMessage::from(genl);
        request.header.flags = NLM_F_REQUEST;
        let mut replies = conn
            .request(map_to_rawgenlmsg(request), SocketAddr::new(0, 0))
            .map_err(|_| Error::ConnectionClosed(OP.to_owned()))?;
        let mut family_id = None;
        while let Some(reply) = replies.next().await {
            let reply = map_from_rawgenlmsg::<GenlCtrl>(reply)
                .map_err(|e| Error::decode("nlctrl reply", e))?;
            match reply.payload {
                NetlinkPayload::InnerMessage(genl) => {
                    family_id = family_id.or(genl.payload.nlas.iter().find_map(|nla| match nla {
                        GenlCtrlAttrs::FamilyId(id) => Some(*id),
                        _ => None,
                    }));
                }
                NetlinkPayload::Error(err) => match err.code {
                    Some(code) if Errno::from_code(code.get()) == Errno::ENOENT => {
                        return Err(Error::FamilyNotFound);
                    }
                    Some(code) => {
                        return Err(Error::Kernel {
                            op: OP.to_owned(),
                            errno: Errno::from_code(code.get()),
                        });
                    }
                    None => {}
                },
                _ => {}
            }
        }
        let family_id = family_id.ok_or(Error::FamilyNotFound)?;
        Ok(IpvsHandle {
            conn,
            family_id,
            dump_lock: Arc::new(Mutex::new(())),
        })
    }

    /// A handle bound to `family_id` without asking the kernel.
    #[cfg(test)]
    fn bound(conn: ConnectionHandle<RawGenlMessage>, family_id: u16) -> IpvsHandle {
        IpvsHandle {
            conn,
            family_id,
            dump_lock: Arc::new(Mutex::new(())),
        }
    }

    fn raw_request(&self, msg: IpvsMessage, flags: u16) -> NetlinkMessage<RawGenlMessage> {
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(self.family_id);
        let mut request = NetlinkMessage::from(genl);
        request.header.flags = flags;
        map_to_rawgenlmsg(request)
    }

    /// Sends `requests` in batches and returns one result per request, in
    /// order. A refused request does not stop the ones after it.
    async fn execute(&self, requests: Vec<(String, IpvsMessage)>) -> Vec<Result<(), Error>> {
        let mut results = Vec::with_capacity(requests.len());
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let batch: Vec<(String, IpvsMessage)> = requests.by_ref().take(BATCH_SIZE).collect();
            let (labels, messages): (Vec<String>, Vec<IpvsMessage>) = batch.into_iter().unzip();
            let raw = messages
                .into_iter()
                .map(|m| self.raw_request(m, NLM_F_REQUEST | NLM_F_ACK));
            let mut timed_out = false;
            let answers = match self.conn.request_batch(raw, SocketAddr::new(0, 0)) {
                Ok(stream) => {
                    // Keep what arrived even on timeout: those answers are real.
                    let mut replies = Vec::with_capacity(labels.len());
                    let mut stream = std::pin::pin!(stream);
                    let collect = async {
                        while let Some(reply) = stream.next().await {
                            replies.push(reply);
                        }
                    };
                    timed_out = tokio::time::timeout(ANSWER_TIMEOUT, collect).await.is_err();
                    acks_by_position(labels.len(), replies)
                }
                Err(_) => vec![None; labels.len()],
            };
            results.extend(
                labels
                    .into_iter()
                    .zip(answers)
                    .map(|(op, answer)| match answer {
                        Some(Ok(())) => Ok(()),
                        Some(Err(errno)) => Err(Error::Kernel { op, errno }),
                        None if timed_out => Err(Error::Timeout(op)),
                        None => Err(Error::ConnectionClosed(op)),
                    }),
            );
        }
        results
    }

    async fn execute_one(&self, op: String, msg: IpvsMessage) -> Result<(), Error> {
        self.execute(vec![(op.clone(), msg)])
            .await
            .into_iter()
            .next()
            .unwrap_or(Err(Error::ConnectionClosed(op)))
    }

    /// Sends one request that is answered by messages (a dump with
    /// `NLM_F_DUMP`, or a single reply) and collects them.
    async fn query(
        &self,
        op: &str,
        msg: IpvsMessage,
        flags: u16,
    ) -> Result<Vec<IpvsMessage>, Error> {
        let _one_dump_at_a_time = self.dump_lock.lock().await;
        let mut replies = self
            .conn
            .request(self.raw_request(msg, flags), SocketAddr::new(0, 0))
            .map_err(|_| Error::ConnectionClosed(op.to_owned()))?;
        let collect = async {
            let mut out = Vec::new();
            while let Some(reply) = replies.next().await {
                let reply = map_from_rawgenlmsg::<IpvsMessage>(reply)
                    .map_err(|e| Error::decode("IPVS reply", e))?;
                match reply.payload {
                    NetlinkPayload::InnerMessage(genl) => out.push(genl.payload),
                    NetlinkPayload::Error(err) => {
                        if let Some(code) = err.code {
                            return Err(Error::Kernel {
                                op: op.to_owned(),
                                errno: Errno::from_code(code.get()),
                            });
                        }
                    }
                    _ => {}
                }
            }
            Ok(out)
        };
        tokio::time::timeout(ANSWER_TIMEOUT, collect)
            .await
            .map_err(|_| Error::Timeout(op.to_owned()))?
    }

    /// The IPVS version and connection table size; `ipvsadm -Ln`'s first line.
    pub async fn info(&self) -> Result<IpvsInfo, Error> {
        let replies = self
            .query(
                "get IPVS info",
                IpvsMessage::new(IpvsCmd::GetInfo, vec![]),
                NLM_F_REQUEST,
            )
            .await?;
        let reply = replies
            .first()
            .ok_or_else(|| Error::ConnectionClosed("get IPVS info".to_owned()))?;
        convert::parse_info(reply)
    }

    /// Every service of this network namespace, with counters; the service
    /// lines of `ipvsadm -Ln --stats`.
    pub async fn list_services(&self) -> Result<Vec<Service>, Error> {
        self.query(
            "dump services",
            IpvsMessage::new(IpvsCmd::GetService, vec![]),
            NLM_F_REQUEST | NLM_F_DUMP,
        )
        .await?
        .iter()
        .filter_map(convert::service_nest)
        .map(convert::parse_service)
        .collect()
    }

    /// The destinations of one service, with counters; the `->` lines of
    /// `ipvsadm -Ln -t VIP:PORT`. Empty for a service that does not exist
    /// (the kernel answers an empty dump).
    pub async fn list_destinations(&self, service: &ServiceKey) -> Result<Vec<Destination>, Error> {
        let msg = IpvsMessage::new(
            IpvsCmd::GetDest,
            vec![super::message::IpvsAttr::Service(
                convert::service_key_attrs(service),
            )],
        );
        self.query(
            &format!("dump destinations of {service}"),
            msg,
            NLM_F_REQUEST | NLM_F_DUMP,
        )
        .await?
        .iter()
        .filter_map(convert::dest_nest)
        .map(|attrs| convert::parse_dest(attrs, service.family()))
        .collect()
    }

    /// Adds a service: `ipvsadm -A -t VIP:PORT -s SCHED [-p TIMEOUT -M MASK]`.
    pub async fn new_service(&self, key: ServiceKey, config: ServiceConfig) -> Result<(), Error> {
        self.apply_one(Op::NewService { key, config }).await
    }

    /// Edits a service in place: `ipvsadm -E -t VIP:PORT -s SCHED ...`.
    pub async fn set_service(&self, key: ServiceKey, config: ServiceConfig) -> Result<(), Error> {
        self.apply_one(Op::SetService { key, config }).await
    }

    /// Deletes a service and its destinations: `ipvsadm -D -t VIP:PORT`.
    pub async fn del_service(&self, key: ServiceKey) -> Result<(), Error> {
        self.apply_one(Op::DelService { key }).await
    }

    /// Adds a destination:
    /// `ipvsadm -a -t VIP:PORT -r RIP:PORT -i -w WEIGHT [--tun-type ...]`.
    pub async fn new_destination(
        &self,
        service: ServiceKey,
        dest: DestKey,
        config: DestConfig,
    ) -> Result<(), Error> {
        self.apply_one(Op::NewDest {
            service,
            dest,
            config,
        })
        .await
    }

    /// Edits a destination in place (weight, forwarding, thresholds):
    /// `ipvsadm -e -t VIP:PORT -r RIP:PORT -i -w WEIGHT`.
    pub async fn set_destination(
        &self,
        service: ServiceKey,
        dest: DestKey,
        config: DestConfig,
    ) -> Result<(), Error> {
        self.apply_one(Op::SetDest {
            service,
            dest,
            config,
        })
        .await
    }

    /// Deletes a destination: `ipvsadm -d -t VIP:PORT -r RIP:PORT`.
    pub async fn del_destination(&self, service: ServiceKey, dest: DestKey) -> Result<(), Error> {
        self.apply_one(Op::DelDest { service, dest }).await
    }

    /// Carries out one operation (one request, one ack).
    pub async fn apply_one(&self, op: Op) -> Result<(), Error> {
        self.execute_one(op.to_string(), convert::op_message(&op))
            .await
    }

    /// Starts a connection-sync daemon:
    /// `ipvsadm --start-daemon master|backup --mcast-interface IF --syncid ID`.
    pub async fn start_sync_daemon(&self, daemon: &SyncDaemon) -> Result<(), Error> {
        self.execute_one(
            format!(
                "start sync daemon {} on {}",
                daemon.role,
                daemon.ifname.as_str()
            ),
            convert::start_daemon_message(daemon),
        )
        .await
    }

    /// Stops a connection-sync daemon: `ipvsadm --stop-daemon master|backup`.
    pub async fn stop_sync_daemon(&self, role: SyncRole) -> Result<(), Error> {
        self.execute_one(
            format!("stop sync daemon {role}"),
            convert::stop_daemon_message(role),
        )
        .await
    }

    /// The running sync daemons: `ipvsadm -L --daemon`.
    pub async fn list_sync_daemons(&self) -> Result<Vec<SyncDaemon>, Error> {
        self.query(
            "dump sync daemons",
            IpvsMessage::new(IpvsCmd::GetDaemon, vec![]),
            NLM_F_REQUEST | NLM_F_DUMP,
        )
        .await?
        .iter()
        .filter_map(convert::daemon_nest)
        .map(convert::parse_daemon)
        .collect()
    }
}

impl IpvsTable for IpvsHandle {
    /// One service dump, then one destination dump per service (dumps on one
    /// socket cannot overlap).
    async fn read(&self) -> Result<Table, Error> {
        let mut table = Table::new();
        for service in self.list_services().await? {
            table.insert_read_service(service.key, service.config);
            for dest in self.list_destinations(&service.key).await? {
                table.push_read_dest(&service.key, dest.key, dest.config);
            }
        }
        Ok(table)
    }

    /// Batched: `ipvsadm --restore` with one line per operation, without a
    /// round trip per line. The messages of one batch are built just before
    /// it is sent: a hundred thousand operations never exist as messages at
    /// once (about a kilobyte each), so memory stays flat with the plan's size.
    async fn apply(&mut self, ops: &[Op]) -> ApplyReport {
        let mut report = ApplyReport::default();
        for chunk in ops.chunks(BATCH_SIZE) {
            let requests = chunk
                .iter()
                .map(|op| (op.to_string(), convert::op_message(op)))
                .collect();
            let results = self.execute(requests).await;
            for (op, result) in chunk.iter().zip(results) {
                match result {
                    Ok(()) => report.applied += 1,
                    Err(err) => report.failed.push((*op, err)),
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroI32;

    use netlink_packet_core::{DoneMessage, ErrorMessage};

    use super::*;

    fn answer(code: i32) -> NetlinkMessage<RawGenlMessage> {
        let mut err = ErrorMessage::default();
        err.code = NonZeroI32::new(code);
        NetlinkMessage::new(Default::default(), NetlinkPayload::Error(err))
    }

    #[test]
    fn answers_match_requests_by_position() {
        let replies = vec![answer(0), answer(-17), answer(0)];
        assert_eq!(
            acks_by_position(3, replies),
            vec![Some(Ok(())), Some(Err(Errno::EEXIST)), Some(Ok(()))]
        );
    }

    /// A connection that never answers (its task is not even running) must
    /// not hang the caller: every request of the batch times out, and dumps
    /// too. Time is paused, so the 30 s pass at once.
    #[tokio::test(start_paused = true)]
    async fn unanswered_requests_time_out() {
        let (_never_polled, conn) = new_connection().unwrap();
        let mut ipvs = IpvsHandle::bound(conn, 0x1c);
        let key = crate::model::ServiceKey::Fwmark {
            family: crate::model::AddressFamily::Inet,
            mark: 1,
        };
        let report = ipvs
            .apply(&[Op::DelService { key }, Op::DelService { key }])
            .await;
        assert_eq!(report.applied, 0);
        assert!(
            report
                .failed
                .iter()
                .all(|(_, e)| matches!(e, Error::Timeout(_)))
        );
        assert!(matches!(ipvs.list_services().await, Err(Error::Timeout(_))));
    }

    #[test]
    fn missing_answers_are_reported_as_unanswered() {
        let replies = vec![
            answer(-3),
            NetlinkMessage::new(
                Default::default(),
                NetlinkPayload::Done(DoneMessage::default()),
            ),
        ];
        assert_eq!(
            acks_by_position(3, replies),
            vec![Some(Err(Errno::ESRCH)), None, None]
        );
    }
}
