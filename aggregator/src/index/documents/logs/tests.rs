//! Tests of where the parsed fields of a line land in its document: mapped ECS
//! fields at their place, the rest under `fields`, and the template that maps
//! them agreeing with the list the agent and the index stage share.

use super::*;
use serde_json::json;
use vigil_proto::labels::label;
use vigil_proto::log_fields::ECS_LOG_FIELDS;
use vigil_proto::v1::LogLine;

const INGESTED: &str = "2024-05-01T10:00:02Z";

fn document(fields: Vec<Label>) -> Value {
    let batch = LogBatch {
        resource: Some(Resource {
            id: "web-1".into(),
            host_name: "web-1".into(),
            ..Resource::default()
        }),
        source: Some(LogSource {
            path: "/var/log/nginx/access.log".into(),
            source_id: "1:2".into(),
            dataset: "nginx.access".into(),
            ..LogSource::default()
        }),
        lines: vec![LogLine {
            offset: 10,
            length: 5,
            event_time_unix_nano: 1_714_557_600_000_000_000,
            observed_time_unix_nano: 1_714_557_601_000_000_000,
            message: b"GET /".to_vec(),
            fields,
            ..LogLine::default()
        }],
    };
    let documents = log_documents(&batch, "logs", 0, INGESTED);
    serde_json::from_slice(&documents[0].body).unwrap()
}

#[test]
fn mapped_fields_land_at_their_ecs_place_and_the_rest_under_fields() {
    let document = document(vec![
        label("user.name", "alice"),
        label("source.ip", "10.0.0.9"),
        label("http.response.status_code", "404"),
        label("log.level", "warn"),
        label("event.action", "ssh_login"),
        label("host.hostname", "web-1.example"),
        label("request_id", "r-17"),
        label("log.parse_failure", "json"),
    ]);
    assert_eq!(document["user"], json!({"name": "alice"}));
    assert_eq!(document["source"], json!({"ip": "10.0.0.9"}));
    assert_eq!(document["http"], json!({"response": {"status_code": 404}}));
    // Merged into the objects every log document has, which keep their fields.
    assert_eq!(
        document["log"],
        json!({"file": {"path": "/var/log/nginx/access.log"}, "offset": 10, "level": "warn"})
    );
    assert_eq!(document["event"]["action"], "ssh_login");
    assert_eq!(document["event"]["dataset"], "nginx.access");
    assert_eq!(
        document["host"],
        json!({"name": "web-1", "hostname": "web-1.example"})
    );
    assert_eq!(
        document["fields"],
        json!({"request_id": "r-17", "log.parse_failure": "json"})
    );
}

#[test]
fn a_value_that_does_not_fit_its_type_stays_under_fields() {
    let document = document(vec![
        label("source.ip", "not-an-address"),
        label("http.response.status_code", "OK"),
        label("process.pid", "99999999999999999999"),
        label("user.name", "bob"),
    ]);
    assert_eq!(document["source"], Value::Null);
    assert_eq!(document["http"], Value::Null);
    assert_eq!(document["process"], Value::Null);
    assert_eq!(document["user"]["name"], "bob");
    assert_eq!(
        document["fields"],
        json!({
            "source.ip": "not-an-address",
            "http.response.status_code": "OK",
            "process.pid": "99999999999999999999",
        })
    );
}

#[test]
fn the_last_of_a_repeated_field_wins_wherever_it_lands() {
    let to_fields = document(vec![
        label("source.ip", "10.0.0.1"),
        label("source.ip", "unknown"),
    ]);
    assert_eq!(to_fields["source"], Value::Null);
    assert_eq!(to_fields["fields"], json!({"source.ip": "unknown"}));
    let to_ecs = document(vec![
        label("source.ip", "unknown"),
        label("source.ip", "10.0.0.1"),
    ]);
    assert_eq!(to_ecs["source"], json!({"ip": "10.0.0.1"}));
    assert_eq!(to_ecs["fields"], Value::Null);
}

#[test]
fn a_line_without_mapped_fields_is_written_as_before() {
    let document = document(vec![label("request_id", "r-17")]);
    assert_eq!(document["fields"], json!({"request_id": "r-17"}));
    assert_eq!(document["user"], Value::Null);
}

/// Every field of the list, at its place and of its JSON type, beside the
/// fields every log document has.
#[test]
fn every_mapped_field_has_a_place_of_its_own() {
    let sample = |kind: EcsType| match kind {
        EcsType::Ip => "192.0.2.1",
        EcsType::Long => "42",
        EcsType::Keyword | EcsType::Text => "x",
    };
    let document = document(
        ECS_LOG_FIELDS
            .iter()
            .map(|(name, kind)| label(*name, sample(*kind)))
            .collect(),
    );
    for (name, kind) in ECS_LOG_FIELDS {
        let pointer = format!("/{}", name.replace('.', "/"));
        let expected = match kind {
            EcsType::Long => json!(42),
            other => json!(sample(*other)),
        };
        assert_eq!(document.pointer(&pointer), Some(&expected), "{name}");
    }
    assert_eq!(document["host"]["name"], "web-1");
    assert_eq!(document["log"]["file"]["path"], "/var/log/nginx/access.log");
    assert_eq!(document["log"]["offset"], 10);
    assert_eq!(document["event"]["kind"], "event");
    assert_eq!(document["event"]["ingested"], INGESTED);
    assert_eq!(document["fields"], Value::Null);
}

/// The logs template maps each field of the list with its type, and a value
/// Elasticsearch cannot read as a number or address is ignored rather than
/// refusing the document.
#[test]
fn the_logs_template_maps_every_listed_field_with_its_type() {
    let template: Value = serde_json::from_str(include_str!(
        "../../../../../dashboards/component-templates/vigil-logs@mappings.json"
    ))
    .unwrap();
    let properties = &template["template"]["mappings"]["properties"];
    for (name, kind) in ECS_LOG_FIELDS {
        let pointer = format!("/{}", name.replace('.', "/properties/"));
        let mapping = properties
            .pointer(&pointer)
            .unwrap_or_else(|| panic!("{name} is not mapped"));
        let expected = match kind {
            EcsType::Keyword => json!({"type": "keyword", "ignore_above": 1024}),
            EcsType::Text => json!({"type": "match_only_text"}),
            EcsType::Ip => json!({"type": "ip", "ignore_malformed": true}),
            EcsType::Long => json!({"type": "long", "ignore_malformed": true}),
        };
        assert_eq!(mapping, &expected, "{name}");
    }
}
