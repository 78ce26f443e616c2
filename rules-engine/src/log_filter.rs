//! Which log lines a log rule counts: `message =~ "ERROR" and host.name != "db-1"`,
//! and the fields of a line (ECS names, as in Elasticsearch) that filters and
//! `group_by` read. Parsed when rules load, applied by the alert stage to every
//! line of every `LogBatch`.

use super::lexer::{Cursor, SyntaxError, Token};
use regex::{Regex, RegexSet, SetMatches};
use std::borrow::Cow;
use std::fmt;
use vigil_proto::labels::find;
use vigil_proto::v1::{LogLine, LogSource, Resource};

/// A field of a log line, by its Elasticsearch (ECS) name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogField {
    /// `message`: the line, decoded as UTF-8 with invalid bytes replaced.
    Message,
    /// `host.name`: the host the line was read on.
    HostName,
    /// `log.file.path`: the file the line was read from.
    FilePath,
    /// `event.dataset`: the dataset of the source.
    Dataset,
    /// Any field the agent parsed out of the line.
    Parsed(String),
}

impl LogField {
    pub(crate) fn from_name(name: &str) -> LogField {
        match name {
            "message" => LogField::Message,
            "host.name" => LogField::HostName,
            "log.file.path" => LogField::FilePath,
            "event.dataset" => LogField::Dataset,
            other => LogField::Parsed(other.to_owned()),
        }
    }

    /// The field's ECS name, as written in rules.
    pub fn name(&self) -> &str {
        match self {
            LogField::Message => "message",
            LogField::HostName => "host.name",
            LogField::FilePath => "log.file.path",
            LogField::Dataset => "event.dataset",
            LogField::Parsed(name) => name,
        }
    }

    /// The alert label a `group_by` on this field produces: `host.name` becomes
    /// `host`, the label metric alerts carry too; every other field keeps its name.
    pub(crate) fn label_name(&self) -> &str {
        match self {
            LogField::HostName => "host",
            other => other.name(),
        }
    }
}

/// One log line with the batch it came in, as the fields rules can read.
#[derive(Debug)]
pub(crate) struct LogRecord<'a> {
    pub(crate) resource: &'a Resource,
    pub(crate) source: &'a LogSource,
    pub(crate) line: &'a LogLine,
    pub(crate) message: Cow<'a, str>,
}

impl<'a> LogRecord<'a> {
    pub(crate) fn new(resource: &'a Resource, source: &'a LogSource, line: &'a LogLine) -> Self {
        LogRecord {
            resource,
            source,
            line,
            message: String::from_utf8_lossy(&line.message),
        }
    }

    /// The value of a field; a field the line does not have reads as empty, as a
    /// missing label does in Prometheus.
    pub(crate) fn get(&self, field: &LogField) -> &str {
        match field {
            LogField::Message => &self.message,
            LogField::HostName => &self.resource.host_name,
            LogField::FilePath => &self.source.path,
            LogField::Dataset => &self.source.dataset,
            LogField::Parsed(name) => find(&self.line.fields, name).unwrap_or(""),
        }
    }
}

/// A filter on log lines: field comparisons joined with `and`.
#[derive(Debug, Clone)]
pub struct LogFilter {
    clauses: Vec<Clause>,
    /// The filter as written, for display.
    text: String,
}

#[derive(Debug, Clone)]
struct Clause {
    field: LogField,
    test: FieldTest,
}

#[derive(Debug, Clone)]
enum FieldTest {
    Equal(String),
    NotEqual(String),
    /// Unanchored, like grep: `message =~ "ERROR"` matches a line containing ERROR.
    Matches(Regex),
    NotMatches(Regex),
}

/// Why a filter could not be read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FilterError {
    Syntax(String),
    /// A regex that does not compile: the regex and the regex crate's reason.
    Regex {
        pattern: String,
        reason: String,
    },
}

impl LogFilter {
    pub(crate) fn parse(text: &str) -> Result<LogFilter, FilterError> {
        let mut cursor =
            Cursor::new(text).map_err(|error| FilterError::Syntax(error.describe(text)))?;
        let mut clauses = Vec::new();
        loop {
            clauses.push(clause(&mut cursor).map_err(|error| match error {
                ClauseError::Syntax(error) => FilterError::Syntax(error.describe(text)),
                ClauseError::Regex { pattern, reason } => FilterError::Regex { pattern, reason },
            })?);
            if cursor.is_done() {
                break;
            }
            if !cursor.eat_word("and") {
                return Err(FilterError::Syntax(
                    cursor
                        .error("expected `and` between comparisons")
                        .describe(text),
                ));
            }
        }
        Ok(LogFilter {
            clauses,
            text: text.trim().to_owned(),
        })
    }

