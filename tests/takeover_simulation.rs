//! A seeded simulation of ownership changes over the object WAL: three nodes share one object
//! store and, step by step as a seed decides, append to their streams (many appends in flight),
//! are killed without warning, restart, keep running as zombies while another node recovers
//! them, recover each other, hand streams over with close/open, and meet injected object-store
//! faults (throttling, timeouts, writes whose response is lost).
//!
//! A model records every append and how it ended. At the end every node is taken over by a
//! fresh one, which reads every stream back, and the model checks:
//! - G1: every acknowledged batch is at its offset with its bytes;
//! - G2: no append that failed as fenced is visible;
//! - G3/G4: offsets are dense from the stream's start to its end, each visible batch is one
//!   that was appended to that stream, and none appears twice.
//!
//! 1 000 seeds run in the normal test run on an in-memory store (`OBJSTREAM_SIM_SEEDS` changes
//! the count, `OBJSTREAM_SIM_SEED` runs one seed), and a few on the S3 server. A failure names
//! its seed.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use objstream::testing::{Fault, FaultyObjectStore, RandomFaults};
use objstream::{
    AppendFuture, Components, NodeId, RecordBatch, Settings, Store, Stream, StreamId, WalSettings,
};

/// Totals over every seed of a run, printed at the end: proof that the runs did something.
#[derive(Default)]
struct Totals {
    acked: AtomicU64,
    fenced: AtomicU64,
    other_errors: AtomicU64,
    zombie_takeovers: AtomicU64,
    recovered_batches: AtomicU64,
    handoffs: AtomicU64,
    restarts: AtomicU64,
}

static TOTALS: Totals = Totals {
    acked: AtomicU64::new(0),
    fenced: AtomicU64::new(0),
    other_errors: AtomicU64::new(0),
    zombie_takeovers: AtomicU64::new(0),
    recovered_batches: AtomicU64::new(0),
    handoffs: AtomicU64::new(0),
    restarts: AtomicU64::new(0),
};

fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn totals() -> String {
    let t = &TOTALS;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    format!(
        "{} appends acknowledged, {} failed as fenced, {} failed otherwise; {} zombie takeovers, {} batches recovered from WALs, {} handoffs, {} restarts",
        get(&t.acked),
        get(&t.fenced),
        get(&t.other_errors),
        get(&t.zombie_takeovers),
        get(&t.recovered_batches),
        get(&t.handoffs),
        get(&t.restarts),
    )
}

const NODES: u64 = 3;
const VERIFIER: NodeId = NodeId(100);
const MAX_STREAMS: usize = 4;
/// Long enough for any step under injected faults; a step that takes longer is a hang.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// SplitMix64: the simulation's only source of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the model knows of one stream.
#[derive(Default)]
struct StreamModel {
    /// Tag of every batch ever appended, with its record count.
    appended: HashMap<u64, u32>,
    /// Acknowledged batches: base offset -> (tag, next offset).
    acked: BTreeMap<u64, (u64, u64)>,
    /// Appends that failed as fenced: never visible.
    fenced: HashSet<u64>,
}

struct Pending {
    stream: u64,
    tag: u64,
    future: AppendFuture,
}

/// One node of the simulation. `store` is `None` while it is down.
struct SimNode {
    id: NodeId,
    store: Option<Store>,
    handles: BTreeMap<u64, Stream>,
    pending: VecDeque<Pending>,
    /// Another node recovered this one while it kept running.
    zombie: bool,
    /// Down and not yet recovered by anyone: its WAL may hold acknowledged data.
    needs_recovery: bool,
}

struct Sim {
    seed: u64,
    rng: Rng,
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    nodes: Vec<SimNode>,
    streams: BTreeMap<u64, StreamModel>,
    next_tag: u64,
    log: Vec<String>,
}

