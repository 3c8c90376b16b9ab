//! Inputs the fuzz targets found, replayed through the same drivers: each was a bug, now fixed
//! (its file name says which), and must stay fixed. The seeds run too.

use std::path::PathBuf;

use mop_protocol::http2::fuzzing;

fn inputs(dirs: &[&[&str]]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for parts in dirs {
        let mut dir: PathBuf = [env!("CARGO_MANIFEST_DIR")].iter().collect();
        dir.extend(parts.iter());
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    assert!(!out.is_empty());
    out
}

#[test]
fn frames_findings_and_seeds() {
    for (name, data) in inputs(&[
        &["tests", "fixtures", "fuzz", "http2_frames"],
        &["..", "fuzz", "seeds", "http2_frames"],
    ]) {
        eprintln!("{name}");
        fuzzing::frames(&data);
    }
}

#[test]
fn hpack_findings_and_seeds() {
    for (name, data) in inputs(&[
        &["tests", "fixtures", "fuzz", "hpack"],
        &["..", "fuzz", "seeds", "hpack"],
    ]) {
        eprintln!("{name}");
        fuzzing::hpack(&data);
    }
}
