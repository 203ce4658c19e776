//! Every scopegate config shipped under `deploy/` (and the one embedded in the Kubernetes ConfigMap)
//! passes `scopegate check`, with throwaway keys standing in for the secret paths it names.

use std::path::{Path, PathBuf};
use std::process::Command;

fn tomls(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            tomls(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

/// Points every key/certificate path at `key` (an Ed25519 PEM generated for the test).
fn with_throwaway_secrets(text: &str, key: &Path) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let is_secret_path = ["key_file", "next_key_file"].iter().any(|k| {
                trimmed.starts_with(&format!("{k} ")) || trimmed.starts_with(&format!("{k}="))
            });
            if is_secret_path {
                let name = trimmed.split('=').next().unwrap().trim();
                format!("{name} = \"{}\"", key.display())
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_deploy_config_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let der =
        scopegate::assertion::generate_pkcs8(scopegate::config::AssertionAlgorithm::EdDSA).unwrap();
    std::fs::write(&key, scopegate::assertion::pem_encode("PRIVATE KEY", &der)).unwrap();

    let mut files = Vec::new();
    tomls(&root.join("deploy"), &mut files);
    let mut configs: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            (
                f.strip_prefix(root).unwrap().display().to_string(),
                std::fs::read_to_string(f).unwrap(),
            )
        })
        .collect();
    // The Kubernetes ConfigMap carries its config as an indented block scalar.
    let k8s =
        std::fs::read_to_string(root.join("deploy/kubernetes/openclaw-scopegate.yaml")).unwrap();
    let embedded: String = k8s
        .split("scopegate.toml: |\n")
        .nth(1)
        .expect("the ConfigMap holds scopegate.toml")
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    configs.push(("kubernetes ConfigMap scopegate.toml".into(), embedded));
    assert!(
        configs.len() >= 6,
        "expected the deploy configs, found {}",
        configs.len()
    );

    for (name, text) in configs {
        let staged = dir.path().join("staged.toml");
        std::fs::write(&staged, with_throwaway_secrets(&text, &key)).unwrap();
        let (ok, output) = check(&staged);
        assert!(ok, "{name} fails `scopegate check`:\n{output}");
        assert!(
            output.contains("route"),
            "{name}: check prints the effective policy"
        );
    }

    // And the check is not vacuous: a config with an unknown key fails.
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n").unwrap();
    let (ok, output) = check(&broken);
    assert!(!ok);
    assert!(output.contains("broken.toml:3"), "{output}");
}
