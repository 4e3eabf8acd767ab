//! Snapshots: a follower behind the compaction point catches up through
//! InstallSnapshot in bounded chunks; stale, duplicate and malformed chunks
//! change nothing.

use bytes::Bytes;

use crate::error::StepError;
use crate::message::*;
use crate::testing::Cluster;
use crate::types::*;
use crate::{Config, LogStore, MemStorage, RawNode};

fn small_chunks(id: NodeId) -> Config {
    Config {
        snapshot_chunk_bytes: 4,
        ..Config::new(id)
    }
}

#[test]
fn snapshot_follower_behind_compaction_catches_up_in_chunks() {
    let mut c = Cluster::with_config(3, 3, small_chunks);
    let l = c.run_until_leader(100).unwrap();
    let lagger = (1..=3).find(|&i| i != l).unwrap();
    c.isolate(lagger);
    for i in 0..20u32 {
        c.propose(l, &i.to_be_bytes());
    }
    c.compact(l);
    let snap_index = c.node(l).store().first_index() - 1;
    assert!(snap_index >= 21);
    c.heal();
    // Count the chunks on the wire while the follower catches up.
    let mut chunks = Vec::new();
    for _ in 0..30 {
        let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
        for id in ids {
            c.node_mut(id).tick();
        }
        while c.deliver_one() {
            if let Some(m) = c.network.front() {
                if let MessageBody::SnapshotRequest(s) = &m.body {
                    chunks.push((s.offset, s.data.len(), s.done));
                }
            }
        }
    }
    let expected_len = format!("snapshot@{snap_index}").len();
    assert!(!chunks.is_empty(), "InstallSnapshot was used");
    assert!(
        chunks.iter().all(|&(_, len, _)| len <= 4),
        "chunks are bounded: {chunks:?}"
    );
    let total: usize = chunks.iter().map(|&(_, len, _)| len).sum();
    assert!(total >= expected_len);
    assert_eq!(c.node(lagger).store().first_index(), snap_index + 1);
    assert_eq!(
        c.node(lagger).store().snapshot().unwrap().data,
        Bytes::from(format!("snapshot@{snap_index}"))
    );
    assert_eq!(c.node(lagger).commit_index(), c.node(l).commit_index());
    assert_eq!(c.node(lagger).last_index(), c.node(l).last_index());
    c.propose(l, b"after");
    c.ticks(1);
    assert_eq!(
        c.applied_data(lagger).last().unwrap(),
        &Bytes::from_static(b"after")
    );
    c.check_applied_consistent();
}

fn follower() -> RawNode<MemStorage> {
    let mut s = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
    s.set_hard_state(HardState {
        term: 2,
        vote: None,
        commit: 0,
    });
    RawNode::new(small_chunks(2), s).unwrap()
}

fn chunk(data: &'static [u8], offset: u64, len: usize, index: LogIndex) -> Message {
    let total = data.len() as u64;
    let end = (offset as usize + len).min(data.len());
    Message {
        from: 1,
        to: 2,
        term: 2,
        body: MessageBody::SnapshotRequest(SnapshotRequest {
            meta: SnapshotMeta {
                last_index: index,
                last_term: 2,
                membership: Membership::new_voters([1, 2, 3]),
            },
            total_bytes: total,
            offset,
            data: Bytes::from_static(&data[offset as usize..end]),
            done: end == data.len(),
        }),
    }
}

