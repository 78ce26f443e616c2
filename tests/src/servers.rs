//! The real servers end-to-end tests run against, one set per test process.
//!
//! [`TestServers::get`] starts etcd, an SNMP agent, a Kafka-compatible broker and an
//! Elasticsearch-API server on free loopback ports the first time any test asks, and
//! every test in the process shares them; tests keep apart by using
//! [`unique_name`](crate::unique_name) for their topics, key prefixes and indices.
//! Each server type can also be started privately, e.g. a [`KafkaBroker`] that a
//! fault test restarts without disturbing the tests running beside it.

mod elasticsearch;
mod etcd;
mod kafka;
mod snmp;
mod tls_etcd;
mod tls_terminator;

use std::any::Any;
use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

pub use elasticsearch::{ElasticsearchServer, NOIDA_BIN_ENV};
pub use etcd::EtcdServer;
pub use kafka::{KafkaBroker, TANSU_BIN_ENV};
pub use snmp::{
    SNMP_COMMUNITY, SNMP_SYS_NAME, SNMP_V2C_ARGS, SNMP_V3_AUTH_PASSWORD, SNMP_V3_AUTH_PRIV_ARGS,
    SNMP_V3_AUTH_PROTOCOL, SNMP_V3_PRIV_PASSWORD, SNMP_V3_PRIV_PROTOCOL, SNMP_V3_USER,
    SYS_UPTIME_OID, SnmpAgent,
};
pub use tls_etcd::TlsEtcdServer;
pub use tls_terminator::TlsTerminator;

use crate::process::ChildProcess;
use crate::wait::POLL_INTERVAL;

/// How long a server may take to become ready before the test fails.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// How many times a server that exits during start-up (e.g. because another process
/// took its port) is started again on new ports.
const START_ATTEMPTS: usize = 3;

/// The shared servers of this test process.
#[derive(Debug)]
pub struct TestServers {
    etcd: EtcdServer,
    snmp: SnmpAgent,
    kafka: KafkaBroker,
    elasticsearch: ElasticsearchServer,
}

impl TestServers {
    /// The servers of this test process, started (in parallel) on first use.
    ///
    /// Panics if any server cannot start; every later call panics with the same
    /// message instead of trying again.
    pub fn get() -> &'static TestServers {
        static SERVERS: OnceLock<Result<TestServers, String>> = OnceLock::new();
        match SERVERS.get_or_init(Self::start) {
            Ok(servers) => servers,
            Err(message) => panic!("{message}"),
        }
    }

    fn start() -> Result<TestServers, String> {
        let started = Instant::now();
        let (etcd, snmp, kafka, elasticsearch) = thread::scope(|scope| {
            let etcd = scope.spawn(EtcdServer::start);
            let snmp = scope.spawn(SnmpAgent::start);
            let kafka = scope.spawn(KafkaBroker::start);
            let elasticsearch = scope.spawn(ElasticsearchServer::start);
            (etcd.join(), snmp.join(), kafka.join(), elasticsearch.join())
        });
        let servers = match (etcd, snmp, kafka, elasticsearch) {
            (Ok(etcd), Ok(snmp), Ok(kafka), Ok(elasticsearch)) => TestServers {
                etcd,
                snmp,
                kafka,
                elasticsearch,
            },
            (etcd, snmp, kafka, elasticsearch) => {
                let failures: Vec<String> = [
                    ("etcd", etcd.err()),
                    ("snmpd", snmp.err()),
                    ("tansu", kafka.err()),
                    ("noida-db", elasticsearch.err()),
                ]
                .into_iter()
                .filter_map(|(server, panic)| {
                    panic.map(|panic| format!("{server}: {}", panic_message(&*panic)))
                })
                .collect();
                return Err(format!(
                    "test servers could not be started:\n{}",
                    failures.join("\n")
                ));
            }
        };
        eprintln!(
            "vigil-tests: servers ready in {:.1?}: etcd {}, snmpd {}, kafka {}, elasticsearch {}",
            started.elapsed(),
            servers.etcd_endpoint(),
            servers.snmp_address(),
            servers.kafka_bootstrap(),
            servers.elasticsearch_url(),
        );
        Ok(servers)
    }

    /// The etcd server.
    pub fn etcd(&self) -> &EtcdServer {
        &self.etcd
    }

    /// The etcd client URL, e.g. `http://127.0.0.1:40123`.
    pub fn etcd_endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    /// The SNMP agent.
    pub fn snmp(&self) -> &SnmpAgent {
        &self.snmp
    }

    /// The SNMP agent's UDP address, e.g. `127.0.0.1:40124`.
    pub fn snmp_address(&self) -> String {
        self.snmp.address()
    }

    /// The SNMP v2c read-only community, [`SNMP_COMMUNITY`].
    pub fn snmp_community(&self) -> &'static str {
        SNMP_COMMUNITY
    }

    /// The Kafka-compatible broker.
    pub fn kafka(&self) -> &KafkaBroker {
        &self.kafka
    }

    /// The Kafka bootstrap address, e.g. `127.0.0.1:40125`.
    pub fn kafka_bootstrap(&self) -> String {
        self.kafka.bootstrap()
    }

    /// Creates topic `name` with `partitions` partitions on the shared broker.
    ///
    /// Topics must exist before use: the broker keeps them in SQLite and does not
    /// create them on first produce.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        self.kafka.create_topic(name, partitions);
    }

    /// Stops the shared broker and starts it again on the same port and storage.
    ///
    /// Every test of the process that is using Kafka at that moment sees the outage;
    /// a fault test that must not disturb others starts its own [`KafkaBroker`].
    pub fn restart_kafka(&self) {
        self.kafka.restart();
    }

    /// The Elasticsearch-API server.
    pub fn elasticsearch(&self) -> &ElasticsearchServer {
        &self.elasticsearch
    }

    /// The Elasticsearch base URL, e.g. `http://127.0.0.1:40126`.
    pub fn elasticsearch_url(&self) -> String {
        self.elasticsearch.url()
    }
}

