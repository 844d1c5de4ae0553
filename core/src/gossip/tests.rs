//! Gossip's state machine, driven by hand and on the simulated network.

use core::time::Duration;

use super::harness::{Network, Sim};
use super::*;

fn address(id: u64) -> Address {
    Sim::address(NodeId(id))
}

fn alive(id: u64, incarnation: u64) -> Update {
    Update::new(NodeId(id), address(id), incarnation, State::Alive, NodeId(id), 0).unwrap()
}

fn accused(id: u64, incarnation: u64, state: State, by: u64) -> Update {
    Update::new(NodeId(id), address(id), incarnation, state, NodeId(by), 0).unwrap()
}

/// Node 1, alone, at time zero, its start-up outputs drained. Tests call
/// it at whatever time they like, not only when it asked: it must not take
/// that for a pause.
fn node() -> Gossip {
    node_with(Config { pause_threshold: Duration::from_secs(3600), ..Config::default() })
}

fn node_with(config: Config) -> Gossip {
    let mut gossip = Gossip::new(config, NodeId(1), address(1), Vec::new(), 7, Instant::ZERO).unwrap();
    drain(&mut gossip);
    gossip
}

fn drain(gossip: &mut Gossip) -> Vec<Output> {
    gossip.invariants().unwrap();
    std::iter::from_fn(|| gossip.poll_output()).collect()
}

fn sync(members: Vec<Update>) -> Message {
    Message::Sync { reply_to: address(2), reply_wanted: false, members: SyncMembers::new(members).unwrap() }
}

fn ping(target: u64, updates: Vec<Update>) -> Message {
    Message::Ping {
        seq: 1,
        target: NodeId(target),
        reply_to: address(2),
        updates: Updates::new(updates).unwrap(),
    }
}

fn state(gossip: &Gossip, id: u64) -> (State, u64) {
    let member = gossip.member(NodeId(id)).unwrap();
    (member.state, member.incarnation)
}

#[test]
fn a_suspicion_of_itself_is_refuted_in_the_ack() {
    let mut gossip = node();
    let at = Instant::from_nanos(1_000);
    gossip.handle_message(NodeId(2), ping(1, vec![accused(1, 0, State::Suspect, 2)]), at);
    assert_eq!(state(&gossip, 1), (State::Alive, 1));
    assert_eq!(gossip.stats().suspicions_refuted, 1);
    assert_eq!(gossip.stats().health, 1, "a refutation counts against this node's health");
    let outputs = drain(&mut gossip);
    let Some(Output::Send { to, message: Message::Ack { seq: 1, updates }, .. }) = outputs.last() else {
        panic!("no ack: {outputs:?}");
    };
    assert_eq!(*to, Some(NodeId(2)));
    assert!(updates.as_slice().contains(&alive(1, 1)), "the ack carries the refutation: {updates:?}");
    assert!(outputs.contains(&Output::Event(Event::Refuted { claim: State::Suspect, incarnation: 1 })));
}

/// A claim that this node is dead at its own incarnation is nonsense to
/// it: it refutes; claims below its incarnation are stale and ignored.
#[test]
fn claims_of_its_own_death_are_refuted_and_stale_ones_ignored() {
    let mut gossip = node();
    gossip.handle_message(NodeId(2), sync(vec![accused(1, 0, State::Dead, 2)]), Instant::ZERO);
    assert_eq!(state(&gossip, 1), (State::Alive, 1));
    gossip.handle_message(NodeId(2), sync(vec![accused(1, 5, State::Suspect, 3)]), Instant::ZERO);
    assert_eq!(state(&gossip, 1), (State::Alive, 6));
    gossip.handle_message(NodeId(2), sync(vec![accused(1, 5, State::Dead, 3), alive(1, 3)]), Instant::ZERO);
    assert_eq!(state(&gossip, 1), (State::Alive, 6));
    assert_eq!(gossip.stats().suspicions_refuted, 2);
    // An earlier life that got further is outrun, without blame.
    gossip.handle_message(NodeId(2), sync(vec![alive(1, 9)]), Instant::ZERO);
    assert_eq!(state(&gossip, 1), (State::Alive, 10));
    assert_eq!(gossip.stats().suspicions_refuted, 2);
}

