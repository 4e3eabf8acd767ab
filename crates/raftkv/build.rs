//! Records which source the binary was built from, for `raftkv version`,
//! `GET /version` and the `raftkv_build_info` metric.
//!
//! Sets, for `env!` in `src/version.rs`:
//! - `RAFTKV_GIT_REVISION`: `git rev-parse --short HEAD`, or `unknown`
//!   when git or the repository is missing (a source tarball, a crate
//!   package);
//! - `RAFTKV_GIT_DIRTY`: `true` when `git status --porcelain` lists
//!   anything, `false` when it lists nothing, `unknown` without git;
//! - `RAFTKV_BUILD_PROFILE`: cargo's profile (`debug` or `release`);
//! - `RAFTKV_RUSTC`: `rustc --version` of the compiler cargo uses.
//!
//! Reruns when HEAD moves (a commit, a checkout) or the index changes (an
//! add), and when this crate's sources change, which is what makes a build
//! report `dirty` soon after an edit. An edit elsewhere in the workspace
//! that is neither staged nor built into this crate is only seen at the
//! next rerun: the revision is exact, the dirty flag best effort.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()
}

/// Paths git names relative to the current directory; make them absolute
/// so cargo watches the right file.
fn git_path(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(git(&["rev-parse", "--git-path", name])?.trim());
    Some(if p.is_absolute() {
        p
    } else {
        std::env::current_dir().ok()?.join(p)
    })
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src");
    let revision = git(&["rev-parse", "--short", "HEAD"])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let dirty = match &revision {
        Some(_) => match git(&["status", "--porcelain"]) {
            Some(s) if s.trim().is_empty() => "false",
            Some(_) => "true",
            None => "unknown",
        },
        None => "unknown",
    };
    if revision.is_some() {
        // In a worktree HEAD is per worktree and the branch's ref is in the
        // common directory; --git-path resolves both.
        let mut watched = vec![
            "HEAD".to_string(),
            "index".to_string(),
            "packed-refs".to_string(),
        ];
        if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(r.trim().to_string());
        }
        for name in watched {
            if let Some(path) = git_path(&name) {
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!(
        "cargo:rustc-env=RAFTKV_GIT_REVISION={}",
        revision.as_deref().unwrap_or("unknown")
    );
    println!("cargo:rustc-env=RAFTKV_GIT_DIRTY={dirty}");
    println!("cargo:rustc-env=RAFTKV_BUILD_PROFILE={profile}");
    println!("cargo:rustc-env=RAFTKV_RUSTC={rustc_version}");
}
