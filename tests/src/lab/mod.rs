//! The lab driver: boots a scenario in the lab VM and hands back what it left.
//!
//! The host kernel has no IPVS and no ipip, so the data plane is proven in a VM running
//! Debian's kernel under qemu (TCG) through virtme-ng, with the host's root shared read-only
//! (see `tests/lab/` and `shared/LAB-NOTES.md`). This module is the Rust face of those scripts:
//! - [`ensure_setup`] runs `tests/lab/setup.sh` once per process (packages, virtme-ng, kernel);
//! - [`ensure_built`] / [`ensure_built_bins`] build, once per process, the release binaries
//!   scenarios run in the guest (always the `lvstun-lab-web` fixture; more on request);
//! - [`run_scenario`] / [`run_scenario_with`] boot the VM with `tests/lab/run-guest.sh`, one
//!   run at a time per process, and return a [`LabRun`] over the run's folder
//!   `target/lab-runs/<scenario>-<timestamp>/`, which keeps every log and artifact;
//! - [`run_or_reuse`] / [`run_or_reuse_with`] do the same, or re-read a recorded run when
//!   `LVSTUN_LAB_REUSE_<SCENARIO>` names its folder (no VM, no build): how a lab test's
//!   checks are re-proven on recorded output.
//!
//! Failures carry that folder in their message, so a failing test always says where to look.
//! All I/O here is blocking (processes and files); async callers use `spawn_blocking`.
//! The pure parsers of the tools' output live in [`parse`].

pub mod parse;
pub mod pods;
pub mod stalls;
pub mod vipwatch;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What can go wrong while preparing or running a lab scenario.
///
/// Each variant that concerns a run names its output folder: that is the first thing a person
/// needs to see when a lab test fails.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// `tests/lab/setup.sh` failed or printed something unexpected.
    #[error("lab setup failed: {0}")]
    Setup(String),
    /// Building the binaries the guest runs failed.
    #[error("building the lab binaries failed: {0}")]
    Build(String),
    /// A process could not be started or a file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The scenario ran and exited with a non-zero status.
    #[error("scenario {scenario} failed with status {code}; logs in {}", out_dir.display())]
    ScenarioFailed {
        /// The scenario's name.
        scenario: String,
        /// Its exit status.
        code: i32,
        /// The run's folder.
        out_dir: PathBuf,
    },
    /// The VM did not finish within its time bound.
    #[error("scenario {scenario} timed out; logs in {}", out_dir.display())]
    TimedOut {
        /// The scenario's name.
        scenario: String,
        /// The run's folder.
        out_dir: PathBuf,
    },
    /// The guest never reported a status: it did not boot or the scenario never started.
    #[error("scenario {scenario}: the guest reported no status ({detail}); logs in {}", out_dir.display())]
    NoStatus {
        /// The scenario's name.
        scenario: String,
        /// What run-guest.sh said about it.
        detail: String,
        /// The run's folder.
        out_dir: PathBuf,
    },
    /// An artifact the caller asked for is missing or malformed.
    #[error("artifact {}: {detail}", path.display())]
    Artifact {
        /// The artifact's path.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

/// Result type of this module.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// The repository's root (the workspace), found from this crate's manifest at compile time.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `tests/lab/`, where the shell side of the lab lives.
pub fn lab_dir() -> PathBuf {
    repo_dir().join("tests").join("lab")
}

/// Cargo's target folder: `CARGO_TARGET_DIR` when set, else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_dir().join(dir)
            }
        }
        _ => repo_dir().join("target"),
    }
}

/// Where the guest finds the project's release binaries (shared read-only from the host).
pub fn bin_dir() -> PathBuf {
    target_dir().join("release")
}

/// What `setup.sh` prepared: the virtme-ng launcher and the kernel to boot.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Path of `vng` in the cached venv.
    pub vng: PathBuf,
    /// Path of Debian's `vmlinuz`, beside its `lib/modules`.
    pub kernel: PathBuf,
    /// The kernel's release string, e.g. `6.1.0-56-amd64`.
    pub kernel_version: String,
}

