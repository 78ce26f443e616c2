//! The fields parsed out of one log line, on their way into its `LogLine.fields`:
//! names and values kept in one reused text buffer, so that a parsed line costs
//! no allocation once a file's first lines were read.
//!
//! Names land under Elastic Common Schema names where one exists: the usual
//! keys of application logs (`level`, `user`, `remote_addr`, `status`, ...) are
//! renamed to theirs (`log.level`, `user.name`, `source.ip`,
//! `http.response.status_code`, ...). A value that does not fit its ECS field's
//! type (an address that is not an IP, a status that is not a number) keeps the
//! key it came with (a key that is an ECS name already is kept, and the index
//! template ignores a malformed value there rather than refuse the document).
//! Every other key keeps its own name; the index stage puts those under `fields`.
//!
//! A line keeps what the wire allows ([`vigil_proto::limits`]): fields beyond
//! the most a line may carry (less one, for the `log.parse_failure` flag) and
//! fields with overlong names are left out, overlong values are cut; the line
//! itself is shipped whole all the same.

use vigil_proto::limits::{MAX_LOG_FIELD_NAME_BYTES, MAX_LOG_FIELD_VALUE_BYTES, MAX_LOG_FIELDS};
use vigil_proto::log_fields::ecs_type;

/// Keys of application logs and the ECS field each means.
const ECS_ALIASES: &[(&str, &str)] = &[
    ("level", "log.level"),
    ("lvl", "log.level"),
    ("severity", "log.level"),
    ("loglevel", "log.level"),
    ("logger", "log.logger"),
    ("logger_name", "log.logger"),
    ("user", "user.name"),
    ("username", "user.name"),
    ("user_name", "user.name"),
    ("remote_addr", "source.ip"),
    ("remote_ip", "source.ip"),
    ("client_ip", "source.ip"),
    ("src_ip", "source.ip"),
    ("method", "http.request.method"),
    ("http_method", "http.request.method"),
    ("status", "http.response.status_code"),
    ("status_code", "http.response.status_code"),
    ("path", "url.path"),
    ("url", "url.original"),
    ("service", "service.name"),
    ("service_name", "service.name"),
    ("trace_id", "trace.id"),
    ("traceid", "trace.id"),
    ("traceId", "trace.id"),
    ("span_id", "span.id"),
    ("spanId", "span.id"),
    ("pid", "process.pid"),
    ("error", "error.message"),
    ("err", "error.message"),
];

/// The ECS name of `key`, or `key` itself when it has none.
pub(crate) fn ecs_name(key: &str) -> &str {
    ECS_ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map_or(key, |(_, ecs)| ecs)
}

/// Whether `value` fits the type the logs index maps the ECS field `name` to
/// (the list the index stage reads too).
fn fits(name: &str, value: &str) -> bool {
    ecs_type(name).is_none_or(|kind| kind.fits(value))
}

/// Name and value spans of one field in [`Fields::text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    name_end: u32,
    end: u32,
}

/// The fields of one line: `(name, value)` pairs in the order they were found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Fields {
    text: String,
    spans: Vec<Span>,
}

impl Fields {
    pub(crate) const fn new() -> Self {
        Self {
            text: String::new(),
            spans: Vec::new(),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// Adds a field found under `key`, renamed to its ECS name if it has one and
    /// the value fits it. A field of that name already present is replaced.
    pub(crate) fn add(&mut self, key: &str, value: &str) {
        let ecs = ecs_name(key);
        let name = if fits(ecs, value) { ecs } else { key };
        self.add_verbatim(name, value);
    }

    /// Adds `name` as it is; a field of that name already present is replaced.
    pub(crate) fn add_verbatim(&mut self, name: &str, value: &str) {
        self.remove(name);
        if self.spans.len() >= MAX_LOG_FIELDS - 1 || name.len() > MAX_LOG_FIELD_NAME_BYTES {
            return;
        }
        self.push(name, cut(value, MAX_LOG_FIELD_VALUE_BYTES));
    }

    /// Flags the line as one step `step` could not parse; there is always room
    /// for the flag.
    pub(crate) fn flag_failure(&mut self, name: &str, step: &str) {
        self.remove(name);
        self.push(name, step);
    }

    fn push(&mut self, name: &str, value: &str) {
        let start = self.text.len() as u32;
        self.text.push_str(name);
        let name_end = self.text.len() as u32;
        self.text.push_str(value);
        self.spans.push(Span {
            start,
            name_end,
            end: self.text.len() as u32,
        });
    }

    /// The value of the field `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(field, _)| *field == name)
            .map(|(_, value)| value)
    }

    /// Removes the field `name`; its text stays in the buffer until `clear`.
    pub(crate) fn remove(&mut self, name: &str) {
        let text = &self.text;
        self.spans
            .retain(|span| &text[span.start as usize..span.name_end as usize] != name);
    }

    /// Keeps the first `count` fields: what the steps before a failed one found.
    pub(crate) fn truncate(&mut self, count: usize) {
        self.spans.truncate(count);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|span| {
            (
                &self.text[span.start as usize..span.name_end as usize],
                &self.text[span.name_end as usize..span.end as usize],
            )
        })
    }
}

/// `value` up to `max` bytes, cut on a character boundary.
fn cut(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}
