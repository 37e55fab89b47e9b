//! Decoding fuzz of Raft RPC bodies (issue #11): what `transport::server` decodes
//! from a peer (AppendEntries, Vote, InstallSnapshot requests), fed random bytes and
//! mutations of real encodings, is refused with an error, never a panic. (The body is
//! decoded only after the cluster secret, target and cluster id were checked, but a
//! peer with the secret must still not be able to crash a node with bytes.)

use std::collections::{BTreeMap, BTreeSet};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, SnapshotMeta, Vote};
use proptest::prelude::*;

use crate::codec;
use crate::raft_types::{Entry, Member, NodeId, TypeConfig};
use crate::sm::{Batch, Command, Submission};

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn members() -> BTreeMap<NodeId, Member> {
    (1..=3)
        .map(|id| {
            let member = Member {
                addr: format!("127.0.0.1:700{id}"),
                raft_addr: format!("127.0.0.1:800{id}"),
            };
            (id, member)
        })
        .collect()
}

fn append() -> AppendEntriesRequest<TypeConfig> {
    let batch = Batch {
        leader_time_ms: 1_000,
        submissions: vec![Submission {
            request_id: Some("r1".into()),
            guard: None,
            acting_as: Some("alice".into()),
            command: Command::Tick {
                renewals: vec![(1, 900)],
            },
        }],
    };
    let voters = BTreeSet::from([1, 2, 3]);
    let entries: Vec<Entry> = vec![
        Entry {
            log_id: log_id(2, 5),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2, 6),
            payload: EntryPayload::Normal(batch),
        },
        Entry {
            log_id: log_id(2, 7),
            payload: EntryPayload::Membership(Membership::new(vec![voters], members())),
        },
    ];
    AppendEntriesRequest {
        vote: Vote::new_committed(2, 1),
        prev_log_id: Some(log_id(1, 4)),
        entries,
        leader_commit: Some(log_id(2, 5)),
    }
}

fn install() -> InstallSnapshotRequest<TypeConfig> {
    InstallSnapshotRequest {
        vote: Vote::new_committed(2, 1),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(2, 7)),
            last_membership: openraft::StoredMembership::new(
                Some(log_id(2, 7)),
                Membership::new(vec![BTreeSet::from([1, 2, 3])], members()),
            ),
            snapshot_id: "2-7-1".into(),
        },
        offset: 0,
        data: vec![1, 2, 3, 4, 5, 6, 7, 8],
        done: true,
    }
}

/// Tries every RPC body type the peer listener decodes; each must refuse or accept
/// without panicking, and what it accepts re-encodes.
fn decode_all(bytes: &[u8]) {
    if let Ok(request) = codec::decode::<AppendEntriesRequest<TypeConfig>>(bytes) {
        codec::encode(&request).expect("a decoded append re-encodes");
    }
    if let Ok(request) = codec::decode::<VoteRequest<NodeId>>(bytes) {
        codec::encode(&request).expect("a decoded vote re-encodes");
    }
    if let Ok(request) = codec::decode::<InstallSnapshotRequest<TypeConfig>>(bytes) {
        codec::encode(&request).expect("a decoded snapshot chunk re-encodes");
    }
}

fn seeds() -> Vec<Vec<u8>> {
    vec![
        codec::encode(&append()).unwrap(),
        codec::encode(&VoteRequest::new(Vote::new(3, 2), Some(log_id(2, 7)))).unwrap(),
        codec::encode(&install()).unwrap(),
    ]
}

#[test]
fn the_seeds_decode_as_themselves_and_single_byte_edits_are_refused_or_decoded() {
    let seeds = seeds();
    assert!(codec::decode::<AppendEntriesRequest<TypeConfig>>(&seeds[0]).is_ok());
    assert!(codec::decode::<VoteRequest<NodeId>>(&seeds[1]).is_ok());
    assert!(codec::decode::<InstallSnapshotRequest<TypeConfig>>(&seeds[2]).is_ok());
    let mut refused = 0;
    for seed in &seeds {
        for at in 0..seed.len() {
            for byte in [0u8, 0x7f, 0xfb, 0xff] {
                let mut bytes = seed.clone();
                bytes[at] = byte;
                refused +=
                    usize::from(codec::decode::<AppendEntriesRequest<TypeConfig>>(&bytes).is_err());
                decode_all(&bytes);
            }
        }
    }
    assert!(refused > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_the_rpc_decoders(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_rpc_bodies_never_panic_the_decoders(
        which in any::<usize>(),
        cut in any::<usize>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let seeds = seeds();
        let mut bytes = seeds[which % seeds.len()].clone();
        for (at, byte) in edits {
            let len = bytes.len();
            bytes[at % len] = byte;
        }
        decode_all(&bytes);
        bytes.truncate(cut % (bytes.len() + 1));
        decode_all(&bytes);
    }
}
