//! The `mop-agent` binary.
use mop_agent::capture::{LoadSettings, loader};
fn main() {
    let s = LoadSettings { capture_bytes: 256, ring_buffer_bytes: 1 << 24, wakeup_bytes: 0, max_connections: 65536, forced_path: None };
    match loader::load(&s) {
        Ok(mut l) => {
            let pid: u32 = std::env::args().nth(1).unwrap().parse().unwrap();
            l.pids.add(pid).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(3));
            let mut n = 0; let mut bytes = 0;
            while let Some(item) = l.ring.next() { n += 1; bytes += item.len(); if n < 6 { println!("{:?}", String::from_utf8_lossy(&item[..])); } }
            println!("events {n} bytes {bytes} submitted {} full {}", l.counters.read(mop_common::Counter::EventsSubmitted), l.counters.read(mop_common::Counter::RingbufFull));
        }
        Err(e) => { eprintln!("error: {e}"); if let mop_agent::capture::CaptureError::Attach{source: aya::programs::ProgramError::LoadError{verifier_log, ..}, ..} = &e { eprintln!("{verifier_log}"); } }
    }
}
