//! `coverage`: a protocol x runtime matrix, each cell a real program served or called five
//! times, and what mop made of it: spans seen, and whether their method, status, path (or gRPC
//! method) are right. Cells mop does not support are shown as not seen, with the reason.

use std::{
    any::Any,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use integration_test::{
    peers::python::{FILE_PATH, PythonServer},
    span::Span,
    util::{self, TempDir},
};
use serde_json::{Value, json};

use super::{
    Ctx,
    peers::{self, Peer},
    report::{Report, table},
    runner::{AgentSpec, MopAgent},
};
use crate::cmd;

/// Requests (or calls) per cell.
const N: usize = 5;

const PROTOCOLS: [&str; 4] = [
    "HTTP/1.1",
    "HTTP/2 (h2c)",
    "gRPC",
    "TLS (HTTP/1.1 over TLS)",
];

/// What a cell found.
#[derive(Clone, Debug)]
struct Cell {
    runtime: &'static str,
    protocol: &'static str,
    /// How the cell was run (server and client programs).
    how: String,
    /// `seen`, `partial`, `not seen`, `n/a`, `not run`.
    verdict: &'static str,
    spans: usize,
    /// Attribute problems of the spans seen.
    problems: Vec<String>,
    /// Why it is not seen / not applicable / not run (known limits).
    note: String,
    example: Option<Value>,
}

impl Cell {
    fn symbol(&self) -> String {
        match self.verdict {
            "seen" => format!("seen {}/{N}", self.spans),
            "partial" => format!("partial {}/{N}", self.spans),
            "wrong" => format!("seen {}/{N}, attributes wrong", self.spans),
            "not seen" => format!("**not seen** 0/{N}"),
            v => v.to_owned(),
        }
    }
}

/// Known limits of this build: shown with a cell that is not seen.
fn known_limit(runtime: &str, protocol: &str) -> &'static str {
    match (runtime, protocol) {
        ("Go", p) if p.starts_with("TLS") => {
            "Go's crypto/tls is not OpenSSL: mop takes TLS plaintext from libssl uprobes only, and the socket carries ciphertext"
        }
        ("Node", p) if p.starts_with("TLS") => {
            "the agent attaches its TLS probes to the OpenSSL inside /usr/bin/node (its log says so), yet no span: Node's TLSWrap drives OpenSSL through memory BIOs, so the SSL object has no socket to tie the plaintext to (likely cause; OBI has Node-specific probes for this)"
        }
        ("curl (client)", p) if p.starts_with("TLS") => {
            "curl is short-lived: libssl probes are attached per process once discovery instruments it, and a curl that lives for milliseconds has finished by then (likely cause; the long-lived Python client over TLS is seen)"
        }
        ("Go", "HTTP/2 (h2c)") => {
            "Go's standard library serves HTTP/2 only over TLS (crypto/tls, see the TLS cell); h2c needs golang.org/x/net"
        }
        _ => "",
    }
}

