//! The deployment recipes' scopegate configs are valid, and the gateway configs beside them agree.
//!
//! Every `*.toml` under `deploy/` and `examples/`, and every `*.toml` block in a YAML file under
//! `deploy/` (the Kubernetes ConfigMap), must pass `scopegate check`. The configs name their secrets
//! where a deployment keeps them (`/run/secrets/…`, `/run/credentials/…`); this test writes each config
//! to a temporary directory with those paths replaced by stand-ins it generates (assertion keys with
//! `scopegate keygen`, IdP public keys as PEM or JWK, HMAC secrets, a self-signed certificate) and sets
//! every `*_env` variable the config names. Line numbers are unchanged, so a failure points at the
//! original line.
//!
//! Every `openclaw*.json5` next to a `scopegate*.toml` (and every `*.json5` block next to a `*.toml`
//! block in one YAML file) must be exactly what `scopegate openclaw-config` prints for it.
//!
//! `scripts/validate-deploy.sh` does the same with openssl and python, plus the proxies, units,
//! Dockerfile and YAML that need external tools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair;
use base64::Engine;
use serde_json::{json, Value};

const SCOPEGATE: &str = env!("CARGO_BIN_EXE_scopegate");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Files under `dir` (recursively, sorted) whose name satisfies `wanted`.
fn files_under(dir: &Path, wanted: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "node_modules" | ".git") {
                out.extend(files_under(&path, wanted));
            }
        } else if wanted(&name) {
            out.push(path);
        }
    }
    out
}

/// The `key: |` block scalars of a YAML file whose key ends with `suffix`, dedented: how a
/// ConfigMap carries files. (A small reader for the block style these recipes use, not a YAML parser.)
fn yaml_blocks(yaml: &str, suffix: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        i += 1;
        let Some((key, rest)) = trimmed.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches('"').trim_matches('\'');
        if !key.ends_with(suffix) || !matches!(rest.trim(), "|" | "|-" | "|+") {
            continue;
        }
        let key_indent = indent_of(line);
        let mut body: Vec<&str> = Vec::new();
        while i < lines.len() && (lines[i].trim().is_empty() || indent_of(lines[i]) > key_indent) {
            body.push(lines[i]);
            i += 1;
        }
        let block_indent = body
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| indent_of(l))
            .min()
            .unwrap_or(0);
        let text: Vec<&str> = body
            .iter()
            .map(|l| l.get(block_indent..).unwrap_or(""))
            .collect();
        out.push((
            key.to_string(),
            text.join("\n").trim_end().to_string() + "\n",
        ));
    }
    out
}

/// A config to check: where it came from (for messages) and its text.
struct Source {
    label: String,
    text: String,
}

fn scopegate_configs() -> Vec<Source> {
    let is_toml = |n: &str| n.ends_with(".toml");
    let mut out: Vec<Source> = [root().join("deploy"), root().join("examples")]
        .iter()
        .flat_map(|d| files_under(d, &is_toml))
        .map(|p| Source {
            label: relative(&p),
            text: std::fs::read_to_string(&p).unwrap(),
        })
        .collect();
    for yaml in files_under(&root().join("deploy"), &|n| {
        n.ends_with(".yaml") || n.ends_with(".yml")
    }) {
        let text = std::fs::read_to_string(&yaml).unwrap();
        for (key, block) in yaml_blocks(&text, ".toml") {
            out.push(Source {
                label: format!("{} ({key})", relative(&yaml)),
                text: block,
            });
        }
    }
    out
}

/// (gateway JSON5, its scopegate config) pairs.
fn gateway_pairs() -> Vec<(Source, Source)> {
    let mut out = Vec::new();
    let is_gateway = |n: &str| n.starts_with("openclaw") && n.ends_with(".json5");
    for json5 in files_under(&root().join("deploy"), &is_gateway) {
        let dir = json5.parent().unwrap();
        let tomls = files_under(dir, &|n| n.starts_with("scopegate") && n.ends_with(".toml"));
        let tomls: Vec<PathBuf> = tomls
            .into_iter()
            .filter(|t| t.parent() == Some(dir))
            .collect();
        assert!(
            !tomls.is_empty(),
            "{}: no scopegate*.toml beside it",
            relative(&json5)
        );
        for toml in tomls {
            out.push((
                Source {
                    label: relative(&json5),
                    text: std::fs::read_to_string(&json5).unwrap(),
                },
                Source {
                    label: relative(&toml),
                    text: std::fs::read_to_string(&toml).unwrap(),
                },
            ));
        }
    }
    for yaml in files_under(&root().join("deploy"), &|n| {
        n.ends_with(".yaml") || n.ends_with(".yml")
    }) {
        let text = std::fs::read_to_string(&yaml).unwrap();
        for (jkey, json5) in yaml_blocks(&text, ".json5") {
            for (tkey, toml) in yaml_blocks(&text, ".toml") {
                out.push((
                    Source {
                        label: format!("{} ({jkey})", relative(&yaml)),
                        text: json5.clone(),
                    },
                    Source {
                        label: format!("{} ({tkey})", relative(&yaml)),
                        text: toml,
                    },
                ));
            }
        }
    }
    out
}

