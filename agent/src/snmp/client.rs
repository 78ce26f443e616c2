//! The SNMP client of one target: requests with a timeout and retries, GETs split
//! to `values_per_request`, table walks of several columns at once with GETBULK
//! (GETNEXT for v1), v1, v2c and v3 sessions. It sits between the poller and the
//! network.
//!
//! v3 covers what `snmp2` implements: noAuthNoPriv, authNoPriv and authPriv with
//! MD5, SHA-1 and SHA-224/256/384/512 authentication and DES or AES-128/192/256
//! privacy (with Blumenthal or Reeder key extension). 3DES and the AES variants of
//! RFC 7860 beyond these are not supported by `snmp2`, nor is SNMP over TCP.
//!
//! Before a session opens, the address is resolved once and checked against the
//! credential's `allowed_networks`; the session is bound to that checked address,
//! so nothing (not even a v3 discovery) goes anywhere else.
//!
//! A session is kept across polls (for v3 that keeps the discovered engine id,
//! boots and time). After a timeout or any error the session is dropped and the
//! next attempt opens a fresh socket, so that a late reply to an abandoned request
//! can never be taken for the answer to a new one.

use super::PollError;
use super::samples::{Column, SnmpValue};
use crate::config::{
    AuthProtocol, PrivProtocol, SecurityLevel, SnmpTarget, SnmpV3Config, SnmpVersion,
    TargetCredential,
};
use snmp2::{AsyncSession, Oid, Varbinds, v3};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use vigil_runtime::secret::SecretError;

/// How often one attempt repeats a request the v3 agent answered with fresh engine
/// boots and time (a normal part of v3 discovery).
const ENGINE_RESYNCS: usize = 3;
/// Rows after which a walk stops, against agents that never end a table.
const MAX_WALK_ROWS: usize = 100_000;

/// One variable binding of an answer: OID arcs and value.
pub(crate) type VarBind = (Vec<u64>, SnmpValue);

/// What a request asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Request<'a> {
    /// GET of these OIDs.
    Get(&'a [&'a [u64]]),
    /// GETBULK of the rows after each of these OIDs, this many repetitions.
    Bulk(&'a [&'a [u64]], u32),
    /// GETNEXT of the OID after this one (v1 walks).
    Next(&'a [u64]),
}

