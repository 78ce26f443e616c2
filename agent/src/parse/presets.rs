//! Parser chains shipped with the agent for the logs people have: syslog and
//! auth.log (with the sshd, sudo, useradd and usermod lines the security rules
//! key on), nginx and Apache access and error logs, and JSON application logs.
//! Each is the steps one would write by hand, named.

use super::captures::{Pattern, RegexParser};
use super::timestamp::Layout;
use super::{LevelParser, Step, TimestampParser};
use serde::Deserialize;

/// A named chain, `preset: <name>` in a `parsers:` list.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// /var/log/syslog and /var/log/auth.log as rsyslog writes them: syslog,
    /// then the fields of sshd, sudo, useradd, usermod and PAM session lines.
    Syslog,
    /// The same as `syslog`.
    AuthLog,
    /// nginx's `combined` access log format.
    NginxAccess,
    /// nginx's error log.
    NginxError,
    /// Apache's `combined` (or `common`) access log format.
    ApacheAccess,
    /// Apache's error log (2.4).
    ApacheError,
    /// One JSON object per line, with its time under `@timestamp`, `timestamp`,
    /// `time` or `ts` and its level under `level`, `lvl` or `severity`.
    Json,
    /// A Kubernetes container log (`/var/log/pods/...` or `/var/log/containers/...`)
    /// in the CRI format or Docker's json-file format, whichever each line is,
    /// with its pod and container from the path.
    Kubernetes,
}

/// Fields of the auth.log lines the shipped security rules read (`user.name`,
/// `source.ip`), applied to the program's message after the syslog step.
const AUTH_PATTERNS: &[(&str, &[(&str, &str)])] = &[
    (
        r"^Failed (?P<ssh.method>\S+) for (?:invalid user )?(?P<user.name>\S*) from (?P<source.ip>\S+) port (?P<source.port>\d+)",
        &[("event.action", "ssh_login"), ("event.outcome", "failure")],
    ),
    (
        r"^Accepted (?P<ssh.method>\S+) for (?P<user.name>\S+) from (?P<source.ip>\S+) port (?P<source.port>\d+)",
        &[("event.action", "ssh_login"), ("event.outcome", "success")],
    ),
    (
        r"^Invalid user (?P<user.name>\S*) from (?P<source.ip>\S+)(?: port (?P<source.port>\d+))?",
        &[("event.action", "ssh_login"), ("event.outcome", "failure")],
    ),
    (
        r"^\s*(?P<user.name>\S+) : (?:(?P<sudo.error>[^;]+?) ; )?TTY=(?P<sudo.tty>\S+) ; PWD=(?P<process.working_directory>.+?) ; USER=(?P<user.effective.name>\S+) ; (?:GROUP=\S+ ; )?(?:ENV=.*? ; )?COMMAND=(?P<process.command_line>.*)$",
        &[("event.action", "sudo")],
    ),
    (
        r"^new user: name=(?P<user.name>[^,]+), UID=(?P<user.id>\d+), GID=(?P<group.id>\d+), home=(?P<useradd.home>[^,]+), shell=(?P<useradd.shell>[^,]+)",
        &[("event.action", "user-created")],
    ),
    (
        r"^new group: name=(?P<group.name>[^,]+), GID=(?P<group.id>\d+)",
        &[("event.action", "group-created")],
    ),
    (
        r"^add '(?P<user.name>[^']+)' to (?:shadow )?group '(?P<group.name>[^']+)'",
        &[("event.action", "user-added-to-group")],
    ),
    (
        r"^change user '(?P<user.name>[^']+)' password",
        &[("event.action", "password-changed")],
    ),
    (
        r"^pam_unix\((?P<pam.service>[^:]+):session\): session (?P<pam.session>opened|closed) for user (?P<user.name>[^\s(]+)",
        &[],
    ),
];

/// The combined log format of nginx and Apache; the referrer and user agent are
/// optional, so Apache's common format fits too.
const ACCESS_PATTERN: &str = r#"^(?P<source.ip>\S+) \S+ (?P<user.name>\S+) \[(?P<time>[^\]]+)\] "(?P<http.request.method>[A-Z]+) (?P<url.original>(?P<url.path>[^\s?]*)(?:\?(?P<url.query>\S*))?) HTTP/(?P<http.version>[0-9.]+)" (?P<http.response.status_code>\d{3}) (?P<http.response.body.bytes>\d+|-)(?: "(?P<http.request.referrer>[^"]*)" "(?P<user_agent.original>[^"]*)")?"#;

const ACCESS_TIME: &str = "%d/%b/%Y:%H:%M:%S %z";

const NGINX_ERROR_PATTERN: &str = r"^(?P<time>\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) \[(?P<log.level>\w+)\] (?P<process.pid>\d+)#(?P<process.thread.id>\d+): (?:\*(?P<nginx.connection_id>\d+) )?(?P<error.message>.*?)(?:, client: (?P<source.ip>[^,]+))?(?:, server: (?P<nginx.server>[^,]*))?(?:, request: .(?P<http.request.method>[A-Z]+) (?P<url.original>\S+) [^,]*)?(?:, .*)?$";

const APACHE_ERROR_PATTERN: &str = r"^\[(?P<time>[^\]]+)\] \[(?:(?P<apache.module>[^:\]]+):)?(?P<log.level>[^\]]+)\] \[pid (?P<process.pid>\d+)(?::tid (?P<process.thread.id>\d+))?\](?: \[client (?P<source.address>[^\]]+)\])? (?P<error.message>.*)$";

impl Preset {
    /// The steps of this preset.
    pub(crate) fn steps(self) -> Vec<Step> {
        match self {
            Preset::Syslog | Preset::AuthLog => vec![
                Step::Syslog {
                    zone: jiff::tz::TimeZone::system(),
                },
                Step::Regex(RegexParser::optional(
                    AUTH_PATTERNS
                        .iter()
                        .map(|(pattern, set)| Pattern::preset(pattern, set))
                        .collect(),
                )),
            ],
            Preset::NginxAccess | Preset::ApacheAccess => vec![
                Step::Regex(RegexParser::required(vec![Pattern::preset(
                    ACCESS_PATTERN,
                    &[],
                )])),
                Step::Timestamp(TimestampParser::preset(&["time"], ACCESS_TIME)),
            ],
            Preset::NginxError => vec![
                Step::Regex(RegexParser::required(vec![Pattern::preset(
                    NGINX_ERROR_PATTERN,
                    &[],
                )])),
                Step::Timestamp(TimestampParser::preset(&["time"], "%Y/%m/%d %H:%M:%S")),
            ],
            Preset::ApacheError => vec![
                Step::Regex(RegexParser::required(vec![Pattern::preset(
                    APACHE_ERROR_PATTERN,
                    &[],
                )])),
                Step::Timestamp(TimestampParser::preset(
                    &["time"],
                    "%a %b %d %H:%M:%S%.f %Y",
                )),
            ],
            Preset::Json => vec![
                Step::Json {
                    message_field: None,
                },
                Step::Timestamp(TimestampParser {
                    fields: ["@timestamp", "timestamp", "time", "ts"]
                        .map(str::to_owned)
                        .to_vec(),
                    layouts: Layout::defaults(),
                    zone: jiff::tz::TimeZone::system(),
                }),
                Step::Level(LevelParser::default()),
            ],
            Preset::Kubernetes => vec![Step::Container, Step::Kubernetes],
        }
    }
}