#[test]
fn claims_about_others_follow_the_swim_order() {
    let mut gossip = node();
    let t = Instant::ZERO;
    gossip.handle_message(NodeId(2), sync(vec![alive(2, 0), alive(3, 0), alive(4, 0)]), t);
    gossip.handle_message(NodeId(3), ping(1, vec![accused(2, 0, State::Suspect, 3)]), t);
    assert_eq!(state(&gossip, 2), (State::Suspect, 0));
    assert!(gossip.is_up(NodeId(2)), "a suspect is still up");
    // Alive at the suspected incarnation does not clear a suspicion.
    gossip.handle_message(NodeId(3), ping(1, vec![alive(2, 0)]), t);
    assert_eq!(state(&gossip, 2), (State::Suspect, 0));
    gossip.handle_message(NodeId(3), ping(1, vec![accused(2, 0, State::Dead, 4)]), t);
    assert_eq!(state(&gossip, 2), (State::Dead, 0));
    assert!(!gossip.is_up(NodeId(2)));
    // Dead members stay members, and come back with a higher incarnation.
    gossip.handle_message(NodeId(3), ping(1, vec![alive(2, 1)]), t);
    assert_eq!(state(&gossip, 2), (State::Alive, 1));
    // A graceful leave outranks an accusation at the same incarnation.
    gossip.handle_message(NodeId(3), ping(1, vec![accused(3, 0, State::Dead, 2)]), t);
    let left = Update::new(NodeId(3), address(3), 0, State::Left, NodeId(3), 0).unwrap();
    gossip.handle_message(NodeId(4), ping(1, vec![left]), t);
    assert_eq!(state(&gossip, 3), (State::Left, 0));
    let changes: Vec<(NodeId, Option<State>, State)> = drain(&mut gossip)
        .into_iter()
        .filter_map(|output| match output {
            Output::Event(Event::StateChanged { id, previous, state, .. }) if id != NodeId(4) => {
                Some((id, previous, state))
            }
            _ => None,
        })
        .collect();
    use State::*;
    let expected = [
        (NodeId(2), None, Alive),
        (NodeId(3), None, Alive),
        (NodeId(2), Some(Alive), Suspect),
        (NodeId(2), Some(Suspect), Dead),
        (NodeId(2), Some(Dead), Alive),
        (NodeId(3), Some(Alive), Dead),
        (NodeId(3), Some(Dead), Left),
    ];
    assert_eq!(changes, expected);
}

#[test]
fn independent_confirmations_shorten_a_suspicion() {
    let mut gossip = node();
    let t = Instant::ZERO;
    let members = (2..=6).map(|id| alive(id, 0)).collect();
    gossip.handle_message(NodeId(2), sync(members), t);
    gossip.handle_message(NodeId(3), ping(1, vec![accused(2, 0, State::Suspect, 3)]), t);
    let (min, max) = gossip.config.suspicion_timeouts(6);
    assert_eq!(gossip.suspicions[&NodeId(2)].deadline, t + max);
    // The same accuser again changes nothing; two others bring it to min.
    gossip.handle_message(NodeId(3), ping(1, vec![accused(2, 0, State::Suspect, 3)]), t);
    assert_eq!(gossip.suspicions[&NodeId(2)].deadline, t + max);
    gossip.handle_message(NodeId(4), ping(1, vec![accused(2, 0, State::Suspect, 4)]), t);
    gossip.handle_message(NodeId(5), ping(1, vec![accused(2, 0, State::Suspect, 5)]), t);
    assert_eq!(gossip.suspicions[&NodeId(2)].deadline, t + min);
    drain(&mut gossip);
    gossip.handle_timeout(t + min);
    assert_eq!(state(&gossip, 2), (State::Dead, 0));
    assert_eq!(gossip.member(NodeId(2)).unwrap().by, NodeId(1), "this node declared it");
}

