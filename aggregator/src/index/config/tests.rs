use super::*;
use crate::config::AggregatorConfig;

fn index_section(elasticsearch: &str) -> Result<IndexSection, String> {
    let text = format!("kafka: {{brokers: 'k:9092'}}\nindex:\n  elasticsearch: {elasticsearch}\n");
    AggregatorConfig::from_yaml("aggregator.yaml", &text)
        .map(|config| config.index.expect("the file has an index section"))
        .map_err(|error| error.to_string())
}

#[test]
fn a_client_certificate_without_its_key_is_refused_naming_the_field() {
    let error =
        index_section("{url: 'https://es:9200', cert_file: /etc/vigil/client.pem}").unwrap_err();
    assert!(
        error.contains("`index.elasticsearch.cert_file` needs `index.elasticsearch.key_file`"),
        "{error}"
    );
    let error =
        index_section("{url: 'https://es:9200', key_file: /etc/vigil/client.key}").unwrap_err();
    assert!(
        error.contains("`index.elasticsearch.key_file` needs `index.elasticsearch.cert_file`"),
        "{error}"
    );
}

#[test]
fn an_unreadable_client_certificate_fails_when_the_client_is_built_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("client.pem");
    let key = dir.path().join("missing.key");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    let section = index_section(&format!(
        "{{url: 'https://es:9200', cert_file: '{}', key_file: '{}'}}",
        cert.display(),
        key.display()
    ))
    .expect("both files are named");
    let error = section.bulk_client().unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "`index.elasticsearch`: client certificate {} with key {} could not be used: {}",
            cert.display(),
            key.display(),
            key.display()
        )),
        "{error}"
    );
}

#[test]
fn a_client_certificate_that_is_not_pem_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("client.pem");
    let key = dir.path().join("client.key");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    std::fs::write(&key, "not a key\n").unwrap();
    let section = index_section(&format!(
        "{{url: 'https://es:9200', cert_file: '{}', key_file: '{}'}}",
        cert.display(),
        key.display()
    ))
    .unwrap();
    let error = section.bulk_client().unwrap_err().to_string();
    assert!(
        error.contains("client certificate") && error.contains("could not be used"),
        "{error}"
    );
}
