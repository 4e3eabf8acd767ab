//! What this binary is: crate version, git revision, build profile and
//! compiler, recorded at build time by `build.rs`. Shown by `raftkv
//! version`, `GET /version` and the `raftkv_build_info` metric.

use serde::{Deserialize, Serialize};

/// The build of a `raftkv` binary, as `GET /version` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The crate version (`0.1.0`).
    pub version: String,
    /// `git rev-parse --short HEAD` at build time, or `unknown` (built
    /// outside a git checkout).
    pub revision: String,
    /// Whether the work tree had uncommitted changes; `None` when unknown.
    pub dirty: Option<bool>,
    /// Cargo's profile: `debug` or `release`.
    pub profile: String,
    /// `rustc --version` of the compiler.
    pub rustc: String,
}

impl BuildInfo {
    /// This binary's build.
    pub fn current() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: env!("RAFTKV_GIT_REVISION").to_string(),
            dirty: match env!("RAFTKV_GIT_DIRTY") {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            profile: env!("RAFTKV_BUILD_PROFILE").to_string(),
            rustc: env!("RAFTKV_RUSTC").to_string(),
        }
    }

    /// The revision with `-dirty` appended when the tree was dirty
    /// (`3f2a9c1-dirty`), as the metric label and the one-line form use.
    pub fn revision_label(&self) -> String {
        match self.dirty {
            Some(true) => format!("{}-dirty", self.revision),
            _ => self.revision.clone(),
        }
    }

    /// One line: `0.1.0 (3f2a9c1-dirty, release, rustc 1.95.0 ...)`.
    pub fn one_line(&self) -> String {
        format!(
            "{} ({}, {}, {})",
            self.version,
            self.revision_label(),
            self.profile,
            self.rustc
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_mark_dirty_trees() {
        let mut b = BuildInfo::current();
        assert_eq!(b.version, env!("CARGO_PKG_VERSION"));
        b.revision = "abc1234".into();
        b.dirty = Some(true);
        assert_eq!(b.revision_label(), "abc1234-dirty");
        b.dirty = None;
        assert_eq!(b.revision_label(), "abc1234");
        assert!(b
            .one_line()
            .starts_with(&format!("{} (abc1234, ", b.version)));
    }
}