#[test]
fn layout_versions_keep_their_maximum() {
    let mut gossip = node();
    gossip.set_layout_version(4);
    gossip.set_layout_version(2);
    assert_eq!(gossip.layout_version(), 4);
    let peer = Update::new(NodeId(2), address(2), 0, State::Alive, NodeId(2), 7).unwrap();
    gossip.handle_message(NodeId(2), sync(vec![peer]), Instant::ZERO);
    assert_eq!(gossip.layout_version(), 7);
    let older = Update::new(NodeId(2), address(2), 0, State::Alive, NodeId(2), 5).unwrap();
    gossip.handle_message(NodeId(3), sync(vec![older]), Instant::ZERO);
    let holders: Vec<NodeId> = gossip.layout_holders(5).map(|member| member.id).collect();
    assert_eq!(holders, [NodeId(2)]);
    assert!(drain(&mut gossip).contains(&Output::Event(Event::LayoutSeen { version: 7, holder: NodeId(2) })));
}

#[test]
fn a_new_node_asks_its_seed_at_once_and_until_it_answers() {
    let seeds = vec![address(1), address(9)];
    let config = Config { pause_threshold: Duration::from_secs(3600), ..Config::default() };
    let mut gossip = Gossip::new(config.clone(), NodeId(9), address(9), seeds, 3, Instant::ZERO).unwrap();
    assert_eq!(gossip.poll_timeout(), Some(Instant::ZERO));
    gossip.handle_timeout(Instant::ZERO);
    let sent: Vec<(Option<NodeId>, Address)> = drain(&mut gossip)
        .into_iter()
        .filter_map(|output| match output {
            Output::Send { to, address, message: Message::Sync { reply_wanted: true, .. } } => {
                Some((to, address))
            }
            _ => None,
        })
        .collect();
    assert_eq!(sent, [(None, address(1))], "its own address is no seed");
    gossip.handle_timeout(Instant::ZERO + config.join_retry_interval);
    assert!(drain(&mut gossip).iter().any(|output| matches!(output, Output::Send { to: None, .. })));
}

/// A probe that nobody answers: helpers are asked after the timeout, the
/// target is suspected at the end of the period, dead after the longest
/// suspicion (no one confirms), and the missed nacks raise this node's
/// health score.
#[test]
fn an_unanswered_probe_goes_indirect_then_suspects() {
    let mut gossip = node();
    let members = (2..=5).map(|id| alive(id, 0)).collect();
    gossip.handle_message(NodeId(2), sync(members), Instant::ZERO);
    drain(&mut gossip);
    let mut pinged = None;
    let mut now;
    let mut helpers = 0;
    let target = loop {
        now = gossip.poll_timeout().unwrap();
        gossip.handle_timeout(now);
        let mut suspected = None;
        for output in drain(&mut gossip) {
            match output {
                Output::Send { message: Message::PingReq { target, .. }, .. } => {
                    assert_eq!(Some(target), pinged);
                    helpers += 1;
                }
                Output::Event(Event::SuspicionRaised { id, .. }) => suspected = Some(id),
                // The next period's probe.
                Output::Send { to, message: Message::Ping { target, .. }, .. } => {
                    assert_eq!(to, Some(target));
                    if suspected.is_none() {
                        pinged = Some(target);
                    }
                }
                _ => {}
            }
        }
        if let Some(id) = suspected {
            break id;
        }
    };
    assert_eq!(Some(target), pinged);
    assert_eq!(helpers, 3);
    assert_eq!(gossip.member(target).unwrap().state, State::Suspect);
    assert_eq!(gossip.stats().health, 3, "three helpers that never nacked");
    let (_, max) = gossip.config.suspicion_timeouts(5);
    let deadline = gossip.suspicions[&target].deadline;
    assert_eq!(deadline, now + max);
}

