//! A Kafka-compatible broker (tansu), between Vigil's agents and aggregator stages.
//!
//! The broker keeps its data in SQLite so that it survives the restarts fault tests
//! make; topics have to be created before use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use super::{StartFailure, accepts_tcp, await_ready, cached_binary, start_with_retries, succeeds};
use crate::ports::free_tcp_port;
use crate::process::{ChildProcess, new_work_dir};

/// Environment variable naming the `tansu` executable to run.
pub const TANSU_BIN_ENV: &str = "VIGIL_TANSU_BIN";

/// The SQLite file of the broker, relative to its working directory: tansu resolves
/// `sqlite://` URLs against its working directory, even ones with an absolute path.
const STORAGE_ENGINE: &str = "sqlite://tansu.db";

/// A tansu broker on a free port of 127.0.0.1 that can be stopped and restarted.
#[derive(Debug)]
pub struct KafkaBroker {
    /// The `tansu` executable.
    binary: PathBuf,
    /// Working directory of broker and CLI; holds the SQLite storage. Removed with
    /// the broker.
    dir: PathBuf,
    /// The port it listens on, kept across restarts so clients reconnect.
    port: u16,
    /// The port it tells clients to connect to: its own, or that of a TLS
    /// terminator in front of it.
    advertised_port: u16,
    /// The running broker, or `None` while stopped.
    process: Mutex<Option<ChildProcess>>,
}

impl KafkaBroker {
    /// Starts a broker with new, empty storage and waits until it serves requests.
    ///
    /// [`TestServers`](super::TestServers) has a shared one; start another for a test
    /// that stops or restarts its broker.
    pub fn start() -> KafkaBroker {
        Self::start_advertising(None)
    }

    /// Like [`start`](Self::start), telling clients in metadata to connect to
    /// `advertised_port` of 127.0.0.1, where a TLS terminator passes connections on
    /// to it: tansu has no TLS listener of its own.
    pub fn start_behind(advertised_port: u16) -> KafkaBroker {
        Self::start_advertising(Some(advertised_port))
    }

    fn start_advertising(advertised_port: Option<u16>) -> KafkaBroker {
        let binary = cached_binary(TANSU_BIN_ENV, "tansu/bin/tansu");
        start_with_retries("tansu", || {
            let port = free_tcp_port();
            let broker = KafkaBroker {
                binary: binary.clone(),
                dir: new_work_dir("kafka"),
                port,
                advertised_port: advertised_port.unwrap_or(port),
                process: Mutex::new(None),
            };
            let process = broker.spawn_and_await_ready()?;
            *broker.lock_process() = Some(process);
            Ok(broker)
        })
    }

    /// The bootstrap address for Kafka clients, e.g. `127.0.0.1:40125`: the
    /// broker's own port, also when it is behind a TLS terminator.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker URL as tansu's CLI takes it, e.g. `tcp://127.0.0.1:40125`.
    pub fn broker_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Creates topic `name` with `partitions` partitions; panics if the broker refuses.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let output = self
            .cli()
            .args(["topic", "create", "--broker"])
            .arg(self.broker_url())
            .arg("--partitions")
            .arg(partitions.to_string())
            .arg(name)
            .output()
            .unwrap_or_else(|error| panic!("cannot run `tansu topic create`: {error}"));
        assert!(
            output.status.success(),
            "creating topic {name} with {partitions} partitions failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }

    /// Stops the broker gracefully (SIGTERM) and waits for it to exit.
    ///
    /// Does nothing if it is already stopped. Clients see connections refused until
    /// [`restart`](Self::restart).
    pub fn stop(&self) {
        if let Some(mut process) = self.lock_process().take() {
            process.terminate();
        }
    }

    /// Kills the broker with SIGKILL, as a crash or power loss would.
    pub fn crash(&self) {
        if let Some(mut process) = self.lock_process().take() {
            process.kill_hard();
        }
    }

    /// Stops the broker if it runs, starts it again on the same port and storage,
    /// and waits until it serves requests; topics and messages are kept.
    pub fn restart(&self) {
        let mut process = self.lock_process();
        if let Some(mut running) = process.take() {
            running.terminate();
        }
        let restarted = start_with_retries("tansu (restart)", || self.spawn_and_await_ready());
        *process = Some(restarted);
    }

    /// Whether the broker is running (not stopped or crashed).
    pub fn is_running(&self) -> bool {
        self.lock_process()
            .as_mut()
            .is_some_and(|process| process.is_running())
    }

    /// The last lines of the current (or last) broker's log.
    pub fn log_tail(&self) -> String {
        self.lock_process().as_ref().map_or_else(
            || "(broker stopped)".to_owned(),
            |process| process.log_tail(),
        )
    }

    /// The directory holding the broker's storage.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    fn spawn_and_await_ready(&self) -> Result<ChildProcess, StartFailure> {
        let listener_url = self.broker_url();
        let mut command = self.cli();
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(&listener_url)
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{}", self.advertised_port))
            .arg("--storage-engine")
            .arg(STORAGE_ENGINE);
        let mut process = ChildProcess::spawn_with_scratch_dir("tansu", command, &self.dir);
        await_ready(&mut process, "tansu", || {
            accepts_tcp(self.port)
                && succeeds(
                    self.cli()
                        .args(["topic", "list", "--broker"])
                        .arg(&listener_url),
                )
        })?;
        Ok(process)
    }

    /// A `tansu` command run in the broker's directory, with quiet logging.
    fn cli(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1");
        command
    }

    fn lock_process(&self) -> MutexGuard<'_, Option<ChildProcess>> {
        // A test that panicked while holding the lock leaves the state usable.
        self.process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(mut process) = self.lock_process().take() {
            process.kill_hard();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