fn settings(node: NodeId) -> Settings {
    Settings {
        node_id: node,
        wal: WalSettings::Object {
            url: None,
            batch_bytes: 8 << 10,
            linger_micros: 500,
            linger_mode: objstream::WalLinger::WhenBusy,
            max_in_flight: 4,
        },
        upload_threshold_bytes: 32 << 10,
        upload_interval_ms: 15,
        block_bytes: 4 << 10,
        max_batch_bytes: 64 << 10,
        log_cache_bytes: 8 << 20,
        block_cache_bytes: 4 << 20,
        ..Settings::default()
    }
}

/// The payload of the batch tagged `tag` on `stream`: names both, of varying size.
fn payload(stream: u64, tag: u64) -> Bytes {
    let len = 24 + ((stream * 31 + tag * 7919) % 700) as usize;
    let mut v = format!("stream {stream} tag {tag} ").into_bytes();
    v.resize(len, b'a' + (tag % 26) as u8);
    Bytes::from(v)
}

fn tag_of(stream: u64, bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let rest = text.strip_prefix(&format!("stream {stream} tag "))?;
    let tag: u64 = rest.split(' ').next()?.parse().ok()?;
    (bytes == payload(stream, tag).as_ref()).then_some(tag)
}

async fn limited<T>(what: &str, seed: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("seed {seed}: {what} hung for {STEP_LIMIT:?}"))
}

impl Sim {
    async fn new(seed: u64, objects: Arc<dyn ObjectStore>, prefix: Path) -> Sim {
        let mut sim = Sim {
            seed,
            rng: Rng(seed),
            objects,
            prefix,
            nodes: Vec::new(),
            streams: BTreeMap::new(),
            next_tag: 0,
            log: Vec::new(),
        };
        for id in 1..=NODES {
            let store = sim.open_store(NodeId(id)).await;
            sim.nodes.push(SimNode {
                id: NodeId(id),
                store: Some(store),
                handles: BTreeMap::new(),
                pending: VecDeque::new(),
                zombie: false,
                needs_recovery: false,
            });
        }
        sim
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        let tail: Vec<_> = self.log.iter().rev().take(40).rev().collect();
        panic!(
            "seed {}: {what}\nlast steps:\n  {}",
            self.seed,
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        )
    }

