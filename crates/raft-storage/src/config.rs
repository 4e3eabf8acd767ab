//! Limits of a [`Store`](crate::Store).

use crate::record::RECORD_PAYLOAD_BYTES_MAX;

/// Tuning and limits. Every field is a bound, so memory and file sizes stay
/// predictable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// A segment file is rotated once it reaches this size. Bounds recovery's
    /// read buffer (one segment at a time) and the unit of compaction (whole
    /// segments are deleted). Between 4 KiB and 1 GiB.
    pub segment_bytes_max: u64,
    /// Budget of the in-memory cache of the most recent entries (counted in
    /// [`Entry::size_bytes`](raft_core::Entry::size_bytes)); older entries
    /// are read back from the segment files.
    pub cache_bytes_max: u64,
    /// Largest encoded entry accepted, so a single record can never exceed
    /// what recovery is willing to trust.
    pub entry_bytes_max: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            segment_bytes_max: 64 << 20,
            cache_bytes_max: 32 << 20,
            entry_bytes_max: 64 << 20,
        }
    }
}

impl StoreConfig {
    /// Checks the limits; returns why they are unusable.
    pub fn validate(&self) -> Result<(), String> {
        if !(4 << 10..=1 << 30).contains(&self.segment_bytes_max) {
            return Err(format!(
                "segment_bytes_max {} is outside 4 KiB..=1 GiB",
                self.segment_bytes_max
            ));
        }
        if self.entry_bytes_max == 0 || self.entry_bytes_max > u64::from(RECORD_PAYLOAD_BYTES_MAX) {
            return Err(format!(
                "entry_bytes_max {} is outside 1..={RECORD_PAYLOAD_BYTES_MAX}",
                self.entry_bytes_max
            ));
        }
        Ok(())
    }
}
