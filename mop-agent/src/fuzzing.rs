//! Drivers shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the unit tests that replay
//! what they found (`tests/fixtures/fuzz/<target>/`), so both decode an input the same way.
//! Not part of the API: each driver panics when an invariant of the parser it drives breaks.
//!
//! Everything the agent parses from outside its own code has a driver here: trace context
//! headers from the wire ([`traceparent`]), the configuration file and environment
//! ([`config`]), ring-buffer records and the connection tracker they feed ([`ring_records`]),
//! the kernel's BTF ([`btf`]) and `/proc` files ([`procfs`]).

use std::collections::HashMap;

use mop_common::{EVENT_HEADER_LEN, TAIL_BYTES};
use mop_protocol::http1::Http1Limits;

use crate::{
    capture::{
        btf::Btf,
        conntrack::{ConnTracker, Observed},
        event::RawEvent,
        kernel,
        parser::ParserLimits,
    },
    config::Config,
    discovery::procfs,
    span::context::parse_traceparent,
};

/// The `traceparent` target: any bytes as a header value. A value that parses has non-zero
/// ids, and the canonical version-00 spelling of what was parsed parses back to the same.
pub fn traceparent(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let Some(parent) = parse_traceparent(value) else {
        return;
    };
    assert_ne!(parent.trace_id.0, [0; 16], "{value:?}");
    assert_ne!(parent.span_id.0, [0; 8], "{value:?}");
    let canonical = format!(
        "00-{}-{}-{:02x}",
        parent.trace_id.to_hex(),
        parent.span_id.to_hex(),
        parent.flags
    );
    assert_eq!(parse_traceparent(&canonical), Some(parent), "{value:?}");
}

/// Splits `data` at its first NUL byte into the environment (lines `NAME=VALUE`) and the YAML.
fn env_and_yaml(data: &[u8]) -> Option<(HashMap<String, String>, &str)> {
    let (env, yaml) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&[][..], data),
    };
    let env = std::str::from_utf8(env).ok()?;
    let yaml = std::str::from_utf8(yaml).ok()?;
    let env = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Some((env, yaml))
}

/// The `config` target: a fake environment (lines `NAME=VALUE`), a NUL byte, then YAML. Every
/// error names something; a configuration that validates prints (`config print`) as YAML that
/// loads back, with no environment, to an equal configuration (but for the variables that have
/// no YAML key: where the Kubernetes API server and this node are).
pub fn config(data: &[u8]) {
    let Some((env, yaml)) = env_and_yaml(data) else {
        return;
    };
    let lookup = |name: &str| env.get(name).cloned();
    match Config::from_yaml_str(yaml, &lookup) {
        Err(e) => assert!(!e.to_string().is_empty(), "empty error for {yaml:?}"),
        Ok(config) => {
            let printed = config.to_yaml(true);
            let mut again = Config::from_yaml_str(&printed, &|_| None).unwrap_or_else(|e| {
                panic!("printed config does not load: {e}\ninput:\n{yaml}\nprinted:\n{printed}")
            });
            again.attributes.kubernetes.environment =
                config.attributes.kubernetes.environment.clone();
            assert_eq!(again, config, "input:\n{yaml}\nprinted:\n{printed}");
        }
    }
}

/// Capacity of the tracker in [`ring_records`]: small, so that eviction runs.
const FUZZ_MAX_CONNECTIONS: usize = 4;

/// The `ring_records` target: records as the ring buffer hands them over, each a little-endian
/// `u16` length then that many bytes, decoded and fed in order to one connection tracker.
/// A record that decodes has exactly `captured_len` bytes of head, at most [`TAIL_BYTES`] of tail
/// and a segment as long as the syscall's byte count; the tracker never holds more than its capacity; every connection is gone after its
/// process is forgotten.
pub fn ring_records(data: &[u8]) {
    let mut tracker = ConnTracker::new(
        FUZZ_MAX_CONNECTIONS,
        ParserLimits {
            http1: Http1Limits {
                max_head_bytes: 256,
                max_pending: 4,
            },
            ..ParserLimits::default()
        },
    );
    let mut pids = Vec::new();
    let mut rest = data;
    while let [lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (record, next) = tail.split_at(len);
        rest = next;
        let Ok(ev) = RawEvent::decode(record) else {
            continue;
        };
        assert!(record.len() >= EVENT_HEADER_LEN);
        assert_eq!(ev.head.len(), ev.header.captured_len as usize);
        assert!(ev.tail().len() <= TAIL_BYTES);
        // The segment accounts for every byte the syscall moved (at least what was captured).
        let seg = ev.segment();
        let known = (ev.head.len() + ev.tail().len()) as u64;
        assert_eq!(seg.total_len(), ev.header.total_len.max(known));
        pids.push(ev.header.pid);
        tracker.on_event(&ev, &mut |x| {
            let pid = match x {
                Observed::Start(s) => s.pid,
                Observed::Done(d) => d.pid,
            };
            assert_eq!(pid, ev.header.pid);
        });
        assert!(tracker.len() <= FUZZ_MAX_CONNECTIONS, "{}", tracker.len());
    }
    tracker.expire_idle(0, &mut |_| {});
    for pid in pids {
        tracker.forget_pid(pid);
    }
    assert!(tracker.is_empty());
    let _ = tracker.take_stats();
}

/// The `btf` target: any bytes as the kernel's BTF. Parsing and every offset lookup the agent
/// makes at load time return a result (an error for garbage) in bounded time.
pub fn btf(data: &[u8]) {
    let Ok(btf) = Btf::parse(data) else {
        return;
    };
    let _ = kernel::kernel_offsets(&btf);
    let _ = kernel::syscall_arg_offsets(&btf);
}

/// The `procfs` target: any text as `/proc/PID/stat` and as a `/proc/net/tcp` table. The comm
/// of a parsed stat lies between the first `(` and the last `)`; listeners have non-zero
/// inodes.
pub fn procfs(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(stat) = procfs::parse_stat(&text) {
        let open = text.find('(').expect("a parsed stat has a `(`");
        assert_eq!(&text[open + 1..open + 1 + stat.comm.len()], stat.comm);
    }
    let mut listeners = HashMap::new();
    procfs::parse_listeners(&text, &mut listeners);
    assert!(listeners.keys().all(|&inode| inode != 0));
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn saved(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir: PathBuf = [
            env!("CARGO_MANIFEST_DIR"),
            "tests",
            "fixtures",
            "fuzz",
            target,
        ]
        .iter()
        .collect();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<(PathBuf, Vec<u8>)> = entries
            .map(|e| {
                let path = e.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                (path, data)
            })
            .collect();
        out.sort();
        out
    }

    /// Every input a fuzz target once failed on replays cleanly through its driver.
    #[test]
    fn every_saved_fuzz_input_replays_cleanly() {
        type Driver = fn(&[u8]);
        let drivers: [(&str, Driver); 5] = [
            ("traceparent", traceparent),
            ("config", config),
            ("ring_records", ring_records),
            ("btf", btf),
            ("procfs", procfs),
        ];
        for (target, driver) in drivers {
            for (path, data) in saved(target) {
                eprintln!("replaying {}", path.display());
                driver(&data);
            }
        }
    }

    #[test]
    fn drivers_accept_their_seed_shapes() {
        traceparent(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        config(b"OTEL_EBPF_OPEN_PORT=8080\0trace_printer: json\n");
        procfs(b"1 (a) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0");
        ring_records(&[]);
        btf(&[]);
    }
}
