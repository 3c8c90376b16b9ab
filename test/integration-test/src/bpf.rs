//! What is loaded in the kernel: BPF programs, maps and links as `bpftool` lists them, which
//! process holds which of them through a file descriptor (`/proc/PID/fdinfo`), what is pinned,
//! and the records of a ring buffer (`RingPeek`).

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
    bpftool(&["prog", "show"])
        .as_array()
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
    held_by(pid).programs
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

/// The BPF objects one process holds file descriptors of, by kind (from `/proc/PID/fdinfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Program ids (program fds, and the program behind each link fd).
    pub programs: BTreeSet<u64>,
    /// Map ids.
    pub maps: BTreeSet<u64>,
    /// Link ids.
    pub links: BTreeSet<u64>,
}

impl Held {
    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty() && self.maps.is_empty() && self.links.is_empty()
    }
}

/// What `pid` holds: every `prog_id`, `map_id` and `link_id` line of its fdinfo files.
pub fn held_by(pid: u32) -> Held {
    let mut held = Held::default();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return held;
    };
    for fd in fds.flatten() {
        let Ok(info) = fs::read_to_string(fd.path()) else {
            continue;
        };
        for line in info.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let Ok(id) = value.trim().parse() else {
                continue;
            };
            match key {
                "prog_id" => held.programs.insert(id),
                "map_id" => held.maps.insert(id),
                "link_id" => held.links.insert(id),
                _ => false,
            };
        }
    }
    held
}

/// Runs `bpftool --json ARGS` and returns its JSON output.
fn bpftool(args: &[&str]) -> Value {
    let bpftool = util::which("bpftool");
    let out = Command::new(&bpftool)
        .arg("--json")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bpftool.display()));
    assert!(
        out.status.success(),
        "bpftool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}"))
}

/// The ids of a `bpftool --json <kind> show` listing (`prog`, `map`, `link`).
pub fn loaded_ids(kind: &str) -> BTreeSet<u64> {
    bpftool(&[kind, "show"])
        .as_array()
        .expect("bpftool prints an array")
        .iter()
        .filter_map(|o| o["id"].as_u64())
        .collect()
}

/// A loaded map, as `bpftool map show` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Map {
    /// Kernel map id.
    pub id: u64,
    /// Map name (the kernel keeps the first 15 bytes).
    pub name: String,
    /// `max_entries` (bytes for a ring buffer).
    pub max_entries: u64,
}

/// The maps with these ids that are still loaded.
pub fn maps(ids: &BTreeSet<u64>) -> Vec<Map> {
    bpftool(&["map", "show"])
        .as_array()
        .expect("bpftool prints an array")
        .iter()
        .filter_map(|m| {
            let id = m["id"].as_u64()?;
            ids.contains(&id).then(|| Map {
                id,
                name: m["name"].as_str().unwrap_or_default().to_owned(),
                max_entries: m["max_entries"].as_u64().unwrap_or_default(),
            })
        })
        .collect()
}

/// The map named `name` among `ids` (e.g. the maps a running agent holds).
pub fn map_named(ids: &BTreeSet<u64>, name: &str) -> Map {
    let all = maps(ids);
    all.iter()
        .find(|m| m.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no map named {name} among {all:?}"))
}

/// The entries a hash map holds now, counted with the `bpf(2)` syscall from this process: a
/// `bpftool` run would be an `exec` that an agent watching execs captures until it decides,
/// adding entries of its own to the maps being counted.
pub fn map_len(id: u64) -> usize {
    // The commands and `union bpf_attr` layouts of <linux/bpf.h>.
    const MAP_GET_NEXT_KEY: libc::c_long = 4;
    const MAP_GET_FD_BY_ID: libc::c_long = 14;
    const OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// Far above any map's entries: the walk ends even if the map changes under it.
    const MAX_KEYS: usize = 1 << 22;
    let bpf = |cmd: libc::c_long, attr: &mut [u64; 16]| -> libc::c_long {
        // SAFETY: `attr` is a zeroed `union bpf_attr` of 128 bytes set up for `cmd`; every
        // pointer in it points into buffers that outlive the call.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128_u32) }
    };
    let mut attr = [0_u64; 16];
    attr[0] = id;
    let fd = bpf(MAP_GET_FD_BY_ID, &mut attr);
    assert!(
        fd >= 0,
        "no map with id {id}: {}",
        std::io::Error::last_os_error()
    );
    let fd = u32::try_from(fd).expect("a file descriptor");
    // `struct bpf_map_info`: type, id, key_size, ...
    let mut info = [0_u32; 20];
    let mut attr = [0_u64; 16];
    attr[0] = u64::from(fd) | (u64::try_from(std::mem::size_of_val(&info)).expect("size") << 32);
    attr[1] = info.as_mut_ptr() as u64;
    assert_eq!(bpf(OBJ_GET_INFO_BY_FD, &mut attr), 0, "map {id} info");
    let key_size = info[2] as usize;
    let (mut key, mut next) = (vec![0_u8; key_size], vec![0_u8; key_size]);
    let mut count = 0;
    while count < MAX_KEYS {
        let mut attr = [0_u64; 16];
        attr[0] = u64::from(fd);
        attr[1] = if count == 0 { 0 } else { key.as_ptr() as u64 };
        attr[2] = next.as_mut_ptr() as u64;
        if bpf(MAP_GET_NEXT_KEY, &mut attr) != 0 {
            break;
        }
        count += 1;
        std::mem::swap(&mut key, &mut next);
    }
    // SAFETY: `fd` is this function's own descriptor.
    unsafe { libc::close(fd.cast_signed()) };
    count
}

/// Files under the BPF filesystem (`/sys/fs/bpf`), where pinned objects would live.
pub fn pinned() -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(std::path::Path::new("/sys/fs/bpf"), &mut out);
    out
}

