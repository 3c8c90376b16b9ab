//! A throwaway certificate authority and server certificate, made with the `openssl` command in
//! a temporary directory for one test: `ca.pem` (what clients trust), `server.pem` and
//! `server.key` (for `127.0.0.1` and `localhost`).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
};

use crate::util::{self, TempDir};

/// The files of a fresh CA and a server certificate it signed; removed when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Certs {
    dir: Arc<TempDir>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certs({})", self.dir.path().display())
    }
}

impl Certs {
    /// Generates a CA (RSA 2048, valid 2 days) and a server certificate for
    /// `IP:127.0.0.1, DNS:localhost` signed by it.
    pub fn generate() -> Self {
        let dir = TempDir::new("certs");
        dir.write(
            "server.ext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        );
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=mop test CA",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        ];
        for args in steps {
            let out = Command::new(util::which("openssl"))
                .args(args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("running openssl: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Self { dir: Arc::new(dir) }
    }

    /// The directory holding `ca.pem`, `server.pem` and `server.key`.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// The server's private key (PEM).
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}
