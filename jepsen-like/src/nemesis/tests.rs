//! Unit tests of the fault arithmetic and the seeded schedule.

use super::links::{bridge_halves, cross_pairs, split_majority};
use super::*;

#[test]
fn a_majority_split_covers_every_node_and_puts_the_leader_on_either_side() {
    for ids in [vec![1, 2, 3], vec![1, 2, 3, 4, 5]] {
        let mut sides = BTreeSet::new();
        let mut minorities = BTreeSet::new();
        for seed in 0..64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let (majority, minority, side) = split_majority(&ids, Some(2), &mut rng);
            assert_eq!(majority.len(), ids.len() / 2 + 1);
            let mut all: Vec<u64> = majority.iter().chain(&minority).copied().collect();
            all.sort();
            assert_eq!(all, ids);
            let holder = if majority.contains(&2) {
                "majority"
            } else {
                "minority"
            };
            assert_eq!(holder, side);
            sides.insert(side);
            minorities.insert(minority);
        }
        assert_eq!(sides.len(), 2, "the leader always landed on one side");
        assert!(
            minorities.len() > 2,
            "the split is not random: {minorities:?}"
        );
    }
}

#[test]
fn a_bridge_sees_both_halves_which_do_not_see_each_other() {
    for ids in [vec![1, 2, 3], vec![1, 2, 3, 4, 5]] {
        let mut rng = SmallRng::seed_from_u64(3);
        let (left, right) = bridge_halves(&ids, 3, &mut rng);
        assert_eq!(left.len(), (ids.len() - 1) / 2);
        assert_eq!(left.len() + right.len(), ids.len() - 1);
        let pairs = cross_pairs(&[left.clone(), right.clone()]);
        assert_eq!(pairs.len(), 2 * left.len() * right.len());
        assert!(pairs.iter().all(|(a, b)| *a != 3 && *b != 3));
        for a in &left {
            for b in &right {
                assert!(pairs.contains(&(*a, *b)) && pairs.contains(&(*b, *a)));
            }
        }
    }
}

#[test]
fn isolating_one_node_cuts_its_links_both_ways_and_no_other() {
    let pairs = cross_pairs(&[vec![2], vec![1, 3]]);
    let mut sorted = pairs.clone();
    sorted.sort();
    assert_eq!(sorted, vec![(1, 2), (2, 1), (2, 3), (3, 2)]);
}

#[test]
fn the_schedule_is_a_function_of_the_seed() {
    let plan = |seed| {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..5)
            .map(|_| {
                let kind = *MIXED.choose(&mut rng).unwrap();
                (
                    kind,
                    kind.hold(&mut rng),
                    split_majority(&[1, 2, 3], Some(1), &mut rng),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(plan(9), plan(9));
    assert_ne!(plan(9), plan(10));
}
