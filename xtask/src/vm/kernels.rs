//! Debian kernels for the VM tests: find the newest image of a series in a suite, download
//! it once, verify it, and unpack its `vmlinuz`.
//!
//! Trust chain: the suite's `InRelease` is checked with `gpgv` against the Debian archive
//! keyring, `main/binary-amd64/Packages.xz` against the SHA-256 that `InRelease` lists, and the
//! `.deb` against the SHA-256 and size in `Packages`. Everything is cached under
//! `target/vm/kernels/`; a later run downloads only a changed index or a newer kernel, and
//! `--offline` (or an unreachable mirror) reuses the last resolution.

use std::{
    cmp::Ordering,
    collections::HashMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// The keyring that signs every Debian suite, from the `debian-archive-keyring` package.
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The index of amd64 binary packages, relative to a suite's `dists/<suite>/`.
const PACKAGES_INDEX: &str = "main/binary-amd64/Packages.xz";

/// Which Debian archive a suite lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Archive {
    /// The main archive (`.../debian`).
    Main,
    /// The security archive (`.../debian-security`).
    Security,
}

/// A kernel series the VM test boots, and where Debian ships it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KernelSeries {
    /// The name on the command line and in the matrix.
    pub(crate) name: &'static str,
    pub(crate) archive: Archive,
    pub(crate) suite: &'static str,
    /// Upstream version prefix of the image's ABI name (`5.10.` matches `5.10.0-46`).
    pub(crate) prefix: &'static str,
}

/// Every series, oldest first: the oldest kernel the agent supports, Debian 12's, the
/// current long-term one (Debian 13's, via bookworm-backports) and the newest in unstable.
pub(crate) const SERIES: &[KernelSeries] = &[
    KernelSeries {
        name: "5.10",
        archive: Archive::Security,
        suite: "bullseye-security",
        prefix: "5.10.",
    },
    KernelSeries {
        name: "6.1",
        archive: Archive::Main,
        suite: "bookworm",
        prefix: "6.1.",
    },
    KernelSeries {
        name: "6.12",
        archive: Archive::Main,
        suite: "bookworm-backports",
        prefix: "6.12.",
    },
    KernelSeries {
        name: "7.x",
        archive: Archive::Main,
        suite: "sid",
        prefix: "7.",
    },
];

/// Where the Debian archives are fetched from.
#[derive(Clone, Debug)]
pub(crate) struct Mirrors {
    pub(crate) main: String,
    pub(crate) security: String,
}

impl Mirrors {
    /// The given mirrors, else the ones apt uses on this machine (the security archive
    /// defaults to the main one's URL with `-security` appended).
    pub(crate) fn resolve(main: Option<&str>, security: Option<&str>) -> anyhow::Result<Self> {
        let (apt_main, apt_security) = apt_mirrors();
        let main = main
            .map(str::to_owned)
            .or(apt_main)
            .context(
                "no Debian mirror configured in /etc/apt: pass --mirror URL (the archive that \
                 holds dists/bookworm)",
            )?
            .trim_end_matches('/')
            .to_owned();
        let security = security
            .map(str::to_owned)
            .or(apt_security)
            .unwrap_or_else(|| format!("{main}-security"))
            .trim_end_matches('/')
            .to_owned();
        Ok(Self { main, security })
    }

    fn base(&self, archive: Archive) -> &str {
        match archive {
            Archive::Main => &self.main,
            Archive::Security => &self.security,
        }
    }
}

/// The `.../debian` and `.../debian-security` URIs in apt's sources, if any.
fn apt_mirrors() -> (Option<String>, Option<String>) {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    let mut uris = Vec::new();
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            if let Some(list) = line.strip_prefix("URIs:") {
                uris.extend(list.split_whitespace().map(str::to_owned));
            } else if line.starts_with("deb ") {
                // deb [options] URI suite components
                let words = line.split_whitespace().skip(1);
                let mut words = words.skip_while(|w| w.starts_with('[') || !w.contains("://"));
                uris.extend(words.next().map(str::to_owned));
            }
        }
    }
    let find = |tail: &str| {
        uris.iter()
            .map(|u| u.trim_end_matches('/'))
            .find(|u| u.ends_with(tail) && u.starts_with("http"))
            .map(str::to_owned)
    };
    (find("/debian"), find("/debian-security"))
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub(crate) struct Kernel {
    pub(crate) series: KernelSeries,
    /// The Debian package the image came from.
    pub(crate) package: String,
    /// Its Debian version.
    pub(crate) version: String,
    /// Its archive path, for the report.
    pub(crate) url: String,
    /// `uname -r` of the kernel.
    pub(crate) release: String,
    /// The unpacked image.
    pub(crate) vmlinuz: PathBuf,
}