/// Self-signed certificate and key for the TLS cells.
struct Tls {
    _dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    fn new() -> anyhow::Result<Self> {
        let dir = TempDir::new("cov-tls");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        cmd::output(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=localhost", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        )?;
        Ok(Self {
            _dir: dir,
            cert,
            key,
        })
    }
}

/// nginx with a custom `listen` (h2c or TLS) serving `/cov`.
struct CustomNginx {
    master: std::process::Child,
    port: u16,
    workers: Vec<u32>,
    _dir: TempDir,
}

impl CustomNginx {
    fn start(listen_extra: &str, server_extra: &str) -> anyhow::Result<Self> {
        let dir = TempDir::new("cov-nginx");
        let port = util::free_port();
        let d = dir.path().display();
        dir.write("tmp/.keep", "");
        let conf = format!(
            "daemon off; master_process on; worker_processes 1; user root root; pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn; events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/tmp/b; proxy_temp_path {d}/tmp/p;\n\
             fastcgi_temp_path {d}/tmp/f; uwsgi_temp_path {d}/tmp/u; scgi_temp_path {d}/tmp/s;\n\
             server {{ listen 127.0.0.1:{port}{listen_extra}; {server_extra}\n\
             location = /cov {{ default_type text/plain; return 200 \"covered\\n\"; }} }} }}\n"
        );
        let conf_path = dir.write("nginx.conf", conf);
        let master = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let pid = master.id();
        if !util::wait_until(Duration::from_secs(10), || {
            util::port_open(port) && util::children(pid).len() == 1
        }) {
            bail!(
                "nginx did not start: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
        }
        Ok(Self {
            workers: util::children(pid),
            master,
            port,
            _dir: dir,
        })
    }
}

impl Drop for CustomNginx {
    fn drop(&mut self) {
        util::terminate(&mut self.master, libc::SIGTERM);
    }
}

/// A running server: what keeps it alive, its port and the pids that serve.
type Server = (Box<dyn Any>, u16, Vec<u32>);

fn peer(p: Peer) -> Server {
    let (port, pid) = (p.port, p.pid());
    (Box::new(p), port, vec![pid])
}

/// Runs a client command to completion; returns its pid.
fn client(mut cmd: Command) -> anyhow::Result<u32> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(pid)
}

/// curl making [`N`] requests: one invocation (one keep-alive connection), except with
/// `--http2-prior-knowledge`, where curl 7.88 fails every transfer after the first on a reused
/// connection ("Error in the HTTP2 framing layer", with or without mop): one invocation each.
fn curl(args: &[&str], url: &str) -> Vec<Command> {
    let per_call = args.contains(&"--http2-prior-knowledge");
    let make = |urls: usize| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--fail", "--noproxy", "*", "-o", "/dev/null"])
            .args(args);
        for _ in 0..urls {
            c.arg(url);
        }
        c
    };
    if per_call {
        (0..N).map(|_| make(1)).collect()
    } else {
        vec![make(N)]
    }
}

/// Runs client commands one after the other; returns their pids.
fn clients(cmds: Vec<Command>) -> anyhow::Result<Vec<u32>> {
    cmds.into_iter().map(client).collect()
}

fn grpc_calls(port: u16) -> Command {
    let mut c = Command::new("python3");
    c.arg(peers::script("grpc_peer.py"))
        .args(["calls", &port.to_string(), &N.to_string()]);
    c
}

fn node(mode: &str, tls: &Tls) -> anyhow::Result<Server> {
    let mut c = Command::new("node");
    c.arg(peers::script("node/server.js")).args([mode, "0"]);
    if mode == "tls" {
        c.arg(&tls.cert).arg(&tls.key);
    }
    Ok(peer(Peer::spawn(c)?))
}

fn go_server(bin: &Path, mode: &str, tls: &Tls) -> anyhow::Result<Server> {
    let mut c = Command::new(bin);
    c.args([mode, "0"]);
    if mode == "tls" {
        c.arg(&tls.cert).arg(&tls.key);
    }
    Ok(peer(Peer::spawn(c)?))
}

/// Installs `@grpc/grpc-js` for the Node gRPC cell (npm registry; once).
fn node_grpc() -> anyhow::Result<()> {
    let dir = peers::script("node");
    if dir.join("node_modules/@grpc/grpc-js").is_dir() {
        return Ok(());
    }
    cmd::output(Command::new("npm").current_dir(&dir).args([
        "install",
        "--no-audit",
        "--no-fund",
        "--silent",
    ]))
    .map(drop)
}

/// Builds the Go server (standard library only) into the target directory.
fn go_build() -> anyhow::Result<PathBuf> {
    let root = cmd::workspace_root();
    let out = cmd::target_dir(&root)?.join("experiments/go-cov-server");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    cmd::output(
        Command::new("go")
            .current_dir(peers::script("go"))
            .env("GO111MODULE", "off")
            .args(["build", "-o"])
            .arg(&out)
            .arg("main.go"),
    )?;
    Ok(out)
}

