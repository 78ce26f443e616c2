use super::*;

const LIMIT: usize = 1000;

fn field<'a>(entry: &'a Entry, name: &str) -> Option<&'a str> {
    entry
        .fields
        .iter()
        .find(|label| label.name == name)
        .map(|label| label.value.as_str())
}

fn entry_json(extra: &str) -> String {
    format!(
        r#"{{"__CURSOR":"s=739ad463348b4ceca5a9e69c95a3c93f;i=4a9;b=6c0f;m=3e8;t=5f1;x=9c","__REALTIME_TIMESTAMP":"1700000000123456","__MONOTONIC_TIMESTAMP":"1000"{extra}}}"#
    )
}

#[test]
fn an_entry_becomes_a_message_an_event_time_and_named_fields() {
    let line = entry_json(
        r#","MESSAGE":"Started nginx","PRIORITY":"3","_PID":"42","_HOSTNAME":"web-1","_SYSTEMD_UNIT":"nginx.service","SYSLOG_FACILITY":"3","SYSLOG_IDENTIFIER":"nginx","_BOOT_ID":"0f","CODE_FILE":"main.c""#,
    );
    let entry = parse_entry(line.as_bytes(), LIMIT).unwrap();
    assert_eq!(entry.message, b"Started nginx");
    assert_eq!(entry.realtime_unix_nano, 1_700_000_000_123_456_000);
    assert_eq!(entry.cursor.seqnum_id, "739ad463348b4ceca5a9e69c95a3c93f");
    assert_eq!(entry.cursor.seqnum, 0x4a9);
    assert_eq!(entry.unit.as_deref(), Some("nginx.service"));
    for (name, value) in [
        ("log.level", "error"),
        ("log.syslog.severity.code", "3"),
        ("process.pid", "42"),
        ("host.hostname", "web-1"),
        ("systemd.unit", "nginx.service"),
        ("log.syslog.facility.code", "3"),
        ("log.syslog.appname", "nginx"),
        ("host.boot.id", "0f"),
        ("journald.CODE_FILE", "main.c"),
    ] {
        assert_eq!(field(&entry, name), Some(value), "{name}");
    }
    assert!(
        entry
            .fields
            .iter()
            .all(|label| !label.name.contains("TIMESTAMP") && !label.name.contains("CURSOR")),
        "{:?}",
        entry.fields
    );
    assert!(!entry.truncated && !entry.invalid_utf8);
}

#[test]
fn every_priority_has_its_syslog_severity_name() {
    let names: Vec<&str> = (0..8)
        .map(|number| {
            let line = entry_json(&format!(r#","PRIORITY":"{number}""#));
            let entry = parse_entry(line.as_bytes(), LIMIT).unwrap();
            field(&entry, "log.level").unwrap().to_owned()
        })
        .map(|name| &*name.leak())
        .collect();
    assert_eq!(
        names,
        [
            "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug"
        ]
    );
    let odd = parse_entry(entry_json(r#","PRIORITY":"9""#).as_bytes(), LIMIT).unwrap();
    assert_eq!(field(&odd, "log.level"), None);
    assert_eq!(field(&odd, "journald.PRIORITY"), Some("9"));
}

#[test]
fn a_message_printed_as_bytes_is_kept_as_bytes_and_flagged_when_not_utf8() {
    let line = entry_json(r#","MESSAGE":[104,105,255,10,0],"_COMM":[115,104]"#);
    let entry = parse_entry(line.as_bytes(), LIMIT).unwrap();
    assert_eq!(entry.message, [104, 105, 255, 10, 0]);
    assert!(entry.invalid_utf8);
    assert_eq!(field(&entry, "process.name"), Some("sh"));

    let printable = entry_json(r#","MESSAGE":[104,105,10,116,119,111]"#);
    let entry = parse_entry(printable.as_bytes(), LIMIT).unwrap();
    assert_eq!(entry.message, b"hi\ntwo");
    assert!(!entry.invalid_utf8);
}

#[test]
fn a_field_written_several_times_keeps_its_first_value() {
    let line = entry_json(r#","MESSAGE":["first",[115,101,99]],"TAG":[[97],"b"]"#);
    let entry = parse_entry(line.as_bytes(), LIMIT).unwrap();
    assert_eq!(entry.message, b"first");
    assert_eq!(field(&entry, "journald.TAG"), Some("a"));
}

#[test]
fn missing_fields_leave_an_empty_message_and_no_time() {
    let line = r#"{"__CURSOR":"s=ab;i=1;b=c;m=1;t=1;x=1","MESSAGE":null}"#;
    let entry = parse_entry(line.as_bytes(), LIMIT).unwrap();
    assert!(entry.message.is_empty());
    assert_eq!(entry.realtime_unix_nano, 0);
    assert_eq!(entry.unit, None);
    assert!(entry.fields.is_empty());
}

#[test]
fn lines_that_are_no_entry_are_errors_that_say_why() {
    assert!(matches!(
        parse_entry(b"-- No entries --", LIMIT),
        Err(EntryError::NotJson(_))
    ));
    assert_eq!(
        parse_entry(br#"{"MESSAGE":"x"}"#, LIMIT),
        Err(EntryError::NoCursor)
    );
    assert_eq!(
        parse_entry(br#"{"__CURSOR":"garbage"}"#, LIMIT)
            .unwrap_err()
            .to_string(),
        "cursor `garbage` has no sequence number id (`s=`) and number (`i=`)"
    );
}

#[test]
fn hostile_sizes_are_cut_and_flagged() {
    let huge = "x".repeat(10 * MAX_FIELD_BYTES);
    let many: String = (0..2 * MAX_FIELDS)
        .map(|number| format!(r#","F{number}":"v""#))
        .collect();
    let line = entry_json(&format!(
        r#","MESSAGE":"{huge}","AAA":"{huge}","{}":"v"{many}"#,
        "N".repeat(200)
    ));
    let entry = parse_entry(line.as_bytes(), LIMIT).unwrap();
    assert!(entry.truncated);
    assert_eq!(entry.message.len(), LIMIT);
    assert_eq!(
        field(&entry, "journald.AAA").map(str::len),
        Some(MAX_FIELD_BYTES)
    );
    assert_eq!(entry.fields.len(), MAX_FIELDS);
    assert!(entry.fields.iter().all(|label| label.name.len() < 100));
}

#[test]
fn a_message_cut_inside_a_character_is_not_called_invalid() {
    let line = entry_json(&format!(r#","MESSAGE":"{}""#, "é".repeat(LIMIT)));
    let entry = parse_entry(line.as_bytes(), LIMIT + 1).unwrap();
    assert!(entry.truncated);
    assert!(!entry.invalid_utf8);
}
