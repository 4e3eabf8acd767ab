//! Finding (and if needed building) the `raftkv` binary the nodes run.
//!
//! The harness runs from a cargo target directory (`cargo run -p
//! raftkv-chaos`, or this crate's integration test), but cargo builds only
//! the package it was asked for, and an integration test of this crate
//! cannot name another package's binary (`CARGO_BIN_EXE_*` is per package).
//! So the harness asks cargo itself: `cargo build -p raftkv` with the same
//! profile and target directory as the running executable. On an up-to-date
//! tree that is a no-op taking a second; on a fresh clone it builds the
//! server once; it never runs a stale binary after a source change.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why no binary could be found.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// An explicit `--raftkv-bin` does not exist.
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// The running executable is not in a cargo target directory.
    #[error("cannot tell the target directory from {0}; pass --raftkv-bin")]
    NoTargetDir(PathBuf),
    /// `cargo build -p raftkv` failed.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Build {
        command: String,
        status: String,
        stderr: String,
    },
}

/// The workspace root this crate was compiled in.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `(target dir, profile dir name)` of the running executable:
/// `target/release/raftkv-chaos` or `target/debug/deps/<test>-<hash>`.
fn target_of(exe: &Path) -> Option<(PathBuf, String)> {
    let mut dir = exe.parent()?;
    if dir.file_name()? == "deps" || dir.file_name()? == "examples" {
        dir = dir.parent()?;
    }
    let profile = dir.file_name()?.to_str()?.to_string();
    Some((dir.parent()?.to_path_buf(), profile))
}

/// The cargo arguments selecting `profile` (the directory name: `debug` is
/// the `dev` profile).
fn profile_args(profile: &str) -> Vec<String> {
    match profile {
        "debug" => vec![],
        "release" => vec!["--release".into()],
        other => vec!["--profile".into(), other.into()],
    }
}

/// `explicit` if given (it must exist); otherwise builds `raftkv` with
/// cargo (same profile and target directory as the running executable)
/// and returns `<target>/<profile>/raftkv`. `say` receives one line before
/// cargo runs.
pub fn raftkv_binary(
    explicit: Option<PathBuf>,
    say: impl Fn(&str),
) -> Result<PathBuf, LocateError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(LocateError::Missing(p))
        };
    }
    let exe = std::env::current_exe().map_err(|_| LocateError::NoTargetDir(PathBuf::new()))?;
    let (target, profile) = target_of(&exe).ok_or_else(|| LocateError::NoTargetDir(exe.clone()))?;
    let bin = target.join(&profile).join("raftkv");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = vec!["build".to_string(), "-p".into(), "raftkv".into()];
    args.extend(profile_args(&profile));
    let command = format!("cargo {}", args.join(" "));
    say(&format!(
        "building the server if needed: {command} (in {})",
        workspace_root().display()
    ));
    let out = Command::new(&cargo)
        .args(&args)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() && bin.is_file() => Ok(bin),
        Ok(o) => Err(LocateError::Build {
            command,
            status: o.status.to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }),
        // No cargo (an installed harness): use what is there, if anything.
        Err(_) if bin.is_file() => Ok(bin),
        Err(e) => Err(LocateError::Build {
            command,
            status: "not started".into(),
            stderr: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_and_profile_come_from_the_executable_path() {
        assert_eq!(
            target_of(Path::new("/w/target/release/raftkv-chaos")),
            Some((PathBuf::from("/w/target"), "release".to_string()))
        );
        assert_eq!(
            target_of(Path::new("/w/target/debug/deps/mixed-0123abcd")),
            Some((PathBuf::from("/w/target"), "debug".to_string()))
        );
        assert_eq!(profile_args("debug"), Vec::<String>::new());
        assert_eq!(profile_args("release"), vec!["--release"]);
        assert_eq!(profile_args("bench"), vec!["--profile", "bench"]);
        assert!(workspace_root().join("Cargo.lock").is_file());
    }
}