/// Checks the spans of one cell: kind, method or gRPC method, status, path.
fn problems(spans: &[Span], grpc: bool, kind: &str, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in spans {
        let mut p = Vec::new();
        if s.kind != kind {
            p.push(format!("kind {}", s.kind));
        }
        if grpc {
            if !s.name.contains("mop.bench.Echo/Say") {
                p.push(format!("name {:?}", s.name));
            }
            if s.attr("rpc.system").and_then(Value::as_str) != Some("grpc") {
                p.push("rpc.system missing".into());
            }
        } else {
            if s.attr("http.request.method").and_then(Value::as_str) != Some("GET") {
                p.push(format!("method {:?}", s.attr("http.request.method")));
            }
            if s.attr("http.response.status_code").and_then(Value::as_i64) != Some(200) {
                p.push(format!("status {:?}", s.attr("http.response.status_code")));
            }
            let path_ok = if kind == "server" {
                s.attr("url.path").and_then(Value::as_str) == Some(path)
            } else {
                s.attr("url.full")
                    .and_then(Value::as_str)
                    .is_some_and(|u| u.ends_with(path))
            };
            if !path_ok {
                p.push(format!(
                    "path {:?}",
                    s.attr(if kind == "server" {
                        "url.path"
                    } else {
                        "url.full"
                    })
                ));
            }
        }
        if !p.is_empty() {
            out.push(p.join(", "));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// [`server_cell_at`] for cells whose client requests `/cov`.
fn server_cell(
    runtime: &'static str,
    protocol: &'static str,
    how: &str,
    start: impl FnOnce() -> anyhow::Result<Server>,
    call: impl FnOnce(u16) -> anyhow::Result<Vec<u32>>,
) -> Cell {
    server_cell_at("/cov", runtime, protocol, how, start, call)
}

/// Runs one server cell: the agent selects the server's port, the client calls `path` on it.
fn server_cell_at(
    path: &str,
    runtime: &'static str,
    protocol: &'static str,
    how: &str,
    start: impl FnOnce() -> anyhow::Result<Server>,
    call: impl FnOnce(u16) -> anyhow::Result<Vec<u32>>,
) -> Cell {
    let grpc = protocol == "gRPC";
    let result = (|| -> anyhow::Result<(Vec<Span>, Vec<String>)> {
        let (_guard, port, pids) = start()?;
        let agent = MopAgent::start(&AgentSpec::port(port).printing());
        call(port)?;
        let wanted = |s: &Span| pids.contains(&s.pid) && s.kind == "server";
        util::wait_until(Duration::from_secs(3), || {
            agent.spans().iter().filter(|s| wanted(s)).count() >= N
        });
        let spans: Vec<Span> = agent
            .stop()
            .into_iter()
            .filter(|s| pids.contains(&s.pid))
            .collect();
        let problems = problems(&spans, grpc, "server", path);
        Ok((spans, problems))
    })();
    finish(runtime, protocol, how, result)
}

/// Runs one client cell: the agent selects the client's executable, the server is not
/// instrumented.
fn client_cell(
    runtime: &'static str,
    protocol: &'static str,
    how: &str,
    exe_glob: &str,
    start: impl FnOnce() -> anyhow::Result<Server>,
    call: impl FnOnce(u16) -> anyhow::Result<Vec<u32>>,
) -> Cell {
    let grpc = protocol == "gRPC";
    let result = (|| -> anyhow::Result<(Vec<Span>, Vec<String>)> {
        let (_guard, port, _pids) = start()?;
        let agent = MopAgent::start(
            &AgentSpec {
                select: vec![format!("exe_path: \"{exe_glob}\"")],
                ..AgentSpec::default()
            }
            .printing(),
        );
        let pids = call(port)?;
        util::wait_until(Duration::from_secs(3), || {
            agent
                .spans()
                .iter()
                .filter(|s| pids.contains(&s.pid))
                .count()
                >= N
        });
        let spans: Vec<Span> = agent
            .stop()
            .into_iter()
            .filter(|s| pids.contains(&s.pid) && s.kind == "client")
            .collect();
        let problems = problems(&spans, grpc, "client", "/cov");
        Ok((spans, problems))
    })();
    finish(runtime, protocol, how, result)
}

fn finish(
    runtime: &'static str,
    protocol: &'static str,
    how: &str,
    result: anyhow::Result<(Vec<Span>, Vec<String>)>,
) -> Cell {
    let mut cell = Cell {
        runtime,
        protocol,
        how: how.to_owned(),
        verdict: "not run",
        spans: 0,
        problems: Vec::new(),
        note: String::new(),
        example: None,
    };
    match result {
        Err(e) => cell.note = format!("could not run: {e:#}"),
        Ok((spans, problems)) => {
            cell.spans = spans.len();
            cell.example = spans.first().map(|s| s.json.clone());
            cell.verdict = if spans.is_empty() {
                "not seen"
            } else if !problems.is_empty() {
                "wrong"
            } else if spans.len() < N {
                "partial"
            } else {
                "seen"
            };
            cell.problems = problems;
            if cell.verdict != "seen" {
                known_limit(runtime, protocol).clone_into(&mut cell.note);
                if cell.note.is_empty() {
                    cell.note = "cause not diagnosed by this experiment".into();
                }
            }
        }
    }
    eprintln!(
        "coverage: {runtime} / {protocol}: {} {}",
        cell.symbol(),
        cell.note
    );
    cell
}

fn na(runtime: &'static str, protocol: &'static str, why: &str) -> Cell {
    Cell {
        runtime,
        protocol,
        how: String::new(),
        verdict: "n/a",
        spans: 0,
        problems: Vec::new(),
        note: why.to_owned(),
        example: None,
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "the matrix, one cell after the other"
)]
pub(crate) fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let tls = Tls::new()?;
    let go_bin = go_build();
    let node_grpc_ready = node_grpc();
    let mut cells = Vec::new();

    // nginx.
    cells.push(server_cell(
        "nginx",
        PROTOCOLS[0],
        "nginx 1 worker; curl",
        || {
            let n = CustomNginx::start("", "")?;
            let (port, pids) = (n.port, n.workers.clone());
            Ok((Box::new(n), port, pids))
        },
        |port| clients(curl(&[], &format!("http://127.0.0.1:{port}/cov"))),
    ));
    cells.push(server_cell(
        "nginx",
        PROTOCOLS[1],
        "nginx `listen ... http2` (h2c); curl --http2-prior-knowledge",
        || {
            let n = CustomNginx::start(" http2", "")?;
            let (port, pids) = (n.port, n.workers.clone());
            Ok((Box::new(n), port, pids))
        },
        |port| {
            clients(curl(
                &["--http2-prior-knowledge"],
                &format!("http://127.0.0.1:{port}/cov"),
            ))
        },
    ));
    cells.push(na(
        "nginx",
        PROTOCOLS[2],
        "nginx serves no gRPC itself (it proxies it)",
    ));
    let (cert, key) = (
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    cells.push(server_cell(
        "nginx",
        PROTOCOLS[3],
        "nginx `listen ... ssl` (OpenSSL); curl -k",
        || {
            let n = CustomNginx::start(
                " ssl",
                &format!("ssl_certificate {cert}; ssl_certificate_key {key};"),
            )?;
            let (port, pids) = (n.port, n.workers.clone());
            Ok((Box::new(n), port, pids))
        },
        |port| {
            clients(curl(
                &["-k", "--http1.1"],
                &format!("https://127.0.0.1:{port}/cov"),
            ))
        },
    ));

    // Python.
    cells.push(server_cell_at(
        FILE_PATH,
        "Python",
        PROTOCOLS[0],
        "python3 -m http.server (HTTP/1.0); curl",
        || {
            let p = PythonServer::http_server();
            let (port, pid) = (p.port, p.pid());
            Ok((Box::new(p), port, vec![pid]))
        },
        |port| clients(curl(&[], &format!("http://127.0.0.1:{port}{FILE_PATH}"))),
    ));
    cells.push(server_cell(
        "Python",
        PROTOCOLS[1],
        "hypercorn ASGI (h2c prior knowledge); curl --http2-prior-knowledge",
        || {
            Ok(peer(Peer::python(
                "cov_servers.py",
                &["h2c", &util::free_port().to_string()],
            )?))
        },
        |port| {
            clients(curl(
                &["--http2-prior-knowledge"],
                &format!("http://127.0.0.1:{port}/cov"),
            ))
        },
    ));
    cells.push(server_cell(
        "Python",
        PROTOCOLS[2],
        "grpcio server (grpc_peer.py); grpcio client",
        || Ok(peer(Peer::python("grpc_peer.py", &["server", "0"])?)),
        |port| Ok(vec![client(grpc_calls(port))?]),
    ));
    cells.push(server_cell(
        "Python",
        PROTOCOLS[3],
        "http.server behind ssl (libssl via _ssl); curl -k",
        || {
            Ok(peer(Peer::python(
                "cov_servers.py",
                &["tls", "0", &cert, &key],
            )?))
        },
        |port| clients(curl(&["-k"], &format!("https://127.0.0.1:{port}/cov"))),
    ));

    // Node.
    cells.push(server_cell(
        "Node",
        PROTOCOLS[0],
        "node http; curl",
        || node("h1", &tls),
        |port| clients(curl(&[], &format!("http://127.0.0.1:{port}/cov"))),
    ));
    cells.push(server_cell(
        "Node",
        PROTOCOLS[1],
        "node http2.createServer (h2c); curl --http2-prior-knowledge",
        || node("h2c", &tls),
        |port| {
            clients(curl(
                &["--http2-prior-knowledge"],
                &format!("http://127.0.0.1:{port}/cov"),
            ))
        },
    ));
    match &node_grpc_ready {
        Ok(()) => cells.push(server_cell(
            "Node",
            PROTOCOLS[2],
            "@grpc/grpc-js server; grpcio client",
            || node("grpc", &tls),
            |port| Ok(vec![client(grpc_calls(port))?]),
        )),
        Err(e) => cells.push(Cell {
            note: format!("could not install @grpc/grpc-js: {e:#}"),
            ..na("Node", PROTOCOLS[2], "")
        }),
    }
    if let Some(c) = cells.last_mut().filter(|c| c.verdict == "n/a") {
        c.verdict = "not run";
    }
    cells.push(server_cell(
        "Node",
        PROTOCOLS[3],
        "node https (Node's OpenSSL); curl -k",
        || node("tls", &tls),
        |port| clients(curl(&["-k"], &format!("https://127.0.0.1:{port}/cov"))),
    ));

    // Go.
    match &go_bin {
        Ok(bin) => {
            cells.push(server_cell(
                "Go",
                PROTOCOLS[0],
                "net/http; curl",
                || go_server(bin, "h1", &tls),
                |port| clients(curl(&[], &format!("http://127.0.0.1:{port}/cov"))),
            ));
            cells.push(Cell {
                note: known_limit("Go", PROTOCOLS[1]).to_owned(),
                ..na("Go", PROTOCOLS[1], "")
            });
            cells.push(Cell {
                note: "not run: google.golang.org/grpc is not vendored in this repository".into(),
                verdict: "not run",
                ..na("Go", PROTOCOLS[2], "")
            });
            cells.push(server_cell(
                "Go",
                PROTOCOLS[3],
                "net/http ServeTLS (crypto/tls); curl -k --http1.1",
                || go_server(bin, "tls", &tls),
                |port| {
                    clients(curl(
                        &["-k", "--http1.1"],
                        &format!("https://127.0.0.1:{port}/cov"),
                    ))
                },
            ));
        }
        Err(e) => {
            for p in PROTOCOLS {
                cells.push(Cell {
                    verdict: "not run",
                    note: format!("go build failed: {e:#}"),
                    ..na("Go", p, "")
                });
            }
        }
    }

    // Clients.
    cells.push(client_cell(
        "curl (client)",
        PROTOCOLS[0],
        "curl -> nginx",
        "*/curl",
        || {
            let n = CustomNginx::start("", "")?;
            let port = n.port;
            Ok((Box::new(n), port, vec![]))
        },
        |port| clients(curl(&[], &format!("http://127.0.0.1:{port}/cov"))),
    ));
    cells.push(client_cell(
        "curl (client)",
        PROTOCOLS[1],
        "curl --http2-prior-knowledge -> nginx h2c",
        "*/curl",
        || {
            let n = CustomNginx::start(" http2", "")?;
            let port = n.port;
            Ok((Box::new(n), port, vec![]))
        },
        |port| {
            clients(curl(
                &["--http2-prior-knowledge"],
                &format!("http://127.0.0.1:{port}/cov"),
            ))
        },
    ));
    cells.push(na(
        "curl (client)",
        PROTOCOLS[2],
        "curl does not speak gRPC",
    ));
    cells.push(client_cell(
        "curl (client)",
        PROTOCOLS[3],
        "curl -k (libssl) -> nginx ssl",
        "*/curl",
        || {
            let n = CustomNginx::start(
                " ssl",
                &format!("ssl_certificate {cert}; ssl_certificate_key {key};"),
            )?;
            let port = n.port;
            Ok((Box::new(n), port, vec![]))
        },
        |port| {
            clients(curl(
                &["-k", "--http1.1"],
                &format!("https://127.0.0.1:{port}/cov"),
            ))
        },
    ));
    cells.push(client_cell(
        "Python (client)",
        PROTOCOLS[0],
        "urllib -> nginx",
        "*/python3*",
        || {
            let n = CustomNginx::start("", "")?;
            let port = n.port;
            Ok((Box::new(n), port, vec![]))
        },
        |port| {
            let mut c = Command::new("python3");
            c.arg(peers::script("cov_servers.py")).args([
                "get",
                &format!("http://127.0.0.1:{port}/cov"),
                &N.to_string(),
            ]);
            Ok(vec![client(c)?])
        },
    ));
    cells.push(na(
        "Python (client)",
        PROTOCOLS[1],
        "urllib speaks HTTP/1.1 only",
    ));
    cells.push(client_cell(
        "Python (client)",
        PROTOCOLS[2],
        "grpcio client -> Node @grpc/grpc-js server",
        "*/python3*",
        || node("grpc", &tls),
        |port| Ok(vec![client(grpc_calls(port))?]),
    ));
    cells.push(client_cell(
        "Python (client)",
        PROTOCOLS[3],
        "urllib over ssl -> nginx ssl",
        "*/python3*",
        || {
            let n = CustomNginx::start(
                " ssl",
                &format!("ssl_certificate {cert}; ssl_certificate_key {key};"),
            )?;
            let port = n.port;
            Ok((Box::new(n), port, vec![]))
        },
        |port| {
            let mut c = Command::new("python3");
            c.arg(peers::script("cov_servers.py")).args([
                "get",
                &format!("https://127.0.0.1:{port}/cov"),
                &N.to_string(),
                "--tls",
            ]);
            Ok(vec![client(c)?])
        },
    ));
    write_report(ctx, &cells)
}

fn write_report(ctx: &Ctx, cells: &[Cell]) -> anyhow::Result<()> {
    let mut report = Report::new(
        ctx,
        "coverage",
        "Coverage: what mop sees, protocol x runtime",
    )?;
    let mut runtimes: Vec<&str> = Vec::new();
    for c in cells {
        if !runtimes.contains(&c.runtime) {
            runtimes.push(c.runtime);
        }
    }
    let rows: Vec<Vec<String>> = runtimes
        .iter()
        .map(|r| {
            let mut row = vec![(*r).to_owned()];
            for p in PROTOCOLS {
                row.push(
                    cells
                        .iter()
                        .find(|c| c.runtime == *r && c.protocol == p)
                        .map_or("-".into(), Cell::symbol),
                );
            }
            row
        })
        .collect();
    let mut header = vec!["runtime (role)"];
    header.extend(PROTOCOLS);
    let mut summary = format!(
        "Each cell: a real program served (or, for clients, made) {N} requests or calls; \
         **seen k/{N}** = spans with the right method, status and path (or gRPC method).\n\n"
    );
    summary.push_str(&table(&header, &rows));
    let seen = cells.iter().filter(|c| c.verdict == "seen").count();
    let applicable = cells.iter().filter(|c| c.verdict != "n/a").count();
    let _ = writeln!(
        summary,
        "\n{seen} of {applicable} applicable cells seen in full.\n"
    );
    summary.push_str("\nWhy a cell is not seen, not applicable or not run:\n\n");
    for c in cells.iter().filter(|c| c.verdict != "seen") {
        let mut why = c.note.clone();
        if !c.problems.is_empty() {
            let _ = write!(why, " problems: {}", c.problems.join("; "));
        }
        let _ = writeln!(
            summary,
            "- {} / {}: {} — {}",
            c.runtime,
            c.protocol,
            c.symbol(),
            why.trim()
        );
    }
    report.summary(&summary);
    let detail_rows: Vec<Vec<String>> = cells
        .iter()
        .map(|c| {
            vec![
                c.runtime.to_owned(),
                c.protocol.to_owned(),
                c.how.clone(),
                c.verdict.to_owned(),
                c.spans.to_string(),
                c.problems.join("; "),
                c.note.clone(),
            ]
        })
        .collect();
    let h = [
        "runtime", "protocol", "how", "verdict", "spans", "problems", "note",
    ];
    report.csv("cells.csv", &h, &detail_rows)?;
    report.body(&format!(
        "\n## Cells in detail\n\n{}",
        table(&h, &detail_rows)
    ));
    report.data(
        "cells",
        Value::Array(
            cells
                .iter()
                .map(|c| {
                    json!({"runtime": c.runtime, "protocol": c.protocol, "how": c.how,
                       "verdict": c.verdict, "spans": c.spans, "problems": c.problems,
                       "note": c.note, "example_span": c.example})
                })
                .collect(),
        ),
    );
    report.data("protocols", json!(PROTOCOLS));
    let method = format!(
        "- One cell at a time: start the server, start the agent (`trace_printer: json`) \
         selecting the server's port (server cells) or the client's executable by \
         `exe_path` (client cells: curl, python3), make {N} requests or gRPC calls, wait up to \
         3 s for the spans, stop the agent and keep the spans of the program's pids.\n\
         - A span counts when its kind is right and its method is GET, status 200 and path the \
         one requested (HTTP), or its name is `mop.bench.Echo/Say` with `rpc.system` grpc \
         (gRPC).\n\
         - TLS cells use a self-signed certificate made with openssl for the run. The Go server \
         is built from `experiments/peers/go/main.go` (standard library only); Node's gRPC \
         server uses `@grpc/grpc-js`, installed by npm into `experiments/peers/node` on first \
         run.\n\
         - Programs: nginx {}, {}, node {}, {}, {}.\n",
        ctx.env["nginx"].as_str().unwrap_or(""),
        ctx.env["python"].as_str().unwrap_or(""),
        ctx.env["node"].as_str().unwrap_or(""),
        ctx.env["go"].as_str().unwrap_or(""),
        ctx.env["curl"].as_str().unwrap_or(""),
    );
    report.finish(&method)?;
    Ok(())
}
