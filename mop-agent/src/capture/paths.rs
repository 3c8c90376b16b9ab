//! Choosing the capture path at start-up: `auto` tries fentry/fexit, then kprobes, then the
//! syscall tracepoints, and takes the first whose programs all load and attach; a forced path
//! is tried alone. Every refusal keeps a short reason (a metric label) and the detail (logged).

use std::{io, path::Path};

use aya::{
    Ebpf,
    programs::{FEntry, FExit, Program, ProgramError},
};
use mop_common::kfunc::{FENTRY_PROGRAMS, KPROBE_PROGRAMS, KfuncProgram};

use super::{btf::Btf, loader::CapturePathKind};

/// The paths `auto` tries, best first: trampolines cost the least per call, kprobes more,
/// and the syscall tracepoints run for every syscall of every process.
pub const AUTO_ORDER: [CapturePathKind; 3] = [
    CapturePathKind::Fentry,
    CapturePathKind::Kprobe,
    CapturePathKind::Syscalls,
];

/// Why a capture path was refused: the `reason` label of `mop_capture_path_refused`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// The kernel refused to attach (`EPERM`/`EACCES`): lockdown, or a host that blocks
    /// ftrace function hooks.
    AttachDenied,
    /// The kernel lacks the program or attach type (e.g. no BPF trampolines on this
    /// architecture or configuration).
    NotSupported,
    /// The kernel has no kprobes (`CONFIG_KPROBES` not set).
    NoKprobes,
    /// A kernel function the path hooks does not exist, or its prototype is one this build
    /// does not know.
    FunctionMissing,
    /// The kernel's BTF lacks a struct member or enum value the path reads.
    BtfIncomplete,
    /// The kernel rejected a program at load (the verifier): a defect of this build on this
    /// kernel, not a missing feature.
    LoadFailed,
    /// Not tried: `ebpf.context_propagation` `tcp`/`all` needs the syscall path's hooks.
    ContextPropagation,
}

impl RefusalReason {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AttachDenied => "attach_denied",
            Self::NotSupported => "not_supported",
            Self::NoKprobes => "no_kprobes",
            Self::FunctionMissing => "function_missing",
            Self::BtfIncomplete => "btf_incomplete",
            Self::LoadFailed => "load_failed",
            Self::ContextPropagation => "context_propagation",
        }
    }

    /// True when the kernel (its configuration or policy), not this build, rules the path
    /// out: a forced path is then "unavailable" rather than broken.
    pub const fn is_kernel_limit(self) -> bool {
        !matches!(self, Self::LoadFailed)
    }
}

/// A path that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The path.
    pub path: CapturePathKind,
    /// The short reason.
    pub reason: RefusalReason,
    /// What failed, for the log.
    pub detail: String,
}

/// The outcome of [`choose`].
#[derive(Debug, PartialEq, Eq)]
pub struct Choice {
    /// The path that attached.
    pub path: CapturePathKind,
    /// The better paths that were refused, in the order they were tried.
    pub refused: Vec<Refusal>,
}

/// Tries `candidates` in order with `try_path` (load and attach one path); the first that
/// works wins. `Err` holds every refusal when none works.
pub fn choose(
    candidates: &[CapturePathKind],
    mut try_path: impl FnMut(CapturePathKind) -> Result<(), Refusal>,
) -> Result<Choice, Vec<Refusal>> {
    let mut refused = Vec::new();
    for &path in candidates {
        match try_path(path) {
            Ok(()) => return Ok(Choice { path, refused }),
            Err(r) => refused.push(r),
        }
    }
    Err(refused)
}

/// What the attach functions need to know about the kernel besides the object.
pub struct KernelFacts<'a> {
    /// Our BTF reader (function prototypes).
    pub btf: &'a Btf,
    /// aya's BTF, which fentry/fexit programs are loaded against; `None` when it could not be
    /// read (then fentry is refused with the error).
    pub aya_btf: Result<&'a aya::Btf, String>,
    /// Why the kernel-function paths cannot read `msghdr`/`iov_iter`, if they cannot.
    pub kfunc_btf_error: Option<String>,
    /// Whether the kernel can create kprobes at all.
    pub kprobes: Result<(), String>,
}

