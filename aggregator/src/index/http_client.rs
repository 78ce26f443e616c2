//! The HTTP client of Elasticsearch's and Kibana's APIs, under everything of the index
//! stage that talks to them (the bulk writer, `setup` and the Kibana import): base URL,
//! credentials, CA certificates, client certificates, sending a request, and quoting
//! an answer in errors.

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Certificate, Identity, RequestBuilder, StatusCode, Url};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use vigil_runtime::SecretRef;
use vigil_runtime::secret::SecretError;

/// How long connecting to Elasticsearch may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of a response body quoted in error messages.
const SNIPPET_CHARS: usize = 200;

/// How to authenticate to Elasticsearch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ElasticsearchAuth {
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        username: String,
        password: SecretRef,
    },
    /// An API key in its encoded form (the `encoded` field Elasticsearch returns).
    ApiKey(SecretRef),
}

/// A client certificate and its private key, both PEM files, for a cluster that
/// asks its clients for one (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Settings of an Elasticsearch or Kibana client that cannot work.
#[derive(Debug, Error)]
pub enum BulkClientError {
    #[error("{service} URL `{url}` is invalid: {reason}")]
    InvalidUrl {
        service: &'static str,
        url: String,
        reason: String,
    },
    #[error(
        "{service} URL `{url}` must not hold credentials: configure basic auth or an API key read from a secret file or environment variable"
    )]
    CredentialsInUrl { service: &'static str, url: String },
    #[error("{service} {what} could not be read: {source}")]
    Secret {
        service: &'static str,
        what: &'static str,
        #[source]
        source: SecretError,
    },
    #[error("the {service} API key is not a valid HTTP header value")]
    InvalidApiKey { service: &'static str },
    #[error("CA certificate file {path} could not be used: {reason}")]
    CaFile { path: String, reason: String },
    #[error("client certificate {cert_file} with key {key_file} could not be used: {reason}")]
    ClientCertificate {
        cert_file: String,
        key_file: String,
        reason: String,
    },
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
}

/// An HTTP API (Elasticsearch's or Kibana's): its base URL, client and credentials.
#[derive(Debug)]
pub struct HttpEndpoint {
    http: reqwest::Client,
    /// Base URL, ending in `/`.
    base_url: Url,
    credentials: Credentials,
}

/// Resolved secrets; never printed.
enum Credentials {
    None,
    Basic { username: String, password: String },
    Header(HeaderValue),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Basic { .. } => "Basic(..)",
            Self::Header(_) => "ApiKey(..)",
        })
    }
}

impl HttpEndpoint {
    /// Checks the URL and builds the client, reading secrets and the CA file now so
    /// that a wrong setting fails at startup rather than on the first request;
    /// `service` names the API in errors.
    pub(crate) fn new(
        service: &'static str,
        url: &str,
        auth: &ElasticsearchAuth,
        ca_file: Option<&Path>,
        client_certificate: Option<&ClientCertificate>,
        request_timeout: Duration,
    ) -> Result<Self, BulkClientError> {
        let invalid = |reason: String| BulkClientError::InvalidUrl {
            service,
            url: url.to_owned(),
            reason,
        };
        let mut base_url = Url::parse(url).map_err(|error| invalid(error.to_string()))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https".into()));
        }
        if !base_url.username().is_empty() || base_url.password().is_some() {
            let _ = base_url.set_password(None);
            return Err(BulkClientError::CredentialsInUrl {
                service,
                url: base_url.to_string(),
            });
        }
        if !base_url.path().ends_with('/') {
            base_url.set_path(&format!("{}/", base_url.path()));
        }

        let credentials = match auth {
            ElasticsearchAuth::None => Credentials::None,
            ElasticsearchAuth::Basic { username, password } => Credentials::Basic {
                username: username.clone(),
                password: password
                    .resolve()
                    .map_err(|source| BulkClientError::Secret {
                        service,
                        what: "password",
                        source,
                    })?,
            },
            ElasticsearchAuth::ApiKey(key) => {
                let key = key.resolve().map_err(|source| BulkClientError::Secret {
                    service,
                    what: "API key",
                    source,
                })?;
                let mut value = HeaderValue::from_str(&format!("ApiKey {key}"))
                    .map_err(|_| BulkClientError::InvalidApiKey { service })?;
                value.set_sensitive(true);
                Credentials::Header(value)
            }
        };

        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("vigil-aggregator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(request_timeout);
        if let Some(path) = ca_file {
            let ca_error = |reason: String| BulkClientError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|error| ca_error(error.to_string()))?;
            let certificates =
                Certificate::from_pem_bundle(&pem).map_err(|error| ca_error(error.to_string()))?;
            if certificates.is_empty() {
                return Err(ca_error("it holds no PEM certificate".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(certificate) = client_certificate {
            builder = builder.identity(read_identity(certificate)?);
        }
        let http = builder
            .build()
            .map_err(|error| BulkClientError::Client(error_chain(&error)))?;
        Ok(Self {
            http,
            base_url,
            credentials,
        })
    }

    /// The base URL, ending in `/`.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// `path` (relative, such as `_index_template/x`) joined to the base URL.
    pub(crate) fn url(&self, path: &str) -> Url {
        self.base_url
            .join(path)
            .expect("paths built from names are valid relative URLs")
    }

    /// A request to `url` with the endpoint's credentials.
    pub(crate) fn request(&self, method: reqwest::Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.credentials {
            Credentials::None => request,
            Credentials::Basic { username, password } => {
                request.basic_auth(username, Some(password))
            }
            Credentials::Header(value) => request.header(AUTHORIZATION, value.clone()),
        }
    }

    /// Sends `request` and reads the whole response body; `Err` is the transport
    /// failure, with its causes.
    pub(crate) async fn exchange(
        &self,
        request: RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let response = request
            .send()
            .await
            .map_err(|error| error_chain(&error.without_url()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|error| error_chain(&error.without_url()))?;
        Ok((status, body.to_vec()))
    }
}

/// The certificate and key of `files` as one identity; the key may be PKCS#8, PKCS#1
/// (RSA) or SEC1 (EC).
fn read_identity(files: &ClientCertificate) -> Result<Identity, BulkClientError> {
    let error = |reason: String| BulkClientError::ClientCertificate {
        cert_file: files.cert_file.display().to_string(),
        key_file: files.key_file.display().to_string(),
        reason,
    };
    let read = |path: &Path| {
        std::fs::read(path).map_err(|cause| error(format!("{}: {cause}", path.display())))
    };
    let mut pem = read(&files.cert_file)?;
    pem.push(b'\n');
    pem.extend(read(&files.key_file)?);
    Identity::from_pem(&pem).map_err(|cause| error(error_chain(&cause)))
}

/// The start of a response body, for error messages of the bulk writer, Kibana and
/// `setup`.
pub(super) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// An error and its causes, `: `-separated (reqwest's own message omits the cause,
/// such as "connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