/// One stanza of a `Packages` index: the fields we use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Stanza {
    package: String,
    version: String,
    filename: String,
    size: u64,
    sha256: String,
}

/// Returns the newest kernel of `series`, downloading and unpacking it when it is not cached.
pub(crate) fn fetch(
    series: KernelSeries,
    mirrors: &Mirrors,
    cache: &Path,
    offline: bool,
) -> anyhow::Result<Kernel> {
    let record = cache.join(format!("{}.resolved", series.name));
    if offline {
        return cached(series, &record)
            .with_context(|| format!("--offline: kernel {} is not cached", series.name));
    }
    let base = mirrors.base(series.archive);
    let stanza = match newest_image(series, base, cache) {
        Ok(stanza) => stanza,
        Err(e) => {
            // A mirror that is down should not stop a run that has everything cached.
            return cached(series, &record).map_err(|_| e).inspect(|k| {
                eprintln!(
                    "vm-test: warning: cannot read the {} index ({}); using cached {} {}",
                    series.suite, base, k.package, k.version
                );
            });
        }
    };
    if let Ok(k) = cached(series, &record)
        && k.package == stanza.package
        && k.version == stanza.version
    {
        return Ok(k);
    }
    let deb = cache.join("debs").join(file_name(&stanza.filename));
    let url = format!("{base}/{}", stanza.filename);
    download_verified(&url, &deb, stanza.size, &stanza.sha256)?;
    let (release, vmlinuz) = unpack_vmlinuz(&deb, &cache.join("images"))?;
    // Only the vmlinuz is kept: the package is 15-100 MB that CI's disk needs more.
    fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;
    let kernel = Kernel {
        series,
        package: stanza.package,
        version: stanza.version,
        url,
        release,
        vmlinuz,
    };
    fs::write(&record, record_text(&kernel))
        .with_context(|| format!("writing {}", record.display()))?;
    Ok(kernel)
}

fn record_text(k: &Kernel) -> String {
    let mut text = String::new();
    for (key, value) in [
        ("package", k.package.as_str()),
        ("version", k.version.as_str()),
        ("url", k.url.as_str()),
        ("release", k.release.as_str()),
        ("vmlinuz", &k.vmlinuz.display().to_string()),
    ] {
        let _ = writeln!(text, "{key}={value}");
    }
    text
}

/// The kernel recorded by the last successful fetch.
fn cached(series: KernelSeries, record: &Path) -> anyhow::Result<Kernel> {
    let text = fs::read_to_string(record)?;
    let fields: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| {
        fields
            .get(k)
            .map(|v| (*v).to_owned())
            .with_context(|| format!("{} has no {k}", record.display()))
    };
    let kernel = Kernel {
        series,
        package: get("package")?,
        version: get("version")?,
        url: get("url")?,
        release: get("release")?,
        vmlinuz: PathBuf::from(get("vmlinuz")?),
    };
    if !kernel.vmlinuz.is_file() {
        bail!("{} is gone", kernel.vmlinuz.display());
    }
    Ok(kernel)
}

/// Finds the newest generic amd64 image of `series` in its suite's verified index.
fn newest_image(series: KernelSeries, base: &str, cache: &Path) -> anyhow::Result<Stanza> {
    let dir = cache.join("dists").join(series.suite);
    fs::create_dir_all(&dir)?;
    let in_release = dir.join("InRelease");
    let url = format!("{base}/dists/{}/InRelease", series.suite);
    curl(&url, &in_release)?;
    let signed = cmd::output(
        Command::new("gpgv")
            .args(["--keyring", KEYRING, "--output", "-"])
            .arg(&in_release),
    )
    .with_context(|| format!("the signature of {url} does not verify against {KEYRING}"))?;
    let (sha256, size) = index_hash(&signed, PACKAGES_INDEX)
        .with_context(|| format!("{url} does not list {PACKAGES_INDEX}"))?;
    let index = dir.join("Packages.xz");
    download_verified(
        &format!("{base}/dists/{}/{PACKAGES_INDEX}", series.suite),
        &index,
        size,
        &sha256,
    )?;
    let text = cmd::output(Command::new("xz").arg("-dc").arg(&index))?;
    pick_image(series, &parse_packages(&text)).with_context(|| {
        format!(
            "no linux-image-{}*-amd64 in {} {}",
            series.prefix, base, series.suite
        )
    })
}