/// The programs of a kernel-function path that apply to this kernel: for each, the program
/// and the function; fexit variants whose parameter count differs from the kernel's are left
/// out, and optional functions the kernel lacks too.
pub fn applicable(
    programs: &'static [KfuncProgram],
    param_count: impl Fn(&str) -> Option<u32>,
) -> Result<Vec<&'static KfuncProgram>, Refusal> {
    let mut out = Vec::new();
    let mut unmatched: Vec<(&str, u32)> = Vec::new();
    for p in programs {
        let Some(params) = param_count(p.function) else {
            if p.optional {
                continue;
            }
            return Err(Refusal {
                path: CapturePathKind::Fentry,
                reason: RefusalReason::FunctionMissing,
                detail: format!("kernel function {} not found in BTF", p.function),
            });
        };
        if p.params != 0 && p.params != params {
            unmatched.push((p.function, params));
            continue;
        }
        out.push(p);
    }
    // A function with fexit variants, none of which matched, is a prototype this build does
    // not know.
    for (function, params) in unmatched {
        if !out.iter().any(|p| p.function == function && p.params != 0) {
            let known: Vec<String> = programs
                .iter()
                .filter(|p| p.function == function)
                .filter(|p| p.params != 0)
                .map(|p| p.params.to_string())
                .collect();
            return Err(Refusal {
                path: CapturePathKind::Fentry,
                reason: RefusalReason::FunctionMissing,
                detail: format!(
                    "{function} takes {params} parameters on this kernel; this build knows {}",
                    known.join(" or ")
                ),
            });
        }
    }
    Ok(out)
}

/// Classifies a program load or attach error: a verifier log means the program is at fault;
/// `EPERM`/`EACCES` without one is a policy refusal; any other errno a missing feature.
fn classify(program: &str, what: &str, e: &ProgramError) -> (RefusalReason, String) {
    let (errno, has_log) = match e {
        ProgramError::SyscallError(s) => (s.io_error.raw_os_error(), false),
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => (
            io_error.raw_os_error(),
            !verifier_log.to_string().trim().is_empty(),
        ),
        ProgramError::KProbeError(aya::programs::kprobe::KProbeError::FileError {
            io_error,
            ..
        }) => (io_error.raw_os_error(), false),
        _ => (None, false),
    };
    let reason = match errno {
        _ if has_log => RefusalReason::LoadFailed,
        Some(libc::EPERM | libc::EACCES) => RefusalReason::AttachDenied,
        None if what == "load" => RefusalReason::LoadFailed,
        _ => RefusalReason::NotSupported,
    };
    let detail = match errno {
        Some(n) if reason != RefusalReason::LoadFailed => {
            format!(
                "{what} of {program} returned {}",
                io::Error::from_raw_os_error(n)
            )
        }
        _ => format!("{what} of {program} failed: {e}"),
    };
    (reason, detail)
}

/// Loads and attaches every applicable fentry/fexit program.
pub fn attach_fentry(ebpf: &mut Ebpf, facts: &KernelFacts<'_>) -> Result<usize, Refusal> {
    let path = CapturePathKind::Fentry;
    let refuse = |reason, detail| Refusal {
        path,
        reason,
        detail,
    };
    if let Some(e) = &facts.kfunc_btf_error {
        return Err(refuse(RefusalReason::BtfIncomplete, e.clone()));
    }
    let aya_btf = facts
        .aya_btf
        .as_ref()
        .map_err(|e| refuse(RefusalReason::BtfIncomplete, e.clone()))?;
    let programs = applicable(FENTRY_PROGRAMS, |f| facts.btf.func_param_count(f).ok())
        .map_err(|r| Refusal { path, ..r })?;
    for p in &programs {
        let fail = |what: &str, e: &ProgramError| {
            let (reason, detail) = classify(p.name, what, e);
            refuse(reason, detail)
        };
        match ebpf.program_mut(p.name) {
            Some(Program::FEntry(prog)) => {
                load_fentry(prog, p.function, aya_btf).map_err(|e| fail("load", &e))?;
                prog.attach().map_err(|e| fail("attach", &e))?;
            }
            Some(Program::FExit(prog)) => {
                load_fexit(prog, p.function, aya_btf).map_err(|e| fail("load", &e))?;
                prog.attach().map_err(|e| fail("attach", &e))?;
            }
            _ => {
                return Err(refuse(
                    RefusalReason::LoadFailed,
                    format!("the object has no fentry/fexit program {}", p.name),
                ));
            }
        }
    }
    Ok(programs.len())
}

