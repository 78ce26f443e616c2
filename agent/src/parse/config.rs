//! The `parsers:` setting of a `logs[]` entry as written in YAML: a list of steps
//! (or one step, such as `preset: nginx_access`) that the tailer compiles into a
//! [`Chain`](super::Chain) and runs on every line of the entry's files before
//! they are batched. Validation compiles it: a bad regex, time zone or layout
//! names its field.

use super::presets::Preset;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;

/// The parser chain of a `logs[]` entry: steps run in order on each line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsersConfig {
    pub steps: Vec<ParserStep>,
}

/// One step of a parser chain.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ParserStep {
    /// A named chain shipped with the agent (`syslog`, `nginx_access`, ...).
    Preset(Preset),
    /// The line (or what the step before left of it) is a JSON object; nested
    /// objects become dotted names.
    Json(JsonStep),
    /// `key=value key2="quoted value"` pairs.
    Logfmt(EmptyStep),
    /// Named captures of a regex become fields.
    Regex(RegexStep),
    /// RFC 3164 or RFC 5424 syslog: priority, time, host, program, pid.
    Syslog(SyslogStep),
    /// The container runtime (CRI) log format of Kubernetes nodes:
    /// `<time> <stream> <P|F> <text>`; partial lines are joined.
    Cri(EmptyStep),
    /// Docker's json-file format: `{"log": ..., "stream": ..., "time": ...}`;
    /// lines split by Docker are joined.
    Docker(EmptyStep),
    /// `cri` or `docker`, whichever each line is (a json-file line starts with
    /// `{`), as nodes with either runtime write /var/log/pods.
    Container(EmptyStep),
    /// The pod and container of a Kubernetes container log, from its path:
    /// `kubernetes.namespace`, `kubernetes.pod.name`, `kubernetes.pod.uid`,
    /// `kubernetes.container.name` (and `container.id` from a
    /// /var/log/containers link).
    Kubernetes(EmptyStep),
    /// The event time from a field.
    Timestamp(TimestampStep),
    /// `log.level` from a field, through a mapping.
    Level(LevelStep),
}

/// A step without settings, written `{}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EmptyStep {}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JsonStep {
    /// A string field that becomes the line's message (as Filebeat's
    /// `message_key`); the original text is then not kept.
    #[serde(default)]
    pub message_field: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegexStep {
    /// Regexes tried in order; the first that matches gives its named captures
    /// as fields (a capture that is empty or `-` gives none).
    pub patterns: Vec<String>,
    /// Whether a line no pattern matches is a parse failure; `false` for steps
    /// that pick out only some lines (the sshd and sudo lines of auth.log).
    #[serde(default = "default_true")]
    pub required: bool,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SyslogStep {
    /// Time zone (IANA name) of RFC 3164 stamps, which carry none; the host's
    /// own zone when not set.
    #[serde(default)]
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TimestampStep {
    /// The field holding the time, as named after the steps before
    /// (`time`, `@timestamp`).
    pub field: String,
    /// Layouts tried in order: `rfc3339`, `iso8601` (with or without zone, `T` or
    /// space, `,` or `.` before the fraction), `epoch` (seconds, milliseconds,
    /// microseconds or nanoseconds by magnitude), `epoch_s`, `epoch_ms`,
    /// `epoch_us`, `epoch_ns`, or a strftime layout (`%d/%b/%Y:%H:%M:%S %z`).
    /// All the named ones when empty.
    #[serde(default)]
    pub layouts: Vec<String>,
    /// Time zone (IANA name) of stamps without one; the host's own when not set.
    #[serde(default)]
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LevelStep {
    /// The field holding the level (`log.level` when not set, where the keys
    /// `level`, `lvl` and `severity` land).
    #[serde(default)]
    pub field: Option<String>,
    /// Values (compared without case) and the level each means: `{W: warn,
    /// "30": info}`. Other values are lowercased.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
}

fn default_true() -> bool {
    true
}

impl<'de> Deserialize<'de> for ParsersConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StepsVisitor;
        impl<'de> Visitor<'de> for StepsVisitor {
            type Value = ParsersConfig;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter
                    .write_str("a list of parser steps, or one step such as `preset: nginx_access`")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                let steps = Vec::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(ParsersConfig { steps })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let step = ParserStep::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ParsersConfig { steps: vec![step] })
            }
        }
        deserializer.deserialize_any(StepsVisitor)
    }
}
