//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same invariants the
//! cargo-fuzz targets check, on stable Rust, so every past finding stays fixed.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} broke an invariant", path.display());
        n += 1;
    }
    assert!(n >= 5, "{target}: corpus has only {n} inputs");
}

#[test]
fn path_routes_corpus() {
    replay("path_routes", scopegate::properties::path_and_routes);
}

#[test]
fn header_hygiene_corpus() {
    replay("header_hygiene", scopegate::properties::header_hygiene);
}

#[test]
fn jwt_preparse_corpus() {
    replay("jwt_preparse", scopegate::properties::jwt_preparse);
}

#[test]
fn config_parse_corpus() {
    replay("config_parse", scopegate::properties::config_text);
}

#[test]
fn ws_connect_corpus() {
    replay("ws_connect", scopegate::properties::ws_connect_frame);
}

/// The invariants are not vacuous: a rewritten path, a surviving managed header and an unsigned token
/// are each caught.
#[test]
fn invariants_reject_what_they_should() {
    // A dot segment is refused by canonicalisation, so the invariant never sees it; a path that is
    // accepted keeps its bytes.
    assert!(scopegate::policy::routes::canonical_path("/v1/../admin").is_err());
    assert_eq!(
        scopegate::policy::routes::canonical_path("/v1/responses"),
        Ok("/v1/responses")
    );
    let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.";
    assert!(scopegate::identity::jwt::parse_compact(unsigned, 8192).is_err());
    let ok = std::panic::catch_unwind(|| {
        scopegate::properties::header_hygiene(b"x_forwarded_user: m\nconnection: foo\nfoo: 1\n")
    });
    assert!(ok.is_ok());
}

#[test]
fn upstream_response_corpus() {
    replay(
        "upstream_response",
        scopegate::properties::upstream_response,
    );
}