/// Runs `tests/lab/setup.sh` once per process and returns what it prepared.
///
/// Idempotent and fast once cached (well under a second), but it may install Debian packages
/// and download a kernel the first time on a machine, so it runs once, not per scenario.
pub fn ensure_setup() -> Result<&'static Setup> {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    if let Some(setup) = SETUP.get() {
        return Ok(setup);
    }
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(setup) = SETUP.get() {
        return Ok(setup);
    }
    let script = lab_dir().join("setup.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(io(format!("running {}", script.display())))?;
    if !output.status.success() {
        return Err(LabError::Setup(format!(
            "{} exited with {}",
            script.display(),
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let kv = parse::key_values(&stdout);
    let field = |key: &str| {
        kv.get(key)
            .and_then(|values| values.last())
            .cloned()
            .ok_or_else(|| LabError::Setup(format!("setup.sh printed no {key}= line")))
    };
    let setup = Setup {
        vng: PathBuf::from(field("vng")?),
        kernel: PathBuf::from(field("kernel")?),
        kernel_version: field("kernel_version")?,
    };
    Ok(SETUP.get_or_init(|| setup))
}

/// The release binaries every scenario may run in the guest: (package, binary).
///
/// Scenarios that need more (for instance `("lvstun-node", "lvstun-node")` for the product's
/// daemon) call [`ensure_built_bins`] with them before running.
pub const LAB_BINARIES: &[(&str, &str)] = &[("lvstun-tests", "lvstun-lab-web")];

/// Builds [`LAB_BINARIES`] in release mode, once per process. See [`ensure_built_bins`].
pub fn ensure_built() -> Result<()> {
    ensure_built_bins(LAB_BINARIES)
}

/// Builds the given (package, binary) pairs in release mode into [`bin_dir`], each pair once
/// per process.
///
/// Why here and not in the caller: a lab test must never run against a stale binary, and
/// `cargo test` builds only debug artifacts. Setting `LVSTUN_LAB_NO_BUILD=1` skips the build
/// (CI scripts that built everything beforehand, or a target folder locked by another build);
/// the binaries must then already be in [`bin_dir`].
pub fn ensure_built_bins(bins: &[(&str, &str)]) -> Result<()> {
    static BUILT: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let wanted: Vec<(&str, &str)> = bins
        .iter()
        .copied()
        .filter(|(p, b)| !built.contains(&((*p).to_string(), (*b).to_string())))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    if std::env::var("LVSTUN_LAB_NO_BUILD").is_ok_and(|v| v == "1") {
        for (_, bin) in &wanted {
            let path = bin_dir().join(bin);
            if !path.is_file() {
                return Err(LabError::Build(format!(
                    "LVSTUN_LAB_NO_BUILD=1 but {} is missing",
                    path.display()
                )));
            }
        }
    } else {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_dir())
            .args(["build", "--release"])
            .stdin(Stdio::null());
        for (package, bin) in &wanted {
            cmd.args(["-p", package, "--bin", bin]);
        }
        eprintln!("[lab] building release binaries: {cmd:?}");
        let status = cmd.status().map_err(io("running cargo build"))?;
        if !status.success() {
            return Err(LabError::Build(format!("cargo build exited with {status}")));
        }
    }
    built.extend(
        wanted
            .iter()
            .map(|(p, b)| ((*p).to_string(), (*b).to_string())),
    );
    Ok(())
}

/// How to run one scenario.
#[derive(Debug, Clone, Default)]
pub struct ScenarioOptions {
    /// Variables exported to the scenario script in the guest.
    pub env: Vec<(String, String)>,
    /// Wall-clock bound of the whole VM run; `None` means run-guest.sh's default
    /// (`LVSTUN_LAB_TIMEOUT` or 600 s: generous, because TCG on a busy 2-core host is slow).
    pub timeout: Option<Duration>,
    /// A host loopback port the guest may reach through the management link (qemu user
    /// networking with `restrict=on` and one guestfwd; see `tests/lab/run-guest.sh`).
    pub mgmt_port: Option<u16>,
    /// Keep the guest's kernel console in `console.log` (slower; for debugging boots).
    pub verbose: bool,
    /// The run's folder, made beforehand with [`new_run_dir`] when the host must see the
    /// scenario's files while it runs (a host-side driver answering the guest); `None` makes
    /// a fresh one.
    pub out_dir: Option<PathBuf>,
    /// Guest memory (qemu's syntax, e.g. `3G`); `None` means run-guest.sh's default.
    pub memory: Option<String>,
}

/// One finished scenario run: its folder and what the scenario wrote there.
#[derive(Debug, Clone)]
pub struct LabRun {
    /// The scenario's name.
    pub scenario: String,
    /// The run's folder under `target/lab-runs/`, with every log and artifact.
    pub out_dir: PathBuf,
    /// `KEY=VALUE` lines of `results.txt`, in order per key (a key may repeat).
    pub results: BTreeMap<String, Vec<String>>,
    /// Timings in seconds from `timing.env`: `guest_boot_s` (kernel start to scenario start),
    /// `guest_end_s` (kernel start to scenario end), `vm_wall_s` (host wall time of the VM).
    pub timing: BTreeMap<String, f64>,
    /// Host wall time of the whole run, setup and build checks included.
    pub wall: Duration,
    /// Whether this is a recorded run re-read through `LVSTUN_LAB_REUSE_<SCENARIO>`: its
    /// folder is someone's record, so a test writes nothing into it.
    pub reused: bool,
}

impl LabRun {
    /// The last value recorded for `key` in `results.txt`.
    pub fn result(&self, key: &str) -> Option<&str> {
        self.results
            .get(key)
            .and_then(|values| values.last())
            .map(String::as_str)
    }

    /// Every value recorded for `key`, in order.
    pub fn results_for(&self, key: &str) -> &[String] {
        self.results.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The path of an artifact (a file the scenario wrote into its folder).
    pub fn path(&self, name: &str) -> PathBuf {
        self.out_dir.join(name)
    }

    /// The text of an artifact; missing artifacts are an error naming the path.
    pub fn artifact(&self, name: &str) -> Result<String> {
        let path = self.path(name);
        std::fs::read_to_string(&path).map_err(|e| LabError::Artifact {
            path,
            detail: e.to_string(),
        })
    }

    /// An artifact read through one of [`parse`]'s parsers (e.g. `run.parsed("save-1.txt",
    /// parse::ipvsadm::save)`): a missing or malformed artifact is an error naming its path,
    /// so a check never stands on a half-read file.
    pub fn parsed<T>(
        &self,
        name: &str,
        parser: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T> {
        let text = self.artifact(name)?;
        parser(&text).map_err(|detail| LabError::Artifact {
            path: self.path(name),
            detail,
        })
    }

    /// The events of a daemon's log `logs/<name>.log` (lines that are not events skipped).
    pub fn log(&self, name: &str) -> Result<Vec<parse::log::LogLine>> {
        Ok(parse::log::lines(
            &self.artifact(&format!("logs/{name}.log"))?,
        ))
    }

    /// A `results.txt` value that is a daemon's log line (scenarios record a pass's line
    /// under a key, e.g. `start_pass`), parsed.
    pub fn result_log(&self, key: &str) -> Result<parse::log::LogLine> {
        let path = self.path("results.txt");
        let value = self.result(key).ok_or_else(|| LabError::Artifact {
            path: path.clone(),
            detail: format!("no {key}"),
        })?;
        parse::log::line(value).map_err(|detail| LabError::Artifact {
            path,
            detail: format!("{key}: {detail}"),
        })
    }

    /// An artifact parsed as JSON (e.g. the output of `ip -j ...`).
    pub fn artifact_json(&self, name: &str) -> Result<serde_json::Value> {
        let text = self.artifact(name)?;
        serde_json::from_str(&text).map_err(|e| LabError::Artifact {
            path: self.path(name),
            detail: format!("not JSON: {e}"),
        })
    }
}

/// Runs `scenario` in the VM ([`run_scenario`] without extra environment), or, when
/// `LVSTUN_LAB_REUSE_<NAME>` (the scenario's name in capitals, `-` as `_`, e.g.
/// `LVSTUN_LAB_REUSE_VRRP_FAILOVER`) names a finished run folder, re-reads that run instead:
/// a test's assertions can then be re-checked on recorded output without booting the VM.
/// See [`run_or_reuse_with`].
pub fn run_or_reuse(scenario: &str) -> Result<LabRun> {
    run_or_reuse_with(scenario, &[], &[])
}

/// The variable naming a recorded run of `scenario` to re-read (see [`run_or_reuse`]).
pub fn reuse_var(scenario: &str) -> String {
    format!(
        "LVSTUN_LAB_REUSE_{}",
        scenario.to_uppercase().replace('-', "_")
    )
}

/// [`run_or_reuse`] for a scenario that takes environment (`env`, exported in the guest) and
/// needs release binaries beyond [`LAB_BINARIES`] (`bins`, see [`ensure_built_bins`]): the
/// one place a lab test asks for its run.
///
/// Why one place: a re-read run must be the run the test would have made, and re-reading
/// must not build anything. So `bins` are built only when the VM boots, and a recorded run is
/// refused unless its `lab.env` (which `run-guest.sh` writes with every variable it passed)
/// exports each of `env` with the same value: a smoke-sized run is never checked against a
/// full-sized test, nor the other way round.
pub fn run_or_reuse_with(
    scenario: &str,
    env: &[(&str, &str)],
    bins: &[(&str, &str)],
) -> Result<LabRun> {
    let var = reuse_var(scenario);
    let Some(dir) = std::env::var_os(&var) else {
        ensure_built_bins(bins)?;
        return run_scenario(scenario, env);
    };
    let out_dir = PathBuf::from(dir);
    let read = |name: &str| {
        let path = out_dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| LabError::Io {
            what: format!("{var}: reading {}", path.display()),
            source,
        })
    };
    let results = read("results.txt")?;
    if !env.is_empty() {
        let recorded = read("lab.env")?;
        let exported: BTreeSet<&str> = recorded
            .lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .collect();
        for (key, value) in env {
            let want = format!("{key}={value}");
            if !exported.contains(want.as_str()) {
                return Err(LabError::Artifact {
                    path: out_dir.join("lab.env"),
                    detail: format!(
                        "{var}: this run was not recorded with {want}; it cannot stand for this test's run"
                    ),
                });
            }
        }
    }
    eprintln!("[lab] {var}: re-reading {}", out_dir.display());
    Ok(LabRun {
        scenario: scenario.to_owned(),
        out_dir,
        results: parse::key_values(&results),
        timing: BTreeMap::new(),
        wall: Duration::ZERO,
        reused: true,
    })
}

/// Where a scenario's script is: a bare name is `tests/lab/scenarios/<name>.sh`; a name ending
/// in `.sh` is a path, relative to the repository unless absolute (so a component can keep a
/// scenario beside its code, e.g. `node-daemon/lab/some-scenario.sh`).
pub fn scenario_path(name: &str) -> PathBuf {
    if name.ends_with(".sh") {
        repo_dir().join(name)
    } else {
        lab_dir().join("scenarios").join(format!("{name}.sh"))
    }
}

/// Runs a scenario (see [`scenario_path`]) with `env` exported in the guest.
///
/// See [`run_scenario_with`].
pub fn run_scenario(name: &str, env: &[(&str, &str)]) -> Result<LabRun> {
    let options = ScenarioOptions {
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        ..ScenarioOptions::default()
    };
    run_scenario_with(name, &options)
}

/// Runs a scenario in a fresh VM and returns its results.
///
/// Prepares the host ([`ensure_setup`]), builds the guest's binaries ([`ensure_built`]), then
/// boots one VM at a time per process (two TCG guests on two cores would only slow each other
/// into their timeouts). A non-zero exit of the scenario, a timeout or a guest that never
/// started are errors that name the run's folder.
pub fn run_scenario_with(name: &str, options: &ScenarioOptions) -> Result<LabRun> {
    static ONE_VM: Mutex<()> = Mutex::new(());
    let started = Instant::now();
    let setup = ensure_setup()?;
    ensure_built()?;
    let scenario = scenario_path(name);
    if !scenario.is_file() {
        return Err(LabError::Setup(format!(
            "no scenario {}",
            scenario.display()
        )));
    }
    let stem = scenario
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_string());
    let out_dir = match &options.out_dir {
        Some(dir) => dir.clone(),
        None => new_run_dir(&stem)?,
    };

    let _vm = ONE_VM
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut cmd = Command::new("bash");
    cmd.arg(lab_dir().join("run-guest.sh"))
        .env("LVSTUN_VNG", &setup.vng)
        .env("LVSTUN_KERNEL", &setup.kernel)
        .env("LVSTUN_LAB_BIN", bin_dir())
        .stdin(Stdio::null());
    if let Some(timeout) = options.timeout {
        cmd.args(["--timeout", &timeout.as_secs().max(1).to_string()]);
    }
    if let Some(port) = options.mgmt_port {
        cmd.args(["--mgmt-port", &port.to_string()]);
    }
    if options.verbose {
        cmd.arg("--verbose");
    }
    if let Some(memory) = &options.memory {
        cmd.env("LVSTUN_LAB_MEMORY", memory);
    }
    for (key, value) in &options.env {
        cmd.args(["--env", &format!("{key}={value}")]);
    }
    cmd.arg(&out_dir).arg(&scenario);
    let mut status = cmd
        .status()
        .map_err(io(format!("running run-guest.sh for {name}")))?;
    // A guest that never started (qemu/vng gave up before the scenario ran: no guest.log) is
    // the emulator failing, not the scenario; on this shared machine it happens now and then.
    // One more boot, and only then is it an error; a scenario that ran is never rerun.
    if status.code() == Some(125) && !out_dir.join("guest.log").exists() {
        eprintln!(
            "[lab] the guest never started (see {}/vng.log); booting once more",
            out_dir.display()
        );
        status = cmd
            .status()
            .map_err(io(format!("running run-guest.sh for {name}")))?;
    }

    let scenario_name = name.to_string();
    match status.code() {
        Some(0) => {}
        Some(124) => {
            return Err(LabError::TimedOut {
                scenario: scenario_name,
                out_dir,
            });
        }
        Some(125) => {
            return Err(LabError::NoStatus {
                scenario: scenario_name,
                detail: "see vng.log".into(),
                out_dir,
            });
        }
        Some(code) => {
            return Err(LabError::ScenarioFailed {
                scenario: scenario_name,
                code,
                out_dir,
            });
        }
        None => {
            return Err(LabError::NoStatus {
                scenario: scenario_name,
                detail: format!("run-guest.sh ended by a signal ({status})"),
                out_dir,
            });
        }
    }

    let results = read_optional(&out_dir.join("results.txt"))?;
    let timing = read_optional(&out_dir.join("timing.env"))?;
    let timing = parse::key_values(&timing)
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.last()?.parse().ok()?)))
        .collect();
    Ok(LabRun {
        scenario: scenario_name,
        results: parse::key_values(&results),
        out_dir,
        timing,
        wall: started.elapsed(),
        reused: false,
    })
}

