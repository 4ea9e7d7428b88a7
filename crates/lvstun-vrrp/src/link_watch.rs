//! Follows a router's interface over rtnetlink's link notifications and tells the router when it
//! goes down or comes back (keepalived tracks its interface the same way). [`carrier`] and
//! [`LinkFollower`] decide (pure); [`watch`] subscribes and forwards (I/O).
//!
//! Why: a Master whose data link goes down cannot send advertisements, so a Backup takes over,
//! but without this the Master's state machine never learned it: it kept the VIP on the dead
//! link (two holders, as the kernel shows them), and when the link returned it was a Master at
//! once, before it had heard who held the VIP meanwhile. RFC 9568 leaves interface tracking to
//! implementations; here a link that goes down is the state machine's `Interface down` (to
//! Initialize, VIP removed) and a link that comes back its `Interface up` (Backup, preemption
//! held off), so a returning router takes the VIP back only by the usual rules.

use std::io;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkFlags, LinkMessage};
use rtnetlink::sys::SocketAddr;
use tokio::sync::mpsc::WeakSender;

use crate::driver::Control;

/// Whether a link with these flags carries traffic: administratively up (`IFF_UP`) and
/// operationally running (`IFF_RUNNING`: carrier, and for a veth a peer that is up).
pub fn carrier(flags: LinkFlags) -> bool {
    flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running)
}

/// The last known state of one interface, turning link notifications into router events: an
/// event only when the state changes (the kernel sends a notification for every attribute
/// change, most of which leave the carrier as it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFollower {
    index: u32,
    up: bool,
}

impl LinkFollower {
    /// Follows interface `index`, whose carrier is `up` now.
    pub fn new(index: u32, up: bool) -> Self {
        Self { index, up }
    }

    /// The event for the router if `message` changes this interface's carrier; other
    /// interfaces and other messages give none. A deleted interface is down.
    pub fn on_message(&mut self, message: &RouteNetlinkMessage) -> Option<Control> {
        let up = match message {
            RouteNetlinkMessage::NewLink(link) if self.is_ours(link) => carrier(link.header.flags),
            RouteNetlinkMessage::DelLink(link) if self.is_ours(link) => false,
            _ => return None,
        };
        self.set(up)
    }

    /// The event for the router if the carrier is now `up` and was not before.
    pub fn set(&mut self, up: bool) -> Option<Control> {
        if up == self.up {
            return None;
        }
        self.up = up;
        Some(if up {
            Control::InterfaceUp
        } else {
            Control::InterfaceDown
        })
    }

    fn is_ours(&self, link: &LinkMessage) -> bool {
        link.header.index == self.index
    }
}

/// A subscription to link notifications, opened before the interface's state is read so that
/// no change between the two is missed.
pub struct LinkEvents {
    connection: rtnetlink::proto::Connection<RouteNetlinkMessage>,
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
}

impl LinkEvents {
    /// Subscribes to the link group in the calling thread's network namespace. Must be called
    /// inside the runtime that will run [`watch`].
    pub fn subscribe() -> io::Result<Self> {
        let (connection, _handle, messages) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])?;
        Ok(Self {
            connection,
            messages,
        })
    }
}

/// Forwards carrier changes of `follower`'s interface to the router behind `control` until the
/// router is gone (its control channel closed) or the subscription ends. Holds only a weak
/// sender: a router whose owner dropped it still shuts down. The caller aborts this task when
/// the router's task ends.
pub async fn watch(events: LinkEvents, mut follower: LinkFollower, control: WeakSender<Control>) {
    let LinkEvents {
        connection,
        mut messages,
    } = events;
    let connection = tokio::spawn(connection);
    while let Some((message, _)) = messages.next().await {
        let NetlinkPayload::InnerMessage(message) = message.payload else {
            continue;
        };
        let Some(event) = follower.on_message(&message) else {
            continue;
        };
        tracing::info!(event = ?event, "vrrp: interface carrier changed");
        let Some(control) = control.upgrade() else {
            break;
        };
        if control.send(event).await.is_err() {
            break;
        }
    }
    connection.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, flags: LinkFlags) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m
    }

    fn new_link(index: u32, flags: LinkFlags) -> RouteNetlinkMessage {
        RouteNetlinkMessage::NewLink(link(index, flags))
    }

    const RUNNING: LinkFlags = LinkFlags::Up.union(LinkFlags::Running);

    #[test]
    fn carrier_needs_up_and_running() {
        assert!(carrier(RUNNING | LinkFlags::LowerUp | LinkFlags::Broadcast));
        assert!(!carrier(LinkFlags::Up), "up without carrier (NO-CARRIER)");
        assert!(!carrier(LinkFlags::Running), "administratively down");
        assert!(!carrier(LinkFlags::empty()));
    }

    #[test]
    fn events_only_on_changes_of_our_interface() {
        let mut f = LinkFollower::new(2, true);
        assert_eq!(f.on_message(&new_link(2, RUNNING)), None, "no change");
        assert_eq!(
            f.on_message(&new_link(3, LinkFlags::empty())),
            None,
            "not ours"
        );
        assert_eq!(
            f.on_message(&new_link(2, LinkFlags::Up)),
            Some(Control::InterfaceDown),
            "carrier lost"
        );
        assert_eq!(
            f.on_message(&new_link(2, LinkFlags::empty())),
            None,
            "still down"
        );
        assert_eq!(
            f.on_message(&new_link(2, RUNNING)),
            Some(Control::InterfaceUp)
        );
    }

    #[test]
    fn a_deleted_interface_is_down() {
        let mut f = LinkFollower::new(2, true);
        assert_eq!(
            f.on_message(&RouteNetlinkMessage::DelLink(link(2, RUNNING))),
            Some(Control::InterfaceDown)
        );
        assert_eq!(
            f.on_message(&RouteNetlinkMessage::DelLink(link(2, RUNNING))),
            None
        );
    }

    #[test]
    fn a_router_started_on_a_down_link_is_told_at_once() {
        let mut f = LinkFollower::new(2, true);
        assert_eq!(f.set(false), Some(Control::InterfaceDown));
    }
}
