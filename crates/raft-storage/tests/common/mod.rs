#![allow(dead_code)]

use std::path::Path;

use bytes::Bytes;
use raft_core::{Entry, EntryPayload, LogStore, Membership, Snapshot, SnapshotMeta};
use raft_storage::{Disk, SimDisk, Store, StoreConfig};

pub const CLUSTER: u64 = 7;
pub const NODE: u64 = 1;

pub fn entry(index: u64, term: u64, len: usize) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Normal(Bytes::from(
            (0..len)
                .map(|i| (i as u64 ^ index) as u8)
                .collect::<Vec<_>>(),
        )),
    }
}

pub fn entries(range: std::ops::RangeInclusive<u64>, term: u64, len: usize) -> Vec<Entry> {
    range.map(|i| entry(i, term, len)).collect()
}

pub fn small_config() -> StoreConfig {
    StoreConfig {
        segment_bytes_max: 4096,
        cache_bytes_max: 2048,
        entry_bytes_max: 1 << 20,
    }
}

pub fn members() -> Membership {
    Membership::new_voters([1, 2, 3])
}

pub fn snapshot_at(index: u64, term: u64, data: &str) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: index,
            last_term: term,
            membership: members(),
        },
        data: Bytes::from(data.to_string()),
    }
}

pub fn new_sim_store(seed: u64, config: StoreConfig) -> (SimDisk, Store<SimDisk>) {
    let disk = SimDisk::new(seed);
    let store = Store::bootstrap(disk.clone(), "/data", CLUSTER, NODE, members(), config).unwrap();
    (disk, store)
}

pub fn reopen<D: Disk + Clone>(disk: &D, dir: impl AsRef<Path>, config: StoreConfig) -> Store<D> {
    Store::open(disk.clone(), dir.as_ref(), CLUSTER, NODE, config).unwrap()
}

/// Every entry the store holds.
pub fn all_entries<S: LogStore>(s: &S) -> Vec<Entry> {
    let (lo, hi) = (s.first_index(), s.last_index() + 1);
    let mut out = Vec::new();
    let mut next = lo;
    while next < hi {
        let got = s.entries(next, hi, u64::MAX).unwrap();
        assert!(!got.is_empty());
        next += got.len() as u64;
        out.extend(got);
    }
    out
}
