//! HTTP/1.1 over blocking sockets for the harness's stand-in servers (the bulk
//! proxy and the Kibana stand-in): a listener whose connections are served on
//! threads, one request read and one response written at a time, keep-alive.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Largest request body accepted; bulk requests of the tests are far smaller.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpRequest {
    /// The method, e.g. `POST`.
    pub(crate) method: String,
    /// The request target: path and query, e.g. `/_bulk?filter_path=items`.
    pub(crate) target: String,
    /// Header names (lowercased) and values in the order received.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpRequest {
    /// The value of header `name` (lowercase), if present.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A response to write: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    /// A JSON response.
    pub(crate) fn json(status: u16, body: impl Into<Vec<u8>>) -> HttpResponse {
        HttpResponse {
            status,
            content_type: "application/json".to_owned(),
            body: body.into(),
        }
    }
}

type Handler = dyn Fn(HttpRequest) -> HttpResponse + Send + Sync;

/// Binds a free port of 127.0.0.1 and answers every request with `handler` until
/// the process ends; returns the port.
pub(crate) fn serve(
    name: &str,
    handler: impl Fn(HttpRequest) -> HttpResponse + Send + Sync + 'static,
) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|error| panic!("cannot bind the {name}: {error}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("cannot read the {name}'s address: {error}"))
        .port();
    let handler: Arc<Handler> = Arc::new(handler);
    thread::Builder::new()
        .name(format!("{name}-{port}"))
        .spawn(move || {
            for connection in listener.incoming().flatten() {
                let handler = Arc::clone(&handler);
                thread::spawn(move || {
                    // A client that hangs up or sends garbage just ends its connection.
                    let _ = serve_connection(connection, &*handler);
                });
            }
        })
        .unwrap_or_else(|error| panic!("cannot start the {name} thread: {error}"));
    port
}

fn serve_connection(connection: TcpStream, handler: &Handler) -> io::Result<()> {
    connection.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut writer = connection.try_clone()?;
    let mut reader = BufReader::new(connection);
    while let Some(request) = read_request(&mut reader)? {
        let response = handler(request);
        write!(
            writer,
            "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n",
            response.status,
            reason_phrase(response.status),
            response.content_type,
            response.body.len()
        )?;
        writer.write_all(&response.body)?;
        writer.flush()?;
    }
    Ok(())
}

/// Reads one request; `None` when the client closed the connection between requests.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<HttpRequest>> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(None);
    }
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("malformed request line {request_line:?}"),
        ));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok())
        .unwrap_or(0);
    if length > MAX_BODY_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("request body of {length} bytes is too large"),
        ));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(HttpRequest {
        method,
        target,
        headers,
        body,
    }))
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        502 => "Bad Gateway",
        _ => "Status",
    }
}
