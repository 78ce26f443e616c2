//! Warnings about secrets a configuration would send unencrypted: a Kafka SASL
//! login without TLS, an etcd password to an `http://` endpoint, Elasticsearch
//! or Kibana credentials to an `http://` URL. Every daemon logs them when it
//! starts and `--check-config` prints them; they never stop a start, since a
//! loopback or an encrypted network may make plaintext acceptable.

use crate::etcd::EtcdSettings;
use crate::kafka::KafkaSettings;

/// Why the Kafka login of `settings` can be read on the wire, if it can.
pub fn kafka(settings: &KafkaSettings) -> Option<String> {
    let sasl = settings.sasl.as_ref()?;
    if settings.tls.is_some() {
        return None;
    }
    let exposed = if sasl.mechanism.eq_ignore_ascii_case("PLAIN") {
        "the password travels in plaintext"
    } else {
        "the login exchange and every message travel unencrypted"
    };
    Some(format!(
        "`kafka.sasl` ({}) without `kafka.tls`: {exposed}",
        sasl.mechanism
    ))
}

/// One warning per `http://` endpoint the etcd password of `settings` goes to.
pub fn etcd(settings: &EtcdSettings) -> Vec<String> {
    if settings.password.is_none() {
        return Vec::new();
    }
    settings
        .endpoints
        .iter()
        .filter(|endpoint| !is_https(endpoint))
        .map(|endpoint| {
            format!(
                "`etcd.password` is sent to `{endpoint}` without TLS; use an `https://` endpoint"
            )
        })
        .collect()
}

/// A warning when `field` holds credentials for `url` and `url` is not
/// `https://`; `field` names the section, such as `index.elasticsearch`.
pub fn http_credentials(field: &str, url: &str, has_credentials: bool) -> Option<String> {
    (has_credentials && !is_https(url)).then(|| {
        format!("`{field}` sends its credentials to `{url}` without TLS; use an `https://` URL")
    })
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretRef;
    use crate::kafka::{SaslSettings, TlsSettings};

    fn secret() -> SecretRef {
        SecretRef {
            file: Some("/run/credentials/vigil/password".into()),
            env: None,
        }
    }

    #[test]
    fn a_sasl_login_without_tls_is_warned_about() {
        let mut settings = KafkaSettings::for_brokers("kafka:9092");
        settings.sasl = Some(SaslSettings {
            mechanism: "PLAIN".into(),
            username: "vigil".into(),
            password: secret(),
        });
        assert_eq!(
            kafka(&settings).unwrap(),
            "`kafka.sasl` (PLAIN) without `kafka.tls`: the password travels in plaintext"
        );
        settings.sasl.as_mut().unwrap().mechanism = "SCRAM-SHA-512".into();
        assert!(
            kafka(&settings)
                .unwrap()
                .contains("every message travel unencrypted")
        );
        settings.tls = Some(TlsSettings {
            ca_file: None,
            cert_file: None,
            key_file: None,
        });
        assert_eq!(kafka(&settings), None);
        settings.sasl = None;
        settings.tls = None;
        assert_eq!(kafka(&settings), None);
    }

    #[test]
    fn an_etcd_password_to_an_http_endpoint_is_warned_about() {
        let mut settings = EtcdSettings::new("http://10.0.0.1:2379", "/vigil");
        settings.endpoints.push("HTTPS://10.0.0.2:2379".into());
        assert!(etcd(&settings).is_empty(), "no password, nothing to read");
        settings.username = Some("vigil".into());
        settings.password = Some(secret());
        assert_eq!(
            etcd(&settings),
            [
                "`etcd.password` is sent to `http://10.0.0.1:2379` without TLS; use an `https://` endpoint"
            ]
        );
    }

    #[test]
    fn http_credentials_are_warned_about_only_without_tls() {
        assert_eq!(
            http_credentials("index.elasticsearch", "http://es:9200", true).unwrap(),
            "`index.elasticsearch` sends its credentials to `http://es:9200` without TLS; use an `https://` URL"
        );
        assert_eq!(
            http_credentials("index.elasticsearch", "https://es:9200", true),
            None
        );
        assert_eq!(
            http_credentials("index.elasticsearch", "http://es:9200", false),
            None
        );
    }
}
