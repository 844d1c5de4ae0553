use super::*;

fn ids(raw: &[u64]) -> Vec<NodeId> {
    raw.iter().map(|&id| NodeId(id)).collect()
}

fn ring(members: Vec<Member>, replicas: u8, vnodes_per_weight: u32) -> Ring {
    Ring::new(members, RingConfig { replicas, vnodes_per_weight }).expect("valid test ring")
}

fn plain(count: u64) -> Vec<Member> {
    (1..=count).map(|id| Member::new(NodeId(id))).collect()
}

/// Changing the hash keys, the token encoding or the walk moves data between releases.
/// These values were computed once; if they change, placement changed.
#[test]
fn placement_is_pinned() {
    assert_eq!(position(b""), PINNED_POSITION_EMPTY);
    assert_eq!(position(b"user:42"), PINNED_POSITION_USER);
    assert_eq!(placement::token(NodeId(1), 0), PINNED_TOKEN_1_0);
    assert_eq!(placement::token(NodeId(7), 63), PINNED_TOKEN_7_63);
    let keys = [&b"a"[..], b"b", b"user:42", b""];
    let lists = |ring: &Ring| -> Vec<Vec<u64>> {
        keys.iter().map(|key| ring.preference_list(key).iter().map(|id| id.0).collect()).collect()
    };
    assert_eq!(lists(&ring(plain(5), 3, 64)), PINNED_LISTS);
    let zoned = ring(zoned(&["a", "a", "b", "b", "c", "c"]), 3, 64);
    assert_eq!(lists(&zoned), PINNED_ZONED_LISTS);
}

// SipHash-1-3 outputs, checked against an independent implementation of the algorithm.
const PINNED_POSITION_EMPTY: u64 = 3_511_210_951_166_345_983;
const PINNED_POSITION_USER: u64 = 11_901_016_336_820_139_105;
const PINNED_TOKEN_1_0: u64 = 14_003_622_159_307_199_508;
const PINNED_TOKEN_7_63: u64 = 16_623_985_074_104_614_131;
const PINNED_LISTS: [[u64; 3]; 4] = [[1, 3, 5], [4, 1, 2], [5, 4, 1], [2, 5, 4]];
const PINNED_ZONED_LISTS: [[u64; 3]; 4] = [[1, 3, 5], [4, 1, 5], [5, 4, 1], [6, 2, 4]];

#[test]
fn member_order_does_not_matter() {
    let mut members = plain(6);
    let forward = ring(members.clone(), 3, 16);
    members.reverse();
    assert_eq!(ring(members, 3, 16), forward);
}

#[test]
fn ranges_tile_the_circle() {
    let ring = ring(plain(4), 2, 8);
    let ranges: Vec<TokenRange<'_>> = ring.ranges().collect();
    assert_eq!(ranges.len(), 32);
    assert_eq!(ranges.iter().map(|range| range.width()).sum::<u128>(), 1 << 64);
    for pair in ranges.windows(2) {
        assert_eq!(pair[0].end, pair[1].start);
        assert!(pair[0].start < pair[0].end || pair[0].wraps());
    }
    // Only the first range wraps, from the highest token round to the lowest.
    assert!(ranges[0].wraps());
    assert!(ranges[1..].iter().all(|range| !range.wraps()));
    assert_eq!(ranges[0].start, ranges[31].end);
}

#[test]
fn positions_wrap_past_the_top() {
    let ring = ring(plain(3), 2, 4);
    let first = ring.ranges().next().expect("a ring has ranges");
    let last = ring.ranges().last().expect("a ring has ranges");
    assert!(first.contains(u64::MAX) && first.contains(0) && first.contains(first.end));
    assert!(!first.contains(first.start));
    assert_eq!(ring.range_at(u64::MAX), first);
    assert_eq!(ring.range_at(0), first);
    assert_eq!(ring.range_at(last.end), last);
    assert_eq!(ring.range_at(last.end.wrapping_add(1)), first);
    // A position equal to a token belongs to the range that token ends.
    let second = ring.ranges().nth(1).expect("12 ranges");
    assert_eq!(ring.range_at(second.end), second);
    assert_eq!(ring.range_at(second.start), first);
    assert_eq!(ring.range_at(second.start + 1), second);
}

#[test]
fn single_vnode_is_the_whole_circle() {
    let ring = ring(plain(1), 3, 1);
    let range = ring.range_at(12345);
    assert_eq!(range.start, range.end);
    assert_eq!(range.width(), 1 << 64);
    assert_eq!(range.fraction(), 1.0);
    assert!(range.contains(range.end) && range.contains(range.end.wrapping_add(1)));
    assert_eq!(ring.preference_list(b"anything"), ids(&[1]));
}

