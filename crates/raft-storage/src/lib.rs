//! raft-storage (work in progress).
