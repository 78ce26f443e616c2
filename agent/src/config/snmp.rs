//! The `snmp` section: the devices the SNMP poller polls (from the file or from
//! etcd), the credentials it reaches them with (version, community or v3
//! security, and the networks each may be sent to), how often, and which metric
//! sets each poll asks for.
//!
//! Credentials live only here, in the agent's own file, by name; a target names
//! one. Targets in etcd must: whoever can write the etcd prefix chooses addresses,
//! and must never choose which local secret the agent reads nor where it sends it.

use super::errors::subfield;
use super::{InvalidConfig, IpNetwork, MetricSet, MetricSetDefinition};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use vigil_config::duration::format_duration;
use vigil_runtime::SecretRef;
use vigil_runtime::etcd::EtcdSettings;
use vigil_runtime::secret::InlineOrSecret;

/// SNMP polling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpConfig {
    /// How devices are reached, by name: the only place that says which
    /// community or v3 keys the agent sends, and to which networks.
    #[serde(default)]
    pub credentials: BTreeMap<String, SnmpCredential>,
    /// Devices to poll, each on its own schedule; used when `etcd` is not set.
    #[serde(default)]
    pub targets: Vec<SnmpTarget>,
    /// User-defined metric sets by name, which targets list beside the built-in ones.
    #[serde(default)]
    pub metric_sets: BTreeMap<String, MetricSetDefinition>,
    /// Where targets (and more metric sets) live instead: keys
    /// `<prefix>/snmp/targets/<name>` and `<prefix>/snmp/metric_sets/<name>`,
    /// watched, so that changes take effect without a restart. Targets there name
    /// one of `credentials` and carry no secrets of their own.
    #[serde(default)]
    pub etcd: Option<EtcdSettings>,
    /// Polls running at the same time, over all targets; a poll waits for a free
    /// slot, so that thousands of targets cannot exhaust sockets or memory.
    #[serde(default = "default_max_polls_in_flight")]
    pub max_polls_in_flight: usize,
}

impl Default for SnmpConfig {
    fn default() -> Self {
        Self {
            credentials: BTreeMap::new(),
            targets: Vec::new(),
            metric_sets: BTreeMap::new(),
            etcd: None,
            max_polls_in_flight: default_max_polls_in_flight(),
        }
    }
}

/// How devices are reached: a protocol version with its community or v3
/// security, and the networks these may be sent to.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnmpCredential {
    /// Protocol version.
    #[serde(default)]
    pub version: SnmpVersion,
    /// v1 or v2c community: `{file: ...}` or `{env: ...}` (or, discouraged, a
    /// plain string).
    #[serde(default)]
    pub community: Option<Community>,
    /// v3 user-based security.
    #[serde(default)]
    pub v3: Option<SnmpV3Config>,
    /// Networks (CIDR) the devices of this credential are in: a target whose
    /// address resolves elsewhere is refused before anything is sent, so that a
    /// wrong or hostile target address cannot collect the community. Any
    /// address when left out.
    #[serde(default)]
    pub allowed_networks: Option<Vec<IpNetwork>>,
}

/// The credential a target is polled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetCredential {
    /// One of `snmp.credentials`, by name.
    Named {
        name: String,
        credential: SnmpCredential,
    },
    /// The target's own `version`, `community` or `v3` (configuration file only).
    Own(SnmpCredential),
}