/// The SHA-256 and size that a `Release` file lists for `path`.
fn index_hash(release: &str, path: &str) -> Option<(String, u64)> {
    release
        .lines()
        .skip_while(|l| !l.starts_with("SHA256:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            let (hash, size, name) = (words.next()?, words.next()?, words.next()?);
            (name == path).then(|| Some((hash.to_owned(), size.parse().ok()?)))?
        })
}

/// The stanzas of a `Packages` file (only the fields in [`Stanza`]).
fn parse_packages(text: &str) -> Vec<Stanza> {
    let mut out = Vec::new();
    let mut cur = Stanza::default();
    for line in text.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if !cur.package.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        match key {
            "Package" => value.clone_into(&mut cur.package),
            "Version" => value.clone_into(&mut cur.version),
            "Filename" => value.clone_into(&mut cur.filename),
            "Size" => cur.size = value.parse().unwrap_or(0),
            "SHA256" => value.clone_into(&mut cur.sha256),
            _ => {}
        }
    }
    out
}

/// The ABI name of a generic amd64 image package (`linux-image-6.1.0-50-amd64` gives
/// `6.1.0-50`); `None` for the cloud and rt flavours, debug symbols and unsigned builds.
fn generic_abi(package: &str) -> Option<&str> {
    let abi = package
        .strip_prefix("linux-image-")?
        .strip_suffix("-amd64")?;
    let flavoured = abi.split('-').any(|part| part == "cloud" || part == "rt");
    (!flavoured && abi.starts_with(|c: char| c.is_ascii_digit())).then_some(abi)
}

/// The newest image of `series`. Since Debian 14 the `linux-image-*` package is a
/// dependency-only package and `vmlinuz` ships in `linux-binary-*`; prefer that one when it
/// exists.
fn pick_image(series: KernelSeries, stanzas: &[Stanza]) -> Option<Stanza> {
    let image = stanzas
        .iter()
        .filter(|s| generic_abi(&s.package).is_some_and(|abi| abi.starts_with(series.prefix)))
        .max_by(|a, b| compare_versions(&a.version, &b.version))?;
    let abi = generic_abi(&image.package)?;
    let binary = format!("linux-binary-{abi}-amd64");
    stanzas
        .iter()
        .find(|s| s.package == binary && s.version == image.version)
        .or(Some(image))
        .cloned()
}

