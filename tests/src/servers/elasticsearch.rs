//! An Elasticsearch-API server (noida-db), where Vigil's aggregator indexes events.
//!
//! No Elasticsearch build can be installed on the test machines; noida-db speaks the
//! parts of the Elasticsearch 8 API that Vigil uses (bulk, templates, search, scroll).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{StartFailure, answers_http, await_ready, cached_binary, start_with_retries};
use crate::ports::free_tcp_port;
use crate::process::{ChildProcess, new_work_dir};

/// Environment variable naming the `noida-db` executable to run.
pub const NOIDA_BIN_ENV: &str = "VIGIL_NOIDA_BIN";

/// An Elasticsearch-API server on loopback with its data in the run directory.
#[derive(Debug)]
pub struct ElasticsearchServer {
    /// Base URL, `http://127.0.0.1:<port>`.
    url: String,
    /// The running server (a Python launcher and the server it starts, in one group).
    process: ChildProcess,
    /// Data directory, removed with the server.
    dir: PathBuf,
}

impl ElasticsearchServer {
    /// Starts noida-db's Elasticsearch service on a free port and waits until `/` answers.
    pub fn start() -> ElasticsearchServer {
        let binary = cached_binary(NOIDA_BIN_ENV, "noida-venv/bin/noida-db");
        start_with_retries("noida-db", || Self::try_start(&binary))
    }

    fn try_start(binary: &Path) -> Result<ElasticsearchServer, StartFailure> {
        let dir = new_work_dir("elasticsearch");
        let port = free_tcp_port();
        let mut command = Command::new(binary);
        command
            .arg("start")
            .arg("--only")
            .arg("elasticsearch")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--elasticsearch-port")
            .arg(port.to_string())
            .current_dir(&dir);
        let mut process = ChildProcess::spawn_with_scratch_dir("noida-db", command, &dir);
        let url = format!("http://127.0.0.1:{port}");
        await_ready(&mut process, "noida-db", || answers_http(&url))?;
        Ok(ElasticsearchServer { url, process, dir })
    }

    /// The base URL, e.g. `http://127.0.0.1:40126`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Freezes the server (SIGSTOP): requests hang until [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.process.signal_group("STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.process.signal_group("CONT");
    }
}

impl Drop for ElasticsearchServer {
    fn drop(&mut self) {
        self.process.kill_hard();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
