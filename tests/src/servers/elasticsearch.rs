//! An Elasticsearch-API server (noida-db), where Vigil's aggregator indexes events.
//!
//! No Elasticsearch build can be installed on the test machines; noida-db speaks the
//! parts of the Elasticsearch 8 API that Vigil uses (bulk, templates, search, scroll).

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use super::{StartFailure, answers_http, await_ready, cached_binary, start_with_retries};
use crate::ports::free_tcp_port;
use crate::process::{ChildProcess, new_work_dir};

/// Environment variable naming the `noida-db` executable to run.
pub const NOIDA_BIN_ENV: &str = "VIGIL_NOIDA_BIN";

/// An Elasticsearch-API server on loopback with its data in the run directory.
#[derive(Debug)]
pub struct ElasticsearchServer {
    binary: PathBuf,
    port: u16,
    /// The running server (a Python launcher and the server it starts, in one
    /// group); `None` while stopped.
    process: Mutex<Option<ChildProcess>>,
    /// Data directory, kept across a restart and removed with the server.
    dir: PathBuf,
}

impl ElasticsearchServer {
    /// Starts noida-db's Elasticsearch service on a free port and waits until `/` answers.
    pub fn start() -> ElasticsearchServer {
        let binary = cached_binary(NOIDA_BIN_ENV, "noida-venv/bin/noida-db");
        start_with_retries("noida-db", || {
            let server = ElasticsearchServer {
                binary: binary.clone(),
                port: free_tcp_port(),
                process: Mutex::new(None),
                dir: new_work_dir("elasticsearch"),
            };
            let process = server.spawn_and_await_ready()?;
            *server.lock_process() = Some(process);
            Ok(server)
        })
    }

    fn spawn_and_await_ready(&self) -> Result<ChildProcess, StartFailure> {
        let mut command = Command::new(&self.binary);
        command
            .arg("start")
            .arg("--only")
            .arg("elasticsearch")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--elasticsearch-port")
            .arg(self.port.to_string())
            .current_dir(&self.dir);
        let mut process = ChildProcess::spawn_with_scratch_dir("noida-db", command, &self.dir);
        let url = self.url();
        await_ready(&mut process, "noida-db", || answers_http(&url))?;
        Ok(process)
    }

    /// The base URL, e.g. `http://127.0.0.1:40126`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        self.lock_process().as_ref().map_or_else(
            || "(noida-db stopped)".to_owned(),
            |process| process.log_tail(),
        )
    }

    /// Freezes the server (SIGSTOP): requests hang until [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        if let Some(process) = self.lock_process().as_ref() {
            process.signal_group("STOP");
        }
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        if let Some(process) = self.lock_process().as_ref() {
            process.signal_group("CONT");
        }
    }

    /// Stops the server (SIGTERM) and waits for it to exit: clients see connections
    /// refused until [`restart`](Self::restart). Does nothing if it is stopped.
    pub fn stop(&self) {
        if let Some(mut process) = self.lock_process().take() {
            process.terminate();
        }
    }

    /// Stops the server if it runs, starts it again on the same port and data, and
    /// waits until it answers; indices and templates are kept.
    pub fn restart(&self) {
        let mut process = self.lock_process();
        if let Some(mut running) = process.take() {
            running.terminate();
        }
        let restarted = start_with_retries("noida-db (restart)", || self.spawn_and_await_ready());
        *process = Some(restarted);
    }

    fn lock_process(&self) -> MutexGuard<'_, Option<ChildProcess>> {
        self.process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ElasticsearchServer {
    fn drop(&mut self) {
        if let Some(mut process) = self.lock_process().take() {
            process.kill_hard();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