#[test]
fn a_late_call_is_taken_as_a_pause_and_judges_nobody() {
    let mut gossip = node_with(Config::default());
    let members = (2..=5).map(|id| alive(id, 0)).collect();
    gossip.handle_message(NodeId(2), sync(members), Instant::ZERO);
    gossip.handle_message(NodeId(3), ping(1, vec![accused(4, 0, State::Suspect, 3)]), Instant::ZERO);
    let suspicion_deadline = gossip.suspicions[&NodeId(4)].deadline;
    // Start a probe, then sleep through its period and the suspicion.
    let first = gossip.poll_timeout().unwrap();
    gossip.handle_timeout(first);
    drain(&mut gossip);
    let late = suspicion_deadline + Duration::from_secs(10);
    gossip.handle_timeout(late);
    let outputs = drain(&mut gossip);
    assert!(
        matches!(outputs.first(), Some(Output::Event(Event::PauseDetected { .. }))),
        "the pause is noticed: {outputs:?}"
    );
    assert_eq!(gossip.stats().suspicions_raised, 0);
    assert_eq!(gossip.stats().probes_failed, 0);
    assert_eq!(state(&gossip, 4), (State::Suspect, 0), "the suspicion waits");
    assert!(gossip.suspicions[&NodeId(4)].deadline >= late + gossip.config.probe_interval);
    assert_eq!(gossip.stats().health, 1);
    assert!(outputs.iter().all(|output| !matches!(output, Output::Send { .. })), "nothing sent: {outputs:?}");
}

#[test]
fn a_node_that_leaves_stops_probing_and_refutes_nothing() {
    let mut gossip = node();
    let members = (2..=5).map(|id| alive(id, 0)).collect();
    gossip.handle_message(NodeId(2), sync(members), Instant::ZERO);
    drain(&mut gossip);
    gossip.leave(Instant::ZERO);
    let outputs = drain(&mut gossip);
    let told = outputs.iter().filter(|output| matches!(output, Output::Send { .. })).count();
    assert_eq!(told, 3);
    assert_eq!(state(&gossip, 1), (State::Left, 0));
    assert_eq!(gossip.poll_timeout(), None);
    gossip.handle_message(NodeId(2), sync(vec![accused(1, 0, State::Dead, 2)]), Instant::ZERO);
    assert_eq!(state(&gossip, 1), (State::Left, 0));
}

#[test]
fn a_large_state_goes_in_chunks_and_asks_for_one_reply() {
    let mut gossip = node();
    let members: Vec<Update> = (2..=400).map(|id| alive(id, 0)).collect();
    for chunk in members.chunks(SYNC_MEMBERS_MAX) {
        gossip.handle_message(NodeId(2), sync(chunk.to_vec()), Instant::ZERO);
    }
    drain(&mut gossip);
    let mut request = sync(vec![alive(2, 0)]);
    if let Message::Sync { reply_wanted, .. } = &mut request {
        *reply_wanted = true;
    }
    gossip.handle_message(NodeId(2), request, Instant::ZERO);
    let chunks: Vec<(usize, bool)> = drain(&mut gossip)
        .into_iter()
        .filter_map(|output| match output {
            Output::Send {
                to: Some(NodeId(2)),
                message: Message::Sync { members, reply_wanted, .. },
                ..
            } => Some((members.len(), reply_wanted)),
            _ => None,
        })
        .collect();
    assert_eq!(chunks, [(SYNC_MEMBERS_MAX, false), (400 - SYNC_MEMBERS_MAX, false)]);
}

#[test]
fn messages_from_itself_or_for_another_node_are_ignored() {
    let mut gossip = node();
    gossip.handle_message(NodeId(1), ping(1, vec![alive(2, 0)]), Instant::ZERO);
    assert!(gossip.member(NodeId(2)).is_none());
    gossip.handle_message(NodeId(2), ping(3, Vec::new()), Instant::ZERO);
    assert!(drain(&mut gossip).is_empty(), "no ack for a ping meant for another node");
}

// On the simulated network.

fn lossy() -> Network {
    Network {
        delay_min: Duration::from_millis(1),
        delay_max: Duration::from_millis(20),
        drop_per_million: 20_000,
    }
}

fn dead_declared(sim: &Sim, id: NodeId) -> bool {
    sim.events.iter().any(
        |(_, _, event)| matches!(event, Event::StateChanged { id: of, state: State::Dead, .. } if *of == id),
    )
}