    pub(crate) fn matches(&self, record: &LogRecord<'_>) -> bool {
        self.clauses.iter().all(|clause| {
            let value = record.get(&clause.field);
            match &clause.test {
                FieldTest::Equal(expected) => value == expected,
                FieldTest::NotEqual(expected) => value != expected,
                FieldTest::Matches(regex) => regex.is_match(value),
                FieldTest::NotMatches(regex) => !regex.is_match(value),
            }
        })
    }
}

impl LogFilter {
    /// The regex a line's message must match for the filter to pass, if it has
    /// one (`message =~ "..."`).
    fn required_message_regex(&self) -> Option<&Regex> {
        self.clauses
            .iter()
            .find_map(|clause| match (&clause.field, &clause.test) {
                (LogField::Message, FieldTest::Matches(regex)) => Some(regex),
                _ => None,
            })
    }
}

/// The message regexes of many filters as one [`RegexSet`], so that a line is
/// scanned once for all of them rather than once per filter: the filters whose
/// regex did not match are passed over without running them.
#[derive(Debug, Clone)]
pub(crate) struct MessagePrefilter {
    set: RegexSet,
    /// Per filter, in the order given: its regex's index in `set`, if it has one.
    required: Vec<Option<usize>>,
}

/// The candidates of one line: which filters the [`MessagePrefilter`] let through.
#[derive(Debug)]
pub(crate) struct Candidates<'a> {
    prefilter: &'a MessagePrefilter,
    matched: Option<SetMatches>,
}

impl MessagePrefilter {
    /// The prefilter of `filters` (`None` for a filter that keeps every line).
    pub(crate) fn new<'a>(filters: impl IntoIterator<Item = Option<&'a LogFilter>>) -> Self {
        let mut patterns: Vec<&str> = Vec::new();
        let required = filters
            .into_iter()
            .map(|filter| {
                let pattern = filter?.required_message_regex()?.as_str();
                Some(match patterns.iter().position(|p| *p == pattern) {
                    Some(found) => found,
                    None => {
                        patterns.push(pattern);
                        patterns.len() - 1
                    }
                })
            })
            .collect::<Vec<_>>();
        match RegexSet::new(&patterns) {
            Ok(set) => MessagePrefilter { set, required },
            // Each regex compiled alone; together they may pass the size limit.
            // Then every filter runs on every line, as without a prefilter.
            Err(_) => MessagePrefilter {
                set: RegexSet::empty(),
                required: vec![None; required.len()],
            },
        }
    }

    /// Scans `message` once for every regex.
    pub(crate) fn scan(&self, message: &str) -> Candidates<'_> {
        Candidates {
            prefilter: self,
            matched: (!self.set.is_empty()).then(|| self.set.matches(message)),
        }
    }

    /// Whether no filter can pass a line with these candidates: every filter
    /// requires a regex and none matched.
    pub(crate) fn rejects_all(&self, candidates: &Candidates<'_>) -> bool {
        self.required.iter().all(Option::is_some)
            && candidates
                .matched
                .as_ref()
                .is_some_and(|m| !m.matched_any())
    }
}

