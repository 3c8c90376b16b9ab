//! `cargo xtask image`: builds the agent's OCI image without a container daemon.
//!
//! The release binary, the shared libraries `ldd` lists for it, an `ld.so.cache` made for
//! them, CA certificates and minimal `/etc` files go into one layer assembled with umoci; the
//! result is an OCI layout in `target/image`, checked with `skopeo inspect`. The equivalent
//! build for users with a container engine is `deploy/image/Dockerfile`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cmd, manifests::workspace_root};

/// The image's name; its tag is the workspace version.
const REPOSITORY: &str = "ghcr.io/mop-observability/mop-agent";
/// Where the binary goes in the image.
const BINARY: &str = "/usr/local/bin/mop-agent";
/// Library directories the image's `ld.so.cache` covers.
const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];
/// CA certificates for `https://` OTLP endpoints, taken from the build machine.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Options of `cargo xtask image`.
#[derive(clap::Args, Default)]
pub(crate) struct Options {
    /// Tag of the image (default: the workspace version).
    #[arg(long)]
    pub(crate) tag: Option<String>,
    /// Use an already built `target/release/mop-agent` instead of building it.
    #[arg(long)]
    pub(crate) no_build: bool,
}

/// Builds the release binary and the OCI image, then inspects it.
pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    for tool in ["umoci", "skopeo", "ldd", "ldconfig"] {
        if !cmd::have(tool) && !Path::new("/sbin").join(tool).exists() {
            bail!(
                "{tool} is not installed: run `cargo xtask setup` (Debian packages umoci, skopeo)"
            );
        }
    }
    let root = workspace_root();
    let tag = opts
        .tag
        .clone()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
    let binary = root.join("target/release/mop-agent");
    if !opts.no_build {
        eprintln!("image: building the release binary");
        cmd::run(Command::new("cargo").current_dir(&root).args([
            "build",
            "--release",
            "--locked",
            "-p",
            "mop-agent",
        ]))?;
    }
    if !binary.is_file() {
        bail!("{} does not exist: build it first", binary.display());
    }

    let layout = root.join("target/image");
    let staging = root.join("target/image-build");
    for dir in [&layout, &staging] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    fs::create_dir_all(&staging)?;
    let image = format!("{}:{tag}", layout.display());
    let bundle = staging.join("bundle");
    let rootless: &[&str] = if cmd::is_root() { &[] } else { &["--rootless"] };

    eprintln!(
        "image: assembling {REPOSITORY}:{tag} in {}",
        layout.display()
    );
    cmd::run(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    )?;
    cmd::run(Command::new("umoci").args(["new", "--image", &image]))?;
    cmd::run(
        Command::new("umoci")
            .arg("unpack")
            .args(rootless)
            .args(["--image", &image])
            .arg(&bundle),
    )?;
    populate(&bundle.join("rootfs"), &binary)?;
    let created = commit_time(&root);
    cmd::run(
        Command::new("umoci")
            .arg("repack")
            .args(["--image", &image])
            .args(["--history.created_by", "cargo xtask image"])
            .args(["--history.created", &created])
            .arg(&bundle),
    )?;
    configure(&image, &tag, &created, &root)?;
    cmd::run(Command::new("umoci").args(["gc", "--layout"]).arg(&layout))?;
    fs::remove_dir_all(&staging).ok();

    inspect(&layout, &tag)
}

