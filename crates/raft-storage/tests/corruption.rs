//! Damage detection: a flipped bit in every region of every record of every
//! segment, of the snapshot file and of the identity file makes `open` fail
//! with `OpenError::Corrupt` naming the file (and, for records, the offset of
//! the damaged record). A write cut short at the very end of the last segment
//! is, by contrast, a torn tail: cut off and reported, the rest intact.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use raft_core::{HardState, LogStore};
use raft_storage::{Disk, DiskFile, OpenError, SimDisk, Store, StoreConfig};

const HEADER: u64 = 16;

/// Builds a data dir with several segments, a compaction snapshot and a
/// log whose records of every type are present.
fn build() -> (SimDisk, StoreConfig) {
    let config = small_config();
    let (disk, store) = new_sim_store(42, config.clone());
    store.append(&entries(1..=60, 1, 40)).unwrap();
    store
        .set_hard_state(HardState {
            term: 1,
            vote: Some(2),
            commit: 50,
        })
        .unwrap();
    store.compact(&snapshot_at(20, 1, "snapshot data")).unwrap();
    store.append(&entries(61..=160, 1, 40)).unwrap();
    store
        .set_hard_state(HardState {
            term: 2,
            vote: None,
            commit: 150,
        })
        .unwrap();
    store.sync().unwrap();
    (disk, config)
}

fn files(disk: &SimDisk, suffix: &str) -> Vec<PathBuf> {
    disk.list_dir(Path::new("/data"))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(suffix))
        .map(|n| Path::new("/data").join(n))
        .collect()
}

/// Record start offsets of a segment, walking the documented framing.
fn record_offsets(bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        out.push((off as u64, (HEADER as usize + len) as u64));
        off += HEADER as usize + len;
    }
    assert_eq!(off, bytes.len());
    out
}

fn expect_corrupt(
    disk: &SimDisk,
    config: &StoreConfig,
    file: &Path,
    offset: Option<u64>,
    what: &str,
) {
    let copy = disk.crashed_copy(0); // everything is synced: an exact copy
    match Store::open(copy, "/data", CLUSTER, NODE, config.clone()) {
        Err(OpenError::Corrupt {
            file: f, offset: o, ..
        }) => {
            assert_eq!(f, file, "{what}");
            if let Some(offset) = offset {
                assert_eq!(o, offset, "{what}");
            }
        }
        Err(e) => panic!("{what}: expected corruption, got {e}"),
        Ok(_) => panic!("{what}: damage not detected"),
    }
}

