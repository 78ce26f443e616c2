//! A webhook receiver that records what Vigil's alert notifier posts.
//!
//! A tiny HTTP/1.1 server on a free loopback port: it answers every request with the
//! configured status (200 unless told otherwise) and keeps each request's body and
//! the status it got, so a test can assert on the alerts that were sent, and on
//! retries after a failure.
//!
//! It also stands in for a receiver in an outage: a real PagerDuty, Slack or
//! webhook server cannot be made to answer 500 or 429 with a `Retry-After` on
//! demand, so [`WebhookReceiver::respond_with`] and
//! [`WebhookReceiver::respond_with_retry_after`] switch it into failing and back.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// Largest request body the receiver accepts; alerts are far smaller.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One request the receiver got.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedRequest {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The request target, e.g. `/hooks/alerts?x=1`.
    pub path: String,
    /// Header names (lowercased) and values in the order received.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON, or as a JSON string if it is not JSON.
    pub body: Value,
    /// When the whole request had been read.
    pub received_at: SystemTime,
    /// The status it was answered with.
    pub status: u16,
}

/// An HTTP server on 127.0.0.1 recording every request; it stops with the process.
#[derive(Debug, Clone)]
pub struct WebhookReceiver {
    /// The port it listens on.
    port: u16,
    /// What the receiver has recorded and how it answers, shared with its threads.
    state: Arc<ReceiverState>,
}

#[derive(Debug)]
struct ReceiverState {
    requests: Mutex<Vec<ReceivedRequest>>,
    answer: Mutex<Answer>,
}

/// How the receiver answers for now.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    /// The value of a `Retry-After` header, if one is sent.
    retry_after: Option<String>,
}

impl WebhookReceiver {
    /// Starts a receiver on a free port of 127.0.0.1, answering 200.
    pub fn start() -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|error| panic!("cannot bind the webhook receiver: {error}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("cannot read the webhook receiver's address: {error}"))
            .port();
        let state = Arc::new(ReceiverState {
            requests: Mutex::new(Vec::new()),
            answer: Mutex::new(Answer {
                status: 200,
                retry_after: None,
            }),
        });
        let accepting_state = Arc::clone(&state);
        thread::Builder::new()
            .name(format!("webhook-{port}"))
            .spawn(move || {
                for connection in listener.incoming().flatten() {
                    let state = Arc::clone(&accepting_state);
                    thread::spawn(move || {
                        // A client that hangs up or sends garbage just ends its connection.
                        let _ = serve_connection(connection, &state);
                    });
                }
            })
            .unwrap_or_else(|error| panic!("cannot start the webhook receiver thread: {error}"));
        WebhookReceiver { port, state }
    }

    /// The URL to configure as webhook, `http://127.0.0.1:<port>/webhook`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhook", self.port)
    }

    /// The bodies of all requests received so far, oldest first.
    pub fn bodies(&self) -> Vec<Value> {
        self.lock_requests()
            .iter()
            .map(|request| request.body.clone())
            .collect()
    }

    /// The bodies of the requests answered with a 2xx status, oldest first.
    pub fn accepted_bodies(&self) -> Vec<Value> {
        self.lock_requests()
            .iter()
            .filter(|request| (200..300).contains(&request.status))
            .map(|request| request.body.clone())
            .collect()
    }

    /// All requests received so far, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.lock_requests().clone()
    }

    /// Answers every later request with `status`, e.g. 500 for an outage and
    /// 200 again when it ends.
    pub fn respond_with(&self, status: u16) {
        *lock(&self.state.answer) = Answer {
            status,
            retry_after: None,
        };
    }

    /// Answers every later request with `status` and a `Retry-After` header of
    /// `retry_after`: delay-seconds such as `1`, or an HTTP date.
    pub fn respond_with_retry_after(&self, status: u16, retry_after: &str) {
        *lock(&self.state.answer) = Answer {
            status,
            retry_after: Some(retry_after.to_owned()),
        };
    }

    fn lock_requests(&self) -> MutexGuard<'_, Vec<ReceivedRequest>> {
        lock(&self.state.requests)
    }
}