/// Debian version order (dpkg's `verrevcmp`: `~` sorts before anything, letters before other
/// symbols, digit runs numerically), applied to the whole version string.
pub(crate) fn compare_versions(a: &str, b: &str) -> Ordering {
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // Non-digit prefix.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ca = a.get(i).copied().filter(|c| !c.is_ascii_digit());
            let cb = b.get(j).copied().filter(|c| !c.is_ascii_digit());
            let (oa, ob) = (order(ca), order(cb));
            if oa != ob {
                return oa.cmp(&ob);
            }
            i += usize::from(ca.is_some());
            j += usize::from(cb.is_some());
        }
        // Digit run.
        let start = (i, j);
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let na = std::str::from_utf8(&a[start.0..i]).unwrap_or("0");
        let nb = std::str::from_utf8(&b[start.1..j]).unwrap_or("0");
        let (na, nb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
        let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Downloads `url` to `path` unless `path` already has the expected size and SHA-256.
fn download_verified(url: &str, path: &Path, size: u64, sha256: &str) -> anyhow::Result<()> {
    let matches = |p: &Path| -> anyhow::Result<bool> {
        Ok(fs::metadata(p).is_ok_and(|m| m.len() == size) && sha256_of(p)? == sha256)
    };
    if path.exists() && matches(path)? {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let part = path.with_extension("part");
    eprintln!("vm-test: downloading {url} ({} MB)", size.div_ceil(1 << 20));
    curl(url, &part)?;
    if !matches(&part)? {
        let _ = fs::remove_file(&part);
        bail!("{url}: size or SHA-256 differs from the signed index");
    }
    fs::rename(&part, path)?;
    Ok(())
}

fn curl(url: &str, path: &Path) -> anyhow::Result<()> {
    cmd::output(
        Command::new("curl")
            .args(["-fsSL", "--retry", "3", "--connect-timeout", "20", "-o"])
            .arg(path)
            .arg(url),
    )
    .map(drop)
    .with_context(|| format!("downloading {url}"))
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let out = cmd::output(Command::new("sha256sum").arg(path))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_owned())
}

/// Unpacks the image of `deb` into `dir/<release>/vmlinuz`; returns the release and the
/// path. The image is `boot/vmlinuz-<release>` up to Debian 13 and
/// `usr/lib/modules/<release>/vmlinuz` from Debian 14.
fn unpack_vmlinuz(deb: &Path, dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    let listing = cmd::output(
        Command::new("sh")
            .args(["-c", "dpkg-deb --fsys-tarfile \"$1\" | tar -t", "sh"])
            .arg(deb),
    )
    .with_context(|| format!("listing {}", deb.display()))?;
    let (member, release) = listing
        .lines()
        .find_map(|m| {
            let m = m.trim_start_matches("./");
            if let Some(release) = m.strip_prefix("boot/vmlinuz-") {
                return Some((m.to_owned(), release.to_owned()));
            }
            let release = m
                .strip_prefix("usr/lib/modules/")?
                .strip_suffix("/vmlinuz")?;
            Some((m.to_owned(), release.to_owned()))
        })
        .with_context(|| format!("{} has no vmlinuz", deb.display()))?;
    let out = dir.join(&release).join("vmlinuz");
    if out.is_file() {
        return Ok((release, out));
    }
    fs::create_dir_all(out.parent().expect("has a parent"))?;
    let script = format!(
        "dpkg-deb --fsys-tarfile \"$1\" | tar -xO \"./{member}\" > \"$2.part\" && mv \"$2.part\" \"$2\""
    );
    cmd::run(
        Command::new("sh")
            .args(["-c", &script, "sh"])
            .arg(deb)
            .arg(&out),
    )
    .with_context(|| format!("unpacking {member} from {}", deb.display()))?;
    Ok((release, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_version_order() {
        let less = [
            ("6.12.94-1~bpo12+1", "6.12.95-1~bpo12+1"),
            ("1.0~rc1", "1.0"),
            ("5.10.9-1", "5.10.262-1"),
            ("6.1.170-3", "6.1.176-1"),
            ("1.0-1", "1.0-1+b1"),
            ("1.0a", "1.0+"),
        ];
        for (a, b) in less {
            assert_eq!(compare_versions(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(compare_versions(b, a), Ordering::Greater, "{b} > {a}");
        }
        assert_eq!(compare_versions("7.2.13-1", "7.2.13-1"), Ordering::Equal);
    }

    #[test]
    fn picks_the_newest_generic_image() {
        let text = "Package: linux-image-6.1.0-47-amd64\nVersion: 6.1.170-3\nFilename: a\nSize: 1\nSHA256: x\n\n\
                    Package: linux-image-6.1.0-50-amd64\nVersion: 6.1.176-1\nFilename: b\nSize: 2\nSHA256: y\n\n\
                    Package: linux-image-6.1.0-50-cloud-amd64\nVersion: 6.1.176-1\nFilename: c\n\n\
                    Package: linux-image-6.1.0-50-amd64-dbg\nVersion: 6.1.176-1\nFilename: d\n\n\
                    Package: linux-image-6.12.95+deb12-amd64\nVersion: 6.12.95-1\nFilename: e\n";
        let stanzas = parse_packages(text);
        assert_eq!(stanzas.len(), 5);
        let got = pick_image(SERIES[1], &stanzas).unwrap();
        assert_eq!(
            (got.package.as_str(), got.size),
            ("linux-image-6.1.0-50-amd64", 2)
        );
        let got = pick_image(SERIES[2], &stanzas).unwrap();
        assert_eq!(got.filename, "e");
        assert!(pick_image(SERIES[0], &stanzas).is_none());
    }

    #[test]
    fn prefers_the_binary_package_of_new_layouts() {
        let text = "Package: linux-image-7.2.13+deb14-amd64\nVersion: 7.2.13-1\nFilename: meta\n\n\
                    Package: linux-binary-7.2.13+deb14-amd64\nVersion: 7.2.13-1\nFilename: bin\n";
        let got = pick_image(SERIES[3], &parse_packages(text)).unwrap();
        assert_eq!(got.filename, "bin");
    }

    #[test]
    fn reads_index_hashes_from_release() {
        let release = "Codename: sid\nMD5Sum:\n 00 10 main/binary-amd64/Packages.xz\nSHA256:\n \
                       aa 5 main/binary-all/Packages.xz\n bb 7 main/binary-amd64/Packages.xz\n";
        assert_eq!(
            index_hash(release, PACKAGES_INDEX),
            Some(("bb".to_owned(), 7))
        );
    }
}