fn responses(n: &mut RawNode<MemStorage>) -> (Vec<SnapshotResponse>, Option<Snapshot>) {
    let rd = n.ready().unwrap();
    let out = rd
        .messages
        .iter()
        .chain(&rd.persisted_messages)
        .filter_map(|m| match &m.body {
            MessageBody::SnapshotResponse(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    if let Some(s) = &rd.snapshot {
        n.store_mut().apply_snapshot(s.clone());
    }
    if let Some(hs) = rd.hard_state {
        n.store_mut().set_hard_state(hs);
    }
    n.on_persisted(rd.number).unwrap();
    (out, rd.snapshot)
}

#[test]
fn snapshot_chunks_assemble_and_install_once() {
    let data: &'static [u8] = b"0123456789";
    let mut n = follower();
    n.step(chunk(data, 0, 4, 50)).unwrap();
    assert_eq!(
        responses(&mut n).0,
        vec![SnapshotResponse::Accepted {
            last_index: 50,
            next_offset: 4
        }]
    );
    // Out of order: told where to resume, nothing appended.
    n.step(chunk(data, 8, 4, 50)).unwrap();
    assert_eq!(
        responses(&mut n).0,
        vec![SnapshotResponse::Rejected {
            last_index: 50,
            next_offset: 4
        }]
    );
    n.step(chunk(data, 4, 4, 50)).unwrap();
    let _ = responses(&mut n);
    n.step(chunk(data, 8, 4, 50)).unwrap();
    let (resp, snap) = responses(&mut n);
    assert_eq!(resp, vec![SnapshotResponse::Installed { last_index: 50 }]);
    let snap = snap.expect("the snapshot is handed to the driver");
    assert_eq!(&snap.data[..], data);
    assert_eq!(n.commit_index(), 50);
    assert_eq!(n.applied_index(), 50);
    assert_eq!(n.store().first_index(), 51);
    // A duplicate of the last chunk is stale now: acknowledged, not re-installed.
    n.step(chunk(data, 8, 4, 50)).unwrap();
    let (resp, snap) = responses(&mut n);
    assert_eq!(resp, vec![SnapshotResponse::Installed { last_index: 50 }]);
    assert!(snap.is_none());
    // An older snapshot is ignored the same way.
    n.step(chunk(data, 0, 10, 30)).unwrap();
    let (resp, snap) = responses(&mut n);
    assert_eq!(resp, vec![SnapshotResponse::Installed { last_index: 50 }]);
    assert!(snap.is_none());
    assert_eq!(n.store().first_index(), 51);
}

#[test]
fn snapshot_malformed_chunks_are_refused_without_change() {
    let data: &'static [u8] = b"0123456789";
    let mut n = follower();
    let before = n.status();
    let mut m = chunk(data, 0, 4, 50);
    if let MessageBody::SnapshotRequest(s) = &mut m.body {
        s.offset = 9; // 9 + 4 > 10
    }
    assert!(matches!(n.step(m), Err(StepError::Malformed { .. })));
    let mut m = chunk(data, 0, 4, 50);
    if let MessageBody::SnapshotRequest(s) = &mut m.body {
        s.total_bytes = u64::MAX;
    }
    assert!(matches!(n.step(m), Err(StepError::Malformed { .. })));
    let mut m = chunk(data, 0, 4, 50);
    if let MessageBody::SnapshotRequest(s) = &mut m.body {
        s.meta.membership.learners.insert(1); // both voter and learner
    }
    assert!(matches!(n.step(m), Err(StepError::Malformed { .. })));
    let mut m = chunk(data, 0, 4, 50);
    if let MessageBody::SnapshotRequest(s) = &mut m.body {
        s.done = true; // claims to be last but is not complete
    }
    assert!(matches!(n.step(m), Err(StepError::Malformed { .. })));
    let after = n.status();
    assert_eq!(after.commit_index, before.commit_index);
    assert_eq!(after.snapshot_index, before.snapshot_index);
    assert_eq!(after.last_index, before.last_index);
}

#[test]
fn snapshot_matching_log_fast_forwards_commit_without_reinstall() {
    let mut s = MemStorage::new_with_membership(Membership::new_voters([1, 2, 3]));
    let entries: Vec<Entry> = (1..=5)
        .map(|i| Entry {
            term: 2,
            index: i,
            payload: EntryPayload::Blank,
        })
        .collect();
    s.append(&entries).unwrap();
    s.set_hard_state(HardState {
        term: 2,
        vote: None,
        commit: 1,
    });
    let mut n = RawNode::new(small_chunks(2), s).unwrap();
    n.step(chunk(b"ab", 0, 2, 4)).unwrap();
    let (resp, snap) = responses(&mut n);
    assert_eq!(resp, vec![SnapshotResponse::Installed { last_index: 4 }]);
    assert!(snap.is_none(), "the log already holds index 4 of term 2");
    assert_eq!(n.commit_index(), 4);
    assert_eq!(
        n.last_index(),
        5,
        "entries after the snapshot point are kept"
    );
}
