//! Puts the git commit the binaries are built from into `CDR_RELAY_GIT_COMMIT`, which
//! `--version` prints after the version (`smdr-relay 0.1.0 (commit 1a2b3c4d5e6f)`).
//!
//! The commit comes from `CDR_RELAY_GIT_COMMIT` in the build's environment when set (a build
//! from a source tarball can say where it came from), else from `git rev-parse HEAD` in the
//! source tree, else it is `unknown`. The script runs again when the commit changes (HEAD, the
//! branch it points to, or the packed refs), not on every build.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-env-changed=CDR_RELAY_GIT_COMMIT");
    let from_env = std::env::var("CDR_RELAY_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let commit = from_env
        .or_else(from_git)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=CDR_RELAY_GIT_COMMIT={commit}");
}

/// The short hash of HEAD, watching the files that change with it.
fn from_git() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD names the branch; the branch's ref (or packed-refs) names the commit.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = Path::new(&path);
            // Relative paths are relative to the current directory (the package's).
            if path.exists() {
                println!("cargo::rerun-if-changed={}", path.display());
            }
        }
    }
    Some(commit)
}