#[test]
fn fewer_members_than_replicas() {
    let ring = ring(plain(2), 3, 8);
    assert_eq!(ring.replica_count(), 2);
    for range in ring.ranges() {
        let mut sorted = range.preference.to_vec();
        sorted.sort();
        assert_eq!(sorted, ids(&[1, 2]));
    }
}

#[test]
fn invalid_input_is_an_error() {
    let config = RingConfig::default();
    let err = |members: Vec<Member>, config: RingConfig| Ring::new(members, config).unwrap_err();
    assert_eq!(err(vec![], config), RingError::MembersEmpty);
    assert_eq!(
        err(plain(3), RingConfig { replicas: 0, ..config }),
        RingError::ReplicasOutOfRange { replicas: 0, max: REPLICAS_MAX }
    );
    assert_eq!(
        err(plain(3), RingConfig { replicas: REPLICAS_MAX + 1, ..config }),
        RingError::ReplicasOutOfRange { replicas: REPLICAS_MAX + 1, max: REPLICAS_MAX }
    );
    assert_eq!(err(plain(3), RingConfig { vnodes_per_weight: 0, ..config }), RingError::VnodesPerWeightZero);
    let heavy = vec![Member::new(NodeId(1)).with_weight(u32::MAX)];
    assert!(matches!(err(heavy, config), RingError::VnodesTooMany { max: VNODES_MAX, .. }));
    let mut members = plain(3);
    members[1].weight = 0;
    assert_eq!(err(members, config), RingError::WeightZero { node: NodeId(2) });
    let members = vec![Member::new(NodeId(9)), Member::new(NodeId(4)), Member::new(NodeId(9))];
    assert_eq!(err(members, config), RingError::MemberDuplicate { node: NodeId(9) });
    let members = vec![Member::new(NodeId(1)).with_zone("")];
    assert_eq!(err(members, config), RingError::ZoneEmpty { node: NodeId(1) });

    let ring = ring(plain(2), 3, 4);
    assert_eq!(ring.with_member(Member::new(NodeId(2))), Err(RingError::MemberDuplicate { node: NodeId(2) }));
    assert_eq!(ring.without_member(NodeId(3)), Err(RingError::MemberUnknown { node: NodeId(3) }));
    let alone = ring.without_member(NodeId(1)).expect("one member left");
    assert_eq!(alone.without_member(NodeId(2)), Err(RingError::MembersEmpty));
}

fn zoned(zones: &[&str]) -> Vec<Member> {
    (1..).zip(zones).map(|(id, zone)| Member::new(NodeId(id)).with_zone(*zone)).collect()
}

fn zone_of(ring: &Ring, id: NodeId) -> Option<&str> {
    ring.member(id).expect("listed members exist").zone.as_deref()
}

#[test]
fn replicas_go_to_distinct_zones_first() {
    // Zone c has a single small member, which must still be in every preference list.
    let ring = ring(zoned(&["a", "a", "a", "b", "b", "b", "c"]), 3, 16);
    for range in ring.ranges() {
        let mut zones: Vec<_> = range.preference.iter().map(|&id| zone_of(&ring, id)).collect();
        zones.sort();
        assert_eq!(zones, [Some("a"), Some("b"), Some("c")], "{range:?}");
        assert!(range.preference.contains(&NodeId(7)));
    }
}

#[test]
fn fewer_zones_than_replicas_fills_with_distinct_members() {
    let ring = ring(zoned(&["a", "a", "a", "b", "b"]), 4, 16);
    for range in ring.ranges() {
        let list = range.preference;
        assert_ne!(zone_of(&ring, list[0]), zone_of(&ring, list[1]), "{range:?}");
        let mut sorted = list.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        // The fill slots follow clockwise order among the members not yet chosen.
        let walk: Vec<NodeId> = Walk {
            ring: &ring,
            preference: &[],
            start: ring.range_index(range.end),
            distance: 0,
            yielded: 0,
        }
        .collect();
        let fill: Vec<NodeId> = walk.into_iter().filter(|id| !list[..2].contains(id)).take(2).collect();
        assert_eq!(&list[2..], fill);
    }
}

#[test]
fn members_without_zone_share_one() {
    let mut members = zoned(&["a", "a"]);
    members.extend([Member::new(NodeId(3)), Member::new(NodeId(4))]);
    let ring = ring(members, 2, 16);
    for range in ring.ranges() {
        assert_ne!(zone_of(&ring, range.preference[0]), zone_of(&ring, range.preference[1]));
    }
}

