//! Which container and Pod a process runs in, from `/proc/PID/cgroup`.
//!
//! The container runtimes put each container in a cgroup named after its id (64 hex digits),
//! inside a cgroup named after its Pod's uid; the layout depends on the cgroup version (v1
//! lines `N:controllers:path`, the v2 line `0::path`, both in hybrid mode), the cgroup driver
//! (systemd `*.slice`/`*.scope` units, or cgroupfs directories) and the runtime:
//!
//! | runtime | container cgroup |
//! |---|---|
//! | containerd (CRI, systemd driver) | `cri-containerd-<id>.scope` |
//! | containerd (CRI, v1 systemd, older) | `kubepods-...-pod<uid>.slice:cri-containerd:<id>` |
//! | CRI-O | `crio-<id>.scope` (`crio-conmon-<id>.scope` is its monitor, not the container) |
//! | Docker, cri-dockerd | `docker-<id>.scope`, `/docker/<id>` |
//! | Podman | `libpod-<id>.scope` |
//! | any runtime, cgroupfs driver | `/kubepods/<qos>/pod<uid>/<id>` |
//!
//! The Pod uid appears as `pod<uid>` (cgroupfs, dashes) or `kubepods-<qos>-pod<uid>.slice`
//! (systemd, dashes written as underscores); static Pods use their 32-digit config hash. When
//! the agent runs in its own cgroup namespace, paths are relative to it (`/../../kubepods...`):
//! only the last components matter, so that works too.

use std::fmt;

/// A container id (64 hex digits in every common runtime), kept as its 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub [u8; 32]);

/// A Pod uid (a UUID, or the 32-digit hash of a static Pod), kept as its 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodUid(pub [u8; 16]);

/// What a process's cgroups say about its container and Pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupIds {
    /// The container, when the process runs in one.
    pub container: Option<ContainerId>,
    /// The Pod, when the cgroup path names one.
    pub pod: Option<PodUid>,
}

impl CgroupIds {
    /// Whether the process runs in a container (Kubernetes metadata may exist for it).
    pub fn in_container(&self) -> bool {
        self.container.is_some() || self.pod.is_some()
    }
}

impl ContainerId {
    /// Parses a `containerStatuses[].containerID` (`containerd://<id>`, `cri-o://<id>`,
    /// `docker://<id>`) or a bare id.
    pub fn from_status(s: &str) -> Option<Self> {
        let id = s.rsplit_once("://").map_or(s, |(_, id)| id);
        hex_bytes::<32>(id, false).map(Self)
    }
}

impl PodUid {
    /// Parses `metadata.uid` (`4a163a05-439d-484b-8e53-2968bc15824f`) or the cgroup spelling
    /// (underscores, or no separators).
    pub fn parse(s: &str) -> Option<Self> {
        hex_bytes::<16>(s, true).map(Self)
    }
}

impl fmt::Debug for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Display for PodUid {
    /// The canonical UUID form Kubernetes uses (lower case, 8-4-4-4-12).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Parses the contents of `/proc/PID/cgroup`. The v2 line (`0::`) is preferred; v1 lines fill
/// in what it lacks (in hybrid mode the unified path may be just `/`).
pub fn parse(text: &str) -> CgroupIds {
    let mut unified = CgroupIds::default();
    let mut v1 = CgroupIds::default();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let ids = parse_path(path);
        let into = if hierarchy == "0" && controllers.is_empty() {
            &mut unified
        } else {
            &mut v1
        };
        into.container = into.container.or(ids.container);
        into.pod = into.pod.or(ids.pod);
    }
    CgroupIds {
        container: unified.container.or(v1.container),
        pod: unified.pod.or(v1.pod),
    }
}

/// The innermost container and Pod named along one cgroup path.
pub fn parse_path(path: &str) -> CgroupIds {
    let mut ids = CgroupIds::default();
    for component in path.rsplit('/') {
        // containerd's older v1 systemd form packs `slice:runtime:id` into one component.
        for part in component.rsplit(':') {
            if ids.container.is_none() {
                ids.container = container_in(part);
            }
            if ids.pod.is_none() {
                ids.pod = pod_in(part);
            }
        }
        if ids.container.is_some() && ids.pod.is_some() {
            break;
        }
    }
    ids
}

