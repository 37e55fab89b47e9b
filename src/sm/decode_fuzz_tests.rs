//! Decoding fuzz of state-machine commands (issue #11): random bytes and mutations
//! of real encoded batches, fed to the codec as a log entry's payload would be, are
//! refused with an error, never a panic; whatever does decode applies to a state
//! machine without panicking (the log is written by leaders only, but one panic in
//! `apply_batch` would stop every replica at the same entry).

use proptest::prelude::*;

use super::locks::LockMode;
use super::test_support::*;
use super::{Batch, State};
use crate::codec;

/// Real batches covering every room: their encodings are what the mutations start from.
fn seeds() -> Vec<Vec<u8>> {
    let batches = [
        batch(
            1_000,
            vec![session(60_000), create_session(&["gpu"], 2, 60_000)],
        ),
        batch(2_000, vec![put("k", None), put("e", Some(1)), delete("k")]),
        batch(
            3_000,
            vec![
                acquire_lock("L", 1, LockMode::Exclusive, true),
                acquire_lock("L", 2, LockMode::Shared, true),
                release_lock("L", 1, 3),
            ],
        ),
        batch(
            4_000,
            vec![
                submit(task_spec(&["gpu"])),
                submit(depending_on(&[1])),
                claim(2),
                heartbeat(1, 4, Some("{\"p\":1}")),
                complete(1, 4, "{}"),
                fail(2, 5, false),
                cancel(2),
                retry(2),
            ],
        ),
        batch(
            5_000,
            vec![
                acquire_permits(1, 2, 3, true),
                arrive(1, 2),
                campaign(1, 0, true),
                resign(1, 7),
                tick(&[(1, 5_000)]),
                keepalive(1),
                end_session(2),
            ],
        ),
        batch(6_000, decisions()),
    ];
    batches
        .iter()
        .map(|batch| codec::encode(batch).expect("a batch encodes"))
        .collect()
}

/// A proposal and a two-phase transaction, each created, voted on and acked.
fn decisions() -> Vec<super::Command> {
    use super::proposals::{NewProposal, ProposalCommand, Rule, Vote};
    use super::twophase::{Decision, NewTransaction, TwoPhaseCommand};
    use super::Command;
    vec![
        Command::Proposal(ProposalCommand::Create(NewProposal {
            title: "t".into(),
            payload_json: "{}".into(),
            rule: Rule::Threshold(1),
            voters: vec!["1".into(), "2".into()],
            voters_are_sessions: true,
            deadline_ms: 1_000,
            retention_ms: 1_000,
            created_by: Some("a".into()),
        })),
        Command::Proposal(ProposalCommand::Vote {
            proposal_id: 1,
            voter: "1".into(),
            vote: Vote::Abstain,
            cast_by: None,
        }),
        Command::TwoPhase(TwoPhaseCommand::Create(NewTransaction {
            participants: vec!["db".into()],
            participants_are_sessions: false,
            payload_json: "[]".into(),
            timeout_ms: 500,
            created_by: None,
        })),
        Command::TwoPhase(TwoPhaseCommand::Vote {
            id: 3,
            participant: "db".into(),
            decision: Decision::Commit,
            cast_by: Some("db".into()),
        }),
        Command::TwoPhase(TwoPhaseCommand::Ack {
            id: 3,
            participant: "db".into(),
        }),
        Command::Txn(super::txn::TxnCommand {
            compare: vec![super::txn::Compare::KeyVersion {
                key: "k".into(),
                version: 0,
            }],
            success: vec![
                put("k", None),
                acquire_lock("L", 1, LockMode::Shared, false),
            ],
            failure: vec![delete("k")],
        }),
    ]
}

/// One edit of an encoding: overwrite, insert or delete a byte, or cut it short.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set(at, byte)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Insert(at, byte)),
        any::<usize>().prop_map(Edit::Remove),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Edit::Set(at, byte) if !bytes.is_empty() => bytes[at % len] = byte,
            Edit::Insert(at, byte) => bytes.insert(at % (bytes.len() + 1), byte),
            Edit::Remove(at) if !bytes.is_empty() => {
                bytes.remove(at % len);
            }
            Edit::Truncate(at) => bytes.truncate(at % len),
            _ => {}
        }
    }
    bytes
}

/// Decodes `bytes` as a log entry's batch; applies it if it decodes.
fn decode_and_apply(bytes: &[u8]) {
    if let Ok(batch) = codec::decode::<Batch>(bytes) {
        let mut state = State::default();
        // A session and a lock to act on, so decoded ids sometimes name something.
        run(&mut state, 500, vec![session(60_000), session(60_000)]);
        run(
            &mut state,
            600,
            vec![acquire_lock("L", 1, LockMode::Exclusive, false)],
        );
        state.apply_batch(&batch);
        // Re-encoding what was decoded round-trips (nothing half-built survived).
        let again = codec::encode(&batch).expect("a decoded batch encodes");
        assert_eq!(codec::decode::<Batch>(&again).expect("round trip"), batch);
    }
}

#[test]
fn every_seed_decodes_and_applies() {
    for seed in seeds() {
        assert!(codec::decode::<Batch>(&seed).is_ok());
        decode_and_apply(&seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_the_decoder_or_the_state_machine(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        decode_and_apply(&bytes);
    }

    #[test]
    fn mutated_batches_never_panic_the_decoder_or_the_state_machine(
        which in any::<usize>(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let seeds = seeds();
        let bytes = mutate(seeds[which % seeds.len()].clone(), &edits);
        decode_and_apply(&bytes);
    }
}

/// The fuzz above is only worth something if mutations reach both branches: some
/// are refused by the decoder, some decode and are applied.
#[test]
fn single_byte_mutations_reach_both_the_refusal_and_the_apply() {
    let (mut refused, mut applied) = (0, 0);
    for seed in seeds() {
        for at in 0..seed.len() {
            for byte in [0u8, 1, 0x7f, 0xff] {
                let bytes = mutate(seed.clone(), &[Edit::Set(at, byte)]);
                match codec::decode::<Batch>(&bytes) {
                    Ok(_) => applied += 1,
                    Err(_) => refused += 1,
                }
                decode_and_apply(&bytes);
            }
        }
    }
    assert!(
        refused > 0 && applied > 0,
        "refused {refused}, applied {applied}"
    );
}