#[test]
fn weight_scales_ownership() {
    let mut members = plain(8);
    members[0].weight = 2;
    let ring = ring(members, 3, 64);
    let ownership = ring.ownership();
    assert_eq!(ownership[&NodeId(1)].vnodes, 128);
    assert_eq!(ownership[&NodeId(2)].vnodes, 64);
    let light: f64 = (2..=8).map(|id| ownership[&NodeId(id)].primary).sum::<f64>() / 7.0;
    let ratio = ownership[&NodeId(1)].primary / light;
    assert!((1.6..=2.4).contains(&ratio), "weight 2 owns {ratio}x a weight-1 member");
    let total: f64 = ownership.values().map(|share| share.replica).sum();
    assert!((total - 3.0).abs() < 1e-9);
}

#[test]
fn walk_gives_preference_then_every_other_member() {
    let ring = ring(plain(7), 3, 8);
    for key in [&b"x"[..], b"y", b"z"] {
        let walk: Vec<NodeId> = ring.walk(key).collect();
        assert_eq!(ring.walk(key).len(), 7);
        assert_eq!(&walk[..3], ring.preference_list(key));
        let mut sorted = walk.clone();
        sorted.sort();
        assert_eq!(sorted, ids(&[1, 2, 3, 4, 5, 6, 7]));
    }
}

#[test]
fn join_moves_ranges_to_the_new_member() {
    let old = ring(plain(4), 3, 32);
    let new = old.with_member(Member::new(NodeId(5))).expect("new id");
    let moves = moves(&old, &new);
    assert!(!moves.ranges.is_empty());
    for range in &moves.ranges {
        assert!(range.new.contains(&NodeId(5)));
        assert_eq!(range.gained().collect::<Vec<_>>(), ids(&[5]), "{range:?}");
    }
    let joined = moves.transfers[&NodeId(5)];
    assert_eq!(joined.outbound, 0.0);
    assert!((joined.inbound - new.ownership()[&NodeId(5)].replica).abs() < 1e-12);
    let outbound: f64 = moves.transfers.values().map(|transfer| transfer.outbound).sum();
    assert!((outbound - joined.inbound).abs() < 1e-12);
    assert!(moves.primary_moved <= moves.replicas_moved);
    assert_eq!(crate::ring::moves(&new, &new), Moves { transfers: moves_zero(&new), ..Moves::default() });
}

fn moves_zero(ring: &Ring) -> std::collections::BTreeMap<NodeId, Transfer> {
    ring.members().iter().map(|member| (member.id, Transfer::default())).collect()
}

#[test]
fn key_distribution_counts_primaries() {
    let ring = ring(plain(4), 2, 64);
    let keys: Vec<String> = (0..4000).map(|index| format!("key-{index}")).collect();
    let counts = ring.key_distribution(&keys);
    assert_eq!(counts.len(), 4);
    assert_eq!(counts.values().sum::<u64>(), 4000);
    for (id, share) in ring.ownership() {
        let expected = share.primary * 4000.0;
        assert!((counts[&id] as f64 - expected).abs() < 4.0 * expected.sqrt() + 1.0);
    }
}

#[test]
fn member_roundtrips_through_postcard() {
    let member = Member::new(NodeId(3)).with_weight(2).with_zone("eu-1a");
    let bytes = postcard::to_allocvec(&member).expect("encodes");
    assert_eq!(postcard::from_bytes::<Member>(&bytes).expect("decodes"), member);
}

#[test]
fn position_ranges_split_into_clockwise_intervals() {
    let intervals = |start, end| PositionRange { start, end }.intervals().collect::<Vec<_>>();
    assert_eq!(intervals(10, 20), [(11, 20)]);
    assert_eq!(intervals(20, 10), [(21, u64::MAX), (0, 10)], "wraps: the top first, then from 0");
    assert_eq!(intervals(7, 7), [(8, u64::MAX), (0, 7)], "equal ends: the whole circle");
    assert_eq!(intervals(u64::MAX, 5), [(0, 5)], "nothing lies past the top position");
    assert_eq!(intervals(u64::MAX, u64::MAX), [(0, u64::MAX)]);
    assert_eq!(intervals(0, u64::MAX), [(1, u64::MAX)]);
    let ring = ring(plain(3), 2, 4);
    let range = ring.range_at(position(b"key"));
    assert_eq!(range.positions(), PositionRange { start: range.start, end: range.end });
    assert!(range.contains(position(b"key")));
}

#[test]
fn a_placed_key_carries_its_position() {
    let placed = PlacedKey::new(b"key");
    assert_eq!((placed.key(), placed.position()), (&b"key"[..], position(b"key")));
    assert_eq!(PlacedKey::known(b"key", placed.position()), placed);
}