/// Runtime scope prefixes of container cgroups.
const SCOPE_PREFIXES: &[&str] = &[
    "cri-containerd-",
    "crio-",
    "docker-",
    "libpod-",
    "containerd-",
];

fn container_in(part: &str) -> Option<ContainerId> {
    let unit = part.strip_suffix(".scope").unwrap_or(part);
    if unit.starts_with("crio-conmon-") {
        return None;
    }
    let id = SCOPE_PREFIXES
        .iter()
        .find_map(|p| unit.strip_prefix(p))
        .unwrap_or(unit);
    hex_bytes::<32>(id, false).map(ContainerId)
}

fn pod_in(part: &str) -> Option<PodUid> {
    let unit = part.strip_suffix(".slice").unwrap_or(part);
    let uid = unit
        .strip_prefix("pod")
        .or_else(|| unit.rfind("-pod").map(|i| &unit[i + 4..]))?;
    PodUid::parse(uid)
}

/// Exactly `2 * N` hex digits (with `-`/`_` separators skipped when `separated`).
fn hex_bytes<const N: usize>(s: &str, separated: bool) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    let mut digits = 0usize;
    for c in s.bytes() {
        if separated && (c == b'-' || c == b'_') {
            continue;
        }
        let v = (c as char).to_digit(16)? as u8;
        let byte = out.get_mut(digits / 2)?;
        *byte = (*byte << 4) | v;
        digits += 1;
    }
    (digits == 2 * N).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "acb62391578595ec849d87d8556369cee7f935f0425097fd5f870df0e8aabd3c";
    const UID: &str = "dde1244b-5bb5-4297-b544-85f3bc0d80bf";

    fn ids(text: &str) -> (Option<String>, Option<String>) {
        let ids = parse(text);
        (
            ids.container.map(|c| format!("{c:?}")),
            ids.pod.map(|p| p.to_string()),
        )
    }

    fn both(id: &str, uid: &str) -> (Option<String>, Option<String>) {
        (Some(id.to_owned()), Some(uid.to_owned()))
    }

    #[test]
    fn cgroup_v2_systemd_containerd() {
        // EKS, kubeadm with containerd and the systemd driver.
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poddde1244b_5bb5_4297_b544_85f3bc0d80bf.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(ids(&text), both(ID, UID));
        // Guaranteed QoS has no QoS slice.
        let text = format!(
            "0::/kubepods.slice/kubepods-poddde1244b_5bb5_4297_b544_85f3bc0d80bf.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(ids(&text), both(ID, UID));
    }

    #[test]
    fn cgroup_v2_crio_and_its_monitor() {
        let text = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poddde1244b_5bb5_4297_b544_85f3bc0d80bf.slice/crio-{ID}.scope"
        );
        assert_eq!(ids(&text), both(ID, UID));
        // conmon runs in the Pod's slice but is not the container.
        let text = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poddde1244b_5bb5_4297_b544_85f3bc0d80bf.slice/crio-conmon-{ID}.scope"
        );
        assert_eq!(ids(&text), (None, Some(UID.to_owned())));
    }

    #[test]
    fn cgroup_v2_docker_and_cri_dockerd() {
        let text = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(ids(&text), (Some(ID.to_owned()), None));
        let text = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poddde1244b_5bb5_4297_b544_85f3bc0d80bf.slice/docker-{ID}.scope"
        );
        assert_eq!(ids(&text), both(ID, UID));
    }

    #[test]
    fn cgroup_v1_cgroupfs_driver() {
        // GKE (cgroupfs driver): every controller line names the Pod and the container.
        let gke = "cde6dfaf5007ed65aad2d6aed72af91b0f3d95813492f773286e29ae145d20f4";
        let uid = "4a163a05-439d-484b-8e53-2968bc15824f";
        let text = format!(
            "12:hugetlb:/kubepods/burstable/pod{uid}/{gke}\n\
             11:memory:/kubepods/burstable/pod{uid}/{gke}\n\
             10:cpu,cpuacct:/kubepods/burstable/pod{uid}/{gke}\n\
             4:pids:/kubepods/burstable/pod{uid}/{gke}\n\
             1:name=systemd:/kubepods/burstable/pod{uid}/{gke}\n"
        );
        assert_eq!(ids(&text), both(gke, uid));
        // Static Pods are named by their config hash (32 digits, no dashes).
        let text = "11:memory:/kubepods/burstable/podb53dfa9e2dc9b890f7fadb2770857b03/bb959773d06ad1a07d469bced637bbc49b6f8573c493fd0548d7f5810eb3e5a8";
        assert_eq!(
            ids(text),
            both(
                "bb959773d06ad1a07d469bced637bbc49b6f8573c493fd0548d7f5810eb3e5a8",
                "b53dfa9e-2dc9-b890-f7fa-db2770857b03"
            )
        );
    }

    #[test]
    fn cgroup_v1_docker() {
        let text = format!(
            "12:pids:/docker/{ID}\n11:cpu,cpuacct:/docker/{ID}\n1:name=systemd:/docker/{ID}\n"
        );
        assert_eq!(ids(&text), (Some(ID.to_owned()), None));
    }

    #[test]
    fn cgroup_v1_containerd_systemd_colon_form() {
        let text = format!(
            "11:cpuset:/system.slice/containerd.service/kubepods-burstable-poddde1244b_5bb5_4297_b544_85f3bc0d80bf.slice:cri-containerd:{ID}\n"
        );
        assert_eq!(ids(&text), both(ID, UID));
    }

    #[test]
    fn hybrid_prefers_v1_when_unified_is_root() {
        // Hybrid (systemd's default before v2): the unified line is `/` for container
        // processes while the v1 controllers carry the container path.
        let text = format!(
            "12:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poddde1244b_5bb5_4297_b544_85f3bc0d80bf.slice/cri-containerd-{ID}.scope\n\
             1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poddde1244b_5bb5_4297_b544_85f3bc0d80bf.slice/cri-containerd-{ID}.scope\n\
             0::/\n"
        );
        assert_eq!(ids(&text), both(ID, UID));
        // And when both name a container, the unified one wins.
        let other = "b".repeat(64);
        let text = format!("4:pids:/docker/{other}\n0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(ids(&text), (Some(ID.to_owned()), None));
    }

    #[test]
    fn cgroup_namespace_relative_paths_and_kind() {
        // The agent in its own cgroup namespace sees other Pods' paths relative to its root.
        let text = "0::/../../pode039200acb850c82bb901653cc38ff6e/58452031ab6dcaa4fe3ff91f8a46fd41a4a2405586f3cf3d5cb9c93b5bcf62cc";
        assert_eq!(
            ids(text),
            both(
                "58452031ab6dcaa4fe3ff91f8a46fd41a4a2405586f3cf3d5cb9c93b5bcf62cc",
                "e039200a-cb85-0c82-bb90-1653cc38ff6e"
            )
        );
        // kind: the node is itself a Docker container; the innermost id is the Pod's.
        let node = "f".repeat(64);
        let text = format!(
            "0::/docker/{node}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-poddde1244b_5bb5_4297_b544_85f3bc0d80bf.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(ids(&text), both(ID, UID));
    }

    #[test]
    fn podman_and_host_processes() {
        let text = format!("0::/machine.slice/libpod-{ID}.scope/container\n");
        assert_eq!(ids(&text), (Some(ID.to_owned()), None));
        for host in [
            "0::/init.scope\n",
            "0::/system.slice/nginx.service\n",
            "0::/user.slice/user-1000.slice/session-3.scope\n",
            "12:memory:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-3.scope\n0::/user.slice/user-1000.slice/session-3.scope\n",
            "",
            "garbage",
            // 63 and 65 digits are not ids.
            &format!("0::/docker/{}", &ID[1..]),
            &format!("0::/docker/{ID}0"),
        ] {
            assert_eq!(ids(host), (None, None), "{host}");
            assert!(!parse(host).in_container());
        }
    }

    #[test]
    fn container_status_ids() {
        for s in [
            format!("containerd://{ID}"),
            format!("cri-o://{ID}"),
            format!("docker://{ID}"),
            ID.to_owned(),
        ] {
            assert_eq!(
                ContainerId::from_status(&s).map(|c| format!("{c:?}")),
                Some(ID.to_owned())
            );
        }
        assert_eq!(ContainerId::from_status("containerd://abc"), None);
        assert_eq!(ContainerId::from_status(""), None);
        assert_eq!(
            PodUid::parse(UID).map(|u| u.to_string()),
            Some(UID.to_owned())
        );
        assert_eq!(PodUid::parse("not-a-uid"), None);
    }
}
