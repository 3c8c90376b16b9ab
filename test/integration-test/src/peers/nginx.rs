//! A real nginx on a free loopback port, configured in a temporary directory.

use std::{
    fmt::Write as _,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::tls::Certs;
use crate::util::{self, TempDir};

/// `/small.html`: a static file of [`SMALL_SIZE`] bytes.
pub const SMALL_PATH: &str = "/small.html";
/// Size of `/small.html`.
pub const SMALL_SIZE: i64 = 1234;
/// `/big.bin`: a static file of [`BIG_SIZE`] bytes, served with `sendfile on`.
pub const BIG_PATH: &str = "/big.bin";
/// Size of `/big.bin`: 10 MiB.
pub const BIG_SIZE: i64 = 10 * 1024 * 1024;
/// `= /ok`: `return 200 "ok\n"`.
pub const OK_PATH: &str = "/ok";
/// The body of `/ok`.
pub const OK_BODY: &str = "ok\n";
/// Its size.
pub const OK_LEN: i64 = 3;
/// `= /upload`: accepts POST bodies up to 20 MiB and answers [`UPLOAD_BODY`].
pub const UPLOAD_PATH: &str = "/upload";
/// The body of `/upload`.
pub const UPLOAD_BODY: &str = "stored\n";
/// Its size.
pub const UPLOAD_LEN: i64 = 7;
const _: () = assert!(OK_BODY.len() == 3 && UPLOAD_BODY.len() == 7);
/// `/users/...`: `return 200 "user\n"` (for route patterns).
pub const USERS_PREFIX: &str = "/users/";
/// `= /fail`: `return 500 "fail\n"`.
pub const FAIL_PATH: &str = "/fail";
/// The location proxied to [`NginxOptions::proxy_to`].
pub const PROXY_PATH: &str = "/work";
/// A path that does not exist: nginx answers 404 with its own error page.
pub const MISSING_PATH: &str = "/missing";

/// How to run nginx.
#[derive(Clone, Debug)]
pub struct NginxOptions {
    /// `worker_processes`.
    pub workers: usize,
    /// `listen ... reuseport`: one listening socket per worker, so that connections spread
    /// over the workers instead of mostly waking one.
    pub reuseport: bool,
    /// The port, or `None` for a free one.
    pub port: Option<u16>,
    /// `listen ... http2`: HTTP/2 (with prior knowledge on cleartext, ALPN `h2` over TLS).
    pub http2: bool,
    /// `listen ... ssl` with this certificate and key (nginx's own libssl).
    pub tls: Option<Certs>,
    /// `location =` [`PROXY_PATH`] `{ proxy_pass http://127.0.0.1:PORT; }`: a reverse proxy
    /// to this port (nginx's defaults: HTTP/1.0 upstream, one connection per request, the
    /// request URI and query passed unchanged).
    pub proxy_to: Option<u16>,
}

impl Default for NginxOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            reuseport: false,
            port: None,
            http2: false,
            tls: None,
            proxy_to: None,
        }
    }
}

/// A running nginx (`master_process on`), stopped on drop.
pub struct Nginx {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    scheme: &'static str,
    /// Kept while nginx runs (its certificate files).
    _certs: Option<Certs>,
    master: Child,
    workers: Vec<u32>,
    dir: TempDir,
}

impl Nginx {
    /// nginx with `workers` worker processes on a free port.
    pub fn start(workers: usize) -> Self {
        Self::start_with(NginxOptions {
            workers,
            ..NginxOptions::default()
        })
    }

    /// nginx as `options` says; returns once the port accepts connections and every worker
    /// runs.
    pub fn start_with(options: NginxOptions) -> Self {
        let dir = TempDir::new("nginx");
        let port = options.port.unwrap_or_else(util::free_port);
        dir.write("root/small.html", util::pattern(SMALL_SIZE));
        dir.write("root/big.bin", util::pattern(BIG_SIZE));
        dir.write("tmp/.keep", "");
        let conf = config(&dir, port, &options);
        let conf_path = dir.write("nginx.conf", conf);
        let error_log = dir.path().join("error.log");
        let master = Command::new(util::which("nginx"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting nginx: {e}"));
        let workers = options.workers;
        let mut nginx = Self {
            port,
            scheme: if options.tls.is_some() {
                "https"
            } else {
                "http"
            },
            _certs: options.tls,
            master,
            workers: Vec::new(),
            dir,
        };
        let master_pid = nginx.master.id();
        let up = util::wait_until(Duration::from_secs(10), || {
            util::port_open(port) && util::children(master_pid).len() == workers
        });
        assert!(
            up,
            "nginx did not start on port {port} with {workers} workers within 10 s; error.log:\n{}",
            std::fs::read_to_string(&error_log).unwrap_or_default()
        );
        nginx.workers = util::children(master_pid);
        nginx
    }

    /// `http://127.0.0.1:PORT{path}` (`https://` with TLS).
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    /// The master's pid (it serves no request).
    pub fn master_pid(&self) -> u32 {
        self.master.id()
    }

    /// The worker pids: the processes that serve requests.
    pub fn worker_pids(&self) -> &[u32] {
        &self.workers
    }

    /// The expected `service`: the base name of the workers' executable (`nginx`).
    pub fn service(&self) -> String {
        util::exe_name(self.workers[0])
    }

    /// The temporary directory (config, logs, document root).
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown; workers exit with the master. Any worker still
        // there afterwards is killed so that it cannot serve the next test.
        util::terminate(&mut self.master, libc::SIGTERM);
        for &worker in &self.workers {
            if util::alive(worker) && util::parent_of(worker) == Some(self.master.id()) {
                util::signal(worker, libc::SIGKILL);
            }
        }
    }
}

fn config(dir: &TempDir, port: u16, options: &NginxOptions) -> String {
    let d = dir.path().display();
    let reuseport = if options.reuseport { " reuseport" } else { "" };
    let ssl = if options.tls.is_some() { " ssl" } else { "" };
    let http2 = if options.http2 { " http2" } else { "" };
    let certificates = options.tls.as_ref().map_or_else(String::new, |certs| {
        format!(
            "ssl_certificate {};\n        ssl_certificate_key {};\n",
            certs.cert().display(),
            certs.key().display()
        )
    });
    let proxy = options.proxy_to.map_or_else(String::new, |to| {
        format!("location = {PROXY_PATH} {{ proxy_pass http://127.0.0.1:{to}; }}")
    });
    let mut conf = String::new();
    let _ = write!(
        conf,
        r#"daemon off;
master_process on;
worker_processes {workers};
user root root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    server_tokens off;
    sendfile on;
    keepalive_timeout 60s;
    keepalive_requests 10000;
    default_type application/octet-stream;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port}{reuseport}{ssl}{http2};
        {certificates}root {d}/root;
        location = {ok} {{ return 200 "ok\n"; }}
        location = {upload} {{
            client_body_in_single_buffer on;
            client_max_body_size 20m;
            return 200 "stored\n";
        }}
        location {users} {{ return 200 "user\n"; }}
        location = {fail} {{ return 500 "fail\n"; }}
        {proxy}
    }}
}}
"#,
        workers = options.workers,
        ok = OK_PATH,
        upload = UPLOAD_PATH,
        users = USERS_PREFIX,
        fail = FAIL_PATH,
    );
    conf
}
