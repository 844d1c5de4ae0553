//! The engine against a `BTreeMap` model under random puts, deletes, syncs,
//! flushes, compactions (inline, or as jobs that finish in any order while
//! writes go on), failed syncs, crashes and reopens.
//!
//! The model tracks the state at the durable Lsn and the writes after it.
//! After a crash that drops unsynced bytes the engine must equal the model at
//! the durable Lsn exactly; after a torn crash or a plain reopen it must equal
//! the model at some Lsn between the durable one and the last: never less than
//! what was synced, never a write that was not made.

use std::collections::BTreeMap;
use std::ops::Bound;

use quickcheck::{Arbitrary, Gen, QuickCheck};

use super::*;
use crate::disk::{CrashMode, Faults, MemDisk};

const KEYS: u16 = 40;

#[derive(Clone, Debug)]
enum Op {
    Put { key: u16, value: u16 },
    Delete { key: u16 },
    Sync,
    BeginSync,
    FinishSync,
    FailSync,
    Maintain,
    Flush,
    BeginJob,
    FinishJob { oldest: bool },
    Crash { torn: bool },
    Reopen,
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        let key = u16::arbitrary(g) % KEYS;
        match u8::arbitrary(g) % 100 {
            0..45 => Op::Put { key, value: u16::arbitrary(g) },
            45..60 => Op::Delete { key },
            60..70 => Op::Sync,
            70..74 => Op::BeginSync,
            74..78 => Op::FinishSync,
            78..79 => Op::FailSync,
            79..83 => Op::Maintain,
            83..85 => Op::Flush,
            85..89 => Op::BeginJob,
            89..92 => Op::FinishJob { oldest: bool::arbitrary(g) },
            92..97 => Op::Crash { torn: bool::arbitrary(g) },
            _ => Op::Reopen,
        }
    }
}

fn config() -> EngineConfig {
    EngineConfig {
        memtable_bytes_max: 2 << 10,
        wal_buffer_bytes_max: 200,
        wal_preallocate_bytes: 300,
        block_bytes: 256,
        block_cache_bytes_max: 4 << 10,
        compress_values_over_bytes: 64,
        l0_tables_max: 2,
        level_base_bytes: 6 << 10,
        level_size_ratio: 3,
        table_bytes_target: 3 << 10,
        ..EngineConfig::default()
    }
}

fn value_of(seed: u16) -> Vec<u8> {
    let len = usize::from(seed % 300);
    (0..len).map(|i| (usize::from(seed) + i / 7) as u8).collect()
}

/// The model: the state at the durable Lsn and the writes after it.
#[derive(Default)]
struct Model {
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    pending: Vec<(Lsn, Vec<u8>, Option<Vec<u8>>)>,
}

impl Model {
    fn state_at(&self, lsn: Lsn) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut state = self.durable.clone();
        for (_, key, value) in self.pending.iter().take_while(|(at, ..)| *at <= lsn) {
            match value {
                Some(value) => state.insert(key.clone(), value.clone()),
                None => state.remove(key),
            };
        }
        state
    }

    fn advance_durable(&mut self, durable: Lsn) {
        self.durable = self.state_at(durable);
        self.pending.retain(|(at, ..)| *at > durable);
    }
}

/// What a reopen must recover.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Exactly the synced point: the crash dropped every unsynced byte.
    Synced,
    /// Anything from the synced point to the last appended write: a torn tail.
    Between,
    /// Everything appended: the process stopped, the disk lost nothing.
    Appended,
}

struct Harness {
    disk: MemDisk,
    engine: Engine,
    model: Model,
    in_flight: Option<SyncRequest>,
    /// Jobs handed out and not yet finished.
    jobs: Vec<job::Job>,
    /// What the last successful disk sync covered: everything appended to
    /// its file by then.
    disk_synced: Lsn,
}