/// The data behind `mutex`, also after a panicking test thread held it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves requests on one keep-alive connection until the client closes it.
fn serve_connection(connection: TcpStream, state: &ReceiverState) -> io::Result<()> {
    connection.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = connection.try_clone()?;
    let mut reader = BufReader::new(connection);
    while let Some(mut request) = read_request(&mut reader)? {
        let Answer {
            status,
            retry_after,
        } = lock(&state.answer).clone();
        request.status = status;
        lock(&state.requests).push(request);
        let retry_after = retry_after
            .map(|value| format!("retry-after: {value}\r\n"))
            .unwrap_or_default();
        write!(
            writer,
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\n{retry_after}content-length: 2\r\n\r\n{{}}",
            reason_phrase(status)
        )?;
        writer.flush()?;
    }
    Ok(())
}

/// Reads one request; `None` when the client closed the connection between requests.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<ReceivedRequest>> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(None);
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();

    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("connection closed inside the headers"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid("header line without a colon"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }

    let header = |name: &str| {
        headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        read_chunked_body(reader)?
    } else {
        let length: usize = header("content-length")
            .map(|value| value.parse().map_err(|_| invalid("bad content-length")))
            .transpose()?
            .unwrap_or(0);
        if length > MAX_BODY_BYTES {
            return Err(invalid("body too large"));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };

    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok(Some(ReceivedRequest {
        method,
        path,
        headers,
        body,
        received_at: SystemTime::now(),
        status: 0,
    }))
}

fn read_chunked_body(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_hex = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("bad chunk size"))?;
        if body.len() + size > MAX_BODY_BYTES {
            return Err(invalid("body too large"));
        }
        if size == 0 {
            // Trailer lines up to the empty line that ends the body.
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer)? == 0 || trailer.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut chunk_end = [0; 2];
        reader.read_exact(&mut chunk_end)?;
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::with_client;
    use serde_json::json;

    #[test]
    fn records_posted_json_and_answers_the_configured_status() {
        let receiver = WebhookReceiver::start();
        let post = |body: &Value| {
            with_client(|http| {
                http.post(receiver.url())
                    .json(body)
                    .send()
                    .expect("post to the webhook receiver")
                    .status()
                    .as_u16()
            })
        };
        assert_eq!(post(&json!({"alert": "first"})), 200);
        receiver.respond_with(503);
        assert_eq!(post(&json!({"alert": "second"})), 503);
        assert_eq!(
            receiver.bodies(),
            vec![json!({"alert": "first"}), json!({"alert": "second"})]
        );
        assert_eq!(receiver.accepted_bodies(), vec![json!({"alert": "first"})]);
        let requests = receiver.requests();
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].path, "/webhook");
        assert_eq!([requests[0].status, requests[1].status], [200, 503]);
    }

    #[test]
    fn fails_with_a_retry_after_until_told_to_recover() {
        let receiver = WebhookReceiver::start();
        let post = || {
            with_client(|http| {
                let response = http
                    .post(receiver.url())
                    .json(&json!({}))
                    .send()
                    .expect("post to the webhook receiver");
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|value| value.to_str().unwrap().to_owned());
                (response.status().as_u16(), retry_after)
            })
        };
        receiver.respond_with_retry_after(429, "1");
        assert_eq!(post(), (429, Some("1".to_owned())));
        receiver.respond_with(200);
        assert_eq!(post(), (200, None));
    }

    #[test]
    fn reads_chunked_bodies() {
        let request = b"POST /webhook HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n\
                        4\r\n{\"a\"\r\n4\r\n: 1}\r\n0\r\n\r\n";
        let parsed = read_request(&mut &request[..]).unwrap().unwrap();
        assert_eq!(parsed.body, json!({"a": 1}));
    }
}