/// `BPF_MAP_GET_FD_BY_ID`.
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
/// Ring buffer record header bits: still being written, discarded.
const RINGBUF_BUSY: u32 = 1 << 31;
const RINGBUF_DISCARD: u32 = 1 << 30;
/// Bytes of the header in front of each ring buffer record.
const RINGBUF_HEADER: u64 = 8;

/// A read-only view of a BPF ring buffer, opened by map id (needs root), beside the process
/// that consumes it: every record the kernel wrote since the ring was created, while it has not
/// wrapped around (the kernel never clears consumed records).
pub struct RingPeek {
    fd: std::os::fd::OwnedFd,
    /// The producer page followed by the data pages (mapped twice by the kernel).
    base: *mut libc::c_void,
    mapped: usize,
    page: usize,
    size: u64,
}

impl RingPeek {
    /// Maps the ring buffer `map` (its `max_entries` is the data size).
    pub fn open(map: &Map) -> Self {
        use std::os::fd::FromRawFd as _;
        let mut attr = [0u32; 3];
        attr[0] = u32::try_from(map.id).expect("map ids are 32-bit");
        // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes of the attribute we pass.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_FD_BY_ID,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        assert!(
            fd >= 0,
            "BPF_MAP_GET_FD_BY_ID {}: {}",
            map.id,
            std::io::Error::last_os_error()
        );
        // SAFETY: the kernel just returned this descriptor to us.
        let fd = unsafe {
            std::os::fd::OwnedFd::from_raw_fd(i32::try_from(fd).expect("an fd is an int"))
        };
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page");
        let size = map.max_entries;
        let mapped = page + 2 * usize::try_from(size).expect("ring size fits");
        // SAFETY: a fresh shared read-only mapping of the kernel's producer and data pages at
        // offset `page` of the map fd, as libbpf maps them.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::off_t::try_from(page).expect("page fits"),
            )
        };
        assert_ne!(
            base,
            libc::MAP_FAILED,
            "mmap of ring buffer {}: {}",
            map.id,
            std::io::Error::last_os_error()
        );
        Self {
            fd,
            base,
            mapped,
            page,
            size,
        }
    }

    /// Bytes the kernel has reserved so far (headers and padding included).
    pub fn producer_pos(&self) -> u64 {
        // SAFETY: the producer position is the first u64 of the mapped producer page.
        unsafe { std::ptr::read_volatile(self.base.cast::<u64>()) }
    }

    /// Every committed record from the start of the ring; panics if the ring wrapped (the
    /// oldest records were overwritten).
    pub fn records(&self) -> Vec<Vec<u8>> {
        let end = self.producer_pos();
        assert!(
            end <= self.size,
            "the ring buffer wrapped ({end} bytes written into {}): use a bigger one",
            self.size
        );
        // SAFETY: the data pages follow the producer page; `size` bytes are mapped (twice).
        let data = unsafe {
            std::slice::from_raw_parts(
                self.base.cast::<u8>().add(self.page),
                usize::try_from(2 * self.size).expect("fits"),
            )
        };
        let mut out = Vec::new();
        let mut pos = 0u64;
        while pos + RINGBUF_HEADER <= end {
            let at = usize::try_from(pos).expect("fits");
            let header = u32::from_ne_bytes(data[at..at + 4].try_into().expect("4 bytes"));
            if header & RINGBUF_BUSY != 0 {
                break;
            }
            let len = u64::from(header & !(RINGBUF_BUSY | RINGBUF_DISCARD));
            if header & RINGBUF_DISCARD == 0 {
                let start = at + 8;
                out.push(data[start..start + usize::try_from(len).expect("fits")].to_vec());
            }
            pos += (len + RINGBUF_HEADER).next_multiple_of(8);
        }
        out
    }
}

impl Drop for RingPeek {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; the fd closes after.
        unsafe { libc::munmap(self.base, self.mapped) };
        let _ = &self.fd;
    }
}

/// The program types of the programs with these ids (`bpftool prog show`: `sock_ops`,
/// `raw_tracepoint`, ...), by id.
pub fn program_types(ids: &BTreeSet<u64>) -> Vec<(u64, String)> {
    bpftool(&["prog", "show"])
        .as_array()
        .expect("bpftool prints an array")
        .iter()
        .filter_map(|p| {
            let id = p["id"].as_u64()?;
            ids.contains(&id)
                .then(|| (id, p["type"].as_str().unwrap_or_default().to_owned()))
        })
        .collect()
}

/// The mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on a hybrid layout), where the agent attaches its `sock_ops` program.
pub fn cgroup2_root() -> std::path::PathBuf {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts");
    let points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then_some(point)
        })
        .collect();
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|p| points.contains(p))
        .or_else(|| points.first().copied())
        .map(std::path::PathBuf::from)
        .expect("a cgroup v2 hierarchy is mounted")
}

/// The ids of the programs attached to the cgroup at `path` itself (`bpftool cgroup show`, which
/// lists programs attached with `BPF_PROG_ATTACH` and through links alike).
pub fn cgroup_programs(path: &std::path::Path) -> BTreeSet<u64> {
    let bpftool = util::which("bpftool");
    let out = Command::new(&bpftool)
        .args(["--json", "cgroup", "show"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bpftool.display()));
    assert!(
        out.status.success(),
        "bpftool cgroup show {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing attached: bpftool prints nothing at all, not an empty array.
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return BTreeSet::new();
    }
    let listed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool cgroup show {}: {e}", path.display()));
    listed
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect())
        .unwrap_or_default()
}