// ---- stand-ins for secrets -----------------------------------------------------------------------------

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random_text(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    b64url(&bytes)
}

/// Generated files, each made once per test and reused by every config that needs that kind.
struct StandIns {
    dir: tempfile::TempDir,
    made: BTreeMap<String, PathBuf>,
}

impl StandIns {
    fn new() -> StandIns {
        StandIns {
            dir: tempfile::tempdir().unwrap(),
            made: BTreeMap::new(),
        }
    }

    fn file(&mut self, name: &str, make: impl FnOnce(&Path)) -> PathBuf {
        if let Some(p) = self.made.get(name) {
            return p.clone();
        }
        let path = self.dir.path().join(name);
        make(&path);
        assert!(path.exists(), "stand-in {name} was not written");
        self.made.insert(name.to_string(), path.clone());
        path
    }

    /// scopegate's own signing key in the form `[assertion] algorithm = alg` reads.
    fn assertion_key(&mut self, alg: &str) -> Result<PathBuf, String> {
        let keygen = match alg {
            "EdDSA" => "ed-dsa",
            "ES256" => "es256",
            "HS256" => {
                return Ok(self.file("assertion-hs256.secret", |p| {
                    std::fs::write(p, random_text(48)).unwrap()
                }))
            }
            other => {
                return Err(format!(
                    "[assertion] algorithm {other:?} is unknown to this test"
                ))
            }
        };
        Ok(self.file(&format!("assertion-{keygen}.pem"), |p| {
            let out = Command::new(SCOPEGATE)
                .args(["keygen", "--algorithm", keygen, "--out"])
                .arg(p)
                .output()
                .unwrap();
            assert!(out.status.success(), "scopegate keygen: {}", text(&out));
        }))
    }

    /// An HMAC secret long enough for HS512.
    fn hmac_secret(&mut self) -> PathBuf {
        self.file("jwt-hmac.secret", |p| {
            std::fs::write(p, random_text(64)).unwrap()
        })
    }