#[test]
fn flipped_bits_in_segments_are_detected() {
    let (disk, config) = build();
    let segments = files(&disk, ".wal");
    assert!(segments.len() >= 3, "{segments:?}");
    let mut checked = 0;
    for seg in &segments {
        let bytes = disk.read_file(seg).unwrap();
        for (start, len) in record_offsets(&bytes) {
            // Each region: length, type, reserved, payload CRC, header CRC,
            // first, middle and last payload byte.
            let mut spots = vec![0, 2, 4, 6, 9, 14];
            if len > HEADER {
                spots.extend([HEADER, HEADER + (len - HEADER) / 2, len - 1]);
            }
            for (k, spot) in spots.into_iter().enumerate() {
                let pos = start + spot;
                let bit = (k % 8) as u8;
                disk.corrupt(seg, pos, bit).unwrap();
                let what = format!("{} record at {start}, byte {pos} bit {bit}", seg.display());
                expect_corrupt(&disk, &config, seg, Some(start), &what);
                disk.corrupt(seg, pos, bit).unwrap(); // restore
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked}");
    // Restored: opens fine.
    let s = reopen(&disk.crashed_copy(0), "/data", config);
    assert_eq!(s.last_index(), 160);
}

#[test]
fn flipped_bits_in_snapshot_and_identity_are_detected() {
    let (disk, config) = build();
    let snaps = files(&disk, ".snap");
    assert_eq!(snaps.len(), 1);
    let snap = &snaps[0];
    let len = disk.read_file(snap).unwrap().len() as u64;
    // magic, version, meta length, data length, header CRC, meta, data, data CRC.
    for pos in [0, 9, 13, 17, 25, 29, len - 10, len - 1] {
        disk.corrupt(snap, pos, 1).unwrap();
        expect_corrupt(&disk, &config, snap, None, &format!("snapshot byte {pos}"));
        disk.corrupt(snap, pos, 1).unwrap();
    }
    let id = Path::new("/data/identity");
    for pos in [0, 8, 12, 20, 28] {
        disk.corrupt(id, pos, 3).unwrap();
        expect_corrupt(&disk, &config, id, None, &format!("identity byte {pos}"));
        disk.corrupt(id, pos, 3).unwrap();
    }
}

#[test]
fn missing_files_are_detected() {
    let (disk, config) = build();
    let segments = files(&disk, ".wal");
    let copy = disk.crashed_copy(0);
    copy.remove_file(&segments[1]).unwrap();
    copy.sync_dir(Path::new("/data")).unwrap();
    let e = Store::open(copy, "/data", CLUSTER, NODE, config.clone()).unwrap_err();
    assert!(
        matches!(e, OpenError::Corrupt { ref file, .. } if *file == segments[2]),
        "{e}"
    );

    let copy = disk.crashed_copy(0);
    let snap = &files(&disk, ".snap")[0];
    copy.remove_file(snap).unwrap();
    copy.sync_dir(Path::new("/data")).unwrap();
    let e = Store::open(copy, "/data", CLUSTER, NODE, config).unwrap_err();
    assert!(
        matches!(e, OpenError::Corrupt { ref file, .. } if file == snap),
        "{e}"
    );
}

#[test]
fn torn_tail_is_cut_at_every_byte_of_the_last_record() {
    let config = small_config();
    let (disk, store) = new_sim_store(43, config.clone());
    store.append(&entries(1..=5, 1, 100)).unwrap();
    store.sync().unwrap();
    store.append(&entries(6..=6, 1, 100)).unwrap();
    store.sync().unwrap();
    drop(store);
    let seg = files(&disk, ".wal").pop().unwrap();
    let bytes = disk.read_file(&seg).unwrap();
    let (last_start, _) = *record_offsets(&bytes).last().unwrap();
    for cut in last_start + 1..bytes.len() as u64 {
        let copy = disk.crashed_copy(0);
        copy.open(&seg).unwrap().set_len(cut).unwrap();
        let s = Store::open(copy.clone(), "/data", CLUSTER, NODE, config.clone()).unwrap();
        assert_eq!(s.last_index(), 5, "cut at {cut}");
        let (file, off, n) = s.recovery_report().torn_tail.clone().unwrap();
        assert_eq!((file, off, n), (seg.clone(), last_start, cut - last_start));
        // The cut is durable and the log continues cleanly.
        s.append(&entries(6..=7, 2, 10)).unwrap();
        s.sync().unwrap();
        drop(s);
        copy.crash();
        let s = reopen(&copy, "/data", config.clone());
        assert_eq!(all_entries(&s), {
            let mut v = entries(1..=5, 1, 100);
            v.extend(entries(6..=7, 2, 10));
            v
        });
        assert!(s.recovery_report().torn_tail.is_none());
    }
    // A write whose sectors never reached the disk (zeros) is torn too.
    let copy = disk.crashed_copy(0);
    let f = copy.open(&seg).unwrap();
    f.write_all_at(&vec![0u8; 600], bytes.len() as u64).unwrap();
    f.sync_data().unwrap();
    let s = Store::open(copy, "/data", CLUSTER, NODE, config).unwrap();
    assert_eq!(s.last_index(), 6);
    assert!(s.recovery_report().torn_tail.is_some());
}
