//! The `cri` and `docker` steps: the formats container runtimes write a
//! container's output in (Kubernetes nodes' /var/log/pods, Docker's json-file).
//! The runtime's envelope is taken off: the container's own text becomes the
//! line's message, the runtime's time its event time, and the stream its
//! `log.iostream`. A line the runtime split (CRI `P`, a json-file entry without
//! its newline) is joined with the ones that follow, up to the last part.

use super::timestamp::{self, Layout};
use jiff::tz::TimeZone;
use serde::Deserialize;
use std::borrow::Cow;

/// One entry of a runtime's log.
#[derive(Debug)]
pub(crate) struct ContainerLine<'a> {
    pub(crate) time_unix_nano: i64,
    pub(crate) stream: Cow<'a, str>,
    /// More parts of the same line follow.
    pub(crate) partial: bool,
    pub(crate) text: Cow<'a, str>,
}

/// Reads a CRI line: `2024-05-01T10:00:00.123456789Z stdout F text`.
pub(crate) fn cri(line: &str) -> Result<ContainerLine<'_>, String> {
    let mut parts = line.splitn(4, ' ');
    let (Some(time), Some(stream), Some(tags)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("not a CRI line (`<time> <stream> <P|F> <text>`)".to_owned());
    };
    let text = parts.next().unwrap_or("");
    let partial = match tags.split(':').next() {
        Some("P") => true,
        Some("F") => false,
        _ => return Err(format!("CRI tag `{tags}` is neither `P` nor `F`")),
    };
    if !matches!(stream, "stdout" | "stderr") {
        return Err(format!(
            "CRI stream `{stream}` is neither stdout nor stderr"
        ));
    }
    Ok(ContainerLine {
        time_unix_nano: runtime_time(time)?,
        stream: Cow::Borrowed(stream),
        partial,
        text: Cow::Borrowed(text),
    })
}

/// An entry of Docker's json-file log.
#[derive(Deserialize)]
struct DockerEntry<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow, default)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// Reads a json-file line: `{"log":"text\n","stream":"stdout","time":"..."}`.
pub(crate) fn docker(line: &str) -> Result<ContainerLine<'_>, String> {
    let entry: DockerEntry<'_> = serde_json::from_str(line)
        .map_err(|error| format!("not a Docker json-file line: {error}"))?;
    let (text, partial) = match entry.log {
        Cow::Borrowed(text) => match text.strip_suffix('\n') {
            Some(text) => (Cow::Borrowed(text), false),
            None => (Cow::Borrowed(text), true),
        },
        Cow::Owned(mut text) => {
            let partial = !text.ends_with('\n');
            if !partial {
                text.pop();
            }
            (Cow::Owned(text), partial)
        }
    };
    Ok(ContainerLine {
        time_unix_nano: runtime_time(&entry.time)?,
        stream: entry.stream,
        partial,
        text,
    })
}

fn runtime_time(text: &str) -> Result<i64, String> {
    timestamp::parse(text, &[Layout::Iso8601], &TimeZone::UTC)
}
