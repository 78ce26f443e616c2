//! One journal entry, as `journalctl --output=json` prints it, turned into what a
//! log line carries: the message, the event time, Elastic Common Schema fields
//! and the journal's other fields under `journald.`. The step between reading
//! journalctl's output and batching in the journal source.
//!
//! The input is outside data: every size is bounded. A message longer than the
//! line limit, a field value longer than `MAX_FIELD_BYTES` and fields beyond
//! `MAX_FIELDS` are cut and the line is flagged `truncated`; a value that is not
//! UTF-8 (journalctl prints such values as arrays of bytes) is carried lossily,
//! and a message that is not UTF-8 is flagged `invalid_utf8`.

use crate::config::Priority;
use serde_json::Value;
use thiserror::Error;
use vigil_proto::v1::Label;

/// Longest value kept of a field other than the message.
pub(crate) const MAX_FIELD_BYTES: usize = 4096;

/// Most fields kept of one entry, besides the message.
pub(crate) const MAX_FIELDS: usize = 64;

/// Longest field name kept: the journal allows 64 bytes.
const MAX_NAME_BYTES: usize = 64;

/// Journal fields and the Elastic Common Schema fields they become.
const ECS_FIELDS: [(&str, &str); 13] = [
    ("_PID", "process.pid"),
    ("_COMM", "process.name"),
    ("_EXE", "process.executable"),
    ("_CMDLINE", "process.command_line"),
    ("_HOSTNAME", "host.hostname"),
    ("_MACHINE_ID", "host.id"),
    ("_BOOT_ID", "host.boot.id"),
    ("_SYSTEMD_UNIT", "systemd.unit"),
    ("_SYSTEMD_USER_UNIT", "systemd.user_unit"),
    ("_TRANSPORT", "systemd.transport"),
    ("SYSLOG_FACILITY", "log.syslog.facility.code"),
    ("SYSLOG_IDENTIFIER", "log.syslog.appname"),
    ("SYSLOG_PID", "log.syslog.procid"),
];

/// Fields that describe the entry's place in the journal rather than the event:
/// the cursor is kept apart, the time becomes the event time.
const ADDRESS_FIELDS: [&str; 5] = [
    "__CURSOR",
    "__REALTIME_TIMESTAMP",
    "__MONOTONIC_TIMESTAMP",
    "__SEQNUM",
    "__SEQNUM_ID",
];

/// Where other journal fields go: `journald.<FIELD>`, named as in the journal.
const OTHER_FIELDS_PREFIX: &str = "journald.";

/// Why a line of journalctl's output is not an entry.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum EntryError {
    #[error("not a JSON object: {0}")]
    NotJson(String),
    #[error("no `__CURSOR` field")]
    NoCursor,
    #[error("cursor `{0}` has no sequence number id (`s=`) and number (`i=`)")]
    BadCursor(String),
}

/// An entry's place in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The cursor as journalctl prints it, for `--cursor` after a restart.
    pub(crate) text: String,
    /// The journal's sequence number series (`s=`): entries of one series are
    /// numbered without repeats.
    pub(crate) seqnum_id: String,
    /// The entry's number in its series (`i=`).
    pub(crate) seqnum: u64,
}

impl Cursor {
    /// Reads the series and number out of a cursor.
    pub(crate) fn parse(text: &str) -> Result<Self, EntryError> {
        let mut seqnum_id = None;
        let mut seqnum = None;
        for part in text.split(';') {
            if let Some(id) = part.strip_prefix("s=") {
                seqnum_id = Some(id);
            } else if let Some(number) = part.strip_prefix("i=") {
                seqnum = u64::from_str_radix(number, 16).ok();
            }
        }
        match (seqnum_id, seqnum) {
            (Some(seqnum_id), Some(seqnum)) if !seqnum_id.is_empty() => Ok(Self {
                text: text.to_owned(),
                seqnum_id: seqnum_id.to_owned(),
                seqnum,
            }),
            _ => Err(EntryError::BadCursor(text.escape_debug().to_string())),
        }
    }
}