/// Why one attempt to start a server failed.
#[derive(Debug)]
enum StartFailure {
    /// The server exited during start-up; another attempt on new ports may succeed.
    Exited(String),
    /// The server kept running but never became ready.
    TimedOut(String),
}

/// Runs `attempt` until it succeeds, retrying only servers that exited early.
fn start_with_retries<T>(what: &str, mut attempt: impl FnMut() -> Result<T, StartFailure>) -> T {
    let mut last_exit = String::new();
    for _ in 0..START_ATTEMPTS {
        match attempt() {
            Ok(server) => return server,
            Err(StartFailure::Exited(message)) => last_exit = message,
            Err(StartFailure::TimedOut(message)) => panic!("{message}"),
        }
    }
    panic!("{what} exited during start-up {START_ATTEMPTS} times; the last time:\n{last_exit}")
}

/// Polls `is_ready` until it holds, failing early if `process` exits meanwhile.
fn await_ready(
    process: &mut ChildProcess,
    what: &str,
    mut is_ready: impl FnMut() -> bool,
) -> Result<(), StartFailure> {
    let started = Instant::now();
    loop {
        if let Some(status) = process.exit_status() {
            return Err(StartFailure::Exited(format!(
                "{what} exited with {status} before it was ready\n{}",
                process.log_tail()
            )));
        }
        if is_ready() {
            return Ok(());
        }
        if started.elapsed() >= START_DEADLINE {
            return Err(StartFailure::TimedOut(format!(
                "{what} was not ready within {START_DEADLINE:?}\n{}",
                process.log_tail()
            )));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Whether a TCP connection to 127.0.0.1:`port` is accepted.
fn accepts_tcp(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// Whether an HTTP GET of `url` answers 2xx.
fn answers_http(url: &str) -> bool {
    crate::http::with_client(|client| {
        client
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .is_ok_and(|response| response.status().is_success())
    })
}

/// Whether `command` exits successfully; its output is discarded.
fn succeeds(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Where scripts/install-test-deps.sh puts the servers it builds or downloads.
fn vigil_cache_dir() -> PathBuf {
    if let Some(dir) = env::var_os("VIGIL_CACHE") {
        return PathBuf::from(dir);
    }
    let home = env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache").join("vigil")
}

/// A server installed into the Vigil cache, or wherever `env_var` points.
fn cached_binary(env_var: &str, path_in_cache: &str) -> PathBuf {
    let binary = env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| vigil_cache_dir().join(path_in_cache));
    assert!(
        binary.is_file(),
        "{} not found (set {env_var} to override): run `bash scripts/test.sh`, which installs it",
        binary.display()
    );
    binary
}

/// A Debian-packaged program, looked up on PATH and in the sbin and bin directories.
pub(crate) fn system_binary(name: &str, debian_package: &str) -> PathBuf {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` (Debian package {debian_package}) not found: run `bash scripts/test.sh`, \
                 which installs it"
            )
        })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else {
        "(panic without a message)".to_owned()
    }
}
