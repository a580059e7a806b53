//! An OTLP/HTTP collector stand-in: accepts `POST /v1/traces` (protobuf) and records each
//! export's path, content type and size. Plain threads, so it works without an async runtime
//! (the OpenTelemetry batch exporter runs on its own thread with a blocking client).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
};

/// One export request.
#[derive(Clone, Debug)]
pub struct Export {
    pub path: String,
    pub content_type: String,
    pub bytes: usize,
}

#[derive(Clone)]
pub struct OtlpSink {
    pub port: u16,
    exports: Arc<Mutex<Vec<Export>>>,
}

impl OtlpSink {
    pub fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let exports = Arc::new(Mutex::new(Vec::new()));
        let store = exports.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let store = store.clone();
                std::thread::spawn(move || serve(stream, &store));
            }
        });
        Ok(Self { port, exports })
    }

    /// `http://127.0.0.1:<port>`, the value for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn exports(&self) -> Vec<Export> {
        self.exports.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

fn serve(stream: std::net::TcpStream, store: &Mutex<Vec<Export>>) -> Option<()> {
    let mut writer = stream.try_clone().ok()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).ok()? == 0 {
            return Some(());
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let (mut length, mut content_type) = (0usize, String::new());
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        if let Ok(mut exports) = store.lock() {
            exports.push(Export { path, content_type, bytes: length });
        }
        writer
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
            .ok()?;
    }
}