fn read_optional(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(LabError::Io {
            what: format!("reading {}", path.display()),
            source: e,
        }),
    }
}

/// Creates `target/lab-runs/<scenario>-<UTC timestamp>[-N]/`, a new folder for each run.
/// A fresh folder `target/lab-runs/<scenario>-<UTC stamp>` for one run.
pub fn new_run_dir(scenario: &str) -> Result<PathBuf> {
    let runs = target_dir().join("lab-runs");
    std::fs::create_dir_all(&runs).map_err(io(format!("creating {}", runs.display())))?;
    let stamp = utc_stamp(SystemTime::now());
    for n in 0..1000 {
        let name = if n == 0 {
            format!("{scenario}-{stamp}")
        } else {
            format!("{scenario}-{stamp}-{n}")
        };
        let dir = runs.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(LabError::Io {
                    what: format!("creating {}", dir.display()),
                    source: e,
                });
            }
        }
    }
    Err(LabError::Setup(format!(
        "no free run folder for {scenario} in {}",
        runs.display()
    )))
}

/// `YYYYmmdd-HHMMSS` in UTC, without a date crate (civil-from-days, H. Hinnant's algorithm).
fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_formats_known_instants() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101-000000");
        // 2026-11-25T03:04:05Z
        let t = UNIX_EPOCH + Duration::from_secs(1_795_575_845);
        assert_eq!(utc_stamp(t), "20261125-030405");
        // 2024-02-29T23:59:59Z (leap day)
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(utc_stamp(t), "20240229-235959");
    }

    #[test]
    fn paths_hang_off_the_repository() {
        assert!(lab_dir().join("run-guest.sh").is_file());
        assert!(lab_dir().join("topology.sh").is_file());
        assert!(scenario_path("recipe-ipvsadm").is_file());
        assert_eq!(
            scenario_path("tests/lab/scenarios/recipe-ipvsadm.sh"),
            scenario_path("recipe-ipvsadm")
        );
        assert_eq!(scenario_path("/abs/x.sh"), PathBuf::from("/abs/x.sh"));
    }
}
