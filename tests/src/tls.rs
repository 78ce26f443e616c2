//! A certificate authority that a test makes for itself, for the TLS hops of the data
//! path: agent and stages to Kafka, stages to etcd and to Elasticsearch.
//!
//! [`TestCa::new`] runs the `openssl` command (Debian's `openssl` package) to make a
//! CA, a server certificate for `127.0.0.1` and `localhost` that it signed, a client
//! certificate it signed, and a second CA that signed nothing, for a client that
//! trusts the wrong authority. Keys are EC P-256 in PKCS#8 PEM files, which etcd,
//! nginx, librdkafka and rustls all read.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::deployment::path_arg;
use crate::process::new_work_dir;
use crate::servers::system_binary;

/// Days the certificates are valid: longer than any test run.
const VALID_DAYS: &str = "7";

/// PEM files of a test's own certificate authority, in a directory of the run.
#[derive(Debug)]
pub struct TestCa {
    /// The CA certificate servers and clients trust.
    pub ca_cert: PathBuf,
    /// Server certificate for `127.0.0.1` and `localhost`, signed by the CA; its
    /// extended key usage allows clients too.
    pub server_cert: PathBuf,
    /// Private key of [`server_cert`](Self::server_cert).
    pub server_key: PathBuf,
    /// Client certificate (extended key usage `clientAuth`), signed by the CA.
    pub client_cert: PathBuf,
    /// Private key of [`client_cert`](Self::client_cert).
    pub client_key: PathBuf,
    /// The certificate of another CA, which signed neither certificate above.
    pub other_ca_cert: PathBuf,
}

impl TestCa {
    /// Makes the CA, its server and client certificates and the other CA in a new
    /// directory named after `purpose`; panics with openssl's output on failure.
    pub fn new(purpose: &str) -> TestCa {
        let dir = new_work_dir(&format!("{purpose}-ca"));
        let ca_key = dir.join("ca.key");
        let ca_cert = dir.join("ca.pem");
        make_ca(&dir, "Vigil test CA", &ca_key, &ca_cert);
        let other_ca_cert = dir.join("other-ca.pem");
        make_ca(
            &dir,
            "Another CA",
            &dir.join("other-ca.key"),
            &other_ca_cert,
        );
        let issuer = Issuer {
            cert: &ca_cert,
            key: &ca_key,
        };
        // Usable as a client certificate too: etcd's JSON gateway connects to its own
        // gRPC port with it, and etcd refuses it there without `clientAuth`.
        let server_key = dir.join("server.key");
        let server_cert = dir.join("server.pem");
        issuer.sign(
            &dir,
            "localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
            &server_key,
            &server_cert,
        );
        let client_key = dir.join("client.key");
        let client_cert = dir.join("client.pem");
        issuer.sign(
            &dir,
            "vigil-client",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
            &client_key,
            &client_cert,
        );
        TestCa {
            ca_cert,
            server_cert,
            server_key,
            client_cert,
            client_key,
            other_ca_cert,
        }
    }
}

/// A CA that signs certificate requests.
struct Issuer<'a> {
    cert: &'a Path,
    key: &'a Path,
}

impl Issuer<'_> {
    /// Makes a key and a certificate for `common_name` with the extensions of
    /// `extensions` (an openssl extension file's lines), signed by this CA.
    fn sign(&self, dir: &Path, common_name: &str, extensions: &str, key: &Path, cert: &Path) {
        let request = cert.with_extension("csr");
        let extension_file = cert.with_extension("ext");
        std::fs::write(&extension_file, extensions).expect("openssl extension file written");
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={common_name}"),
                "-keyout",
                path_arg(key),
                "-out",
                path_arg(&request),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                path_arg(&request),
                "-CA",
                path_arg(self.cert),
                "-CAkey",
                path_arg(self.key),
                "-CAcreateserial",
                "-days",
                VALID_DAYS,
                "-extfile",
                path_arg(&extension_file),
                "-out",
                path_arg(cert),
            ],
        );
    }
}

/// Makes a self-signed CA certificate and its key.
fn make_ca(dir: &Path, common_name: &str, key: &Path, cert: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN={common_name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-days",
            VALID_DAYS,
            "-keyout",
            path_arg(key),
            "-out",
            path_arg(cert),
        ],
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new(system_binary("openssl", "openssl"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("cannot run openssl: {error}"));
    assert!(
        output.status.success(),
        "openssl {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
