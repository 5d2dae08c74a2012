//! Which nodes hold a piece of work: rendezvous (highest random weight) hashing. Every
//! node computes the same answer from the same list of live members, without talking to
//! the others; when a member joins or leaves, only the pieces it wins or held move.

/// The `n` members that hold `work` (fewer when fewer live), best first.
///
/// Each member's weight for a piece is a hash of the two names; the `n` highest win.
/// The hash is fixed here (not the standard library's, which may change between
/// releases), so nodes of different builds agree.
pub fn holders<'a>(work: &str, members: &'a [String], n: usize) -> Vec<&'a str> {
    let mut scored: Vec<(u64, &str)> = members
        .iter()
        .map(|m| (weight(m, work), m.as_str()))
        .collect();
    // Highest weight first; ties (practically never) broken by name so every node agrees.
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(n).map(|(_, m)| m).collect()
}

/// The weight of `member` for `work`: FNV-1a over both names (with a separator no name
/// holds), finished with a 64-bit mixer so that similar names spread.
fn weight(member: &str, work: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in member.bytes().chain([0xff]).chain(work.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    mix(h)
}

/// The finaliser of SplitMix64.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn the_weights_are_fixed() {
        // Nodes built at different times must agree: these values never change (they were
        // computed apart from this code, from the algorithm's definition).
        assert_eq!(weight("node-0", "acme/0"), 0xf8df_3f2a_162b_422a);
        assert_eq!(weight("a", "b"), 0x552d_4556_57d9_1379);
        let members = names(5);
        assert_eq!(
            holders("acme/0", &members, 5),
            ["node-0", "node-2", "node-1", "node-3", "node-4"]
        );
    }

    #[test]
    fn fewer_members_than_holders_gives_every_member() {
        assert_eq!(holders("w", &names(1), 2), ["node-0"]);
        assert!(holders("w", &[], 2).is_empty());
        let dup = vec!["a".to_owned(), "a".to_owned()];
        assert_eq!(
            holders("w", &dup, 2),
            ["a"],
            "a member listed twice holds once"
        );
    }

    #[test]
    fn work_spreads_over_the_members() {
        let members = names(3);
        let mut first = std::collections::HashMap::new();
        for i in 0..3000 {
            let h = holders(&format!("org-{i}/0"), &members, 2);
            *first.entry(h[0]).or_insert(0) += 1;
        }
        for m in &members {
            let n = first[m.as_str()];
            assert!((800..1200).contains(&n), "{m} is first for {n} of 3000");
        }
    }

    proptest! {
        #[test]
        fn holders_are_distinct_members_and_agree_whatever_the_order(
            work in "[a-z0-9/._-]{1,20}",
            count in 1usize..8,
            n in 1usize..4,
            seed in any::<u64>(),
        ) {
            let members = names(count);
            let mut shuffled = members.clone();
            let len = shuffled.len();
            shuffled.rotate_left((seed as usize) % len);
            let a = holders(&work, &members, n);
            let b = holders(&work, &shuffled, n);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.len(), n.min(count));
            let unique: std::collections::HashSet<_> = a.iter().collect();
            prop_assert_eq!(unique.len(), a.len());
        }

        #[test]
        fn a_member_leaving_moves_only_what_it_held(
            work in "[a-z0-9/._-]{1,20}",
            count in 2usize..8,
            gone in any::<u64>(),
        ) {
            let members = names(count);
            let gone = members[(gone as usize) % count].clone();
            let before = holders(&work, &members, 2);
            let rest: Vec<String> = members.iter().filter(|m| **m != gone).cloned().collect();
            let after = holders(&work, &rest, 2);
            // Every holder that is still a member keeps the piece.
            for h in before.iter().filter(|h| **h != gone) {
                prop_assert!(after.contains(h), "{h} lost {work} when {gone} left");
            }
        }

        #[test]
        fn a_member_joining_takes_only_what_it_wins(
            work in "[a-z0-9/._-]{1,20}",
            count in 1usize..8,
        ) {
            let members = names(count);
            let mut more = members.clone();
            more.push("newcomer".to_owned());
            let before = holders(&work, &members, 2);
            let after = holders(&work, &more, 2);
            let moved = before.iter().filter(|h| !after.contains(h)).count();
            if after.contains(&"newcomer") {
                prop_assert!(moved <= 1);
            } else {
                prop_assert_eq!(moved, 0);
            }
        }
    }
}