impl Harness {
    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Put { key, value } => self.write(&key.to_be_bytes(), Some(value_of(value)))?,
            Op::Delete { key } => self.write(&key.to_be_bytes(), None)?,
            Op::Sync if self.in_flight.is_none() => {
                let _ = self.engine.sync_now();
            }
            Op::Sync | Op::BeginSync if self.in_flight.is_some() => {}
            Op::Sync | Op::BeginSync => self.in_flight = self.engine.begin_sync(),
            Op::FinishSync => {
                if let Some(request) = self.in_flight.take() {
                    let covered = self.covered_by(&request);
                    let result = request.run(&self.disk);
                    if result.is_ok() {
                        self.disk_synced = self.disk_synced.max(covered);
                    }
                    self.engine.finish_sync(request, result);
                }
            }
            Op::FailSync => {
                self.disk.set_faults(Faults { sync_fail_per_million: 1_000_000, ..Faults::default() });
                if self.in_flight.is_none() {
                    let _ = self.engine.sync_now();
                }
                self.disk.set_faults(Faults::default());
            }
            Op::Maintain => {
                for _ in 0..8 {
                    if !self.engine.needs_maintenance() {
                        break;
                    }
                    self.engine.maintain().map_err(|e| format!("maintain: {e}"))?;
                }
            }
            Op::Flush => {
                let _ = self.engine.flush();
            }
            Op::BeginJob if self.engine.needs_maintenance() => match self.engine.next_job() {
                Ok(Some(job)) => self.jobs.push(job),
                Ok(None) => {}
                Err(MaintainError::Poisoned) => {}
                Err(error) => return Err(format!("next job: {error}")),
            },
            Op::BeginJob => {}
            Op::FinishJob { oldest } => {
                if !self.jobs.is_empty() {
                    let job = self.jobs.remove(if oldest { 0 } else { self.jobs.len() - 1 });
                    let done = job.run(&self.disk);
                    match self.engine.finish_job(done) {
                        Ok(_) | Err(MaintainError::Poisoned) => {}
                        Err(error) => return Err(format!("finish job: {error}")),
                    }
                }
            }
            Op::Crash { torn } => {
                self.disk.crash(if torn { CrashMode::TornTail } else { CrashMode::DropUnsynced });
                self.reopen(if torn { Expect::Between } else { Expect::Synced })?;
            }
            Op::Reopen => self.reopen(Expect::Appended)?,
        }
        self.model.advance_durable(self.engine.durable_lsn());
        Ok(())
    }

    /// What a sync of `request`'s file, run now, makes durable: everything
    /// appended, when the file is still the one written to (every older
    /// file was synced before the sync began); the old file's last record
    /// when the log rotated since (nothing reaches the new file before that
    /// sync); the request's own point otherwise.
    fn covered_by(&self, request: &SyncRequest) -> Lsn {
        if request.file == self.engine.wal.file {
            return self.engine.appended_lsn();
        }
        match &self.engine.wal_unsynced {
            Some((file, last)) if *file == request.file => *last,
            _ => request.through,
        }
    }

    fn write(&mut self, key: &[u8], value: Option<Vec<u8>>) -> Result<(), String> {
        let result = match &value {
            Some(value) => self.engine.put(key, value),
            None => self.engine.delete(key),
        };
        match result {
            Ok(lsn) => self.model.pending.push((lsn, key.to_vec(), value.clone())),
            Err(WriteError::Poisoned) if self.engine.is_poisoned() => return Ok(()),
            // A flush job is behind: nothing was written.
            Err(WriteError::Stalled { .. }) => return Ok(()),
            Err(error) => return Err(format!("write failed: {error}")),
        }
        let got = self.engine.get(key).map_err(|e| format!("get: {e}"))?;
        if got != value {
            return Err(format!("read own write of {key:?}: {got:?} != {value:?}"));
        }
        Ok(())
    }

    /// Reopens the engine on the disk as it is and checks it against the model.
    fn reopen(&mut self, expect: Expect) -> Result<(), String> {
        let synced = self.engine.durable_lsn().max(self.disk_synced);
        let appended = self.engine.appended_lsn();
        self.in_flight = None;
        self.jobs.clear();
        self.engine =
            Engine::open(Box::new(self.disk.clone()), config()).map_err(|e| format!("open: {e}"))?;
        let recovered = self.engine.last_lsn();
        let fits = match expect {
            Expect::Synced => recovered == synced,
            Expect::Between => (synced..=appended).contains(&recovered),
            Expect::Appended => recovered == appended,
        };
        if !fits {
            return Err(format!("recovered {recovered}, synced {synced}, appended {appended}, {expect:?}"));
        }
        self.disk_synced = recovered;
        let expected = self.model.state_at(recovered);
        let all =
            self.engine.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX).map_err(|e| e.to_string())?;
        let expected_pairs: Vec<Pair> = expected.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if all != expected_pairs {
            return Err(format!("after reopen at {recovered}: scan {all:?} != model {expected_pairs:?}"));
        }
        let keys = (0..KEYS).map(u16::to_be_bytes).map(|key| key.to_vec()).chain(expected.keys().cloned());
        for key in keys.collect::<Vec<_>>() {
            let got = self.engine.get(&key).map_err(|e| e.to_string())?;
            if got.as_ref() != expected.get(&key) {
                return Err(format!("after reopen at {recovered}: key {key:?} is {got:?}"));
            }
        }
        self.model.pending.retain(|(at, ..)| *at <= recovered);
        self.model.advance_durable(recovered);
        Ok(())
    }
}

