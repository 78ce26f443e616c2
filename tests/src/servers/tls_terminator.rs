//! nginx as the TLS terminator in front of test servers that speak plain TCP only:
//! the Elasticsearch-API server (noida-db has no TLS) and the Kafka-compatible
//! broker (tansu 0.6 accepts `--cert` and `--key` but still serves plain TCP), so
//! that the hops of agents and stages to Kafka and of the index stage to
//! Elasticsearch run over TLS with client certificates, as they do in front of real
//! clusters with TLS and certificate authentication.
//!
//! nginx runs in the foreground (`daemon off`) as a child of the test, with its
//! generated configuration, pid file, logs and temporary files in its own directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{StartFailure, accepts_tcp, await_ready, start_with_retries, system_binary};
use crate::ports::free_tcp_port;
use crate::process::{ChildProcess, new_work_dir};
use crate::tls::TestCa;

/// Debian's nginx stream module (package libnginx-mod-stream), for TCP proxying.
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// nginx serving TLS on a loopback port and passing requests (HTTP) or connections
/// (TCP) on to a plain server; it lets in only clients with a certificate of the
/// test's CA.
#[derive(Debug)]
pub struct TlsTerminator {
    port: u16,
    process: ChildProcess,
    /// Configuration, logs and temporary files; removed with the terminator.
    dir: PathBuf,
}

impl TlsTerminator {
    /// Starts nginx with `ca`'s server certificate in front of `upstream` (a base
    /// URL such as `http://127.0.0.1:40126`) and waits until a request with `ca`'s
    /// client certificate gets through to an answer of `upstream`.
    pub fn https_to(upstream: &str, ca: &TestCa) -> TlsTerminator {
        let binary = system_binary("nginx", "nginx");
        let client = client_with_certificate(ca);
        let block = Block::Http {
            upstream: upstream.to_owned(),
        };
        start_with_retries("nginx", || {
            let port = free_tcp_port();
            let url = format!("https://127.0.0.1:{port}/");
            Self::try_start(&binary, port, &block, ca, || {
                client
                    .get(&url)
                    .send()
                    .is_ok_and(|response| response.status().is_success())
            })
        })
    }

    /// Starts nginx with `ca`'s server certificate on `port`, passing each
    /// connection on to `upstream_port` of 127.0.0.1, and waits until it accepts
    /// connections. For a Kafka broker, which must know the terminator's port
    /// before it starts: it advertises that port to its clients.
    pub fn tls_to(port: u16, upstream_port: u16, ca: &TestCa) -> TlsTerminator {
        let binary = system_binary("nginx", "nginx");
        let block = Block::Stream { upstream_port };
        start_with_retries("nginx (stream)", || {
            Self::try_start(&binary, port, &block, ca, || accepts_tcp(port))
        })
    }

    /// Starts nginx on `port` with a TLS server in `block` and waits until
    /// `is_ready`.
    fn try_start(
        binary: &Path,
        port: u16,
        block: &Block,
        ca: &TestCa,
        is_ready: impl FnMut() -> bool,
    ) -> Result<TlsTerminator, StartFailure> {
        let dir = new_work_dir("nginx");
        let config = dir.join("nginx.conf");
        fs::write(&config, nginx_config(&dir, port, block, ca))
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", config.display()));
        let mut command = Command::new(binary);
        command
            .arg("-e")
            .arg("stderr")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&config)
            .current_dir(&dir);
        let mut process = ChildProcess::spawn_with_scratch_dir("nginx", command, &dir);
        await_ready(&mut process, "nginx", is_ready)?;
        Ok(TlsTerminator { port, process, dir })
    }

    /// The HTTPS base URL of one started with [`https_to`](Self::https_to), e.g.
    /// `https://127.0.0.1:40127`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// nginx's access log: one line per HTTP request it passed on.
    pub fn access_log(&self) -> PathBuf {
        self.dir.join("access.log")
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.process.kill_hard();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP client that trusts `ca` and shows its client certificate.
fn client_with_certificate(ca: &TestCa) -> reqwest::blocking::Client {
    let read = |path: &Path| {
        fs::read(path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
    };
    let mut identity = read(&ca.client_cert);
    identity.push(b'\n');
    identity.extend(read(&ca.client_key));
    reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&read(&ca.ca_cert)).expect("the test CA is PEM"),
        )
        .identity(reqwest::Identity::from_pem(&identity).expect("the client certificate is PEM"))
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client with the test CA")
}

/// What nginx passes the decrypted traffic on to.
enum Block {
    /// An `http` block proxying every request to a base URL.
    Http { upstream: String },
    /// A `stream` block proxying every connection to a loopback port.
    Stream { upstream_port: u16 },
}

/// nginx's configuration: one TLS server on `port` with `ca`'s server certificate
/// that requires a client certificate of `ca`, and passes traffic on as `block` says.
fn nginx_config(dir: &Path, port: u16, block: &Block, ca: &TestCa) -> String {
    let dir = dir.display();
    let tls = format!(
        "listen 127.0.0.1:{port} ssl;
        ssl_certificate {};
        ssl_certificate_key {};
        ssl_client_certificate {};
        ssl_verify_client on;",
        ca.server_cert.display(),
        ca.server_key.display(),
        ca.ca_cert.display(),
    );
    let (module, block) = match block {
        Block::Http { upstream } => (
            String::new(),
            format!(
                "http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client-body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 0;
    server {{
        {tls}
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_read_timeout 120s;
        }}
    }}
}}"
            ),
        ),
        Block::Stream { upstream_port } => (
            format!("load_module {STREAM_MODULE};\n"),
            format!(
                "stream {{
    server {{
        {tls}
        proxy_pass 127.0.0.1:{upstream_port};
    }}
}}"
            ),
        ),
    };
    // `user root` keeps the workers able to write temporary files into the test's
    // private run directory when the tests run as root; otherwise nginx ignores it.
    format!(
        "{module}daemon off;
user root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 256; }}
{block}
"
    )
}
