//! What is loaded in the kernel: BPF programs as `bpftool` lists them, and which process holds
//! which program through a program or link file descriptor (`/proc/PID/fdinfo`).

use std::{collections::BTreeSet, fs, process::Command};

use serde_json::Value;

use crate::util;

/// The prefix of every program the agent loads (`mop_sys_enter`, ...).
pub const PROGRAM_PREFIX: &str = "mop_";

/// A loaded BPF program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// Kernel program id.
    pub id: u64,
    /// Program name (the kernel keeps the first 15 bytes).
    pub name: String,
}

/// Every loaded program (`bpftool --json prog show`).
pub fn programs() -> Vec<Program> {
    let bpftool = util::which("bpftool");
    let out = Command::new(&bpftool)
        .args(["--json", "prog", "show"])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bpftool.display()));
    assert!(
        out.status.success(),
        "bpftool prog show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool --json prog show: {e}"));
    json.as_array()
        .expect("bpftool prints an array")
        .iter()
        .map(|p| Program {
            id: p["id"].as_u64().expect("program id"),
            name: p["name"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// Loaded programs whose name starts with [`PROGRAM_PREFIX`].
pub fn mop_programs() -> Vec<Program> {
    programs()
        .into_iter()
        .filter(|p| p.name.starts_with(PROGRAM_PREFIX))
        .collect()
}

/// The ids of the programs `pid` holds, directly (a program fd) or through a link fd.
pub fn programs_held_by(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for fd in fds.flatten() {
        let Ok(info) = fs::read_to_string(fd.path()) else {
            continue;
        };
        for line in info.lines() {
            if let Some(Ok(id)) = line.strip_prefix("prog_id:").map(|id| id.trim().parse()) {
                ids.insert(id);
            }
        }
    }
    ids
}

/// The ids of the programs that any live process holds.
pub fn programs_held_by_anyone() -> BTreeSet<u64> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .flat_map(programs_held_by)
        .collect()
}