/// One device polled over SNMP.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnmpTarget {
    /// Name of the device: its resource id and host name downstream. In etcd it
    /// defaults to the last segment of the key.
    #[serde(default)]
    pub name: String,
    /// `host:port` (or `host`, meaning port 161) of the device's SNMP agent.
    pub address: String,
    /// Which of `snmp.credentials` the device is polled with; required in etcd.
    #[serde(default)]
    pub credential: Option<String>,
    /// Protocol version of a target without `credential` (default v2c); with
    /// one, the credential's version applies and this may only repeat it.
    #[serde(default)]
    pub version: Option<SnmpVersion>,
    /// v1 or v2c community of a target without `credential`, in the
    /// configuration file only: a plain string, or `{file: ...}` / `{env: ...}`.
    #[serde(default)]
    pub community: Option<Community>,
    /// v3 user-based security of a target without `credential`, in the
    /// configuration file only.
    #[serde(default)]
    pub v3: Option<SnmpV3Config>,
    /// Time between two polls.
    #[serde(default = "default_snmp_interval", with = "vigil_config::duration")]
    pub interval: Duration,
    /// How long one request waits for its answer.
    #[serde(default = "default_snmp_timeout", with = "vigil_config::duration")]
    pub timeout: Duration,
    /// How often a request that timed out is sent again.
    #[serde(default = "default_snmp_retries")]
    pub retries: u32,
    /// Groups of OIDs to poll: built-in (`system`, `if`, `host_resources`, `ucd`)
    /// or defined under `metric_sets`.
    #[serde(default = "default_metric_sets")]
    pub metric_sets: Vec<MetricSet>,
    /// Rows asked for per column in one GETBULK request of a table walk.
    #[serde(default = "default_max_repetitions")]
    pub max_repetitions: u32,
    /// Most variable bindings asked for in one request: OIDs of a GET, and
    /// columns times repetitions of a GETBULK. Small agents drop large replies.
    #[serde(default = "default_values_per_request")]
    pub values_per_request: u32,
    /// Extra labels of the device (site, role, ...), sent with every batch.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// SNMP protocol version.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SnmpVersion {
    /// Community-based v1: no GETBULK, so tables are walked with GETNEXT.
    V1,
    /// Community-based v2c.
    #[default]
    V2c,
    /// User-based security model.
    V3,
}

impl fmt::Display for SnmpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2c => "v2c",
            Self::V3 => "v3",
        })
    }
}

/// SNMPv3 user-based security.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnmpV3Config {
    /// USM user name.
    pub user: String,
    /// Whether messages are authenticated, and encrypted.
    #[serde(default)]
    pub security_level: SecurityLevel,
    /// Authentication hash; required unless `security_level` is `no_auth_no_priv`.
    #[serde(default)]
    pub auth_protocol: Option<AuthProtocol>,
    /// Authentication password, from a file or the environment.
    #[serde(default)]
    pub auth_password: Option<SecretRef>,
    /// Privacy cipher; required when `security_level` is `auth_priv`.
    #[serde(default)]
    pub priv_protocol: Option<PrivProtocol>,
    /// Privacy password, from a file or the environment.
    #[serde(default)]
    pub priv_password: Option<SecretRef>,
    /// SNMP context name, for agents that serve several contexts.
    #[serde(default)]
    pub context_name: Option<String>,
}

/// SNMPv3 security level.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SecurityLevel {
    /// Neither authenticated nor encrypted.
    NoAuthNoPriv,
    /// Authenticated, not encrypted.
    AuthNoPriv,
    /// Authenticated and encrypted.
    #[default]
    AuthPriv,
}

/// SNMPv3 authentication hash.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthProtocol {
    Md5,
    /// SHA-1.
    Sha,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// SNMPv3 privacy cipher.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PrivProtocol {
    Des,
    /// AES-128.
    Aes,
    /// AES-192 with Blumenthal key extension (net-snmp's `AES192`).
    Aes192,
    /// AES-256 with Blumenthal key extension (net-snmp's `AES256`).
    Aes256,
    /// AES-192 with Reeder key extension (Cisco's `AES192C`).
    Aes192c,
    /// AES-256 with Reeder key extension (Cisco's `AES256C`).
    Aes256c,
}

/// A v2c community: inline for convenience (communities such as `public` are
/// rarely secret), or a secret reference. Never logged either way.
pub type Community = InlineOrSecret;

impl SnmpTarget {
    /// A target polled with the credential called `credential`, everything but
    /// name and address defaulted.
    pub fn with_credential(
        name: impl Into<String>,
        address: impl Into<String>,
        credential: impl Into<String>,
    ) -> Self {
        Self {
            credential: Some(credential.into()),
            ..Self::unsecured(name.into(), address.into())
        }
    }

    /// A v2c target with its own community, everything but name and address
    /// defaulted.
    pub fn v2c(name: impl Into<String>, address: impl Into<String>, community: Community) -> Self {
        Self {
            version: Some(SnmpVersion::V2c),
            community: Some(community),
            ..Self::unsecured(name.into(), address.into())
        }
    }

    /// A v3 target with its own security, everything but name and address
    /// defaulted.
    pub fn v3(name: impl Into<String>, address: impl Into<String>, v3: SnmpV3Config) -> Self {
        Self {
            version: Some(SnmpVersion::V3),
            v3: Some(v3),
            ..Self::unsecured(name.into(), address.into())
        }
    }