fn load_fentry(prog: &mut FEntry, function: &str, btf: &aya::Btf) -> Result<(), ProgramError> {
    prog.load(function, btf)
}

fn load_fexit(prog: &mut FExit, function: &str, btf: &aya::Btf) -> Result<(), ProgramError> {
    prog.load(function, btf)
}

/// Loads and attaches every applicable kprobe/kretprobe program.
pub fn attach_kprobe(ebpf: &mut Ebpf, facts: &KernelFacts<'_>) -> Result<usize, Refusal> {
    let path = CapturePathKind::Kprobe;
    let refuse = |reason, detail| Refusal {
        path,
        reason,
        detail,
    };
    if let Err(e) = &facts.kprobes {
        return Err(refuse(RefusalReason::NoKprobes, e.clone()));
    }
    if let Some(e) = &facts.kfunc_btf_error {
        return Err(refuse(RefusalReason::BtfIncomplete, e.clone()));
    }
    let programs = applicable(KPROBE_PROGRAMS, |f| facts.btf.func_param_count(f).ok())
        .map_err(|r| Refusal { path, ..r })?;
    for p in &programs {
        let fail = |what: &str, e: &ProgramError| {
            let (reason, detail) = classify(p.name, what, e);
            refuse(reason, detail)
        };
        let Some(Program::KProbe(prog)) = ebpf.program_mut(p.name) else {
            return Err(refuse(
                RefusalReason::LoadFailed,
                format!("the object has no kprobe program {}", p.name),
            ));
        };
        prog.load().map_err(|e| fail("load", &e))?;
        prog.attach(p.function, 0).map_err(|e| fail("attach", &e))?;
    }
    Ok(programs.len())
}

