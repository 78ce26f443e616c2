//! Cost of the index stage's Elasticsearch client, in documents per second of one
//! core: log documents of about 330 bytes written with `_bulk` to an endpoint that
//! accepts everything at once, so the client is measured and not the server.
//!
//! The endpoint is a tiny HTTP/1.1 server on its own thread: it reads each request,
//! counts its lines and answers the all-created bulk response Elasticsearch would
//! give (`{"errors":false,"items":[{"create":{"status":201}},…]}`, prepared once per
//! item count). The client runs on a current-thread runtime on the benchmarking
//! thread, so that thread's CPU time is the client's: building the NDJSON body,
//! HTTP over loopback, reading the response.
//!
//! Two passes over the same 100,000 lines in batches of 5,000 (the stage's default
//! bulk size): `bulk client` writes documents built beforehand; `documents + bulk
//! client` also decodes the protobuf log batches and builds the documents, as the
//! stage does for every message. `bash bench/index.sh` builds this with the `dist`
//! profile and runs it.

#[path = "support/cpu_time.rs"]
mod cpu_time;

use cpu_time::{ThreadCpuTime, thread_cpu_time};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vigil_aggregator::index::documents::{Document, log_documents};
use vigil_aggregator::index::{BulkClient, BulkClientConfig, ConcurrencySettings};
use vigil_proto::Payload;
use vigil_proto::v1::{LogBatch, LogLine, LogSource, Resource, ResourceKind};

/// Lines of one bulk request, the stage's default `max_documents`.
const BATCH: usize = 5_000;
/// Bulk requests per pass.
const BATCHES: usize = 20;
const HOSTS: usize = 50;
const START_UNIX_NANO: i64 = 1_795_413_605_000_000_000;
const INGESTED: &str = "2026-11-23T06:00:06.250Z";

/// An endpoint answering every bulk request with all documents created.
fn start_accepting_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("loopback listener");
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    url
}

/// Answers requests on one keep-alive connection until the client closes it.
fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().expect("stream clone");
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut responses: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut body = Vec::new();
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let items = memchr_count(&body) / 2;
        let response = responses.entry(items).or_insert_with(|| {
            let mut json = String::from(r#"{"errors":false,"items":["#);
            for item in 0..items {
                if item > 0 {
                    json.push(',');
                }
                json.push_str(r#"{"create":{"status":201}}"#);
            }
            json.push_str("]}");
            let mut response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                json.len()
            )
            .into_bytes();
            response.extend_from_slice(json.as_bytes());
            response
        });
        if writer.write_all(response).is_err() {
            return;
        }
    }
}

fn memchr_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&byte| byte == b'\n').count()
}

/// The log batches of the corpus, encoded: short access-log lines of 50 web hosts,
/// so that the documents are close to 300 bytes (the fields of a log document take
/// about 300 bytes around its message; these are about 330 in all).
fn corpus() -> Vec<Vec<u8>> {
    let paths = ["/api/orders", "/api/users/42", "/app.js", "/health"];
    (0..BATCHES)
        .map(|batch| {
            let host = format!("web-{:02}", batch % HOSTS);
            let mut offset = (batch * BATCH * 100) as u64;
            let lines = (0..BATCH)
                .map(|n| {
                    let text = format!("GET {} 200 {}ms", paths[n % paths.len()], n % 97);
                    let time = START_UNIX_NANO + (batch * BATCH + n) as i64 * 1_000_000;
                    let line = LogLine {
                        offset,
                        event_time_unix_nano: time,
                        observed_time_unix_nano: time + 250_000_000,
                        length: text.len() as u64 + 1,
                        message: text.into_bytes(),
                        ..LogLine::default()
                    };
                    offset += line.length;
                    line
                })
                .collect();
            LogBatch {
                resource: Some(Resource {
                    id: host.clone(),
                    kind: ResourceKind::Host.into(),
                    host_name: host,
                    attributes: Vec::new(),
                }),
                source: Some(LogSource {
                    path: "/var/log/app.log".into(),
                    source_id: "2049:131".into(),
                    dataset: "nginx".into(),
                    ..LogSource::default()
                }),
                lines,
            }
            .to_payload()
        })
        .collect()
}

fn documents_of(payload: &[u8]) -> Vec<Document> {
    let batch = LogBatch::from_payload(payload).expect("corpus batches decode");
    log_documents(&batch, "vigil-logs", 0, INGESTED)
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = start_accepting_endpoint();
    let client = runtime.block_on(async {
        BulkClient::new(BulkClientConfig {
            concurrency: ConcurrencySettings {
                initial: 1,
                max: 1,
                latency_factor: 1000.0,
            },
            ..BulkClientConfig::new(url)
        })
        .expect("client")
    });
    let corpus = corpus();
    let documents: Vec<Vec<Document>> = corpus.iter().map(|p| documents_of(p)).collect();
    let total: usize = documents.iter().map(Vec::len).sum();
    let bytes: usize = documents.iter().flatten().map(|d| d.body.len()).sum();
    eprintln!(
        "corpus: {total} log documents in {BATCHES} bulk requests, {:.0} bytes per document on average",
        bytes as f64 / total as f64
    );
    let shutdown = CancellationToken::new();
    let write_all = |documents: &[Vec<Document>]| {
        runtime.block_on(async {
            for batch in documents {
                let report = client.write(batch, &shutdown).await.expect("write");
                assert_eq!(report.retries, 0);
            }
        });
    };
    // Connections and buffers warmed up outside the measurement.
    write_all(&documents);

    let mut group = c.benchmark_group("index");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(total as u64));
    group.sample_size(20);
    group.bench_function("bulk client", |b| b.iter(|| write_all(&documents)));
    group.bench_function("documents + bulk client", |b| {
        b.iter(|| {
            let built: Vec<Vec<Document>> = corpus.iter().map(|p| documents_of(p)).collect();
            write_all(&built);
        })
    });
    group.finish();

    // One plain figure per pass, for the report: CPU time of this thread over
    // several passes.
    const PASSES: u32 = 10;
    for (name, with_documents) in [("bulk client", false), ("documents + bulk client", true)] {
        let started = thread_cpu_time();
        for _ in 0..PASSES {
            if with_documents {
                let built: Vec<Vec<Document>> = corpus.iter().map(|p| documents_of(p)).collect();
                write_all(&built);
            } else {
                write_all(&documents);
            }
        }
        let cpu = thread_cpu_time() - started;
        let per_second = f64::from(PASSES) * total as f64 / cpu.as_secs_f64();
        println!(
            "summary: {name}: {per_second:.0} documents/s per core ({:.0} ns of CPU per document, {:.2}x the target of 100,000)",
            cpu.as_nanos() as f64 / (f64::from(PASSES) * total as f64),
            per_second / 100_000.0
        );
    }
}

fn config() -> Criterion<ThreadCpuTime> {
    Criterion::default()
        .with_measurement(ThreadCpuTime)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
