//! `vigil-aggregator setup` against the Elasticsearch-API test server and a Kibana
//! stand-in: what the server lacks (lifecycle policies, data streams) stops setup
//! unless `--skip-unsupported` is given, which names what it skipped; templates are
//! installed and applied to new indices; every saved object of `dashboards/kibana`
//! is posted to Kibana's import API; and a second run changes nothing.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use vigil_tests::deployment::Deployment;
use vigil_tests::elastic::ElasticClient;
use vigil_tests::index_setup::{dashboards_dir, run_setup};
use vigil_tests::kibana::KibanaStandIn;
use vigil_tests::ports::free_tcp_ports;

/// What the server holds of the deployment's templates, by name.
fn installed(client: &ElasticClient, deployment: &Deployment) -> BTreeMap<String, Value> {
    let mut state = BTreeMap::new();
    for index in [
        &deployment.logs_index,
        &deployment.metrics_index,
        &deployment.alerts_index,
    ] {
        for name in [format!("{index}@mappings"), format!("{index}@custom")] {
            let value = client.call(&format!("get {name}"), |http| {
                http.get(client.url(&format!("_component_template/{name}")))
            });
            state.insert(name, value);
        }
        let value = client.call(&format!("get template {index}"), |http| {
            http.get(client.url(&format!("_index_template/{index}")))
        });
        state.insert(index.clone(), value);
    }
    state
}

fn done_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|line| line.starts_with("done: "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"))
}

#[test]
fn setup_installs_templates_and_dashboards_and_a_second_run_changes_nothing() {
    let deployment = Deployment::new("e2e-setup");
    let port = free_tcp_ports(1)[0];
    let config = deployment.aggregator_config("setup", port);
    let kibana = KibanaStandIn::start();
    let kibana_url = kibana.url();

    // The test server has neither lifecycle policies nor data streams.
    let refused = run_setup(&config, &["--kibana-url", &kibana_url]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("lifecycle policies: the server does not support them")
            && stderr.contains("--skip-unsupported"),
        "{stderr}"
    );
    assert!(
        kibana.imports().is_empty(),
        "nothing imported after a failure"
    );

    let args = ["--skip-unsupported", "--kibana-url", kibana_url.as_str()];
    let first = run_setup(&config, &args);
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.contains("lifecycle policies   skipped: not supported by this server")
            && stdout.contains("data streams         skipped: not supported by this server"),
        "{stdout}"
    );
    assert!(
        done_line(&stdout).ends_with("; skipped: lifecycle policies, data streams"),
        "{stdout}"
    );
    for name in [&deployment.logs_index, &deployment.metrics_index] {
        assert!(
            stdout.contains(&format!("index template       {name:<32} created")),
            "{stdout}"
        );
    }
    let client = ElasticClient::shared();
    let before = installed(&client, &deployment);
    let template = &before[&deployment.logs_index]["index_templates"][0]["index_template"];
    assert_eq!(
        template["index_patterns"],
        json!([format!("{}*", deployment.logs_index)])
    );
    assert!(template.get("data_stream").is_none(), "{template}");

    // Every saved object of the dashboards folder, posted as Kibana wants it.
    let mut expected_objects = 0;
    for entry in std::fs::read_dir(dashboards_dir().join("kibana")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        expected_objects += text.lines().filter(|l| !l.trim().is_empty()).count();
    }
    let imports = kibana.imports();
    assert_eq!(imports.len(), 6, "one import per file");
    assert_eq!(
        imports[0].file_name, "data-views.ndjson",
        "data views first"
    );
    for import in &imports {
        assert_eq!(import.target, "/api/saved_objects/_import?overwrite=true");
        assert_eq!(import.header("kbn-xsrf"), Some("true"));
    }
    let objects: Vec<&Value> = imports.iter().flat_map(|i| &i.objects).collect();
    assert_eq!(objects.len(), expected_objects);
    assert!(
        stdout.contains(&format!("{expected_objects} saved objects imported")),
        "{stdout}"
    );
    let data_views: Vec<(&str, &str)> = objects
        .iter()
        .filter(|o| o["type"] == "index-pattern")
        .map(|o| {
            (
                o["id"].as_str().unwrap(),
                o["attributes"]["title"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        data_views,
        [
            (
                deployment.logs_index.as_str(),
                format!("{}*", deployment.logs_index).as_str()
            ),
            (
                deployment.metrics_index.as_str(),
                format!("{}*", deployment.metrics_index).as_str()
            ),
            (
                deployment.alerts_index.as_str(),
                format!("{}*", deployment.alerts_index).as_str()
            ),
        ]
    );

    let second = run_setup(&config, &args);
    let stdout = String::from_utf8_lossy(&second.stdout).into_owned();
    assert!(second.status.success(), "{stdout}");
    assert!(
        done_line(&stdout).starts_with("done: 0 created, 0 updated, 10 unchanged"),
        "{stdout}"
    );
    assert_eq!(installed(&client, &deployment), before, "nothing changed");
    assert_eq!(
        kibana.imports().len(),
        12,
        "saved objects are imported again, in place"
    );

    // New indices get the templates: counters exact, unknown labels not mapped.
    let response = client.bulk(&[
        json!({"create": {"_index": deployment.metrics_index, "_id": "setup-probe"}}),
        json!({"@timestamp": "2026-11-23T06:00:00Z", "metrics": {"if.in.octets": 5}, "labels": {"ifName": "eth0", "not_mapped": "x"}}),
    ]);
    assert_eq!(response["errors"], false, "{response}");
    let mapping = client.call("mapping", |http| {
        http.get(client.url(&format!("{}/_mapping", deployment.metrics_index)))
    });
    let properties = &mapping[&deployment.metrics_index]["mappings"]["properties"];
    assert_eq!(
        properties["metrics"]["properties"]["if.in.octets"]["type"],
        "unsigned_long"
    );
    assert_eq!(
        properties["labels"]["properties"]["ifName"]["type"],
        "keyword"
    );
    assert!(
        properties["labels"]["properties"]
            .get("not_mapped")
            .is_none(),
        "{properties}"
    );
}