    /// A fresh IdP public key for a JWT algorithm: (SPKI DER, JWK).
    fn idp_key(alg: &str) -> Result<(Vec<u8>, Value), String> {
        use aws_lc_rs::signature as sig;
        let (spki, mut jwk) = match alg {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
                let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|e| e.to_string())?;
                let parts = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(kp.public_key());
                (
                    kp.public_key().as_der().unwrap().as_ref().to_vec(),
                    json!({"kty": "RSA", "n": b64url(&parts.n), "e": b64url(&parts.e)}),
                )
            }
            "ES256" | "ES384" => {
                let (curve, signing, size) = if alg == "ES256" {
                    ("P-256", &sig::ECDSA_P256_SHA256_FIXED_SIGNING, 32)
                } else {
                    ("P-384", &sig::ECDSA_P384_SHA384_FIXED_SIGNING, 48)
                };
                let kp = sig::EcdsaKeyPair::generate(signing).map_err(|e| e.to_string())?;
                let point = kp.public_key().as_ref().to_vec(); // 0x04 || x || y
                (
                    kp.public_key().as_der().unwrap().as_ref().to_vec(),
                    json!({"kty": "EC", "crv": curve,
                           "x": b64url(&point[1..1 + size]), "y": b64url(&point[1 + size..])}),
                )
            }
            "EdDSA" => {
                let kp = sig::Ed25519KeyPair::generate().map_err(|e| e.to_string())?;
                (
                    kp.public_key().as_der().unwrap().as_ref().to_vec(),
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(kp.public_key().as_ref())}),
                )
            }
            other => return Err(format!("JWT algorithm {other:?} is unknown to this test")),
        };
        let obj = jwk.as_object_mut().unwrap();
        obj.insert("alg".into(), alg.into());
        obj.insert("use".into(), "sig".into());
        obj.insert(
            "kid".into(),
            format!("stand-in-{}", alg.to_lowercase()).into(),
        );
        Ok((spki, jwk))
    }

    fn idp_public_pem(&mut self, alg: &str) -> Result<PathBuf, String> {
        let name = format!("idp-{alg}.pub.pem");
        if let Some(p) = self.made.get(&name) {
            return Ok(p.clone());
        }
        let (spki, _) = StandIns::idp_key(alg)?;
        Ok(self.file(&name, |p| {
            std::fs::write(p, pem("PUBLIC KEY", &spki)).unwrap()
        }))
    }

    /// A JWKS holding one key (what `jwk_file` accepts besides a bare JWK).
    fn idp_jwks(&mut self, alg: &str) -> Result<PathBuf, String> {
        let name = format!("idp-{alg}.jwks.json");
        if let Some(p) = self.made.get(&name) {
            return Ok(p.clone());
        }
        let (_, jwk) = StandIns::idp_key(alg)?;
        Ok(self.file(&name, |p| {
            std::fs::write(p, json!({ "keys": [jwk] }).to_string()).unwrap()
        }))
    }

    /// A self-signed certificate and its key, for `[server.tls]` and `[upstream] ca_file`.
    fn tls(&mut self) -> (PathBuf, PathBuf) {
        if let (Some(cert), Some(key)) =
            (self.made.get("tls-cert.pem"), self.made.get("tls-key.pem"))
        {
            return (cert.clone(), key.clone());
        }
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let cert = self.file("tls-cert.pem", |p| {
            std::fs::write(p, ck.cert.pem()).unwrap()
        });
        let key = self.file("tls-key.pem", |p| {
            std::fs::write(p, ck.signing_key.serialize_pem()).unwrap()
        });
        (cert, key)
    }
}

/// What a config needs in place of its secrets: quoted path literal → stand-in, and variables to set.
#[derive(Default)]
struct Plan {
    files: BTreeMap<String, PathBuf>,
    env: BTreeMap<String, String>,
}

impl Plan {
    fn file(&mut self, literal: Option<&toml::Value>, stand_in: PathBuf) -> Result<(), String> {
        let Some(literal) = literal.and_then(toml::Value::as_str) else {
            return Ok(());
        };
        match self.files.get(literal) {
            Some(existing) if *existing != stand_in => Err(format!(
                "{literal:?} is used for two different kinds of secret"
            )),
            _ => {
                self.files.insert(literal.to_string(), stand_in);
                Ok(())
            }
        }
    }
}