fn run(ops: Vec<Op>, seed: u64) -> Result<EngineStats, String> {
    let disk = MemDisk::new(seed);
    let engine = Engine::open(Box::new(disk.clone()), config()).map_err(|e| e.to_string())?;
    let mut harness = Harness {
        disk,
        engine,
        model: Model::default(),
        in_flight: None,
        jobs: Vec::new(),
        disk_synced: Lsn(0),
    };
    for (i, op) in ops.iter().enumerate() {
        harness.apply(op).map_err(|error| format!("op {i} {op:?}: {error}"))?;
    }
    let stats = harness.engine.stats();
    harness.disk.crash(CrashMode::DropUnsynced);
    harness.reopen(Expect::Synced).map_err(|error| format!("final crash: {error}"))?;
    Ok(stats)
}

#[test]
fn engine_matches_a_btreemap_across_crashes() {
    fn property(ops: Vec<Op>, seed: u64) -> Result<EngineStats, String> {
        run(ops, seed)
    }
    fn check(ops: Vec<Op>, seed: u64) -> bool {
        match property(ops, seed) {
            Ok(_) => true,
            Err(error) => {
                eprintln!("{error}");
                false
            }
        }
    }
    QuickCheck::new().tests(300).rng(Gen::new(300)).quickcheck(check as fn(Vec<Op>, u64) -> bool);
}

#[test]
fn long_histories_reach_deep_levels() {
    let mut g = Gen::new(2_000);
    for seed in 0..4 {
        let ops: Vec<Op> = (0..3_000)
            .map(|_| match Op::arbitrary(&mut g) {
                Op::Crash { .. } | Op::Reopen | Op::FailSync => Op::Maintain,
                Op::Put { value, .. } => Op::Put { key: u16::arbitrary(&mut g) % 2_000, value },
                op => op,
            })
            .collect();
        let stats = run(ops, seed).unwrap();
        assert!(stats.compactions > 0, "{stats:?}");
        assert!(stats.tables_per_level.iter().skip(2).any(|&n| n > 0), "{stats:?}");
    }
}

/// Found by `engine_matches_a_btreemap_across_crashes`: a flush job begun
/// before a sync and installed before it finished rotates no log, so the
/// sync covers every write appended since; the model used to credit none.
#[test]
fn a_sync_covers_writes_across_the_install_of_an_earlier_flush() {
    use Op::*;
    let puts =
        [(0, 22238), (33, 53513), (23, 4052), (1, 63476), (21, 22798), (18, 31151), (11, 32036), (36, 21016)];
    let mut ops: Vec<Op> = puts.into_iter().map(|(key, value)| Put { key, value }).collect();
    ops.extend([BeginJob, Put { key: 22, value: 34672 }, BeginSync, Delete { key: 4 }]);
    ops.extend([Put { key: 1, value: 2550 }, FinishJob { oldest: true }, FinishSync]);
    run(ops, 0).unwrap();
}