impl Candidates<'_> {
    /// Whether the filter at `position` may pass the line (its regex matched, or
    /// it has none); the filter itself decides.
    pub(crate) fn may_pass(&self, position: usize) -> bool {
        match (self.prefilter.required[position], &self.matched) {
            (Some(pattern), Some(matched)) => matched.matched(pattern),
            _ => true,
        }
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

enum ClauseError {
    Syntax(SyntaxError),
    Regex { pattern: String, reason: String },
}

impl From<SyntaxError> for ClauseError {
    fn from(error: SyntaxError) -> Self {
        ClauseError::Syntax(error)
    }
}

/// `field ('==' | '!=' | '=~' | '!~') string`
fn clause(cursor: &mut Cursor) -> Result<Clause, ClauseError> {
    let field = match cursor.next() {
        Some(Token::Word(name)) if name != "and" => LogField::from_name(&name),
        _ => {
            return Err(cursor
                .error_before("expected a field such as `message` or `host.name`")
                .into());
        }
    };
    let op = match cursor.next() {
        Some(Token::Op(op @ ("==" | "!=" | "=~" | "!~"))) => op,
        _ => return Err(cursor.error_before("expected one of == != =~ !~").into()),
    };
    let value = match cursor.next() {
        Some(Token::Str(value)) => value,
        _ => return Err(cursor.error_before("expected a quoted string").into()),
    };
    let test = match op {
        "==" => FieldTest::Equal(value),
        "!=" => FieldTest::NotEqual(value),
        _ => {
            let regex = compile_regex(&value).map_err(|reason| ClauseError::Regex {
                pattern: value.clone(),
                reason,
            })?;
            if op == "=~" {
                FieldTest::Matches(regex)
            } else {
                FieldTest::NotMatches(regex)
            }
        }
    };
    Ok(Clause { field, test })
}

/// Compiles a regex, with the regex crate's reason reduced to one line.
pub(crate) fn compile_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|error| match &error {
        regex::Error::Syntax(text) => text
            .lines()
            .find_map(|line| line.strip_prefix("error: "))
            .unwrap_or(text)
            .to_owned(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::labels::label;

    fn record_parts(message: &[u8]) -> (Resource, LogSource, LogLine) {
        (
            Resource {
                id: "web-1".into(),
                host_name: "web-1".into(),
                ..Resource::default()
            },
            LogSource {
                path: "/var/log/app.log".into(),
                source_id: "1:2".into(),
                dataset: "app".into(),
                ..LogSource::default()
            },
            LogLine {
                message: message.to_vec(),
                fields: vec![label("level", "ERROR")],
                ..LogLine::default()
            },
        )
    }

    fn matches(filter: &str, message: &[u8]) -> bool {
        let (resource, source, line) = record_parts(message);
        LogFilter::parse(filter)
            .unwrap()
            .matches(&LogRecord::new(&resource, &source, &line))
    }

    #[test]
    fn the_prefilter_passes_over_filters_whose_regex_did_not_match() {
        let filters: Vec<Option<LogFilter>> = vec![
            Some(LogFilter::parse(r#"message =~ "ERROR" and host.name == "web-1""#).unwrap()),
            Some(LogFilter::parse(r#"message =~ "timeout""#).unwrap()),
            Some(LogFilter::parse(r#"message =~ "ERROR""#).unwrap()),
            Some(LogFilter::parse(r#"message !~ "DEBUG""#).unwrap()),
            None,
        ];
        let prefilter = MessagePrefilter::new(filters.iter().map(Option::as_ref));
        let error = prefilter.scan("ERROR: disk full");
        let passes: Vec<bool> = (0..filters.len()).map(|n| error.may_pass(n)).collect();
        assert_eq!(passes, [true, false, true, true, true]);
        assert!(!prefilter.rejects_all(&error));

        let only_regexes = MessagePrefilter::new(filters[..3].iter().map(Option::as_ref));
        let quiet = only_regexes.scan("GET / 200");
        assert!(only_regexes.rejects_all(&quiet));
        assert!(!only_regexes.rejects_all(&only_regexes.scan("request timeout")));
    }

    #[test]
    fn compares_every_kind_of_field() {
        assert!(matches(r#"message =~ "ERROR""#, b"12:00 ERROR disk full"));
        assert!(!matches(r#"message =~ "^ERROR""#, b"12:00 ERROR disk full"));
        assert!(matches(r#"message !~ "WARN""#, b"12:00 ERROR disk full"));
        assert!(matches(r#"host.name == "web-1""#, b""));
        assert!(!matches(r#"host.name != "web-1""#, b""));
        assert!(matches(r#"log.file.path =~ "app\.log$""#, b""));
        assert!(matches(r#"event.dataset == 'app'"#, b""));
        assert!(matches(r#"level == "ERROR""#, b""));
        assert!(matches(r#"missing == """#, b""));
        assert!(matches(
            r#"message =~ "ERROR" and host.name == "web-1" and level != "INFO""#,
            b"ERROR"
        ));
        assert!(!matches(
            r#"message =~ "ERROR" and host.name == "db-1""#,
            b"ERROR"
        ));
    }

    #[test]
    fn invalid_utf8_is_matched_lossily() {
        assert!(matches(
            r#"message =~ "ERROR \x{FFFD} here""#,
            b"ERROR \xff here"
        ));
    }

    #[test]
    fn errors_name_the_bad_text() {
        let error = |text| LogFilter::parse(text).unwrap_err();
        assert_eq!(
            error(r#"message ~ "x""#),
            FilterError::Syntax("unexpected character `~` at `~ \"x\"`".into())
        );
        assert_eq!(
            error(r#"message == x"#),
            FilterError::Syntax("expected a quoted string at `x`".into())
        );
        assert_eq!(
            error(r#"message == "x" or host.name == "y""#),
            FilterError::Syntax(
                "expected `and` between comparisons at `or host.name == \"y\"`".into()
            )
        );
        assert_eq!(
            error(r#"message =~ "java.lang.(OutOfMemory""#),
            FilterError::Regex {
                pattern: "java.lang.(OutOfMemory".into(),
                reason: "unclosed group".into()
            }
        );
        assert_eq!(
            error(r#"and == "x""#),
            FilterError::Syntax(
                "expected a field such as `message` or `host.name` at `and == \"x\"`".into()
            )
        );
    }

    #[test]
    fn group_by_labels_use_short_host() {
        assert_eq!(LogField::from_name("host.name").label_name(), "host");
        assert_eq!(
            LogField::from_name("log.file.path").label_name(),
            "log.file.path"
        );
        assert_eq!(LogField::from_name("level").label_name(), "level");
    }
}