    async fn open_store(&self, id: NodeId) -> Store {
        let mut last = None;
        // Injected faults may outlast a call's retries; opening again is what an operator does.
        for _ in 0..5 {
            let opened = limited(
                "opening a node",
                self.seed,
                Store::open(
                    settings(id),
                    Components::new(self.objects.clone(), self.prefix.clone()),
                ),
            )
            .await;
            match opened {
                Ok(store) => return store,
                Err(e) => last = Some(e),
            }
        }
        self.fail(format!("{id} could not open: {last:?}"))
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].store.is_some() && !self.nodes[i].zombie)
            .collect()
    }

    fn pick(&mut self, from: &[usize]) -> Option<usize> {
        (!from.is_empty()).then(|| from[self.rng.below(from.len() as u64) as usize])
    }

    async fn step(&mut self) {
        match self.rng.below(100) {
            0..=39 => self.append(),
            40..=54 => self.settle_some().await,
            55..=61 => self.create_stream().await,
            62..=68 => self.kill(),
            69..=75 => self.zombie_takeover().await,
            76..=82 => self.recover_dead().await,
            83..=89 => self.restart().await,
            _ => self.hand_over().await,
        }
    }

    fn append(&mut self) {
        let with_handles: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].store.is_some() && !self.nodes[i].handles.is_empty())
            .collect();
        let Some(i) = self.pick(&with_handles) else {
            return;
        };
        let streams: Vec<u64> = self.nodes[i].handles.keys().copied().collect();
        let stream = streams[self.rng.below(streams.len() as u64) as usize];
        let n = 1 + self.rng.below(4);
        for _ in 0..n {
            let tag = self.next_tag;
            self.next_tag += 1;
            let count = 1 + (tag % 3) as u32;
            self.streams
                .entry(stream)
                .or_default()
                .appended
                .insert(tag, count);
            let future = self.nodes[i].handles[&stream].append(RecordBatch::new(
                count,
                tag as i64,
                payload(stream, tag),
            ));
            self.nodes[i].pending.push_back(Pending {
                stream,
                tag,
                future,
            });
        }
        self.log.push(format!(
            "{} appends {n} to stream {stream}",
            self.nodes[i].id
        ));
    }

    /// Awaits the oldest pending appends of one node and records how they ended.
    async fn settle_some(&mut self) {
        let with_pending: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].pending.is_empty())
            .collect();
        let Some(i) = self.pick(&with_pending) else {
            return;
        };
        let n = 1 + self.rng.below(8) as usize;
        self.settle(i, n).await;
    }

    async fn settle(&mut self, i: usize, n: usize) {
        for _ in 0..n {
            let Some(p) = self.nodes[i].pending.pop_front() else {
                return;
            };
            let outcome = limited("an append", self.seed, p.future).await;
            let model = self.streams.entry(p.stream).or_default();
            match outcome {
                Ok(r) => {
                    if let Some((tag, _)) = model.acked.get(&r.base_offset.0) {
                        let msg = format!(
                            "stream {} offset {} acknowledged twice: tags {tag} and {}",
                            p.stream, r.base_offset, p.tag
                        );
                        self.fail(msg);
                    }
                    model
                        .acked
                        .insert(r.base_offset.0, (p.tag, r.next_offset.0));
                    count(&TOTALS.acked, 1);
                }
                Err(e) if e.is_fenced() => {
                    model.fenced.insert(p.tag);
                    count(&TOTALS.fenced, 1);
                }
                Err(_) => count(&TOTALS.other_errors, 1),
            }
        }
        let id = self.nodes[i].id;
        self.log.push(format!("{id} settles {n}"));
    }

    async fn create_stream(&mut self) {
        if self.streams.len() >= MAX_STREAMS {
            return;
        }
        let live = self.live();
        let Some(i) = self.pick(&live) else {
            return;
        };
        let store = self.nodes[i].store.as_ref().unwrap();
        if let Ok(Ok(s)) = tokio::time::timeout(STEP_LIMIT, store.create_stream()).await {
            let id = s.id().0;
            self.streams.entry(id).or_default();
            self.nodes[i].handles.insert(id, s);
            self.log
                .push(format!("{} creates stream {id}", self.nodes[i].id));
        }
    }

    /// Drops a node with its appends in flight, as a crash would: their outcome is unknown.
    fn kill(&mut self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].store.is_some())
            .collect();
        let Some(i) = self.pick(&up) else {
            return;
        };
        self.kill_index(i);
        let id = self.nodes[i].id;
        self.log.push(format!("{id} killed"));
    }

    /// Another node recovers a node that keeps running: the running one is a zombie, its
    /// appends in flight race the seal.
    async fn zombie_takeover(&mut self) {
        let live = self.live();
        let Some(victim) = self.pick(&live) else {
            return;
        };
        let others: Vec<usize> = live.into_iter().filter(|&i| i != victim).collect();
        let Some(by) = self.pick(&others) else {
            return;
        };
        // A few more appends race the takeover.
        for _ in 0..self.rng.below(3) {
            self.append();
        }
        self.nodes[victim].zombie = true;
        self.recover(by, victim).await;
        count(&TOTALS.zombie_takeovers, 1);
    }

    async fn recover_dead(&mut self) {
        let dead: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].needs_recovery)
            .collect();
        let Some(victim) = self.pick(&dead) else {
            return;
        };
        let live = self.live();
        let Some(by) = self.pick(&live) else {
            return;
        };
        self.recover(by, victim).await;
    }

    async fn recover(&mut self, by: usize, victim: usize) {
        let failed = self.nodes[victim].id;
        let store = self.nodes[by].store.as_ref().unwrap();
        let mut last = None;
        for _ in 0..5 {
            match limited(
                "recover_node",
                self.seed,
                store.recover_node_from(failed, &settings(failed).wal),
            )
            .await
            {
                Ok(report) => {
                    self.nodes[victim].needs_recovery = false;
                    count(&TOTALS.recovered_batches, report.batches_recovered as u64);
                    let msg = format!(
                        "{} recovers {failed}: {} batches, {} streams closed",
                        self.nodes[by].id,
                        report.batches_recovered,
                        report.streams_closed.len()
                    );
                    self.log.push(msg);
                    return;
                }
                Err(e) => last = Some(e),
            }
        }
        self.fail(format!("recovering {failed} kept failing: {last:?}"))
    }

    /// Restarts a node (down, zombie or live): a live one is dropped first, as a crash would.
    async fn restart(&mut self) {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        if self.nodes[i].store.is_some() {
            self.kill_index(i);
        }
        let id = self.nodes[i].id;
        let store = self.open_store(id).await;
        let node = &mut self.nodes[i];
        node.store = Some(store);
        node.needs_recovery = false;
        self.log.push(format!("{id} restarts"));
        count(&TOTALS.restarts, 1);
    }

    fn kill_index(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.pending.clear();
        node.handles.clear();
        node.store = None;
        node.needs_recovery = !node.zombie;
        node.zombie = false;
    }

    /// Graceful handoff: the owner settles and closes a stream, and a live node opens it. A
    /// stream nobody holds (closed by a recovery) is opened the same way.
    async fn hand_over(&mut self) {
        let live = self.live();
        let Some(to) = self.pick(&live) else {
            return;
        };
        let streams: Vec<u64> = self.streams.keys().copied().collect();
        if streams.is_empty() {
            return;
        }
        let stream = streams[self.rng.below(streams.len() as u64) as usize];
        let holder = (0..self.nodes.len()).find(|&i| {
            self.nodes[i].store.is_some()
                && !self.nodes[i].zombie
                && self.nodes[i].handles.contains_key(&stream)
        });
        if let Some(h) = holder {
            let n = self.nodes[h].pending.len();
            self.settle(h, n).await;
            let handle = self.nodes[h].handles.remove(&stream).unwrap();
            if limited("close", self.seed, handle.close()).await.is_err() {
                return;
            }
            self.log
                .push(format!("{} closes stream {stream}", self.nodes[h].id));
        }
        let store = self.nodes[to].store.as_ref().unwrap();
        if let Ok(s) = limited(
            "open_stream",
            self.seed,
            store.open_stream(StreamId(stream)),
        )
        .await
        {
            // A zombie keeps its handle: its appends must fail from now on.
            for node in self.nodes.iter_mut().filter(|n| !n.zombie) {
                node.handles.remove(&stream);
            }
            self.nodes[to].handles.insert(stream, s);
            count(&TOTALS.handoffs, 1);
            self.log
                .push(format!("{} opens stream {stream}", self.nodes[to].id));
        }
    }

    /// Settles what live nodes have in flight, stops every node, has a fresh node recover all of
    /// them, and checks every stream against the model.
    async fn verify(mut self) {
        for i in 0..self.nodes.len() {
            let n = self.nodes[i].pending.len();
            self.settle(i, n).await;
        }
        for i in 0..self.nodes.len() {
            if let Some(store) = self.nodes[i].store.take() {
                self.nodes[i].handles.clear();
                drop(store);
            }
        }
        let verifier = self.open_store(VERIFIER).await;
        for id in 1..=NODES {
            let mut done = false;
            for _ in 0..5 {
                if limited(
                    "final recover_node",
                    self.seed,
                    verifier.recover_node_from(NodeId(id), &settings(NodeId(id)).wal),
                )
                .await
                .is_ok()
                {
                    done = true;
                    break;
                }
            }
            if !done {
                self.fail(format!("the verifier could not recover node {id}"));
            }
        }
        for (&stream, model) in &self.streams {
            let s = match limited("open", self.seed, verifier.open_stream(StreamId(stream))).await {
                Ok(s) => s,
                Err(e) => self.fail(format!("stream {stream} does not open: {e}")),
            };
            let (start, end) = (s.start_offset().unwrap(), s.confirmed_offset().unwrap());
            let mut pos = start;
            let mut seen: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            let mut tags = HashSet::new();
            while pos < end {
                let got = match limited("fetch", self.seed, s.fetch(pos, end, 1 << 20)).await {
                    Ok(got) => got,
                    Err(e) => self.fail(format!("stream {stream} fetch at {pos}: {e}")),
                };
                if got.is_empty() {
                    self.fail(format!("stream {stream}: nothing at {pos} below {end}"));
                }
                for b in got {
                    if b.base_offset != pos {
                        self.fail(format!(
                            "stream {stream}: a hole or overlap at {pos} (batch at {})",
                            b.base_offset
                        ));
                    }
                    let Some(tag) = tag_of(stream, &b.batch.payload) else {
                        self.fail(format!("stream {stream}: foreign bytes at {pos}"));
                    };
                    if model.appended.get(&tag) != Some(&b.batch.count) {
                        self.fail(format!("stream {stream}: tag {tag} at {pos} was never appended with {} records", b.batch.count));
                    }
                    if model.fenced.contains(&tag) {
                        self.fail(format!(
                            "G2: stream {stream}: tag {tag} at {pos} failed as fenced yet is visible"
                        ));
                    }
                    if !tags.insert(tag) {
                        self.fail(format!("stream {stream}: tag {tag} appears twice"));
                    }
                    seen.insert(pos.0, (tag, b.next_offset().0));
                    pos = b.next_offset();
                }
            }
            for (base, expected) in &model.acked {
                if seen.get(base) != Some(expected) {
                    self.fail(format!(
                        "G1: stream {stream}: acknowledged batch {expected:?} at {base} is lost (found {:?}; stream {start}..{end})",
                        seen.get(base)
                    ));
                }
            }
            let _ = s.close().await;
        }
        drop(verifier);
    }
}

