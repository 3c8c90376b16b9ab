//! Builds `mop-agent-ebpf` for the bpf target (nightly, bpf-linker) and leaves the object in
//! `OUT_DIR`, where `capture::loader` embeds it.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};
use mop_agent_ebpf as _;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "mop-agent-ebpf")
        .ok_or_else(|| anyhow!("mop-agent-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("mop-agent-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
