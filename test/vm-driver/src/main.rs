//! `mop-vm`: the end-to-end HTTP/1 test that `cargo xtask vm-test` runs inside each kernel VM
//! (and that runs as root on any host).
//!
//! ```text
//! mop-vm serve PORT [--dup]     HTTP/1.1 server on 127.0.0.1:PORT (keep-alive)
//! mop-vm client PORT N [--dup]  N keep-alive requests of the plan; checks every response
//! mop-vm run [--agent PATH] [--path auto|fentry|kprobe|tracepoint] [--port P]
//!            [--requests N] [--ready-timeout SECONDS] [--dup-fds] [--verbose]
//! ```
//!
//! `--verbose` shows the agent's log on a pass too. `--dup` writes through a `dup` of the socket's file descriptor (Rust's
//! `TcpStream::try_clone`) and reads through the original.
//!
//! `run` exits 0 on pass, 1 on fail, 2 when the agent does not implement the path yet and 3
//! when this kernel cannot run it; it prints one line starting with `mop-vm: path=`.

mod cpu;
mod http;
mod run;
mod spans;

use std::{path::PathBuf, process::ExitCode, time::Duration};

const USAGE: &str = "usage: mop-vm serve PORT [--dup] | client PORT N [--dup] | run \
                     [--agent PATH] [--path auto|fentry|kprobe|tracepoint] [--port PORT] \
                     [--requests N] [--ready-timeout SECONDS] [--dup-fds] [--verbose]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mop-vm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<ExitCode, String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["serve", port, dup @ ..] if dup.is_empty() || dup == ["--dup"] => {
            http::serve(number(port)?, !dup.is_empty()).map(|()| ExitCode::SUCCESS)
        }
        ["client", port, count, dup @ ..] if dup.is_empty() || dup == ["--dup"] => {
            http::client(number(port)?, number(count)?, !dup.is_empty()).map(|()| ExitCode::SUCCESS)
        }
        ["run", rest @ ..] => {
            let opts = run_options(rest)?;
            Ok(ExitCode::from(run::run(&opts) as u8))
        }
        _ => Err(USAGE.to_owned()),
    }
}

fn run_options(mut rest: &[&str]) -> Result<run::Options, String> {
    let mut opts = run::Options {
        agent: PathBuf::from("mop-agent"),
        path: "tracepoint".to_owned(),
        port: 18080,
        requests: 12,
        ready_timeout: Duration::from_mins(2),
        dup_fds: false,
        verbose: false,
    };
    loop {
        if let [flag @ ("--dup-fds" | "--verbose"), tail @ ..] = rest {
            if *flag == "--verbose" {
                opts.verbose = true;
            } else {
                opts.dup_fds = true;
            }
            rest = tail;
            continue;
        }
        let [flag, value, tail @ ..] = rest else {
            break;
        };
        match *flag {
            "--agent" => opts.agent = PathBuf::from(value),
            "--path" => (*value).clone_into(&mut opts.path),
            "--port" => opts.port = number(value)?,
            "--requests" => opts.requests = number(value)?,
            "--ready-timeout" => opts.ready_timeout = Duration::from_secs(number(value)?),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
        rest = tail;
    }
    if rest.is_empty() {
        Ok(opts)
    } else {
        Err(format!("option {} needs a value\n{USAGE}", rest[0]))
    }
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}