    fn unsecured(name: String, address: String) -> Self {
        Self {
            name,
            address,
            credential: None,
            version: None,
            community: None,
            v3: None,
            interval: default_snmp_interval(),
            timeout: default_snmp_timeout(),
            retries: default_snmp_retries(),
            metric_sets: default_metric_sets(),
            max_repetitions: default_max_repetitions(),
            values_per_request: default_values_per_request(),
            labels: BTreeMap::new(),
        }
    }

    /// `address` with port 161 if it names none.
    pub fn address_with_port(&self) -> String {
        let address = self.address.as_str();
        let has_port = match address.rsplit_once(':') {
            // A bare IPv6 address has colons but no port; `[v6]:port` has both.
            Some((host, port)) => {
                port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
            }
            None => false,
        };
        if has_port {
            address.to_owned()
        } else if address.contains(':') && !address.starts_with('[') {
            format!("[{address}]:161")
        } else {
            format!("{address}:161")
        }
    }

    /// Checks this target alone; `field` is how errors name it, e.g.
    /// `snmp.targets[0]` (empty for an etcd entry, whose key names it).
    pub fn validate(&self, field: &str) -> Result<(), InvalidConfig> {
        let invalid =
            |name: &str, problem: String| Err(InvalidConfig::field(subfield(field, name), problem));
        if self.name.trim().is_empty() {
            return invalid("name", "must not be empty".into());
        }
        if self.address.trim().is_empty() {
            return invalid("address", "must be `host:port` or `host`".into());
        }
        if self.interval < Duration::from_secs(1) {
            return invalid("interval", "must be at least 1s".into());
        }
        if self.timeout < Duration::from_millis(10) {
            return invalid("timeout", "must be at least 10ms".into());
        }
        let worst_case = self.timeout * (self.retries + 1);
        if worst_case > self.interval {
            return invalid(
                "timeout",
                format!(
                    "times (retries + 1) is {}, longer than the interval {}; one poll must end before the next starts",
                    format_duration(worst_case),
                    format_duration(self.interval)
                ),
            );
        }
        if self.retries > 10 {
            return invalid("retries", "must be at most 10".into());
        }
        if self.metric_sets.is_empty() {
            return invalid(
                "metric_sets",
                format!(
                    "must name at least one of {} or a defined set",
                    MetricSet::BUILT_IN.join(", ")
                ),
            );
        }
        if self.max_repetitions == 0 || self.max_repetitions > 100 {
            return invalid("max_repetitions", "must be between 1 and 100".into());
        }
        if self.values_per_request == 0 || self.values_per_request > 1000 {
            return invalid("values_per_request", "must be between 1 and 1000".into());
        }
        if self.credential.is_some() {
            for (name, given) in [
                ("community", self.community.is_some()),
                ("v3", self.v3.is_some()),
            ] {
                if given {
                    return invalid(
                        name,
                        "cannot be given with `credential`, which says how the device is reached"
                            .into(),
                    );
                }
            }
            return Ok(());
        }
        self.own_credential().validate(field)
    }

    /// The credential this target is polled with: the one it names out of
    /// `credentials`, or its own. Refuses a name that is not defined, a `version`
    /// the credential contradicts, and an IP address outside the credential's
    /// `allowed_networks`; `field` names the target as in [`Self::validate`].
    pub fn credential_in(
        &self,
        field: &str,
        credentials: &BTreeMap<String, SnmpCredential>,
    ) -> Result<TargetCredential, InvalidConfig> {
        let Some(name) = &self.credential else {
            return Ok(TargetCredential::Own(self.own_credential()));
        };
        let Some(credential) = credentials.get(name) else {
            return Err(InvalidConfig::field(
                subfield(field, "credential"),
                format!(
                    "`{name}` is not one of the agent's `snmp.credentials` ({})",
                    credential_names(credentials)
                ),
            ));
        };
        if let Some(version) = self.version
            && version != credential.version
        {
            return Err(InvalidConfig::field(
                subfield(field, "version"),
                format!(
                    "is {version}, but credential `{name}` is {}; leave `version` out, the credential sets it",
                    credential.version
                ),
            ));
        }
        let named = TargetCredential::Named {
            name: name.clone(),
            credential: credential.clone(),
        };
        if let Ok(socket) = self.address_with_port().parse::<SocketAddr>()
            && let Some(refusal) = named.refusal(socket.ip())
        {
            return Err(InvalidConfig::field(
                subfield(field, "address"),
                format!("`{}` is {refusal}", self.address),
            ));
        }
        Ok(named)
    }