fn plan(doc: &toml::Table, stand: &mut StandIns) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let table = |v: Option<&toml::Value>| v.and_then(toml::Value::as_table).cloned();

    let server = table(doc.get("server")).unwrap_or_default();
    if let Some(tls) = table(server.get("tls")) {
        let (cert, key) = stand.tls();
        plan.file(tls.get("cert_file"), cert)?;
        plan.file(tls.get("key_file"), key)?;
    }
    let upstream = table(doc.get("upstream")).unwrap_or_default();
    if upstream.contains_key("ca_file") {
        let (cert, _) = stand.tls();
        plan.file(upstream.get("ca_file"), cert)?;
    }

    let jwt = table(doc.get("jwt")).unwrap_or_default();
    let keys = jwt.get("keys").and_then(toml::Value::as_array).cloned();
    for key in keys.unwrap_or_default() {
        let key = key.as_table().cloned().unwrap_or_default();
        let alg = key
            .get("algorithm")
            .and_then(toml::Value::as_str)
            .unwrap_or("");
        if key.contains_key("secret_file") {
            let secret = stand.hmac_secret();
            plan.file(key.get("secret_file"), secret)?;
        }
        if let Some(var) = key.get("secret_env").and_then(toml::Value::as_str) {
            let secret = std::fs::read_to_string(stand.hmac_secret()).unwrap();
            plan.env.insert(var.to_string(), secret);
        }
        if key.contains_key("public_key_file") {
            let pem = stand.idp_public_pem(alg)?;
            plan.file(key.get("public_key_file"), pem)?;
        }
        if key.contains_key("jwk_file") {
            let jwks = stand.idp_jwks(alg)?;
            plan.file(key.get("jwk_file"), jwks)?;
        }
    }

    let assertion = table(doc.get("assertion")).unwrap_or_default();
    let alg = assertion
        .get("algorithm")
        .and_then(toml::Value::as_str)
        .unwrap_or("EdDSA");
    for name in ["key_file", "next_key_file"] {
        if assertion.contains_key(name) {
            let key = stand.assertion_key(alg)?;
            plan.file(assertion.get(name), key)?;
        }
    }
    for name in ["key_env", "next_key_env"] {
        if let Some(var) = assertion.get(name).and_then(toml::Value::as_str) {
            let key = std::fs::read_to_string(stand.assertion_key(alg)?).unwrap();
            plan.env.insert(var.to_string(), key);
        }
    }

    // [oidc]: the client secret is any text; cookie keys are base64 32-byte AEAD keys.
    let oidc = table(doc.get("oidc")).unwrap_or_default();
    if oidc.contains_key("client_secret_file") {
        let secret = stand.hmac_secret();
        plan.file(oidc.get("client_secret_file"), secret)?;
    }
    let cookie_keys = {
        use base64::Engine;
        let key = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        format!("{},{}", key(0x11), key(0x22))
    };
    if oidc.contains_key("cookie_keys_file") {
        let keys = cookie_keys.clone();
        let file = stand.file("cookie-keys", move |p| std::fs::write(p, keys).unwrap());
        plan.file(oidc.get("cookie_keys_file"), file)?;
    }
    if let Some(var) = oidc.get("cookie_keys_env").and_then(toml::Value::as_str) {
        plan.env.insert(var.to_string(), cookie_keys);
    }

    // Anything else naming a variable gets a dummy value; a file this test cannot fake is an error
    // that says so, rather than a silent pass.
    let mut unknown = Vec::new();
    walk(
        &toml::Value::Table(doc.clone()),
        "",
        &mut |trail, key, value| {
            if key.ends_with("_env") && !plan.env.contains_key(value) {
                plan.env.insert(value.to_string(), random_text(64));
            } else if key.ends_with("_file") && !plan.files.contains_key(value) {
                unknown.push(format!("{trail} = {value:?}"));
            }
        },
    );
    if !unknown.is_empty() {
        return Err(format!(
            "this test does not know what these files hold; teach it (and scripts/validate-deploy.sh): {}",
            unknown.join(", ")
        ));
    }
    Ok(plan)
}

/// Calls `f(trail, key, value)` for every string value in the document.
fn walk(value: &toml::Value, trail: &str, f: &mut dyn FnMut(&str, &str, &str)) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let here = if trail.is_empty() {
                    k.clone()
                } else {
                    format!("{trail}.{k}")
                };
                match v.as_str() {
                    Some(s) => f(&here, k, s),
                    None => walk(v, &here, f),
                }
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, &format!("{trail}[{i}]"), f);
            }
        }
        _ => {}
    }
}