/// Copies the binary, its shared libraries and the few `/etc` files it needs into `rootfs`.
fn populate(rootfs: &Path, binary: &Path) -> anyhow::Result<()> {
    copy(binary, &under(rootfs, BINARY), 0o755)?;
    let libraries = shared_libraries(binary)?;
    for lib in &libraries {
        // The path the dynamic linker looks for, holding the file the symlinks resolve to.
        let real = fs::canonicalize(lib).with_context(|| format!("resolving {}", lib.display()))?;
        copy(&real, &under(rootfs, lib), 0o755)?;
    }
    eprintln!(
        "image: {} and {} shared libraries: {}",
        BINARY,
        libraries.len(),
        libraries
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );

    let etc = rootfs.join("etc");
    fs::create_dir_all(&etc)?;
    fs::write(etc.join("ld.so.conf"), LIBRARY_DIRS.join("\n") + "\n")?;
    cmd::run(Command::new(ldconfig()).arg("-r").arg(rootfs))
        .context("building the image's ld.so.cache")?;
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
    )?;
    fs::write(etc.join("group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::write(etc.join("nsswitch.conf"), "hosts: files dns\n")?;
    if Path::new(CA_BUNDLE).is_file() {
        copy(Path::new(CA_BUNDLE), &under(rootfs, CA_BUNDLE), 0o644)?;
    } else {
        eprintln!("image: warning: {CA_BUNDLE} not found; https:// endpoints will not verify");
    }
    // The DaemonSet mounts the config here and an emptyDir on /tmp.
    for dir in ["etc/mop", "tmp"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    Ok(())
}

/// The libraries `ldd` resolves for `binary` (the vDSO has no file and is left out).
pub(crate) fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = cmd::output(Command::new("ldd").arg(binary))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("ldd {}: {line}", binary.display());
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line.split_once("=>").map_or(line, |(_, p)| p).trim();
        let path = path.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    if libs.is_empty() {
        bail!(
            "ldd found no shared library for {} (static?)",
            binary.display()
        );
    }
    Ok(libs)
}

/// Sets the image configuration: entrypoint, user, port and OCI labels.
fn configure(image: &str, tag: &str, created: &str, root: &Path) -> anyhow::Result<()> {
    let revision = cmd::output(
        Command::new("git")
            .current_dir(root)
            .args(["rev-parse", "HEAD"]),
    )
    .map(|s| s.trim().to_owned())
    .unwrap_or_default();
    let labels = [
        ("org.opencontainers.image.title", "mop-agent".to_owned()),
        (
            "org.opencontainers.image.description",
            "eBPF agent: HTTP and gRPC spans and RED metrics over OTLP".to_owned(),
        ),
        ("org.opencontainers.image.version", tag.to_owned()),
        ("org.opencontainers.image.revision", revision),
        ("org.opencontainers.image.created", created.to_owned()),
        ("org.opencontainers.image.licenses", "Apache-2.0".to_owned()),
        (
            "org.opencontainers.image.source",
            "https://github.com/mop-observability/mop".to_owned(),
        ),
        (
            "org.opencontainers.image.ref.name",
            format!("{REPOSITORY}:{tag}"),
        ),
    ];
    let mut config = Command::new("umoci");
    config
        .args(["config", "--image", image])
        .args(["--config.entrypoint", BINARY])
        .args(["--config.cmd=--config", "--config.cmd=/etc/mop/config.yaml"])
        // Capabilities granted by the DaemonSet reach only uid 0 (see deploy/lib/agent.libsonnet).
        .args(["--config.user", "0:0"])
        .args(["--config.workingdir", "/"])
        .args(["--config.exposedports", "9400/tcp"])
        .args(["--config.env", "PATH=/usr/local/bin:/usr/bin:/bin"])
        .args(["--config.stopsignal", "SIGTERM"])
        .args(["--created", created])
        .args(["--author", "mop"])
        .args(["--history.created_by", "cargo xtask image (config)"])
        .args(["--history.created", created]);
    for (key, value) in &labels {
        config.args(["--config.label", &format!("{key}={value}")]);
    }
    cmd::run(&mut config)
}

/// `skopeo inspect` the image and check what it reports.
fn inspect(layout: &Path, tag: &str) -> anyhow::Result<()> {
    let reference = format!("oci:{}:{tag}", layout.display());
    let out = cmd::output(Command::new("skopeo").args(["inspect", &reference]))?;
    println!("{out}");
    let config = cmd::output(Command::new("skopeo").args(["inspect", "--config", &reference]))?;
    for expected in [
        format!("\"org.opencontainers.image.version\": \"{tag}\""),
        "\"Os\": \"linux\"".to_owned(),
    ] {
        if !out.contains(&expected) {
            bail!("skopeo inspect {reference}: expected {expected}");
        }
    }
    if !config.contains(BINARY) {
        bail!("skopeo inspect --config {reference}: the entrypoint is not {BINARY}");
    }
    eprintln!("image: {reference} ({REPOSITORY}:{tag}) is ready");
    eprintln!(
        "image: push with `skopeo copy {reference} docker://{REPOSITORY}:{tag}`, or load it with \
         `skopeo copy {reference} docker-daemon:{REPOSITORY}:{tag}`"
    );
    Ok(())
}

fn under(rootfs: &Path, absolute: impl AsRef<Path>) -> PathBuf {
    rootfs.join(
        absolute
            .as_ref()
            .strip_prefix("/")
            .unwrap_or(absolute.as_ref()),
    )
}

fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;

    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn ldconfig() -> &'static str {
    if cmd::have("ldconfig") {
        "ldconfig"
    } else {
        "/sbin/ldconfig"
    }
}

/// The last commit's time (RFC 3339), so that rebuilding one commit gives the same dates.
fn commit_time(root: &Path) -> String {
    cmd::output(
        Command::new("git")
            .current_dir(root)
            .args(["log", "-1", "--format=%cI"]),
    )
    .map_or_else(
        |_| "1970-01-01T00:00:00Z".to_owned(),
        |s| s.trim().to_owned(),
    )
}
