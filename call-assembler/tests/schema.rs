//! The committed call schema (`schema/cdr-relay.call.v1.json`) is the one the types generate.
//!
//! After changing `Call` (or anything it holds), regenerate the file and commit it:
//! `UPDATE_SCHEMA=1 cargo test -p call-assembler --test schema`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../schema")
        .join(format!("{}.json", call_assembler::CALL_SCHEMA_NAME))
}

/// The schema as the file holds it: pretty JSON and a final newline.
fn generated_text() -> String {
    let mut text = serde_json::to_string_pretty(&call_assembler::call_schema()).unwrap();
    text.push('\n');
    text
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let path = committed_path();
    let want = generated_text();
    if std::env::var_os("UPDATE_SCHEMA").is_some_and(|v| v != "0") {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is not the schema the types generate: run \
         `UPDATE_SCHEMA=1 cargo test -p call-assembler --test schema` and commit the file \
         (and mind the versioning rule in call_assembler::call_schema's module docs)",
        path.display()
    );
}