/// Writes `source` to `dst` with its secrets replaced; returns the variables to set.
fn stage(
    source: &Source,
    dst: &Path,
    stand: &mut StandIns,
) -> Result<BTreeMap<String, String>, String> {
    let doc: toml::Table =
        toml::from_str(&source.text).map_err(|e| format!("{}: not TOML: {e}", source.label))?;
    let plan = plan(&doc, stand).map_err(|e| format!("{}: {e}", source.label))?;
    let mut text = source.text.clone();
    for (literal, stand_in) in &plan.files {
        let replacement = format!("\"{}\"", stand_in.display());
        let before = text.clone();
        for quote in ['"', '\''] {
            text = text.replace(&format!("{quote}{literal}{quote}"), &replacement);
        }
        if text == before {
            return Err(format!(
                "{}: {literal:?} is not written as a plain string",
                source.label
            ));
        }
    }
    std::fs::write(dst, text).unwrap();
    Ok(plan.env)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn scopegate(args: &[&str], config: &Path, env: &BTreeMap<String, String>) -> Output {
    Command::new(SCOPEGATE)
        .args(args)
        .arg("--config")
        .arg(config)
        .envs(env)
        .output()
        .unwrap()
}

/// JSON5 as these recipes write it: `//` and `/* */` comments, trailing commas, bare keys,
/// single-quoted strings.
fn json5(text: &str) -> Result<Value, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '"' || c == '\'' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    match chars.get(i + 1) {
                        Some('\'') => out.push('\''),
                        Some(e) => {
                            out.push('\\');
                            out.push(*e);
                        }
                        None => return Err("unterminated string".into()),
                    }
                    i += 2;
                    continue;
                }
                if chars[i] == '"' {
                    out.push('\\');
                }
                out.push(chars[i]);
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated string".into());
            }
            out.push('"');
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let rest: String = chars[i + 2..].iter().collect();
            let end = rest.find("*/").ok_or("unterminated comment")?;
            i += 2 + rest[..end].chars().count() + 2;
        } else if c == ',' {
            // A trailing comma: only whitespace and comments before the closing bracket.
            let mut j = i + 1;
            loop {
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                if chars.get(j) == Some(&'/') && chars.get(j + 1) == Some(&'/') {
                    while j < chars.len() && chars[j] != '\n' {
                        j += 1;
                    }
                } else {
                    break;
                }
            }
            if !matches!(chars.get(j), Some('}') | Some(']')) {
                out.push(',');
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_$".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let rest: String = chars[i..].iter().collect();
            let is_key = !matches!(word.as_str(), "true" | "false" | "null")
                && rest.trim_start().starts_with(':');
            if is_key {
                out.push_str(&format!("\"{word}\""));
            } else {
                out.push_str(&word);
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    serde_json::from_str(&out).map_err(|e| e.to_string())
}

#[test]
fn json5_reader_handles_what_the_recipes_use() {
    let v =
        json5("// c\n{ a: 1, 'b': [\"x//y\", 'it\\'s',], /* c */ \"c\": {d: true,}, }").unwrap();
    assert_eq!(v, json!({"a": 1, "b": ["x//y", "it's"], "c": {"d": true}}));
    assert!(json5("{ a: 1").is_err());
}

#[test]
fn every_deploy_config_passes_check() {
    let configs = scopegate_configs();
    assert!(
        configs.iter().any(|c| c.label.starts_with("deploy/")),
        "no scopegate config found under deploy/"
    );
    let mut stand = StandIns::new();
    let staging = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (n, config) in configs.iter().enumerate() {
        let staged = staging.path().join(format!("config-{n}.toml"));
        let env = match stage(config, &staged, &mut stand) {
            Ok(env) => env,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let out = scopegate(&["check"], &staged, &env);
        let printed = text(&out).replace(&staged.display().to_string(), &config.label);
        if !out.status.success() {
            failures.push(format!(
                "{} fails `scopegate check`:\n{printed}",
                config.label
            ));
        } else if !printed.contains("routes") {
            failures.push(format!(
                "{}: `scopegate check` printed no policy:\n{printed}",
                config.label
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // The harness would notice a broken config: an unknown key fails, at its line.
    let broken = Source {
        label: "broken.toml".into(),
        text: "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n".into(),
    };
    let staged = staging.path().join("broken.toml");
    let env = stage(&broken, &staged, &mut stand).unwrap();
    let out = scopegate(&["check"], &staged, &env);
    assert!(!out.status.success());
    assert!(text(&out).contains("broken.toml:3"), "{}", text(&out));
}

#[test]
fn every_gateway_config_is_what_openclaw_config_prints() {
    let pairs = gateway_pairs();
    assert!(!pairs.is_empty(), "no openclaw*.json5 found under deploy/");
    let mut stand = StandIns::new();
    let staging = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (n, (gateway, config)) in pairs.iter().enumerate() {
        let have = match json5(&gateway.text) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{}: not JSON5: {e}", gateway.label));
                continue;
            }
        };
        let staged = staging.path().join(format!("pair-{n}.toml"));
        let env = match stage(config, &staged, &mut stand) {
            Ok(env) => env,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let out = scopegate(&["openclaw-config"], &staged, &env);
        if !out.status.success() {
            failures.push(format!(
                "{}: `scopegate openclaw-config` failed:\n{}",
                config.label,
                text(&out)
            ));
            continue;
        }
        let want = json5(&String::from_utf8_lossy(&out.stdout)).unwrap();
        if have != want {
            failures.push(format!(
                "{} differs from `scopegate openclaw-config --config {}`, which prints:\n{}",
                gateway.label,
                config.label,
                serde_json::to_string_pretty(&want).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