#[test]
fn a_cluster_forms_through_one_seed_and_detects_a_failure() {
    let mut sim = Sim::new(Config::default(), lossy(), 11);
    sim.start_cluster(16, Duration::from_secs(60));
    assert!(sim.agree());
    let killed = NodeId(7);
    sim.kill(killed);
    let limit = sim.now() + Duration::from_secs(60);
    let known = sim.run_until(limit, Duration::from_millis(100), |sim| sim.all_see(killed, State::Dead));
    assert!(known.is_some(), "the failure was not known everywhere in time");
    for id in sim.ids().collect::<Vec<_>>() {
        assert!(!dead_declared(&sim, id), "{id} was declared dead");
    }
}

#[test]
fn a_joining_node_reaches_everyone_and_learns_everyone() {
    let mut sim = Sim::new(Config::default(), lossy(), 12);
    sim.start_cluster(20, Duration::from_secs(60));
    sim.add_node(NodeId(21), &[NodeId(5)]);
    let limit = sim.now() + Duration::from_secs(30);
    let joined = sim.run_until(limit, Duration::from_millis(100), |sim| sim.all_alive());
    assert!(joined.is_some(), "the join did not converge");
}

#[test]
fn a_healed_partition_converges_again() {
    let mut sim = Sim::new(Config::default(), Network::default(), 13);
    sim.start_cluster(10, Duration::from_secs(60));
    let left: Vec<NodeId> = (1..=5).map(NodeId).collect();
    let right: Vec<NodeId> = (6..=10).map(NodeId).collect();
    sim.partition(&[&left, &right]);
    let limit = sim.now() + Duration::from_secs(120);
    let split = sim.run_until(limit, Duration::from_millis(100), |sim| {
        left.iter().all(|&a| right.iter().all(|&b| sim.gossip(a).member(b).unwrap().state == State::Dead))
    });
    assert!(split.is_some(), "each side should see the other dead");
    sim.heal();
    let limit = sim.now() + Duration::from_secs(120);
    let healed = sim.run_until(limit, Duration::from_millis(100), |sim| sim.all_alive() && sim.agree());
    assert!(healed.is_some(), "the cluster did not heal");
}

/// A node paused for ten seconds is declared dead by the others, refutes
/// when it resumes, and accuses nobody for its own silence.
#[test]
fn a_paused_node_comes_back_without_accusing_anyone() {
    let mut sim = Sim::new(Config::default(), Network::default(), 14);
    sim.start_cluster(12, Duration::from_secs(60));
    let paused = NodeId(3);
    sim.pause(paused, Duration::from_secs(30));
    let resume_at = sim.now() + Duration::from_secs(30);
    let limit = resume_at + Duration::from_secs(60);
    let back = sim.run_until(limit, Duration::from_millis(100), |sim| {
        sim.now() > resume_at && sim.all_alive() && sim.agree()
    });
    assert!(back.is_some(), "the paused node did not come back");
    assert!(dead_declared(&sim, paused), "the others should have declared it dead meanwhile");
    let accusations = sim
        .events
        .iter()
        .filter(|(_, by, event)| *by == paused && matches!(event, Event::SuspicionRaised { .. }))
        .count();
    assert_eq!(accusations, 0);
    assert_eq!(sim.gossip(paused).stats().pauses_detected, 1);
    assert!(sim.gossip(paused).stats().suspicions_refuted >= 1);
}

#[test]
fn a_leave_and_a_new_layout_spread() {
    let mut sim = Sim::new(Config::default(), lossy(), 15);
    sim.start_cluster(10, Duration::from_secs(60));
    let start = sim.now();
    let (leaver, holder) = (NodeId(4), NodeId(2));
    sim.command(leaver, |gossip, now| gossip.leave(now));
    sim.command(holder, |gossip, _| gossip.set_layout_version(3));
    let limit = start + Duration::from_secs(30);
    let spread = sim.run_until(limit, Duration::from_millis(100), |sim| {
        sim.all_see(leaver, State::Left) && sim.ids().all(|id| sim.gossip(id).layout_version() == 3)
    });
    assert!(spread.is_some());
    assert_eq!(sim.gossip(leaver).stats().suspicions_refuted, 0);
}