/// Whether the kernel can create kprobes: through the `kprobe` perf PMU (4.17+) or tracefs's
/// `kprobe_events`; `Err` explains why not.
pub fn kprobes_available(sysfs: &Path, tracefs: &[&Path]) -> Result<(), String> {
    if sysfs.join("bus/event_source/devices/kprobe/type").exists()
        || tracefs.iter().any(|t| t.join("kprobe_events").exists())
    {
        return Ok(());
    }
    Err(format!(
        "no kprobe PMU ({}) and no kprobe_events in tracefs: the kernel was built without \
         CONFIG_KPROBES",
        sysfs.join("bus/event_source/devices/kprobe").display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(path: CapturePathKind, reason: RefusalReason) -> Refusal {
        Refusal {
            path,
            reason,
            detail: format!("{} refused", path.as_str()),
        }
    }

    #[test]
    fn auto_takes_the_first_path_that_attaches() {
        // This machine: fentry attach EPERM, no kprobes, tracepoints fine.
        let mut tried = Vec::new();
        let choice = choose(&AUTO_ORDER, |p| {
            tried.push(p);
            match p {
                CapturePathKind::Fentry => Err(refusal(p, RefusalReason::AttachDenied)),
                CapturePathKind::Kprobe => Err(refusal(p, RefusalReason::NoKprobes)),
                CapturePathKind::Syscalls => Ok(()),
            }
        })
        .unwrap();
        assert_eq!(choice.path, CapturePathKind::Syscalls);
        assert_eq!(tried, AUTO_ORDER);
        let reasons: Vec<_> = choice.refused.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons, ["attach_denied", "no_kprobes"]);
    }

    #[test]
    fn auto_stops_at_fentry_when_it_works() {
        let mut tried = 0;
        let choice = choose(&AUTO_ORDER, |_| {
            tried += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(choice.path, CapturePathKind::Fentry);
        assert!(choice.refused.is_empty());
        assert_eq!(tried, 1);
    }

    #[test]
    fn kprobe_when_trampolines_are_missing() {
        let choice = choose(&AUTO_ORDER, |p| match p {
            CapturePathKind::Fentry => Err(refusal(p, RefusalReason::NotSupported)),
            _ => Ok(()),
        })
        .unwrap();
        assert_eq!(choice.path, CapturePathKind::Kprobe);
        assert_eq!(choice.refused.len(), 1);
    }

    #[test]
    fn a_forced_path_is_tried_alone() {
        let err = choose(&[CapturePathKind::Kprobe], |p| {
            assert_eq!(p, CapturePathKind::Kprobe);
            Err(refusal(p, RefusalReason::NoKprobes))
        })
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].reason.is_kernel_limit());
        assert!(!RefusalReason::LoadFailed.is_kernel_limit());
    }

    /// Parameter counts of 5.10 and of 6.12.
    fn params_5_10(f: &str) -> Option<u32> {
        Some(match f {
            "tcp_sendmsg" => 3,
            "tcp_recvmsg" => 6,
            "inet_csk_accept" | "inet_stream_connect" => 4,
            "tcp_close" => 2,
            "tcp_sendpage" => 5,
            _ => return None,
        })
    }

    fn params_6_12(f: &str) -> Option<u32> {
        match f {
            "tcp_recvmsg" => Some(5),
            "inet_csk_accept" => Some(2),
            "tcp_sendpage" => None,
            other => params_5_10(other),
        }
    }

    fn names(programs: &[&KfuncProgram]) -> Vec<&'static str> {
        programs.iter().map(|p| p.name).collect()
    }

    #[test]
    fn fexit_variants_follow_the_kernel_prototypes() {
        let old = names(&applicable(FENTRY_PROGRAMS, params_5_10).unwrap());
        assert!(old.contains(&"fexit_tcp_recvmsg_p6"));
        assert!(old.contains(&"fexit_inet_csk_accept_p4"));
        assert!(old.contains(&"fexit_tcp_sendpage"));
        assert!(!old.contains(&"fexit_tcp_recvmsg"));
        let new = names(&applicable(FENTRY_PROGRAMS, params_6_12).unwrap());
        assert!(new.contains(&"fexit_tcp_recvmsg"));
        assert!(new.contains(&"fexit_inet_csk_accept"));
        assert!(
            !new.iter()
                .any(|n| n.contains("sendpage") || n.ends_with("_p4"))
        );
        // kprobes do not care about parameter counts; tcp_sendpage is optional.
        assert_eq!(
            applicable(KPROBE_PROGRAMS, params_5_10).unwrap().len(),
            KPROBE_PROGRAMS.len()
        );
        assert_eq!(
            applicable(KPROBE_PROGRAMS, params_6_12).unwrap().len(),
            KPROBE_PROGRAMS.len() - 2
        );
    }

    #[test]
    fn unknown_prototypes_and_missing_functions_are_refused() {
        let seven = |f: &str| match f {
            "tcp_recvmsg" => Some(7),
            other => params_6_12(other),
        };
        let r = applicable(FENTRY_PROGRAMS, seven).unwrap_err();
        assert_eq!(r.reason, RefusalReason::FunctionMissing);
        assert_eq!(
            r.detail,
            "tcp_recvmsg takes 7 parameters on this kernel; this build knows 4 or 5 or 6"
        );
        let no_close = |f: &str| {
            if f == "tcp_close" {
                None
            } else {
                params_6_12(f)
            }
        };
        let r = applicable(KPROBE_PROGRAMS, no_close).unwrap_err();
        assert_eq!(r.detail, "kernel function tcp_close not found in BTF");
    }

    #[test]
    fn kprobes_need_the_pmu_or_tracefs() {
        let dir = std::env::temp_dir().join(format!("mop-kprobes-{}", std::process::id()));
        let sys = dir.join("sys");
        let tracing = dir.join("tracing");
        std::fs::create_dir_all(&tracing).unwrap();
        let err = kprobes_available(&sys, &[&tracing]).unwrap_err();
        assert!(err.contains("CONFIG_KPROBES"), "{err}");
        std::fs::write(tracing.join("kprobe_events"), "").unwrap();
        assert!(kprobes_available(&sys, &[&tracing]).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
