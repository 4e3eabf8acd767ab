//! The sequential model of the raftkv key-value store, checked per key.

use std::fmt::Debug;
use std::hash::Hash;
use std::marker::PhantomData;

use super::Model;

/// A key-value store operation as a client issues it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvInput<K, V> {
    /// Set `key` to `value`. Output: [`KvOutput::Put`].
    Put {
        /// The key written.
        key: K,
        /// The value written.
        value: V,
    },
    /// Read `key`. Output: [`KvOutput::Get`].
    Get {
        /// The key read.
        key: K,
    },
    /// Remove `key`. Output: [`KvOutput::Delete`].
    Delete {
        /// The key removed.
        key: K,
    },
    /// If `key` currently holds `expected` (`None`: absent), set it to `new`
    /// (`None`: remove it). Output: [`KvOutput::Cas`] or
    /// [`KvOutput::CasMismatch`].
    Cas {
        /// The key compared and maybe written.
        key: K,
        /// The value the key must hold for the swap to happen.
        expected: Option<V>,
        /// The value stored on success.
        new: Option<V>,
    },
}

impl<K, V> KvInput<K, V> {
    /// The key this operation touches.
    pub fn key(&self) -> &K {
        match self {
            KvInput::Put { key, .. }
            | KvInput::Get { key }
            | KvInput::Delete { key }
            | KvInput::Cas { key, .. } => key,
        }
    }
}

/// What a key-value store operation returned. An output of the wrong kind for
/// its input (say, `Get` answered with `Delete`) never fits the model, so it
/// is reported as a violation rather than a panic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOutput<V> {
    /// The put was applied.
    Put,
    /// The value read (`None`: key absent).
    Get(Option<V>),
    /// Whether the key existed before the delete.
    Delete {
        /// True if the key held a value.
        existed: bool,
    },
    /// Whether the compare-and-swap swapped.
    Cas {
        /// True if the key held `expected` and now holds `new`.
        succeeded: bool,
    },
    /// The compare-and-swap did not swap, and the store reported the value it
    /// found instead (which must differ from `expected`).
    CasMismatch {
        /// The key's value at the time of the comparison.
        current: Option<V>,
    },
}

/// The model: one register per key, absent until written. Keys and values
/// only need equality and hashing (`u64` by default).
pub struct KvModel<K = u64, V = u64> {
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> KvModel<K, V> {
    /// The model (it has no parameters).
    pub fn new() -> Self {
        KvModel {
            _types: PhantomData,
        }
    }
}

impl<K, V> Default for KvModel<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Clone for KvModel<K, V> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<K, V> Debug for KvModel<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KvModel")
    }
}

impl<K, V> Model for KvModel<K, V>
where
    K: Clone + Ord + Debug,
    V: Clone + Eq + Hash + Debug,
{
    /// The value of the partition's key (`None`: absent).
    type State = Option<V>;
    type Input = KvInput<K, V>;
    type Output = KvOutput<V>;
    type PartitionKey = K;

    fn init(&self) -> Option<V> {
        None
    }

    fn step(
        &self,
        state: &Option<V>,
        input: &KvInput<K, V>,
        output: &KvOutput<V>,
    ) -> Option<Option<V>> {
        match (input, output) {
            (KvInput::Put { value, .. }, KvOutput::Put) => Some(Some(value.clone())),
            (KvInput::Get { .. }, KvOutput::Get(read)) => (read == state).then(|| state.clone()),
            (KvInput::Delete { .. }, KvOutput::Delete { existed }) => {
                (*existed == state.is_some()).then_some(None)
            }
            (KvInput::Cas { expected, new, .. }, KvOutput::Cas { succeeded }) => {
                let matches = expected == state;
                if matches != *succeeded {
                    None
                } else if matches {
                    Some(new.clone())
                } else {
                    Some(state.clone())
                }
            }
            (KvInput::Cas { expected, .. }, KvOutput::CasMismatch { current }) => {
                (expected != state && current == state).then(|| state.clone())
            }
            _ => None,
        }
    }

    fn step_unknown(&self, state: &Option<V>, input: &KvInput<K, V>) -> Option<V> {
        match input {
            KvInput::Put { value, .. } => Some(value.clone()),
            KvInput::Get { .. } => state.clone(),
            KvInput::Delete { .. } => None,
            KvInput::Cas { expected, new, .. } => {
                if expected == state {
                    new.clone()
                } else {
                    state.clone()
                }
            }
        }
    }

    fn partition(&self, input: &KvInput<K, V>) -> K {
        input.key().clone()
    }

    fn is_read_only(&self, input: &KvInput<K, V>) -> bool {
        matches!(input, KvInput::Get { .. })
    }
}
