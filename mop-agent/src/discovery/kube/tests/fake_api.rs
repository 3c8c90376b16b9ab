//! A small in-process Kubernetes API server: Pod list (paged, field-selected) and watch
//! (chunked JSON events from a resource version), metadata-only GETs of owners, `/version`;
//! tests script watch expiry (`410 Gone` as an ERROR event or as the watch's HTTP status) and
//! restarts on the same port. Every response closes its connection.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{JoinHandle, JoinSet},
};

/// A recorded object from `tests/fixtures/kube/`.
pub(crate) fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kube")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// What the server holds; survives restarts.
#[derive(Default)]
pub(crate) struct ApiState {
    /// Pods by uid.
    pods: BTreeMap<String, Value>,
    /// Other objects by API path.
    objects: HashMap<String, Value>,
    rv: u64,
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from an older resource version are answered with an ERROR 410 event.
    compacted: u64,
    /// Bumped to end every open watch with an ERROR 410 event.
    expiries: u64,
    /// Answer watches from compacted resource versions with HTTP 410 (instead of an ERROR
    /// event in a 200 stream).
    gone_as_http: bool,
    /// Bumped to end every open watch cleanly (no error).
    closes: u64,
    /// Watch requests answered with HTTP 410.
    pub(crate) gone_answers: usize,
    /// `METHOD path?query` of every request, with ` [meta]` for metadata-only GETs.
    pub(crate) requests: Vec<String>,
}

struct Shared {
    state: Mutex<ApiState>,
    changed: watch::Sender<u64>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running fake API server.
pub(crate) struct FakeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

fn uid_of(obj: &Value) -> String {
    obj["metadata"]["uid"].as_str().unwrap().to_owned()
}

impl ApiState {
    /// Holds these objects: Pods are listed and watched, the others served by path.
    pub(crate) fn with(objects: impl IntoIterator<Item = Value>) -> Self {
        let mut state = Self {
            rv: 1000,
            ..Self::default()
        };
        for obj in objects {
            state.put(obj);
        }
        state
    }

    fn put(&mut self, mut obj: Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if obj["kind"] == "Pod" {
            self.pods.insert(uid_of(&obj), obj);
        } else {
            let (group, plural) = match obj["kind"].as_str().unwrap() {
                "ReplicaSet" => ("apis/apps/v1", "replicasets"),
                "Deployment" => ("apis/apps/v1", "deployments"),
                "StatefulSet" => ("apis/apps/v1", "statefulsets"),
                "DaemonSet" => ("apis/apps/v1", "daemonsets"),
                "Job" => ("apis/batch/v1", "jobs"),
                "CronJob" => ("apis/batch/v1", "cronjobs"),
                other => panic!("no route for {other}"),
            };
            let m = &obj["metadata"];
            let path = format!(
                "/{group}/namespaces/{}/{plural}/{}",
                m["namespace"].as_str().unwrap(),
                m["name"].as_str().unwrap()
            );
            self.objects.insert(path, obj);
        }
    }

    fn record(&mut self, kind: &'static str, mut obj: Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.history.push((self.rv, kind, obj.clone()));
        if kind == "DELETED" {
            self.pods.remove(&uid_of(&obj));
        } else {
            self.pods.insert(uid_of(&obj), obj);
        }
    }

    /// Adds or replaces a Pod while the server is down (no watch sees it; a re-list does).
    pub(crate) fn apply_offline(&mut self, kind: &'static str, obj: Value) {
        self.record(kind, obj);
    }

    /// Forgets history up to now: watches resuming from before get `410 Gone`.
    pub(crate) fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
    }

    /// List requests for Pods so far.
    pub(crate) fn pod_lists(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("watch=true"))
            .count()
    }
}

