//! etcd serving its clients over TLS only, and only those with a client certificate
//! of the test's CA: where an aggregator's rules come from in a deployment that
//! encrypts every hop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::etcd::single_member_command;
use super::{StartFailure, await_ready, start_with_retries, system_binary};
use crate::deployment::path_arg;
use crate::ports::free_tcp_ports;
use crate::process::{ChildProcess, new_work_dir};
use crate::tls::TestCa;

/// A private single-member etcd with `--client-cert-auth` on an `https://` client URL.
#[derive(Debug)]
pub struct TlsEtcdServer {
    /// Client URL, `https://127.0.0.1:<port>`.
    endpoint: String,
    /// What `etcdctl` shows it.
    client: ClientFiles,
    process: ChildProcess,
    /// Data directory, removed with the server.
    dir: PathBuf,
}

impl TlsEtcdServer {
    /// Starts etcd with `ca`'s server certificate, trusting `ca` for client
    /// certificates, and waits until `etcdctl` with the client certificate finds it
    /// healthy.
    pub fn start(ca: &TestCa) -> TlsEtcdServer {
        let binary = system_binary("etcd", "etcd-server");
        start_with_retries("etcd (TLS)", || Self::try_start(&binary, ca))
    }

    fn try_start(binary: &Path, ca: &TestCa) -> Result<TlsEtcdServer, StartFailure> {
        let dir = new_work_dir("etcd-tls");
        let ports = free_tcp_ports(2);
        let endpoint = format!("https://127.0.0.1:{}", ports[0]);
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        let mut command = single_member_command(binary, &dir, &endpoint, &peer_url);
        command
            .arg("--cert-file")
            .arg(&ca.server_cert)
            .arg("--key-file")
            .arg(&ca.server_key)
            .arg("--trusted-ca-file")
            .arg(&ca.ca_cert)
            .arg("--client-cert-auth")
            .current_dir(&dir);
        let mut process = ChildProcess::spawn_with_scratch_dir("etcd-tls", command, &dir);
        let client = ClientFiles {
            ca_cert: ca.ca_cert.clone(),
            client_cert: ca.client_cert.clone(),
            client_key: ca.client_key.clone(),
        };
        await_ready(&mut process, "etcd (TLS)", || {
            client
                .etcdctl(&endpoint, &["endpoint", "health"])
                .status
                .success()
        })?;
        Ok(TlsEtcdServer {
            endpoint,
            client,
            process,
            dir,
        })
    }

    /// The client URL, e.g. `https://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Writes `value` at `key` with `etcdctl`, over TLS with the client certificate.
    pub fn put(&self, key: &str, value: &str) {
        let output = self.client.etcdctl(&self.endpoint, &["put", key, value]);
        assert!(
            output.status.success(),
            "etcdctl put {key} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The CA and client certificate of a client the server lets in.
#[derive(Debug)]
struct ClientFiles {
    ca_cert: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl ClientFiles {
    /// Runs `etcdctl` against `endpoint` with these files.
    fn etcdctl(&self, endpoint: &str, args: &[&str]) -> Output {
        Command::new(system_binary("etcdctl", "etcd-client"))
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoint])
            .args(["--cacert", path_arg(&self.ca_cert)])
            .args(["--cert", path_arg(&self.client_cert)])
            .args(["--key", path_arg(&self.client_key)])
            .args(["--dial-timeout", "2s", "--command-timeout", "5s"])
            .args(args)
            .output()
            .expect("run etcdctl")
    }
}

impl Drop for TlsEtcdServer {
    fn drop(&mut self) {
        self.process.kill_hard();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
