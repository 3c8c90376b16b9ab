//! curl as a real HTTP/1 client: several transfers in one invocation (joined with `--next`,
//! so they share one connection when the server keeps it alive), each measured by curl's
//! `-w '%{json}'`.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use serde_json::Value;

use crate::util;

/// Bound on one curl invocation.
const CURL_TIMEOUT: Duration = Duration::from_mins(1);

/// One transfer of a curl invocation.
#[derive(Clone, Debug)]
pub struct Transfer {
    url: String,
    method: &'static str,
    args: Vec<String>,
}

impl Transfer {
    /// `GET url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: "GET",
            args: Vec::new(),
        }
    }

    /// `HEAD url` (`curl -I`).
    pub fn head(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: "HEAD",
            args: vec!["-I".to_owned()],
        }
    }

    /// `POST url` with the exact bytes of `body` (`--data-binary @file`), without the
    /// `Expect: 100-continue` curl adds to large bodies.
    pub fn post(url: impl Into<String>, body: &Path) -> Self {
        Self {
            url: url.into(),
            method: "POST",
            args: vec![
                "--data-binary".to_owned(),
                format!("@{}", body.display()),
                "-H".to_owned(),
                "Expect:".to_owned(),
            ],
        }
    }

    /// `POST url` with `body`, sending `Expect: 100-continue` and waiting for the interim
    /// response before the body.
    pub fn post_expect_continue(url: impl Into<String>, body: &Path) -> Self {
        Self {
            url: url.into(),
            method: "POST",
            args: vec![
                "--data-binary".to_owned(),
                format!("@{}", body.display()),
                "-H".to_owned(),
                "Expect: 100-continue".to_owned(),
                "--expect100-timeout".to_owned(),
                "10".to_owned(),
            ],
        }
    }

    /// A unary gRPC call: `POST url` over HTTP/2 without upgrade (`--http2-prior-knowledge`)
    /// with `content-type: application/grpc`, `te: trailers` and `message` (a file holding
    /// the length-prefixed gRPC message) as the body.
    pub fn grpc(url: impl Into<String>, message: &Path) -> Self {
        Self {
            url: url.into(),
            method: "POST",
            args: vec![
                "--http2-prior-knowledge".to_owned(),
                "--data-binary".to_owned(),
                format!("@{}", message.display()),
                "-H".to_owned(),
                "content-type: application/grpc".to_owned(),
                "-H".to_owned(),
                "te: trailers".to_owned(),
            ],
        }
    }

    /// Adds a request header (`-H 'Name: value'`).
    #[must_use]
    pub fn header(mut self, header: &str) -> Self {
        self.args.push("-H".to_owned());
        self.args.push(header.to_owned());
        self
    }

    /// Accepts any server certificate (`-k`), for the tests' self-signed ones.
    #[must_use]
    pub fn insecure(mut self) -> Self {
        self.args.push("-k".to_owned());
        self
    }

    /// Sends HTTP/1.0 (`--http1.0`).
    #[must_use]
    pub fn http10(mut self) -> Self {
        self.args.push("--http1.0".to_owned());
        self
    }

    /// Adds curl options as given (e.g. `--http2-prior-knowledge`, `--cacert FILE`).
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The request method.
    pub fn method(&self) -> &'static str {
        self.method
    }
}

/// What curl measured for one transfer.
#[derive(Clone, Debug)]
pub struct TransferResult {
    /// The final status code (not a 1xx).
    pub http_code: i64,
    /// Response body bytes received (decoded from chunked, never headers).
    pub size_download: i64,
    /// Request body bytes sent.
    pub size_upload: i64,
    /// From the start of the transfer to its end, in nanoseconds.
    pub time_total_nanos: u64,
    /// New connections this transfer opened (0 when it reused one).
    pub num_connects: i64,
    /// The HTTP version of the final response as curl reports it (`1.1`, `2`).
    pub http_version: String,
}

/// One curl invocation: its pid, its wall-clock window and each transfer's measurements.
#[derive(Clone, Debug)]
pub struct CurlRun {
    /// curl's pid.
    pub pid: u32,
    /// Just before spawning curl (Unix nanoseconds).
    pub start_unix_nano: u64,
    /// Just after curl exited (Unix nanoseconds).
    pub end_unix_nano: u64,
    /// One per transfer, in order.
    pub results: Vec<TransferResult>,
}

impl CurlRun {
    /// New connections over the whole run.
    pub fn connections(&self) -> i64 {
        self.results.iter().map(|r| r.num_connects).sum()
    }
}

/// The curl executable (resolved), and the `service` its spans carry (`curl`).
pub fn curl_binary() -> PathBuf {
    util::which("curl")
}

/// Runs one curl invocation with `transfers` in order, asserting it succeeds (exit 0; a 404 is
/// a success for curl without `--fail`) and measured every transfer.
pub fn curl(transfers: &[Transfer]) -> CurlRun {
    assert!(!transfers.is_empty(), "curl needs at least one transfer");
    let mut cmd = Command::new(curl_binary());
    for (i, t) in transfers.iter().enumerate() {
        if i > 0 {
            cmd.arg("--next");
        }
        cmd.args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
        ])
        .args(["-w", "%{json}\\n"])
        .args(&t.args)
        .arg(&t.url);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start_unix_nano = util::unix_nanos();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting curl: {e}"));
    let pid = child.id();
    // Drained while curl runs: many transfers print more than a pipe holds.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let Some(status) = util::wait_child(&mut child, CURL_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("curl did not finish within {CURL_TIMEOUT:?}: {cmd:?}");
    };
    let end_unix_nano = util::unix_nanos();
    let stdout = stdout.join().expect("curl's stdout reader");
    let stderr = stderr.join().expect("curl's stderr reader");
    assert!(
        status.success(),
        "curl failed ({status}): {}\n{cmd:?}",
        String::from_utf8_lossy(&stderr)
    );
    let stdout = String::from_utf8_lossy(&stdout);
    let results: Vec<TransferResult> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_result)
        .collect();
    assert_eq!(
        results.len(),
        transfers.len(),
        "curl reported {} transfers for {} URLs:\n{stdout}",
        results.len(),
        transfers.len()
    );
    CurlRun {
        pid,
        start_unix_nano,
        end_unix_nano,
        results,
    }
}

fn parse_result(line: &str) -> TransferResult {
    let json: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("curl -w json: {e}: {line}"));
    let int = |key: &str| {
        json[key]
            .as_i64()
            .unwrap_or_else(|| panic!("curl -w json has no integer {key}: {line}"))
    };
    let seconds = json["time_total"]
        .as_f64()
        .unwrap_or_else(|| panic!("curl -w json has no time_total: {line}"));
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a transfer lasts a positive number of seconds far below 2^64 ns"
    )]
    let time_total_nanos = (seconds * 1e9).ceil() as u64;
    TransferResult {
        http_code: int("http_code"),
        size_download: int("size_download"),
        size_upload: int("size_upload"),
        time_total_nanos,
        num_connects: int("num_connects"),
        http_version: json["http_version"].as_str().unwrap_or_default().to_owned(),
    }
}
