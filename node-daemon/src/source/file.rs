//! The standalone source: a multi-document YAML file of `VirtualService` and `RealServer`
//! objects (what `deploy/examples/` holds, or `kubectl get -o yaml` prints), for balancers
//! outside a cluster. Does I/O (reads the file, listens for `SIGHUP`).
//!
//! Change detection is deliberately simple and bounded: the file's identity (inode,
//! modification time, length) is checked once a second, and `SIGHUP` forces a re-read. An
//! editor that writes a new file and renames it over the old one, `kubectl get -o yaml >`, and
//! a configuration manager all change one of the three. A file that does not parse, or whose
//! objects the API's own schema and CEL rules refuse ([`super::config`]), is logged at warning
//! level (file, document, object, field) and ignored as a whole: the balancer keeps programming
//! the last good one, so a typo never withdraws a VIP. Content identical to the last published one publishes nothing.
//!
//! The parser is [`super::config`]'s: one file format for both roles.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::config;
use super::{Peers, Scope, Snapshot};
use crate::error::Error;

/// How often the file's identity is checked.
pub const POLL: Duration = Duration::from_secs(1);

/// What identifies one version of the file: inode, modification time, length.
type Stamp = (u64, SystemTime, u64);

fn stamp(path: &str) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.modified().ok()?, meta.len()))
}

/// Parses the file's text into a snapshot that concerns every VirtualService in it. Pure.
pub fn parse(text: &str) -> Result<Snapshot, Error> {
    let objects = config::parse(text)?;
    Ok(Snapshot {
        refused: None,
        virtual_services: objects.virtual_services,
        real_servers: objects.real_servers,
        scope: Scope::All,
        peers: Peers::Unknown,
    })
}

fn read(path: &str, peers: &Peers) -> Result<(String, Snapshot), Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::File {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    let mut snapshot = parse(&text).map_err(|source| Error::FileContent {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    snapshot.peers = peers.clone();
    Ok((text, snapshot))
}

/// Reads the file once (a file that cannot be read at start is an error: the daemon refuses
/// to start rather than program nothing), then follows it in a task.
///
/// Every snapshot carries `peers` (the command line's `--vrrp-peers`: a file written for one
/// host names no Nodes whose addresses could be looked up).
///
/// Must be called inside a tokio runtime. The task ends when every receiver is dropped.
pub fn start(
    path: &str,
    peers: Peers,
) -> Result<(watch::Receiver<Arc<Snapshot>>, JoinHandle<()>), Error> {
    let mut seen = stamp(path);
    let (mut last_text, first) = read(path, &peers)?;
    info!(
        path,
        virtual_services = first.virtual_services.len(),
        real_servers = first.real_servers.len(),
        "configuration read"
    );
    let (tx, rx) = watch::channel(Arc::new(first));
    let mut hup = signal(SignalKind::hangup())?;
    let path = path.to_owned();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = tx.closed() => return,
                _ = hup.recv() => true,
                _ = tick.tick() => false,
            };
            let now = stamp(&path);
            if !forced && now == seen {
                continue;
            }
            seen = now;
            match read(&path, &peers) {
                Ok((text, snapshot)) => {
                    if text == last_text {
                        continue;
                    }
                    last_text = text;
                    info!(
                        path,
                        virtual_services = snapshot.virtual_services.len(),
                        real_servers = snapshot.real_servers.len(),
                        reason = if forced { "SIGHUP" } else { "file changed" },
                        "configuration reloaded"
                    );
                    if tx.send(Arc::new(snapshot)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!("configuration not reloaded, keeping the last good one: {e}");
                    // The last good objects, with the refusal: readiness and the metric say
                    // so until a good version comes. The text is forgotten, so that putting the
                    // last good file back publishes it again and clears the refusal.
                    let mut kept = (**tx.borrow()).clone();
                    kept.refused = Some(e.to_string());
                    last_text.clear();
                    if tx.send(Arc::new(kept)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok((rx, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = include_str!("../../../deploy/examples/virtualservice.yaml");
    const RS: &str = include_str!("../../../deploy/examples/realservers.yaml");

    fn example() -> String {
        format!("{VS}\n---\n{RS}")
    }

    #[test]
    fn the_examples_are_one_snapshot_for_every_virtual_service() {
        let s = parse(&example()).unwrap();
        assert_eq!(s.virtual_services.len(), 1);
        assert_eq!(s.real_servers.len(), 2);
        assert_eq!(s.scope, Scope::All);
    }

    #[tokio::test]
    async fn follows_the_file_and_keeps_the_last_good_version() {
        let dir = std::env::temp_dir().join(format!("lvstun-source-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(&path, example()).unwrap();
        let path_str = path.to_str().unwrap().to_owned();
        let peers = Peers::Listed(vec!["192.0.2.3".parse().unwrap()]);
        let (mut rx, task) = start(&path_str, peers.clone()).unwrap();
        assert_eq!(rx.borrow_and_update().real_servers.len(), 2);
        assert_eq!(
            rx.borrow().peers,
            peers,
            "--vrrp-peers ride on every snapshot"
        );

        // A broken file changes no object: the last good ones are published again, with the
        // refusal (readiness and the metric say the file is not applied).
        std::fs::write(&path, "kind: [").unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("the refusal is published within the poll period")
            .unwrap();
        {
            let kept = rx.borrow_and_update();
            assert_eq!(kept.real_servers.len(), 2, "the last good objects are kept");
            assert!(
                kept.refused
                    .as_deref()
                    .is_some_and(|r| r.contains("config.yaml")),
                "{:?}",
                kept.refused
            );
        }
        // Nothing more while it stays broken.
        let quiet = tokio::time::timeout(Duration::from_millis(2500), rx.changed()).await;
        assert!(quiet.is_err(), "a broken file is published once");

        // A good one with one real server less is published (written by rename, as editors do).
        let one = format!("{VS}\n---\n{}", RS.split("\n---\n").next().unwrap());
        let tmp = dir.join("config.yaml.new");
        std::fs::write(&tmp, one).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("published within the poll period")
            .unwrap();
        {
            let good = rx.borrow_and_update();
            assert_eq!(good.real_servers.len(), 1);
            assert_eq!(good.refused, None, "a good file clears the refusal");
        }
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_file_is_an_error_at_start() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let err = start("/nonexistent/lvstun.yaml", Peers::Unknown).unwrap_err();
            assert!(
                err.to_string().contains("/nonexistent/lvstun.yaml"),
                "{err}"
            );
        });
    }
}
