//! Pinned npm packages for the end-to-end suites (the real gateway, the OpenID provider, the browser
//! driver): installed once into the e2e cache, checked by version on every run, with concurrent test
//! binaries serialised on a file lock. Fails loudly: these suites are never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// `SCOPEGATE_E2E_CACHE` (CI sets it), else `~/.cache/scopegate-e2e`, joined with `sub` (empty: the
/// cache itself).
pub fn cache_dir(sub: &str) -> PathBuf {
    let base = std::env::var_os("SCOPEGATE_E2E_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(".cache/scopegate-e2e")
        });
    if sub.is_empty() {
        base
    } else {
        base.join(sub)
    }
}

fn installed_version(dir: &Path, package: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("node_modules").join(package).join("package.json"))
        .ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(str::to_string)
}

/// Makes `dir/node_modules` hold exactly these `(package, version)` pins, running `npm install` (as
/// the private project `project`, install scripts off) only when one is missing or at another
/// version. Holds the directory's lock throughout, so a second test binary waits instead of racing.
pub fn ensure_packages(dir: &Path, project: &str, pins: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let lock = std::fs::File::create(dir.join(".install.lock")).unwrap();
    lock.lock().unwrap();
    if pins
        .iter()
        .all(|(p, v)| installed_version(dir, p).as_deref() == Some(*v))
    {
        return;
    }
    eprintln!(
        "installing {pins:?} into {} (first run only)",
        dir.display()
    );
    std::fs::write(
        dir.join("package.json"),
        format!("{{\"name\":\"{project}\",\"private\":true}}\n"),
    )
    .unwrap();
    let out = Command::new("npm")
        .current_dir(dir)
        .args([
            "install",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .args(pins.iter().map(|(p, v)| format!("{p}@{v}")))
        .output()
        .unwrap_or_else(|e| panic!("cannot run npm (is Node/npm installed?): {e}"));
    assert!(
        out.status.success(),
        "npm install failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (p, v) in pins {
        assert_eq!(
            installed_version(dir, p).as_deref(),
            Some(*v),
            "npm installed another version of {p}"
        );
    }
}
