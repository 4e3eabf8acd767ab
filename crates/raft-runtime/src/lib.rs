//! raft-runtime (work in progress).