/// Lifeguard: a node whose every message takes 600 ms more gets its acks
/// after its probe periods end. Missed nacks raise its health score, which
/// stretches its periods until the acks arrive in time, so it soon stops
/// accusing healthy members; with the multiplier pinned at 1 it accuses
/// one in almost every period.
#[test]
fn a_slow_node_backs_off_before_accusing_others() {
    let accusations_by_slow_node = |health_max| {
        let config = Config { health_max, ..Config::default() };
        let mut sim = Sim::new(config, Network::default(), 16);
        sim.start_cluster(8, Duration::from_secs(60));
        let slow = NodeId(3);
        sim.slow(slow, Duration::from_millis(600));
        let from = sim.events.len();
        sim.run_for(Duration::from_secs(120));
        let accusations = sim.events[from..]
            .iter()
            .filter(|(_, by, event)| *by == slow && matches!(event, Event::SuspicionRaised { .. }))
            .count();
        (accusations, sim.gossip(slow).stats().health)
    };
    let (with_lifeguard, health) = accusations_by_slow_node(Config::default().health_max);
    let (without, _) = accusations_by_slow_node(1);
    assert!(health > 0, "the slow node knows it is slow");
    assert!(with_lifeguard * 10 <= without, "{with_lifeguard} accusations with Lifeguard, {without} without");
}

/// Swarm-style: each seed draws a cluster size and a schedule of faults
/// (partitions, pauses, loss, one kill). After the faults stop, every node
/// must come to see every live node alive and all must agree on every
/// claim, within a bound. Invariants are checked after every call.
#[test]
fn random_faults_then_healing_converge() {
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::{Rng, SeedableRng};
    for seed in 0..24 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let size = 4 + u64::from(rng.next_u32() % 9);
        let mut sim = Sim::new(Config::default(), lossy(), seed);
        sim.start_cluster(size, Duration::from_secs(60));
        let mut killed = None;
        for _ in 0..30 {
            let ids: Vec<NodeId> = sim.ids().collect();
            let pick = |rng: &mut ChaCha8Rng| ids[rng.next_u32() as usize % ids.len()];
            match rng.next_u32() % 6 {
                0 => {
                    let cut = 1 + rng.next_u32() as usize % (ids.len() - 1);
                    sim.partition(&[&ids[..cut]]);
                }
                1 => sim.heal(),
                2 => {
                    let id = pick(&mut rng);
                    if !sim.is_paused(id) {
                        sim.pause(id, Duration::from_millis(u64::from(rng.next_u32() % 15_000)));
                    }
                }
                3 => sim.set_drop_per_million(rng.next_u32() % 200_000),
                4 if killed.is_none() => {
                    let id = pick(&mut rng);
                    sim.kill(id);
                    killed = Some(id);
                }
                _ => {}
            }
            sim.run_for(Duration::from_millis(u64::from(rng.next_u32() % 5_000)));
        }
        sim.heal();
        sim.set_drop_per_million(0);
        let limit = sim.now() + Duration::from_secs(300);
        let healed = sim.run_until(limit, Duration::from_millis(100), |sim| {
            let live_alive = sim.ids().all(|id| sim.is_paused(id) || sim.all_see(id, State::Alive));
            let killed_dead = killed.is_none_or(|id| sim.all_see(id, State::Dead));
            live_alive && killed_dead && sim.agree()
        });
        assert!(healed.is_some(), "seed {seed}: no convergence after the faults stopped");
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut sim = Sim::new(Config::default(), lossy(), seed);
        sim.start_cluster(8, Duration::from_secs(60));
        sim.kill(NodeId(2));
        sim.pause(NodeId(5), Duration::from_secs(3));
        sim.run_for(Duration::from_secs(20));
        (sim.messages_sent, format!("{:?}", sim.events))
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3).1, run(4).1);
}
