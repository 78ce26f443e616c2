//! The etcd client every stage and the agent use (etcd's v3 JSON gateway), against
//! a real etcd: reads, writes, guarded transactions, leases, watches, authentication,
//! and what a person sees when the endpoint is not etcd or refuses the request.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use vigil_runtime::SecretRef;
use vigil_runtime::etcd::{EtcdError, EtcdSettings, TxnWrite, WatchEvent};
use vigil_tests::servers::EtcdServer;
use vigil_tests::{TestServers, unique_name};

fn shared_etcd(prefix: &str) -> EtcdSettings {
    EtcdSettings::new(TestServers::get().etcd_endpoint(), prefix)
}

#[tokio::test]
async fn a_guarded_transaction_applies_only_while_the_prefix_is_unchanged() {
    let prefix = format!("/{}/", unique_name("etcd-txn"));
    let client = shared_etcd(&prefix).connect().await.unwrap();
    client.put(&format!("{prefix}a"), "1", None).await.unwrap();
    // A key that only shares the prefix's first bytes stays outside it.
    let outside = format!("{}x", prefix.trim_end_matches('/'));
    client.put(&outside, "outside", None).await.unwrap();

    let (snapshot, revision) = EtcdSettings::read_prefix(&client, &prefix).await.unwrap();
    assert_eq!(
        snapshot.into_iter().collect::<Vec<_>>(),
        vec![("a".to_owned(), "1".to_owned())]
    );

    let writes = [
        TxnWrite::Put {
            key: format!("{prefix}b"),
            value: "2".to_owned(),
        },
        TxnWrite::Delete {
            key: format!("{prefix}a"),
        },
    ];
    assert!(
        client
            .write_if_prefix_unchanged(&prefix, revision, &writes)
            .await
            .unwrap()
    );
    let (snapshot, _) = EtcdSettings::read_prefix(&client, &prefix).await.unwrap();
    assert_eq!(
        snapshot.into_iter().collect::<Vec<_>>(),
        vec![("b".to_owned(), "2".to_owned())]
    );

    // Someone else wrote after the read: the same writes are refused, nothing changes.
    client.put(&format!("{prefix}c"), "3", None).await.unwrap();
    let refused = [TxnWrite::Delete {
        key: format!("{prefix}b"),
    }];
    assert!(
        !client
            .write_if_prefix_unchanged(&prefix, revision, &refused)
            .await
            .unwrap()
    );
    assert_eq!(
        client.get(&format!("{prefix}b")).await.unwrap().as_deref(),
        Some(b"2".as_slice())
    );
    assert_eq!(
        client.get(&outside).await.unwrap().as_deref(),
        Some(b"outside".as_slice())
    );
}

#[tokio::test]
async fn a_watch_sees_puts_and_deletes_after_its_start_revision_and_a_key_goes_with_its_lease() {
    let prefix = format!("/{}/", unique_name("etcd-watch"));
    let client = shared_etcd(&prefix).connect().await.unwrap();
    client
        .put(&format!("{prefix}before"), "old", None)
        .await
        .unwrap();
    let (_, revision) = EtcdSettings::read_prefix(&client, &prefix).await.unwrap();
    let mut watch = client.watch_prefix(&prefix, revision + 1).await.unwrap();

    let lease = client.grant_lease(2).await.unwrap();
    client
        .put(&format!("{prefix}leased"), "v", Some(lease))
        .await
        .unwrap();
    client.delete(&format!("{prefix}before")).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let events = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("etcd sends the events")
            .unwrap()
            .expect("the watch stays open");
        seen.extend(events.into_iter().map(|event| match event {
            WatchEvent::Put(pair) => format!("put {}", String::from_utf8_lossy(&pair.key)),
            WatchEvent::Delete { key } => format!("delete {}", String::from_utf8_lossy(&key)),
        }));
    }
    // The lease of 2 s ends and takes its key: the third event.
    assert_eq!(
        seen,
        vec![
            format!("put {prefix}leased"),
            format!("delete {prefix}before"),
            format!("delete {prefix}leased"),
        ]
    );
}

#[tokio::test]
async fn with_authentication_on_the_user_reaches_its_prefix_and_errors_say_why() {
    let etcd = tokio::task::spawn_blocking(EtcdServer::start)
        .await
        .unwrap();
    etcd.enable_auth("root-secret", "vigil", "vigil-secret", "/vigil/");
    let password_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password_file.path(), "vigil-secret\n").unwrap();
    let mut settings = EtcdSettings::new(etcd.endpoint(), "/vigil");
    settings.username = Some("vigil".to_owned());
    settings.password = Some(SecretRef {
        file: Some(password_file.path().to_owned()),
        env: None,
    });

    let client = settings.connect().await.unwrap();
    client
        .put("/vigil/rules/a.yaml", "groups: []", None)
        .await
        .unwrap();
    let (snapshot, _) = EtcdSettings::read_prefix(&client, "/vigil/rules/")
        .await
        .unwrap();
    assert_eq!(
        snapshot.get("a.yaml").map(String::as_str),
        Some("groups: []")
    );

    let denied = client.put("/other/key", "x", None).await.unwrap_err();
    assert!(
        matches!(&denied, EtcdError::Server { message, .. } if message == "etcdserver: permission denied"),
        "{denied}"
    );

    let anonymous = EtcdSettings::new(etcd.endpoint(), "/vigil")
        .connect()
        .await
        .unwrap();
    let error = anonymous
        .get("/vigil/rules/a.yaml")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("etcdserver: user name is empty"), "{error}");

    std::fs::write(password_file.path(), "wrong\n").unwrap();
    let error = settings.connect().await.unwrap_err().to_string();
    assert!(
        error.contains("etcdserver: authentication failed, invalid user ID or password"),
        "{error}"
    );
}

/// An HTTP server on loopback that answers every request with `status` and `body`.
fn serve_forever(status: &'static str, content_type: &'static str, body: &'static str) -> String {
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0_u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn an_endpoint_that_is_not_etcd_gives_an_error_naming_it_and_the_next_endpoint_is_used() {
    let html = serve_forever("404 Not Found", "text/html", "<h1>no such page</h1>\n");
    let client = EtcdSettings::new(html.clone(), "/vigil")
        .connect()
        .await
        .unwrap();
    let error = client.get("/vigil/x").await.unwrap_err().to_string();
    assert_eq!(
        error,
        format!("etcd {html}: /v3/kv/range answered 404: <h1>no such page</h1>")
    );

    let garbage = serve_forever("200 OK", "application/json", r#"{"kvs":[{"key":"%%%%"}]}"#);
    let client = EtcdSettings::new(garbage.clone(), "/vigil")
        .connect()
        .await
        .unwrap();
    let error = client.get_prefix("/vigil/").await.unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "etcd {garbage}: /v3/kv/range: unexpected answer: key is not base64"
        )),
        "{error}"
    );

    // A closed port first, then the real etcd: requests go on to the second endpoint.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut settings = shared_etcd("/vigil");
    settings.endpoints.insert(0, format!("http://{closed}"));
    let client = settings.connect().await.unwrap();
    let key = format!("/{}/k", unique_name("etcd-failover"));
    client.put(&key, "v", None).await.unwrap();
    assert_eq!(
        client.get(&key).await.unwrap().as_deref(),
        Some(b"v".as_slice())
    );
}
