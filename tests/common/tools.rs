//! External tools the tests run (kubectl, systemd-analyze, promtool, ...)
//! and the skip policy for a tool that is missing.
//!
//! `scripts/install-stack.sh` installs every tool a test needs, so on the
//! README's path nothing is ever skipped. nextest has no runtime skip, and a
//! test that returns early passes as if it had checked something. So a test
//! that cannot run its check prints a line starting with `SKIP:` to stderr
//! and FAILS, unless `LOGINGEST_ALLOW_SKIP=1` is set (for a machine where the
//! tool cannot be had): then it prints the same line and returns. The `SKIP:`
//! line is always there to grep for.
//!
//! Used as `common::tools` and, by tests that need no servers, as
//! `#[path = "common/tools.rs"] mod tools;`.

#![allow(dead_code)]

use std::path::PathBuf;

/// Set to `1` to let a test whose tool is missing pass after printing
/// `SKIP:`.
pub const ALLOW_SKIP: &str = "LOGINGEST_ALLOW_SKIP";

/// `name` as installed by `scripts/install-stack.sh`: `$env` when set,
/// else `.stack/bin/NAME`, else `NAME` on `PATH`; `None` when none exists.
pub fn find(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".stack/bin")
        .join(name);
    if local.is_file() {
        return Some(local);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether `LOGINGEST_ALLOW_SKIP=1` is set.
pub fn skips_allowed() -> bool {
    std::env::var(ALLOW_SKIP).is_ok_and(|v| v == "1")
}

/// Reports that the current test cannot check `what` because of `reason`:
/// prints `SKIP: <test>: <what>: <reason>` to stderr, then panics unless
/// [`ALLOW_SKIP`] is `1`. The caller returns after it.
#[track_caller]
pub fn skip(what: &str, reason: &str) {
    let current = std::thread::current();
    let test = current.name().unwrap_or("?");
    eprintln!("SKIP: {test}: {what}: {reason}");
    assert!(
        skips_allowed(),
        "{what} was not checked: {reason}. Run scripts/install-stack.sh, which installs \
         it, or set {ALLOW_SKIP}=1 to let this test pass without the check"
    );
}