/// One entry as a log line carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) cursor: Cursor,
    /// `__REALTIME_TIMESTAMP`, when the journal received it; 0 when absent.
    pub(crate) realtime_unix_nano: i64,
    /// `_SYSTEMD_UNIT`, for `exclude_units`.
    pub(crate) unit: Option<String>,
    pub(crate) message: Vec<u8>,
    pub(crate) invalid_utf8: bool,
    /// Something was cut: the message, a field value, or fields beyond the limit.
    pub(crate) truncated: bool,
    pub(crate) fields: Vec<Label>,
}

/// Maps one line of `journalctl --output=json`; `max_message_bytes` bounds the
/// message.
pub(crate) fn parse_entry(line: &[u8], max_message_bytes: usize) -> Result<Entry, EntryError> {
    let object = match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(EntryError::NotJson("not an object".to_owned())),
        Err(error) => return Err(EntryError::NotJson(error.to_string())),
    };
    let cursor = match object.get("__CURSOR").and_then(Value::as_str) {
        Some(text) => Cursor::parse(text)?,
        None => return Err(EntryError::NoCursor),
    };
    let realtime_unix_nano = object
        .get("__REALTIME_TIMESTAMP")
        .and_then(Value::as_str)
        .and_then(|micros| micros.parse::<i64>().ok())
        .map_or(0, |micros| micros.saturating_mul(1000));
    let mut entry = Entry {
        cursor,
        realtime_unix_nano,
        unit: None,
        message: Vec::new(),
        invalid_utf8: false,
        truncated: false,
        fields: Vec::new(),
    };
    for (name, value) in &object {
        if ADDRESS_FIELDS.contains(&name.as_str()) {
            continue;
        }
        let Some(bytes) = value_bytes(value) else {
            continue;
        };
        if name == "MESSAGE" {
            entry.set_message(bytes, max_message_bytes);
        } else {
            entry.add_field(name, &bytes);
        }
    }
    Ok(entry)
}

/// The bytes of a field's value: a string, an array of bytes (a value that is
/// not printable UTF-8), or for a field the entry has several times, its first
/// value. `None` for anything else (journalctl prints `null` for values it
/// leaves out).
fn value_bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::String(text) => Some(text.as_bytes().to_vec()),
        Value::Array(items) if items.iter().all(Value::is_number) => items
            .iter()
            .map(|item| item.as_u64().and_then(|byte| u8::try_from(byte).ok()))
            .collect(),
        Value::Array(items) => items.first().and_then(value_bytes),
        _ => None,
    }
}

impl Entry {
    fn set_message(&mut self, mut bytes: Vec<u8>, max_message_bytes: usize) {
        if bytes.len() > max_message_bytes {
            bytes.truncate(max_message_bytes);
            self.truncated = true;
        }
        // A cut through a character is not what makes a message invalid.
        self.invalid_utf8 = match std::str::from_utf8(&bytes) {
            Ok(_) => false,
            Err(error) => !(self.truncated && error.error_len().is_none()),
        };
        self.message = bytes;
    }

    fn add_field(&mut self, name: &str, bytes: &[u8]) {
        if self.fields.len() >= MAX_FIELDS
            || name.len() > MAX_NAME_BYTES
            || !name
                .bytes()
                .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_')
        {
            self.truncated = true;
            return;
        }
        let value = if bytes.len() > MAX_FIELD_BYTES {
            self.truncated = true;
            &bytes[..MAX_FIELD_BYTES]
        } else {
            bytes
        };
        let value = String::from_utf8_lossy(value).into_owned();
        if name == "_SYSTEMD_UNIT" {
            self.unit = Some(value.clone());
        }
        if name == "PRIORITY"
            && let Some(priority) = value.parse().ok().and_then(Priority::from_number)
        {
            self.push("log.level", priority.name().to_owned());
            self.push("log.syslog.severity.code", value);
            return;
        }
        match ECS_FIELDS.iter().find(|(journal, _)| *journal == name) {
            Some((_, ecs)) => self.push(ecs, value),
            None => self.push(&format!("{OTHER_FIELDS_PREFIX}{name}"), value),
        }
    }

    fn push(&mut self, name: &str, value: String) {
        self.fields.push(Label {
            name: name.to_owned(),
            value,
        });
    }
}

#[cfg(test)]
mod tests;
