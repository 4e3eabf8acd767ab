//! raftkv-state (work in progress).
