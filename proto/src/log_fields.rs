//! The fields parsed out of log lines that have an Elastic Common Schema name
//! and a type of their own in the logs index. The agent names what it parses by
//! them, and keeps a value that does not fit the type under the key it came
//! with; the index stage writes them at their ECS place in the document
//! (`user.name` as `{"user": {"name": ...}}`) and every other field under
//! `fields`; `dashboards/component-templates/vigil-logs@mappings.json` maps
//! them, which a test of the index stage checks against this list. Rules read
//! them by the same names.

/// How the logs index maps one of these fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcsType {
    /// `keyword`, values beyond 1024 bytes kept but not indexed.
    Keyword,
    /// `match_only_text`: full-text search of messages.
    Text,
    /// `ip`: IPv4 or IPv6 addresses.
    Ip,
    /// `long`: whole numbers.
    Long,
}

impl EcsType {
    /// Whether Elasticsearch indexes `value` as this type.
    pub fn fits(self, value: &str) -> bool {
        match self {
            EcsType::Keyword | EcsType::Text => true,
            EcsType::Ip => value.parse::<std::net::IpAddr>().is_ok(),
            EcsType::Long => {
                let digits = value.strip_prefix('-').unwrap_or(value);
                !digits.is_empty()
                    && digits.bytes().all(|byte| byte.is_ascii_digit())
                    && value.parse::<i64>().is_ok()
            }
        }
    }
}

/// The mapped fields and their types, sorted by name (a test keeps them so).
pub const ECS_LOG_FIELDS: &[(&str, EcsType)] = &[
    ("client.ip", EcsType::Ip),
    ("destination.ip", EcsType::Ip),
    ("error.message", EcsType::Text),
    ("event.action", EcsType::Keyword),
    ("event.code", EcsType::Keyword),
    ("event.outcome", EcsType::Keyword),
    ("group.id", EcsType::Keyword),
    ("group.name", EcsType::Keyword),
    ("host.hostname", EcsType::Keyword),
    ("http.request.method", EcsType::Keyword),
    ("http.request.referrer", EcsType::Keyword),
    ("http.response.body.bytes", EcsType::Long),
    ("http.response.status_code", EcsType::Long),
    ("http.version", EcsType::Keyword),
    ("log.iostream", EcsType::Keyword),
    ("log.level", EcsType::Keyword),
    ("log.logger", EcsType::Keyword),
    ("log.syslog.facility.name", EcsType::Keyword),
    ("log.syslog.severity.name", EcsType::Keyword),
    ("process.command_line", EcsType::Keyword),
    ("process.name", EcsType::Keyword),
    ("process.pid", EcsType::Long),
    ("process.thread.id", EcsType::Long),
    ("service.name", EcsType::Keyword),
    ("source.ip", EcsType::Ip),
    ("source.port", EcsType::Long),
    ("span.id", EcsType::Keyword),
    ("trace.id", EcsType::Keyword),
    ("url.original", EcsType::Keyword),
    ("url.path", EcsType::Keyword),
    ("url.query", EcsType::Keyword),
    ("user.effective.name", EcsType::Keyword),
    ("user.id", EcsType::Keyword),
    ("user.name", EcsType::Keyword),
    ("user_agent.original", EcsType::Keyword),
];

/// The type the logs index maps the field `name` to, if it maps it.
pub fn ecs_type(name: &str) -> Option<EcsType> {
    ECS_LOG_FIELDS
        .binary_search_by(|(field, _)| (*field).cmp(name))
        .ok()
        .map(|position| ECS_LOG_FIELDS[position].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_and_no_name_is_the_parent_of_another() {
        for pair in ECS_LOG_FIELDS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        for (name, _) in ECS_LOG_FIELDS {
            let parent = format!("{name}.");
            assert!(
                !ECS_LOG_FIELDS
                    .iter()
                    .any(|(other, _)| other.starts_with(&parent)),
                "{name} is both a value and an object"
            );
        }
    }

    #[test]
    fn every_listed_field_is_found_and_others_are_not() {
        for (name, kind) in ECS_LOG_FIELDS {
            assert_eq!(ecs_type(name), Some(*kind));
        }
        assert_eq!(ecs_type("user"), None);
        assert_eq!(ecs_type("message"), None);
        assert_eq!(ecs_type("zzz"), None);
    }

    #[test]
    fn values_fit_their_types() {
        assert!(EcsType::Ip.fits("10.0.0.1"));
        assert!(EcsType::Ip.fits("2001:db8::1"));
        assert!(!EcsType::Ip.fits("web-1"));
        assert!(EcsType::Long.fits("200"));
        assert!(EcsType::Long.fits("-1"));
        assert!(!EcsType::Long.fits("+1"));
        assert!(!EcsType::Long.fits("-"));
        assert!(!EcsType::Long.fits(""));
        assert!(!EcsType::Long.fits("1.5"));
        assert!(!EcsType::Long.fits("99999999999999999999"));
        assert!(EcsType::Keyword.fits("anything"));
    }
}
