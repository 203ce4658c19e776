//! `scopegate keygen`: a new assertion signing key as PKCS#8 PEM, on stdout or in a new file (mode
//! 0600, never overwritten) with the config lines that use it.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use http::HeaderName;

use super::KeyAlg;
use crate::config::AssertionAlgorithm;

pub(super) fn keygen(out: Option<&Path>, alg: KeyAlg) -> ExitCode {
    let a = match alg {
        KeyAlg::EdDsa => AssertionAlgorithm::EdDSA,
        KeyAlg::Es256 => AssertionAlgorithm::ES256,
    };
    let der = match crate::assertion::generate_pkcs8(a) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let pem = crate::assertion::pem_encode("PRIVATE KEY", &der);
    match out {
        Some(path) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(pem.as_bytes()));
            if let Err(e) = written {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::from(1);
            }
            let cfg = crate::config::AssertionConfig {
                header: HeaderName::from_static("x-scopegate-assertion"),
                algorithm: a,
                key: Some(
                    crate::values::AssertionKey::from_material(a, &der).expect("a key keygen made"),
                ),
                next_key: None,
                kid: None,
                issuer: "scopegate".into(),
                audience: "-".into(),
                ttl: Duration::from_secs(60),
                reuse: Duration::ZERO,
            };
            let kid = crate::assertion::AssertionSigner::new(&cfg)
                .map(|s| s.kid().to_string())
                .unwrap_or_default();
            eprintln!(
                "wrote {} ({} PKCS#8, mode 0600, kid {kid})\nuse it with:\n  [assertion]\n  algorithm = \"{}\"\n  key_file = \"{}\"",
                path.display(),
                a.name(),
                a.name(),
                path.display()
            );
        }
        None => print!("{pem}"),
    }
    ExitCode::SUCCESS
}
