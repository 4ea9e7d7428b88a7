//! The lab's management link (`tests/lab/scenarios/mgmt-link.sh`): the guest reaches one host
//! loopback port through qemu user networking with `restrict=on` and a single guestfwd, and
//! nothing else; a namespace reaches it through `lab_mgmt_expose` without any route.
//!
//! This is the path the product's daemons in the lab will take to the control plane on the
//! host. Run: `cargo test -p lvstun-tests --test lab_mgmt -- --nocapture`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lvstun_tests::lab::{self, ScenarioOptions};

/// Serves `token` to every HTTP request on `listener` (loopback only), counting requests.
fn serve_token(listener: TcpListener, token: String, served: Arc<AtomicUsize>) {
    std::thread::spawn(move || {
        // Bounded: the scenario makes two requests and one bare connection probe.
        for stream in listener.incoming().take(32) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            });
            // Read the request head; a probe that connects and closes sends none.
            let mut saw_request = false;
            let mut line = String::new();
            for _ in 0..100 {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.trim().is_empty() => break,
                    Ok(_) => saw_request = true,
                }
            }
            if !saw_request {
                continue;
            }
            let body = format!("{token}\n");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            served.fetch_add(1, Ordering::SeqCst);
        }
    });
}

#[test]
fn guest_reaches_one_host_loopback_port_and_nothing_else() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let token = format!("lvstun-lab-token-{}-{nanos}", std::process::id());
    let served = Arc::new(AtomicUsize::new(0));
    serve_token(listener, token.clone(), served.clone());

    let run = lab::run_scenario_with(
        "mgmt-link",
        &ScenarioOptions {
            mgmt_port: Some(port),
            ..ScenarioOptions::default()
        },
    )?;
    let out = run.out_dir.display().to_string();
    eprintln!(
        "[lab_mgmt] run folder {out}; wall {:.1}s, vm {:?}s",
        run.wall.as_secs_f64(),
        run.timing.get("vm_wall_s")
    );

    assert_eq!(
        run.artifact("mgmt-root.txt")?.trim(),
        token,
        "the guest's root namespace must reach the host port ({out})"
    );
    assert_eq!(
        run.artifact("mgmt-ns.txt")?.trim(),
        token,
        "a namespace must reach the host port through lab_mgmt_expose ({out})"
    );
    assert_eq!(
        run.result("host_address_reachable"),
        Some("no"),
        "restrict=on must keep the user network's host address unreachable ({out})"
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "exactly the two requests of the scenario reach the host ({out})"
    );
    Ok(())
}
