//! etcd, where Vigil keeps its configuration and rules.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{StartFailure, answers_http, await_ready, start_with_retries, system_binary};
use crate::ports::free_tcp_ports;
use crate::process::{ChildProcess, new_work_dir};

/// A single-member etcd cluster on loopback with its data in the run directory.
#[derive(Debug)]
pub struct EtcdServer {
    /// Client URL, `http://127.0.0.1:<port>`.
    endpoint: String,
    /// The running etcd.
    process: ChildProcess,
    /// Data directory, removed with the server.
    dir: PathBuf,
}

/// etcd as a cluster of one member in `dir`, serving clients at `endpoint`;
/// callers add their own flags.
pub(crate) fn single_member_command(
    binary: &Path,
    dir: &Path,
    endpoint: &str,
    peer_url: &str,
) -> Command {
    let mut command = Command::new(binary);
    command
        .arg("--name")
        .arg("default")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--listen-client-urls")
        .arg(endpoint)
        .arg("--advertise-client-urls")
        .arg(endpoint)
        .arg("--listen-peer-urls")
        .arg(peer_url)
        .arg("--initial-advertise-peer-urls")
        .arg(peer_url)
        .arg("--initial-cluster")
        .arg(format!("default={peer_url}"));
    command
}

impl EtcdServer {
    /// Starts etcd on free ports and waits until `/health` reports healthy.
    pub fn start() -> EtcdServer {
        let binary = system_binary("etcd", "etcd-server");
        start_with_retries("etcd", || Self::try_start(&binary))
    }

    fn try_start(binary: &Path) -> Result<EtcdServer, StartFailure> {
        let dir = new_work_dir("etcd");
        let ports = free_tcp_ports(2);
        let endpoint = format!("http://127.0.0.1:{}", ports[0]);
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        let mut command = single_member_command(binary, &dir, &endpoint, &peer_url);
        command.current_dir(&dir);
        let mut process = ChildProcess::spawn_with_scratch_dir("etcd", command, &dir);
        let health_url = format!("{endpoint}/health");
        await_ready(&mut process, "etcd", || answers_http(&health_url))?;
        Ok(EtcdServer {
            endpoint,
            process,
            dir,
        })
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Turns authentication on with `etcdctl`: a `root` user with `root_password`,
    /// and `user` with `password`, allowed to read and write keys under `prefix` only.
    pub fn enable_auth(&self, root_password: &str, user: &str, password: &str, prefix: &str) {
        let etcdctl = system_binary("etcdctl", "etcd-client");
        let role = format!("{user}-role");
        let steps: [&[&str]; 8] = [
            &["user", "add", &format!("root:{root_password}")],
            &["role", "add", "root"],
            &["user", "grant-role", "root", "root"],
            &["role", "add", &role],
            &[
                "role",
                "grant-permission",
                &role,
                "--prefix=true",
                "readwrite",
                prefix,
            ],
            &["user", "add", &format!("{user}:{password}")],
            &["user", "grant-role", user, &role],
            &["auth", "enable"],
        ];
        for step in steps {
            let output = Command::new(&etcdctl)
                .env("ETCDCTL_API", "3")
                .arg("--endpoints")
                .arg(&self.endpoint)
                .args(step)
                .output()
                .expect("run etcdctl");
            let stderr = String::from_utf8_lossy(&output.stderr);
            // etcd may create the root role itself.
            let already_there = stderr.contains("role name already exists");
            assert!(
                output.status.success() || already_there,
                "etcdctl {step:?}: {stderr}"
            );
        }
    }

    /// The last lines of etcd's log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.process.kill_hard();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
