//! A real OTLP traces receiver (`test/peers/otlp_traces.py`, on `opentelemetry-proto` and
//! `grpcio`): what the agent exports, decoded from protobuf, with resource and status.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError, mpsc},
    thread,
    time::Duration,
};

use serde_json::Value;

use crate::util;

/// One span as the receiver decoded it.
#[derive(Clone, Debug)]
pub struct OtlpSpan {
    /// The decoded record (see the receiver's docstring for the fields).
    pub json: Value,
}

impl OtlpSpan {
    /// A top-level string field (`kind`, `status`, `name`, `trace_id`, ...).
    pub fn field(&self, key: &str) -> &str {
        self.json[key]
            .as_str()
            .unwrap_or_else(|| panic!("`{key}` missing in {}", self.json))
    }

    /// The span attribute `key` as received (typed).
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.json["attributes"].get(key)
    }

    /// The integer span attribute `key` (an OTLP `int_value`); panics otherwise.
    pub fn int_attr(&self, key: &str) -> i64 {
        self.attr(key).and_then(Value::as_i64).unwrap_or_else(|| {
            panic!(
                "attribute `{key}` missing or not int_value in {}",
                self.json
            )
        })
    }

    /// The string span attribute `key`; panics otherwise.
    pub fn str_attr(&self, key: &str) -> &str {
        self.attr(key).and_then(Value::as_str).unwrap_or_else(|| {
            panic!(
                "attribute `{key}` missing or not string_value in {}",
                self.json
            )
        })
    }

    /// The resource attribute `key`, if present.
    pub fn resource(&self, key: &str) -> Option<&Value> {
        self.json["resource"].get(key)
    }
}

/// A running receiver, stopped on drop.
pub struct OtlpReceiver {
    /// OTLP/HTTP port (POST `/v1/traces`).
    pub http_port: u16,
    /// OTLP/gRPC port.
    pub grpc_port: u16,
    child: Child,
    spans: Arc<Mutex<Vec<OtlpSpan>>>,
}

impl OtlpReceiver {
    /// Starts the receiver and waits (bounded) until both ports listen.
    pub fn start() -> Self {
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(util::peers_dir().join("otlp_traces.py"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting otlp_traces.py: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&spans);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let announced = line
                    .split_once(' ')
                    .and_then(|(transport, port)| Some((transport, port.parse::<u16>().ok()?)));
                if let Some((transport, port)) = announced {
                    let _ = tx.send((transport.to_owned(), port));
                    continue;
                }
                if let Ok(json) = serde_json::from_str::<Value>(&line) {
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(OtlpSpan { json });
                }
            }
        });
        let mut http_port = None;
        let mut grpc_port = None;
        while http_port.is_none() || grpc_port.is_none() {
            match rx.recv_timeout(Duration::from_secs(15)) {
                Ok((transport, port)) if transport == "http" => http_port = Some(port),
                Ok((transport, port)) if transport == "grpc" => grpc_port = Some(port),
                Ok(_) => {}
                Err(_) => {
                    util::terminate(&mut child, libc::SIGKILL);
                    panic!("otlp_traces.py printed no ports within 15 s (run `cargo xtask setup`)");
                }
            }
        }
        let (http_port, grpc_port) = (http_port.expect("set"), grpc_port.expect("set"));
        util::wait_for_port(http_port, Duration::from_secs(10), "the OTLP/HTTP receiver");
        util::wait_for_port(grpc_port, Duration::from_secs(10), "the OTLP/gRPC receiver");
        Self {
            http_port,
            grpc_port,
            child,
            spans,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<OtlpSpan> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits (up to `timeout`) until `done` holds for the spans received so far.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[OtlpSpan]) -> bool) -> bool {
        util::wait_until(timeout, || done(&self.spans()))
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        util::terminate(&mut self.child, libc::SIGTERM);
    }
}
