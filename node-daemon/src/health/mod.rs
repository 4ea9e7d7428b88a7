//! Health checks of real servers, as ldirectord did them in the classic recipe: HTTP GET
//! (path, Host header, expected status, expected body substring) or TCP connect, with an
//! interval, a timeout, and failure/success thresholds (fall/rise).
//!
//! Layout: `state` is pure (the rise/fall counter), `probe` performs one bounded check (I/O),
//! `checker` schedules every target on the async runtime — one lightweight task per target, no
//! thread or process each, never more than one check in flight per target, so a hanging server
//! costs one pending task and nothing piles up.

pub mod checker;
pub mod probe;
pub mod state;