impl Request<'_> {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Get(_) => "GET",
            Self::Bulk(..) => "GETBULK",
            Self::Next(_) => "GETNEXT",
        }
    }

    pub(crate) fn oids(&self) -> String {
        let oids: &[&[u64]] = match self {
            Self::Get(oids) | Self::Bulk(oids, _) => oids,
            Self::Next(oid) => std::slice::from_ref(oid),
        };
        oids.iter()
            .map(|arcs| {
                arcs.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The v1 error status of a GET of an OID the agent does not have, and of a
/// GETNEXT past the end of its MIB.
const NO_SUCH_NAME: u32 = 2;

/// Why one attempt failed.
enum AttemptError {
    Secret(&'static str, SecretError),
    Connect(std::io::Error),
    /// The address resolved to this IP, where the credential must not go.
    NotAllowed(IpAddr, String),
    Snmp(snmp2::Error),
    Status {
        status: u32,
        index: u32,
    },
    InvalidOid,
}

/// Talks to one target.
pub(crate) struct SnmpClient {
    target: SnmpTarget,
    credential: TargetCredential,
    session: Option<AsyncSession>,
    next_request_id: i32,
}

impl std::fmt::Debug for SnmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnmpClient")
            .field("target", &self.target.name)
            .field("connected", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl SnmpClient {
    pub(crate) fn new(target: SnmpTarget, credential: TargetCredential) -> Self {
        Self {
            target,
            credential,
            session: None,
            next_request_id: 1,
        }
    }

    pub(crate) fn target(&self) -> &SnmpTarget {
        &self.target
    }

    fn version(&self) -> SnmpVersion {
        self.credential.credential().version
    }

    /// Sends `request` until it is answered, at most `retries + 1` times, each
    /// attempt bounded by the target's timeout.
    pub(crate) async fn request(
        &mut self,
        request: Request<'_>,
    ) -> Result<Vec<VarBind>, PollError> {
        let attempts = self.target.retries + 1;
        let mut last_error = None;
        for _ in 0..attempts {
            match tokio::time::timeout(self.target.timeout, self.attempt(request)).await {
                Ok(Ok(varbinds)) => return Ok(varbinds),
                Ok(Err(error)) => {
                    // An error status is an answer: the session is fine, and
                    // asking again would get the same answer.
                    if !matches!(error, AttemptError::Status { .. }) {
                        self.session = None;
                    }
                    let error = self.poll_error(request, error);
                    if matches!(
                        error,
                        PollError::Authentication { .. }
                            | PollError::Secret { .. }
                            | PollError::AddressNotAllowed { .. }
                            | PollError::ErrorStatus { .. }
                    ) {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
                Err(_elapsed) => {
                    self.session = None;
                    last_error = None;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| PollError::Timeout {
            target: self.target.name.clone(),
            request: request.kind(),
            oids: request.oids(),
            timeout: vigil_config::duration::format_duration(self.target.timeout),
            attempts,
            silent_when: match self.version() {
                SnmpVersion::V1 | SnmpVersion::V2c => "a wrong community looks the same",
                SnmpVersion::V3 => "a wrong privacy password looks the same",
            },
        }))
    }

    /// GETs `oids`, `values_per_request` at a time. OIDs the device lacks come
    /// back as NoSuchObject (v2c, v3) or are left out (v1, whose agents refuse the
    /// whole request, which is then sent again without them).
    pub(crate) async fn get(&mut self, oids: &[&[u64]]) -> Result<Vec<VarBind>, PollError> {
        let mut varbinds = Vec::with_capacity(oids.len());
        for chunk in oids.chunks(self.values_per_request()) {
            let mut chunk = chunk.to_vec();
            while !chunk.is_empty() {
                match self.request(Request::Get(&chunk)).await {
                    Ok(answer) => {
                        varbinds.extend(answer);
                        break;
                    }
                    Err(PollError::ErrorStatus {
                        status: NO_SUCH_NAME,
                        index,
                        ..
                    }) if self.version() == SnmpVersion::V1
                        && (1..=chunk.len()).contains(&(index as usize)) =>
                    {
                        chunk.remove(index as usize - 1);
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(varbinds)
    }

    /// Walks the table columns `columns` together; returns the rows of each by
    /// index, in the order of `columns`.
    ///
    /// One GETBULK asks for the next rows of several columns at once: up to
    /// `values_per_request` columns, and as many repetitions as fit (at most
    /// `max_repetitions`). v1 has no GETBULK and walks each column with GETNEXT.
    pub(crate) async fn walk(&mut self, columns: &[Vec<u64>]) -> Result<Vec<Column>, PollError> {
        let mut rows: Vec<Column> = vec![BTreeMap::new(); columns.len()];
        let mut cursors: Vec<Option<Vec<u64>>> = columns.iter().cloned().map(Some).collect();
        let mut total_rows = 0;
        while total_rows < MAX_WALK_ROWS {
            let active: Vec<usize> = (0..columns.len())
                .filter(|&position| cursors[position].is_some())
                .take(self.values_per_request())
                .collect();
            if active.is_empty() {
                break;
            }
            let cursor_oids: Vec<&[u64]> = active
                .iter()
                .filter_map(|&position| cursors[position].as_deref())
                .collect();
            let varbinds = if self.version() == SnmpVersion::V1 {
                match self.request(Request::Next(cursor_oids[0])).await {
                    Err(PollError::ErrorStatus {
                        status: NO_SUCH_NAME,
                        ..
                    }) => Vec::new(),
                    answer => answer?,
                }
            } else {
                let repetitions = (self.values_per_request() / active.len())
                    .clamp(1, self.target.max_repetitions as usize);
                self.request(Request::Bulk(&cursor_oids, repetitions as u32))
                    .await?
            };
            let active = if self.version() == SnmpVersion::V1 {
                &active[..1]
            } else {
                &active[..]
            };
            let added = file_walked_rows(columns, active, varbinds, &mut cursors, &mut rows);
            total_rows += added;
            if added == 0 {
                for &column in active {
                    cursors[column] = None;
                }
            }
        }
        Ok(rows)
    }

    fn values_per_request(&self) -> usize {
        self.target.values_per_request.max(1) as usize
    }

    async fn attempt(&mut self, request: Request<'_>) -> Result<Vec<VarBind>, AttemptError> {
        let session = match self.session.take() {
            Some(session) => session,
            None => self.connect().await?,
        };
        let session = self.session.insert(session);
        let oids: Vec<Oid<'static>> = match request {
            Request::Get(oids) | Request::Bulk(oids, _) => {
                oids.iter().map(|arcs| oid(arcs)).collect::<Option<_>>()
            }
            Request::Next(arcs) => oid(arcs).map(|oid| vec![oid]),
        }
        .ok_or(AttemptError::InvalidOid)?;
        let oid_refs: Vec<&Oid<'static>> = oids.iter().collect();
        for _ in 0..ENGINE_RESYNCS {
            let response = match request {
                Request::Get(_) => session.get_many(&oid_refs).await,
                Request::Bulk(_, repetitions) => session.getbulk(&oid_refs, 0, repetitions).await,
                Request::Next(_) => session.getnext(oid_refs[0]).await,
            };
            match response {
                Ok(pdu) => {
                    if pdu.error_status != 0 {
                        return Err(AttemptError::Status {
                            status: pdu.error_status,
                            index: pdu.error_index,
                        });
                    }
                    return Ok(answer_varbinds(pdu.varbinds));
                }
                Err(snmp2::Error::AuthUpdated) => {}
                Err(error) => return Err(AttemptError::Snmp(error)),
            }
        }
        Err(AttemptError::Snmp(snmp2::Error::AuthUpdated))
    }

    /// The address to send to: the target's, resolved, if the credential may go
    /// there.
    async fn destination(&self) -> Result<SocketAddr, AttemptError> {
        let address = tokio::net::lookup_host(self.target.address_with_port())
            .await
            .map_err(AttemptError::Connect)?
            .next()
            .ok_or_else(|| {
                AttemptError::Connect(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the name resolves to no address",
                ))
            })?;
        match self.credential.refusal(address.ip()) {
            Some(refusal) => Err(AttemptError::NotAllowed(address.ip(), refusal)),
            None => Ok(address),
        }
    }

    /// Opens a session; for v3 also discovers the agent's engine.
    async fn connect(&mut self) -> Result<AsyncSession, AttemptError> {
        let address = self.destination().await?;
        let request_id = self.next_request_id;
        // Each session starts at a fresh id, far from the previous one's.
        self.next_request_id = self.next_request_id.wrapping_add(1 << 20);
        let credential = self.credential.credential();
        match (credential.version, &credential.v3) {
            (SnmpVersion::V3, Some(config)) => {
                let security = security(config)?;
                let mut session = AsyncSession::new_v3(address, request_id, security)
                    .await
                    .map_err(AttemptError::Connect)?;
                session.init().await.map_err(AttemptError::Snmp)?;
                Ok(session)
            }
            (version, _) => {
                let community = credential
                    .community
                    .as_ref()
                    .map_or(Ok(String::new()), |community| community.resolve())
                    .map_err(|error| AttemptError::Secret("community", error))?;
                if version == SnmpVersion::V1 {
                    AsyncSession::new_v1(address, community.as_bytes(), request_id).await
                } else {
                    AsyncSession::new_v2c(address, community.as_bytes(), request_id).await
                }
                .map_err(AttemptError::Connect)
            }
        }
    }

    fn poll_error(&self, request: Request<'_>, error: AttemptError) -> PollError {
        let target = self.target.name.clone();
        let credential = self.credential.credential();
        let is_v3 = credential.version == SnmpVersion::V3;
        let user = || {
            credential
                .v3
                .as_ref()
                .map(|v3| v3.user.clone())
                .unwrap_or_default()
        };
        match error {
            AttemptError::Secret(field, source) => PollError::Secret {
                target,
                field,
                cause: source,
            },
            AttemptError::Connect(source) => PollError::Connect {
                target,
                address: self.target.address.clone(),
                cause: source,
            },
            AttemptError::NotAllowed(resolved, refusal) => PollError::AddressNotAllowed {
                target,
                address: self.target.address.clone(),
                resolved,
                refusal,
            },
            AttemptError::Snmp(snmp2::Error::AuthFailure(kind)) => PollError::Authentication {
                target,
                user: user(),
                reason: kind.to_string(),
            },
            // A v3 agent that cannot decrypt a request answers with a report, which
            // is the wrong PDU type for a response.
            AttemptError::Snmp(snmp2::Error::AsnWrongType) if is_v3 => PollError::Authentication {
                target,
                user: user(),
                reason: "the agent answered with a report instead of a response (a wrong privacy password or protocol?)".into(),
            },
            AttemptError::Snmp(error) => PollError::Protocol {
                target,
                request: request.kind(),
                oids: request.oids(),
                reason: error.to_string(),
            },
            AttemptError::Status { status, index } => PollError::ErrorStatus {
                target,
                request: request.kind(),
                oids: request.oids(),
                status,
                index,
            },
            AttemptError::InvalidOid => PollError::Protocol {
                target,
                request: request.kind(),
                oids: request.oids(),
                reason: "the OID cannot be encoded".into(),
            },
        }
    }
}

/// The v3 security parameters of `config`, passwords resolved.
fn security(config: &SnmpV3Config) -> Result<v3::Security, AttemptError> {
    let password = |field: &'static str, secret: &Option<vigil_runtime::SecretRef>| {
        secret
            .as_ref()
            .map_or(Ok(String::new()), vigil_runtime::SecretRef::resolve)
            .map_err(|error| AttemptError::Secret(field, error))
    };
    let auth_password = password("v3.auth_password", &config.auth_password)?;
    let mut security = v3::Security::new(config.user.as_bytes(), auth_password.as_bytes());
    let auth_protocol = match config.auth_protocol.unwrap_or(AuthProtocol::Sha) {
        AuthProtocol::Md5 => v3::AuthProtocol::Md5,
        AuthProtocol::Sha => v3::AuthProtocol::Sha1,
        AuthProtocol::Sha224 => v3::AuthProtocol::Sha224,
        AuthProtocol::Sha256 => v3::AuthProtocol::Sha256,
        AuthProtocol::Sha384 => v3::AuthProtocol::Sha384,
        AuthProtocol::Sha512 => v3::AuthProtocol::Sha512,
    };
    security = security.with_auth_protocol(auth_protocol);
    let auth = match config.security_level {
        SecurityLevel::NoAuthNoPriv => v3::Auth::NoAuthNoPriv,
        SecurityLevel::AuthNoPriv => v3::Auth::AuthNoPriv,
        SecurityLevel::AuthPriv => {
            let (cipher, extension) = match config.priv_protocol.unwrap_or(PrivProtocol::Aes) {
                PrivProtocol::Des => (v3::Cipher::Des, None),
                PrivProtocol::Aes => (v3::Cipher::Aes128, None),
                PrivProtocol::Aes192 => (v3::Cipher::Aes192, Some(v3::KeyExtension::Blumenthal)),
                PrivProtocol::Aes256 => (v3::Cipher::Aes256, Some(v3::KeyExtension::Blumenthal)),
                PrivProtocol::Aes192c => (v3::Cipher::Aes192, Some(v3::KeyExtension::Reeder)),
                PrivProtocol::Aes256c => (v3::Cipher::Aes256, Some(v3::KeyExtension::Reeder)),
            };
            if let Some(extension) = extension
                && cipher.priv_key_needs_extension(&auth_protocol)
            {
                security = security.with_key_extension_method(extension);
            }
            v3::Auth::AuthPriv {
                cipher,
                privacy_password: password("v3.priv_password", &config.priv_password)?.into_bytes(),
            }
        }
    };
    security = security.with_auth(auth);
    if let Some(context) = &config.context_name {
        security = security.with_context_name(context);
    }
    Ok(security)
}

/// The varbinds of an answer, owned; one whose OID has no arcs is left out.
pub(crate) fn answer_varbinds(varbinds: Varbinds<'_>) -> Vec<VarBind> {
    varbinds
        .filter_map(|(oid, value)| Some((oid.iter()?.collect(), SnmpValue::from_wire(&value))))
        .collect()
}

/// Files the varbinds of one walk answer under the columns `active` asked for
/// (by turns, as GETBULK answers), moving each column's cursor to its last row;
/// a column whose answer left it, ended it or did not move forward is done (its
/// cursor is `None`). Returns how many rows were added.
pub(crate) fn file_walked_rows(
    columns: &[Vec<u64>],
    active: &[usize],
    varbinds: Vec<VarBind>,
    cursors: &mut [Option<Vec<u64>>],
    rows: &mut [Column],
) -> usize {
    let mut added = 0;
    for (position, (oid, value)) in varbinds.into_iter().enumerate() {
        let column = active[position % active.len()];
        let Some(cursor) = &cursors[column] else {
            continue;
        };
        let prefix = &columns[column];
        let in_column = oid.len() > prefix.len() && oid.starts_with(prefix);
        let ended = matches!(value, SnmpValue::EndOfMibView);
        // An agent that does not move forward would make the walk loop.
        if !in_column || ended || oid <= *cursor {
            cursors[column] = None;
            continue;
        }
        rows[column].insert(oid[prefix.len()..].to_vec(), value);
        cursors[column] = Some(oid);
        added += 1;
    }
    added
}

fn oid(arcs: &[u64]) -> Option<Oid<'static>> {
    Oid::from(arcs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_their_oids() {
        let uptime: &[u64] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
        let name: &[u64] = &[1, 3, 6, 1, 2, 1, 1, 5, 0];
        let request = Request::Get(&[uptime, name]);
        assert_eq!(request.oids(), "1.3.6.1.2.1.1.3.0, 1.3.6.1.2.1.1.5.0");
        assert_eq!(Request::Bulk(&[uptime], 10).kind(), "GETBULK");
        assert_eq!(Request::Next(name).oids(), "1.3.6.1.2.1.1.5.0");
    }
}