impl FakeApi {
    /// Serves `state` on a free port.
    pub(crate) async fn start(state: ApiState) -> Self {
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed,
        });
        Self::serve(TcpListener::bind("127.0.0.1:0").await.unwrap(), shared)
    }

    fn serve(listener: TcpListener, shared: Arc<Shared>) -> Self {
        let addr = listener.local_addr().unwrap();
        let accept_shared = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            // Aborting this task drops the set, which aborts every connection.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    Ok((sock, _)) = listener.accept() => {
                        conns.spawn(connection(sock, Arc::clone(&accept_shared)));
                    }
                    Some(_) = conns.join_next() => {}
                }
            }
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// A client of this server.
    pub(crate) fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr).parse().unwrap();
        kube::Client::try_from(kube::Config::new(url)).unwrap()
    }

    /// The listening port.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Runs `f` on the state.
    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut ApiState) -> T) -> T {
        f(&mut self.shared.state())
    }

    /// Waits until `n` watch requests have arrived.
    pub(crate) async fn wait_for_watches(&self, n: usize) {
        for _ in 0..500 {
            let watches = self.with_state(|s| {
                s.requests
                    .iter()
                    .filter(|r| r.contains("watch=true"))
                    .count()
            });
            if watches >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} watch requests");
    }

    /// A watch event: `ADDED`, `MODIFIED` or `DELETED` of a Pod.
    pub(crate) fn emit(&self, kind: &'static str, obj: Value) {
        let rv = self.with_state(|s| {
            s.record(kind, obj);
            s.rv
        });
        self.shared.changed.send_replace(rv);
    }

    /// Ends every open watch with an ERROR event `410 Gone` and forgets history, as an API
    /// server does when its watch cache moved past the client's resource version.
    pub(crate) fn expire_watches(&self) {
        let epoch = self.with_state(|s| {
            s.compact();
            s.expiries += 1;
            s.expiries
        });
        self.shared.changed.send_replace(u64::MAX - epoch);
    }

    /// Forgets history and ends every open watch cleanly; from now on watches from a
    /// compacted resource version get HTTP `410 Gone` (which kube-rs alone would retry
    /// forever with the same resource version).
    pub(crate) fn close_watches_then_gone(&self) {
        let epoch = self.with_state(|s| {
            s.compact();
            s.gone_as_http = true;
            s.closes += 1;
            s.closes
        });
        self.shared.changed.send_replace(u64::MAX / 2 - epoch);
    }

    /// Stops serving (every connection dropped); the state is kept for [`Self::restart`].
    pub(crate) fn stop(self) -> StoppedApi {
        self.server.abort();
        StoppedApi {
            port: self.addr.port(),
            shared: self.shared,
        }
    }
}

/// A stopped server.
pub(crate) struct StoppedApi {
    port: u16,
    shared: Arc<Shared>,
}

impl StoppedApi {
    /// Runs `f` on the state while down.
    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut ApiState) -> T) -> T {
        f(&mut self.shared.state())
    }

    /// Serves again on the same port.
    pub(crate) async fn restart(self) -> FakeApi {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        FakeApi::serve(listener, self.shared)
    }
}

struct Request {
    path: String,
    query: HashMap<String, String>,
    metadata_only: bool,
}

