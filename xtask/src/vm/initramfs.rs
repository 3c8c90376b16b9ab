//! The VM's initramfs: busybox, the agent with its shared libraries, the test driver and an
//! `init` script, written as an uncompressed `newc` cpio archive (no root needed to create
//! device nodes, no cpio tool, and nothing to decompress in the emulated guest).

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cmd, image};

/// Where Debian's `busybox-static` installs the binary.
const BUSYBOX: &str = "/bin/busybox";
/// Requests the client sends in each run.
pub(crate) const DEFAULT_REQUESTS: usize = 12;

/// What goes into the initramfs.
pub(crate) struct Contents<'a> {
    pub(crate) agent: &'a Path,
    pub(crate) driver: &'a Path,
    /// Capture paths to test, in order.
    pub(crate) paths: &'a [&'a str],
    pub(crate) requests: usize,
    /// Seconds the agent may take to log `ready` in the guest.
    pub(crate) ready_timeout: u64,
    /// Server and client write through a `dup` of their socket (`mop-vm run --dup-fds`).
    pub(crate) dup_fds: bool,
    /// Relay the agent's log on a pass too (`mop-vm run --verbose`).
    pub(crate) verbose: bool,
}

/// Builds the archive at `out`; `scratch` holds the stripped binaries.
pub(crate) fn build(contents: &Contents<'_>, scratch: &Path, out: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(scratch)?;
    let mut cpio = Cpio::default();
    for dir in ["dev", "proc", "sys", "tmp", "run", "etc", "bin"] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for init before anything is mounted.
    cpio.char_device("dev/console", 0o600, 5, 1);

    let busybox = Path::new(BUSYBOX);
    if !busybox.is_file() || !shared_libraries(busybox)?.is_empty() {
        bail!("{BUSYBOX} is missing or not static: install busybox-static (cargo xtask setup)");
    }
    cpio.file("bin/busybox", 0o755, &read(busybox)?);

    let mut libraries = BTreeSet::new();
    for (binary, name) in [(contents.agent, "mop-agent"), (contents.driver, "mop-vm")] {
        let stripped = scratch.join(name);
        cmd::run(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&stripped)
                .arg(binary),
        )?;
        cpio.file(&format!("bin/{name}"), 0o755, &read(&stripped)?);
        libraries.extend(shared_libraries(binary)?);
    }
    for lib in &libraries {
        // The path the dynamic linker asks for, holding the file its symlinks resolve to.
        let real = fs::canonicalize(lib).with_context(|| format!("resolving {}", lib.display()))?;
        let name = lib.to_string_lossy();
        cpio.file(name.trim_start_matches('/'), 0o755, &read(&real)?);
    }
    if !libraries.is_empty() {
        cpio.file(
            "etc/ld.so.cache",
            0o644,
            &read(Path::new("/etc/ld.so.cache"))?,
        );
    }
    cpio.file("init", 0o755, init_script(contents).as_bytes());

    let archive = cpio.finish();
    fs::write(out, &archive).with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "vm-test: initramfs {} ({} MB; shared libraries: {})",
        out.display(),
        archive.len().div_ceil(1 << 20),
        if libraries.is_empty() {
            "none".to_owned()
        } else {
            libraries
                .iter()
                .map(|l| l.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The shared libraries of `binary`; empty for a static one.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if text.contains("not a dynamic executable")
        || text.contains("statically linked")
        || stderr.contains("not a dynamic executable")
    {
        return Ok(Vec::new());
    }
    image::shared_libraries(binary)
}

/// The guest's `/init`: mounts what the agent needs, runs one test per path, reports.
fn init_script(c: &Contents<'_>) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t tmpfs tmpfs /tmp\n\
         mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null\n\
         mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null\n\
         mount -t bpf bpf /sys/fs/bpf 2>/dev/null\n\
         mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null\n\
         ip link set lo up\n\
         echo \"init: kernel $(uname -r), $(nproc) cpus\"\n\
         failed=0\n",
    );
    let mut flags = String::new();
    for (on, flag) in [(c.dup_fds, " --dup-fds"), (c.verbose, " --verbose")] {
        if on {
            flags.push_str(flag);
        }
    }
    for path in c.paths {
        // Exit codes of `mop-vm run`: 0 pass, 1 fail, 2 path missing from the agent, 3 path
        // not available on this kernel; anything else (a crash) is a failure too.
        let _ = write!(
            s,
            "mop-vm run --agent /bin/mop-agent --path {path} --requests {} --ready-timeout {}{flags}\n\
             case $? in 0|2|3) ;; *) failed=1 ;; esac\n",
            c.requests, c.ready_timeout,
        );
    }
    s.push_str(
        "if [ $failed -eq 0 ]; then echo \"init: success\"; else echo \"init: failure\"; fi\n\
         poweroff -f\n",
    );
    s
}

/// A `newc` cpio archive built in memory; parent directories are added as needed.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    inode: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn dir(&mut self, path: &str) {
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_owned());
        self.entry(path, 0o040_755, (0, 0), &[]);
    }

    fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.parents(path);
        self.entry(path, 0o100_000 | perm, (0, 0), data);
    }

    fn char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.parents(path);
        self.entry(path, 0o020_000 | perm, (major, minor), &[]);
    }

    fn parents(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.inode += 1;
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170_000 == 0o040_000 { 2 } else { 1 },
            0, // mtime: reproducible archives
            u32::try_from(data.len()).expect("initramfs member under 4 GiB"),
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("short name"),
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_is_read_back_by_cpio() {
        if !cmd::have("cpio") {
            return;
        }
        let mut c = Cpio::default();
        c.file("a/b/c.txt", 0o644, b"hello");
        c.char_device("dev/console", 0o600, 5, 1);
        let archive = c.finish();
        assert!(archive.len().is_multiple_of(4));
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.cpio");
        fs::write(&path, &archive).unwrap();
        let listing = cmd::output(
            Command::new("sh").args(["-c", &format!("cpio -itv < {}", path.display())]),
        )
        .unwrap();
        fs::remove_dir_all(&dir).unwrap();
        for name in ["a\n", "a/b\n", "a/b/c.txt\n", "dev/console\n"] {
            let name = name.trim_end();
            assert!(
                listing.lines().any(|l| l.ends_with(name)),
                "{name} in {listing}"
            );
        }
        assert!(listing.contains("crw-------"), "{listing}");
    }

    #[test]
    fn init_runs_every_path() {
        let script = init_script(&Contents {
            agent: Path::new("a"),
            driver: Path::new("d"),
            paths: &["tracepoint", "kprobe"],
            requests: 12,
            ready_timeout: 60,
            dup_fds: false,
            verbose: true,
        });
        assert!(script.contains("--path tracepoint --requests 12 --ready-timeout 60"));
        assert!(script.contains("--path kprobe"));
        assert!(script.contains(" --verbose\ncase $?"));
        assert!(script.ends_with("poweroff -f\n"));
    }
}