    /// Checks that every metric set the target lists is built in or `is_defined`.
    pub fn check_metric_sets(
        &self,
        field: &str,
        is_defined: impl Fn(&str) -> bool,
    ) -> Result<(), InvalidConfig> {
        for (index, set) in self.metric_sets.iter().enumerate() {
            if let MetricSet::Defined(name) = set
                && !is_defined(name)
            {
                return Err(InvalidConfig::field(
                    subfield(field, &format!("metric_sets[{index}]")),
                    format!(
                        "`{name}` is neither built in ({}) nor defined",
                        MetricSet::BUILT_IN.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The target's own `version`, `community` and `v3` as a credential sent
    /// anywhere.
    fn own_credential(&self) -> SnmpCredential {
        SnmpCredential {
            version: self.version.unwrap_or_default(),
            community: self.community.clone(),
            v3: self.v3.clone(),
            allowed_networks: None,
        }
    }
}

/// The names of `credentials`, for messages.
fn credential_names(credentials: &BTreeMap<String, SnmpCredential>) -> String {
    if credentials.is_empty() {
        "none is defined".to_owned()
    } else {
        credentials
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl SnmpCredential {
    /// Checks version, community or v3 settings and networks; `field` names the
    /// credential (or the target that carries its own).
    fn validate(&self, field: &str) -> Result<(), InvalidConfig> {
        let invalid =
            |name: &str, problem: String| Err(InvalidConfig::field(subfield(field, name), problem));
        if self.allowed_networks.as_ref().is_some_and(Vec::is_empty) {
            return invalid(
                "allowed_networks",
                "must list at least one network; leave it out to allow any address".into(),
            );
        }
        match (self.version, &self.community, &self.v3) {
            (SnmpVersion::V1 | SnmpVersion::V2c, Some(community), None) => community
                .resolve()
                .map(drop)
                .map_err(|error| InvalidConfig::field(subfield(field, "community"), error)),
            (SnmpVersion::V1 | SnmpVersion::V2c, None, _) => invalid(
                "community",
                format!("is required with version {}", self.version),
            ),
            (SnmpVersion::V1 | SnmpVersion::V2c, Some(_), Some(_)) => {
                invalid("v3", "is only allowed with version v3".into())
            }
            (SnmpVersion::V3, Some(_), _) => invalid(
                "community",
                "is only allowed with versions v1 and v2c".into(),
            ),
            (SnmpVersion::V3, None, None) => invalid("v3", "is required with version v3".into()),
            (SnmpVersion::V3, None, Some(v3)) => v3.validate(&subfield(field, "v3")),
        }
    }
}

impl TargetCredential {
    /// The version, community or v3 security and networks.
    pub fn credential(&self) -> &SnmpCredential {
        match self {
            Self::Named { credential, .. } | Self::Own(credential) => credential,
        }
    }

    /// Why this credential must not be sent to `address`, if it must not: an
    /// address outside the `allowed_networks` of a named credential.
    pub fn refusal(&self, address: IpAddr) -> Option<String> {
        let Self::Named { name, credential } = self else {
            return None;
        };
        let networks = credential.allowed_networks.as_ref()?;
        if networks.iter().any(|network| network.contains(address)) {
            return None;
        }
        let networks: Vec<String> = networks.iter().map(IpNetwork::to_string).collect();
        Some(format!(
            "outside the `allowed_networks` of credential `{name}` ({})",
            networks.join(", ")
        ))
    }
}

impl SnmpV3Config {
    fn validate(&self, field: &str) -> Result<(), InvalidConfig> {
        let invalid = |name: &str, problem: &str| {
            Err(InvalidConfig::field(format!("{field}.{name}"), problem))
        };
        if self.user.is_empty() {
            return invalid("user", "must not be empty");
        }
        let needs_auth = self.security_level != SecurityLevel::NoAuthNoPriv;
        let needs_priv = self.security_level == SecurityLevel::AuthPriv;
        let level = match self.security_level {
            SecurityLevel::NoAuthNoPriv => "no_auth_no_priv",
            SecurityLevel::AuthNoPriv => "auth_no_priv",
            SecurityLevel::AuthPriv => "auth_priv",
        };
        let presence = [
            ("auth_protocol", self.auth_protocol.is_some(), needs_auth),
            ("auth_password", self.auth_password.is_some(), needs_auth),
            ("priv_protocol", self.priv_protocol.is_some(), needs_priv),
            ("priv_password", self.priv_password.is_some(), needs_priv),
        ];
        for (name, present, needed) in presence {
            if needed && !present {
                return invalid(name, &format!("is required with security_level {level}"));
            }
            if present && !needed {
                return invalid(name, &format!("is not used with security_level {level}"));
            }
        }
        let secrets = [
            ("auth_password", &self.auth_password),
            ("priv_password", &self.priv_password),
        ];
        for (name, secret) in secrets {
            if let Some(secret) = secret {
                let password = secret
                    .resolve()
                    .map_err(|error| InvalidConfig::field(format!("{field}.{name}"), error))?;
                if password.len() < 8 {
                    return invalid(name, "must be at least 8 characters (RFC 3414)");
                }
            }
        }
        Ok(())
    }
}

impl SnmpConfig {
    /// Checks credentials, targets, metric set definitions and their references.
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_polls_in_flight == 0 {
            return Err(InvalidConfig::field(
                "snmp.max_polls_in_flight",
                "must be at least 1",
            ));
        }
        if let Some(etcd) = &self.etcd {
            etcd.validate().map_err(|error| InvalidConfig {
                message: error.to_string().replace("`etcd.", "`snmp.etcd."),
            })?;
            if !self.targets.is_empty() {
                return Err(InvalidConfig::field(
                    "snmp.targets",
                    "must be empty when `snmp.etcd` is set: targets then come from etcd",
                ));
            }
        }
        for (name, credential) in &self.credentials {
            if name.trim().is_empty() {
                return Err(InvalidConfig::field(
                    "snmp.credentials",
                    "names must not be empty",
                ));
            }
            credential.validate(&format!("snmp.credentials.{name}"))?;
        }
        for (name, definition) in &self.metric_sets {
            let field = format!("snmp.metric_sets.{name}");
            if MetricSet::BUILT_IN.contains(&name.as_str()) {
                return Err(InvalidConfig::field(
                    field,
                    "redefines a built-in metric set",
                ));
            }
            definition.validate(&field)?;
        }
        let mut names = BTreeSet::new();
        for (index, target) in self.targets.iter().enumerate() {
            let field = format!("snmp.targets[{index}]");
            target.validate(&field)?;
            target.credential_in(&field, &self.credentials)?;
            target.check_metric_sets(&field, |name| self.metric_sets.contains_key(name))?;
            if !names.insert(&target.name) {
                return Err(InvalidConfig::field(
                    format!("{field}.name"),
                    format!("`{}` is used by another target", target.name),
                ));
            }
        }
        Ok(())
    }

    /// What a valid configuration allows but should not do, one message each,
    /// naming the field: communities written into the file, and (with etcd)
    /// credentials that the targets there may send to any address.
    pub fn warnings(&self) -> Vec<String> {
        let credentials = self
            .credentials
            .iter()
            .map(|(name, credential)| (format!("snmp.credentials.{name}"), &credential.community));
        let targets = self
            .targets
            .iter()
            .enumerate()
            .map(|(index, target)| (format!("snmp.targets[{index}]"), &target.community));
        let mut warnings: Vec<String> = credentials
            .chain(targets)
            .filter(|(_, community)| matches!(community, Some(Community::Inline(_))))
            .map(|(field, _)| {
                format!(
                    "`{field}.community` is given inline in the configuration file; prefer `{{file: ...}}` or `{{env: ...}}`"
                )
            })
            .collect();
        if self.etcd.is_some() {
            warnings.extend(
                self.credentials
                    .iter()
                    .filter(|(_, credential)| credential.allowed_networks.is_none())
                    .map(|(name, _)| {
                        format!(
                            "`snmp.credentials.{name}` has no `allowed_networks`: whoever can write the etcd targets can have it sent to any address"
                        )
                    }),
            );
        }
        warnings
    }
}

fn default_snmp_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_snmp_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_snmp_retries() -> u32 {
    1
}

fn default_metric_sets() -> Vec<MetricSet> {
    vec![MetricSet::System, MetricSet::If]
}

fn default_max_repetitions() -> u32 {
    25
}

fn default_values_per_request() -> u32 {
    60
}

fn default_max_polls_in_flight() -> usize {
    256
}
