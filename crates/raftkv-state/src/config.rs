//! Limits of the key-value state machine.
//!
//! Every replica must run with the **same** configuration: the limits decide
//! which commands are rejected and when sessions are evicted, and those
//! decisions are part of the replicated state. (The server checks requests
//! against the same limits before proposing them, so in practice a rejection
//! at apply time only happens for commands proposed by a misbehaving or
//! differently configured client.)

use serde::{Deserialize, Serialize};

/// Limits of a [`KvStore`](crate::KvStore). Units are last in every name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvConfig {
    /// Largest key (and list prefix) accepted, in bytes. Keys are copied into
    /// every response and kept in memory in full, so they must be bounded.
    pub key_bytes_max: u64,
    /// Largest value accepted (put, CAS new value, CAS compared value), in
    /// bytes. Bounds the size of a log entry and of every response.
    pub value_bytes_max: u64,
    /// Largest `limit` a list may ask for, in entries. Bounds the size of a
    /// list response: at most `list_limit_max * (key_bytes_max +
    /// value_bytes_max)` bytes of payload.
    pub list_limit_max: u64,
    /// Most client sessions kept at once, in sessions. Each session holds its
    /// last response, so this bounds the memory the sessions take; past it
    /// the least recently used session (by log index) is evicted.
    pub sessions_max: u64,
    /// A session not used for this many applied entries is evicted, in log
    /// entries. Deterministic (every replica applies the same entries), unlike
    /// a wall-clock TTL. A retry that arrives after its session was evicted
    /// is applied again, so this must exceed how long clients keep retrying.
    pub session_ttl_entries: u64,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            key_bytes_max: 1024,
            value_bytes_max: 64 * 1024,
            list_limit_max: 1000,
            sessions_max: 10_000,
            session_ttl_entries: 1_000_000,
        }
    }
}

/// Why a [`KvConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvConfigError {
    /// A limit is zero, which would refuse every command (or every session).
    #[error("{field} must be greater than zero")]
    Zero {
        /// Name of the offending field.
        field: &'static str,
    },
    /// A limit is larger than the hard ceiling this crate supports.
    #[error("{field} = {value} exceeds the hard ceiling {ceiling}")]
    TooLarge {
        /// Name of the offending field.
        field: &'static str,
        /// The configured value.
        value: u64,
        /// The largest value accepted.
        ceiling: u64,
    },
}

/// Hard ceiling for key and value sizes: a command must fit in one log entry
/// and one network frame; 64 MiB is far above anything sensible and keeps
/// `len as u64` arithmetic far from overflow.
pub const ITEM_BYTES_CEILING: u64 = 64 * 1024 * 1024;

impl KvConfig {
    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<(), KvConfigError> {
        let fields = [
            ("key_bytes_max", self.key_bytes_max),
            ("value_bytes_max", self.value_bytes_max),
            ("list_limit_max", self.list_limit_max),
            ("sessions_max", self.sessions_max),
            ("session_ttl_entries", self.session_ttl_entries),
        ];
        for (field, value) in fields {
            if value == 0 {
                return Err(KvConfigError::Zero { field });
            }
        }
        for (field, value) in [
            ("key_bytes_max", self.key_bytes_max),
            ("value_bytes_max", self.value_bytes_max),
        ] {
            if value > ITEM_BYTES_CEILING {
                return Err(KvConfigError::TooLarge {
                    field,
                    value,
                    ceiling: ITEM_BYTES_CEILING,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        KvConfig::default().validate().unwrap();
    }

    #[test]
    fn zero_limit_refused() {
        let c = KvConfig {
            sessions_max: 0,
            ..KvConfig::default()
        };
        assert_eq!(
            c.validate(),
            Err(KvConfigError::Zero {
                field: "sessions_max"
            })
        );
    }

    #[test]
    fn huge_value_limit_refused() {
        let c = KvConfig {
            value_bytes_max: ITEM_BYTES_CEILING + 1,
            ..KvConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(KvConfigError::TooLarge {
                field: "value_bytes_max",
                ..
            })
        ));
    }
}