async fn read_request(sock: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 65536 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?.to_owned();
    let metadata_only = lines.any(|l| {
        l.to_ascii_lowercase().starts_with("accept:") && l.contains("as=PartialObjectMetadata")
    });
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect();
    Some(Request {
        path: path.to_owned(),
        query,
        metadata_only,
    })
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if let Some(Ok(byte)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) => {
                out.push(byte);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether an object passes a field selector (`spec.nodeName=`, `metadata.name=`).
fn selected(obj: &Value, selector: Option<&String>) -> bool {
    selector.is_none_or(|sel| {
        sel.split(',').filter(|t| !t.is_empty()).all(|term| {
            let (field, want) = term.split_once('=').unwrap_or((term, ""));
            let have = match field {
                "spec.nodeName" => &obj["spec"]["nodeName"],
                "metadata.name" => &obj["metadata"]["name"],
                "metadata.namespace" => &obj["metadata"]["namespace"],
                _ => return false,
            };
            have.as_str() == Some(want)
        })
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

async fn respond(sock: &mut TcpStream, code: u16, body: &Value) {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if code == 200 { "OK" } else { "Error" },
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body.as_bytes()).await;
    let _ = sock.shutdown().await;
}

async fn connection(mut sock: TcpStream, shared: Arc<Shared>) {
    let Some(req) = read_request(&mut sock).await else {
        return;
    };
    let mut line = format!("GET {}", req.path);
    let mut keys: Vec<_> = req.query.iter().collect();
    keys.sort();
    for (i, (k, v)) in keys.iter().enumerate() {
        line.push(if i == 0 { '?' } else { '&' });
        let _ = write!(line, "{k}={v}");
    }
    if req.metadata_only {
        line.push_str(" [meta]");
    }
    shared.state().requests.push(line);
    let selector = req.query.get("fieldSelector");
    if req.path == "/version" {
        let info = json!({"major": "1", "minor": "33", "gitVersion": "v1.33.1", "gitCommit": "8adc0f041b8e7ad1d30e29cc59c6ae7a15e19828",
            "gitTreeState": "clean", "buildDate": "2025-05-15T08:19:08Z", "goVersion": "go1.24.2", "compiler": "gc", "platform": "linux/amd64"});
        return respond(&mut sock, 200, &info).await;
    }
    let is_pods = req.path == "/api/v1/pods"
        || (req.path.starts_with("/api/v1/namespaces/") && req.path.ends_with("/pods"));
    if is_pods
        && matches!(
            req.query.get("watch").map(String::as_str),
            Some("true" | "1")
        )
    {
        let from = req
            .query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        return watch_pods(sock, &shared, from, selector.cloned()).await;
    }
    if is_pods {
        let namespace = req
            .path
            .strip_prefix("/api/v1/namespaces/")
            .and_then(|p| p.split('/').next());
        let body = {
            let st = shared.state();
            let all: Vec<&Value> = st
                .pods
                .values()
                .filter(|p| selected(p, selector))
                .filter(|p| namespace.is_none_or(|ns| p["metadata"]["namespace"] == ns))
                .collect();
            let offset: usize = req
                .query
                .get("continue")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let limit: usize = req
                .query
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(usize::MAX);
            let end = offset.saturating_add(limit).min(all.len());
            let mut metadata = json!({"resourceVersion": st.rv.to_string()});
            if end < all.len() {
                metadata["continue"] = json!(end.to_string());
                metadata["remainingItemCount"] = json!(all.len() - end);
            }
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": all[offset.min(end)..end]})
        };
        return respond(&mut sock, 200, &body).await;
    }
    let found = shared.state().objects.get(&req.path).cloned();
    match found {
        Some(obj) if req.metadata_only => {
            let partial = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]});
            respond(&mut sock, 200, &partial).await;
        }
        Some(obj) => respond(&mut sock, 200, &obj).await,
        None => {
            let name = req.path.rsplit('/').next().unwrap_or_default();
            respond(
                &mut sock,
                404,
                &status(404, "NotFound", &format!("\"{name}\" not found")),
            )
            .await;
        }
    }
}

async fn chunk(sock: &mut TcpStream, event: &Value) -> bool {
    let data = format!("{event}\n");
    let framed = format!("{:x}\r\n{data}\r\n", data.len());
    sock.write_all(framed.as_bytes()).await.is_ok()
}

async fn watch_pods(mut sock: TcpStream, shared: &Shared, from: u64, selector: Option<String>) {
    let mut changed = shared.changed.subscribe();
    let (too_old, gone_http, expiries, closes) = {
        let st = shared.state();
        let too_old = from < st.compacted;
        (too_old, too_old && st.gone_as_http, st.expiries, st.closes)
    };
    if gone_http {
        shared.state().gone_answers += 1;
        let body = status(410, "Expired", "too old resource version");
        return respond(&mut sock, 410, &body).await;
    }
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let expired = json!({"type": "ERROR", "object": status(410, "Expired", &format!("too old resource version: {from}"))});
    if too_old {
        chunk(&mut sock, &expired).await;
        let _ = sock.write_all(b"0\r\n\r\n").await;
        return;
    }
    let mut sent = from;
    loop {
        let (events, now_expired, now_closed) = {
            let st = shared.state();
            let events: Vec<Value> = st
                .history
                .iter()
                .filter(|(rv, _, obj)| *rv > sent && selected(obj, selector.as_ref()))
                .map(|(_, kind, obj)| json!({"type": kind, "object": obj}))
                .collect();
            sent = st.history.last().map_or(sent, |(rv, _, _)| (*rv).max(sent));
            (events, st.expiries != expiries, st.closes != closes)
        };
        for event in &events {
            if !chunk(&mut sock, event).await {
                return;
            }
        }
        if now_expired {
            chunk(&mut sock, &expired).await;
        }
        if now_expired || now_closed {
            let _ = sock.write_all(b"0\r\n\r\n").await;
            return;
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}
