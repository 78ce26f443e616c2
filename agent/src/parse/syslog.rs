//! The `syslog` step: RFC 3164 (BSD, as rsyslog writes /var/log/syslog and
//! auth.log, with either the classic or the RFC 3339 stamp) and RFC 5424 lines,
//! read by `syslog_loose`, the parser Vector uses. Gives the event time, the host,
//! the program and its pid, the facility and severity; the rest of the line (the
//! program's message) is what the next steps read.

use super::fields::Fields;
use chrono::{Datelike, FixedOffset, Timelike};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use syslog_loose::{ProcId, Protocol, Variant};

/// What a syslog line holds besides its fields.
#[derive(Debug)]
pub(crate) struct SyslogLine<'a> {
    pub(crate) time_unix_nano: Option<i64>,
    /// The program's own message.
    pub(crate) body: &'a str,
}

/// Reads `text` as a syslog line; `zone` is the time zone of RFC 3164 stamps
/// without one.
pub(crate) fn parse<'a>(
    text: &'a str,
    zone: &TimeZone,
    fields: &mut Fields,
) -> Result<SyslogLine<'a>, String> {
    let now = jiff::ZonedDateTime::now().with_time_zone(zone.clone());
    let (this_year, this_month) = (i32::from(now.year()), now.month() as u32);
    // A stamp without year from a month after this one is from last year (a
    // December line read in January).
    let year = move |(month, ..): syslog_loose::IncompleteDate| {
        if month > this_month {
            this_year - 1
        } else {
            this_year
        }
    };
    let utc = FixedOffset::east_opt(0).ok_or("no UTC offset")?;
    let message =
        syslog_loose::parse_message_with_year_exact_tz(text, year, Some(utc), Variant::Either)?;
    if message.appname.is_none() && message.hostname.is_none() && message.timestamp.is_none() {
        return Err("not a syslog line".to_owned());
    }
    let time_unix_nano = match message.timestamp {
        None => None,
        Some(stamp) if message.protocol == Protocol::RFC3164 && !has_zone(text) => {
            // Read as UTC above; the stamp is a wall-clock time of `zone`.
            let naive = stamp.naive_utc();
            let civil = DateTime::new(
                i16::try_from(naive.year()).map_err(|_| "year out of range")?,
                naive.month() as i8,
                naive.day() as i8,
                naive.hour() as i8,
                naive.minute() as i8,
                naive.second() as i8,
                naive.nanosecond() as i32,
            )
            .map_err(|error| error.to_string())?;
            let timestamp = zone
                .to_ambiguous_timestamp(civil)
                .compatible()
                .map_err(|error| error.to_string())?;
            i64::try_from(timestamp.as_nanosecond()).ok()
        }
        Some(stamp) => stamp.timestamp_nanos_opt(),
    };
    if let Some(host) = message.hostname {
        fields.add_verbatim("host.hostname", host);
    }
    if let Some(program) = message.appname {
        fields.add_verbatim("process.name", program);
    }
    match message.procid {
        Some(ProcId::PID(pid)) => fields.add("process.pid", &pid.to_string()),
        Some(ProcId::Name(name)) => fields.add_verbatim("process.entity_id", name),
        None => {}
    }
    if let Some(facility) = message.facility {
        fields.add_verbatim("log.syslog.facility.name", facility.as_str());
    }
    if let Some(severity) = message.severity {
        fields.add_verbatim("log.syslog.severity.name", severity.as_str());
        fields.add_verbatim("log.level", severity.as_str());
    }
    if let Some(msgid) = message.msgid {
        fields.add_verbatim("event.code", msgid);
    }
    for element in &message.structured_data {
        for (name, value) in element.params() {
            fields.add_verbatim(
                &format!("log.syslog.structured_data.{}.{}", element.id, name),
                &value,
            );
        }
    }
    Ok(SyslogLine {
        time_unix_nano,
        body: message.msg,
    })
}

/// Whether an RFC 3164 line starts with an RFC 3339 stamp (`2024-05-01T...+02:00`),
/// which carries its zone, rather than `May  1 10:00:00`.
fn has_zone(text: &str) -> bool {
    let stamp = text
        .strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .map_or(text, |(_, rest)| rest);
    stamp.as_bytes().first().is_some_and(u8::is_ascii_digit)
}