async fn run_seed(seed: u64, objects: Arc<dyn ObjectStore>, prefix: Path, steps: u64) {
    let faulty = Arc::new(FaultyObjectStore::new(objects));
    let mut sim = Sim::new(seed, faulty.clone(), prefix).await;
    let probability = [0.0, 0.01, 0.03][(seed % 3) as usize];
    faulty.set_random_faults(RandomFaults::new(
        seed,
        probability,
        [
            Fault::SlowDown,
            Fault::Timeout,
            Fault::ConnectionReset,
            Fault::PutSucceedsButErrors,
        ],
    ));
    let steps = steps + sim.rng.below(steps);
    for _ in 0..steps {
        sim.step().await;
    }
    faulty.clear_faults();
    sim.verify().await;
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("OBJSTREAM_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return vec![seed];
    }
    let count = std::env::var("OBJSTREAM_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000u64);
    (0..count).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_batch_is_lost_and_no_fenced_write_is_visible_in_1000_seeded_runs() {
    let started = std::time::Instant::now();
    let seeds = seeds();
    let count = seeds.len();
    let mut running = tokio::task::JoinSet::new();
    let mut seeds = seeds.into_iter();
    loop {
        while running.len() < 8 {
            let Some(seed) = seeds.next() else { break };
            running.spawn(async move {
                let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
                run_seed(seed, objects, Path::from("sim"), 40).await;
            });
        }
        match running.join_next().await {
            Some(done) => done.unwrap(),
            None => break,
        }
    }
    eprintln!(
        "takeover simulation: {count} seeds in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        totals()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_takeover_simulation_holds_on_the_s3_server() {
    let started = std::time::Instant::now();
    let s3 = support::s3_store();
    for seed in 0..12u64 {
        let prefix = s3.path(&format!("sim-{seed}"));
        run_seed(seed * 7919 + 1, s3.store.clone(), prefix, 32).await;
    }
    eprintln!(
        "takeover simulation on S3: 12 seeds in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        totals()
    );
}
