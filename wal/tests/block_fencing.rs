//! Takeover fencing and crashes of the block WAL, in one process and across processes, on a
//! preallocated file and on a loop device when one can be set up.
//!
//! Fencing: a writer keeps appending while another opener takes the ring over with a higher
//! node epoch. Every append the writer issues after that open returned must fail with
//! `Fenced`, no acknowledgement may follow an error, and the new owner's replay holds every
//! record the writer acknowledged. Across processes, the writer is this test binary re-run as
//! a child (see [`child_process_entry_point`], which does nothing in a normal test run); times
//! are compared on `CLOCK_MONOTONIC`, which both processes share.
//!
//! Crashes: a child appends until it is killed with SIGKILL at a random moment; reopening
//! replays every record it acknowledged; the next child continues on the same ring.

#[path = "common/loopdev.rs"]
mod loopdev;

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::executor::block_on;
use loopdev::LoopDevice;
use objstream_wal::block::{Durability, MemDevice};
use objstream_wal::{BlockWal, BlockWalOptions, Wal, WalErrorKind, WalFuture, WalPosition};

/// Bytes of the files and loop devices the tests use.
const DEVICE_BYTES: u64 = 64 << 20;

/// Appends one writer keeps in flight.
const WINDOW: usize = 16;

fn options(create: bool) -> BlockWalOptions {
    BlockWalOptions {
        create_bytes: create.then_some(DEVICE_BYTES),
        max_record_bytes: 64 << 10,
        max_batch_bytes: 256 << 10,
        durability: Durability::Fdatasync,
        max_writes_per_sec: 0,
    }
}

/// Record `i`: its number in the first 8 bytes, then a pattern, 100 to 12 100 bytes.
fn payload(i: u64) -> Bytes {
    let len = 100 + (i % 7) as usize * 2000;
    let mut v: Vec<u8> = (0..len).map(|j| (i as usize * 13 + j) as u8).collect();
    v[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(v)
}

fn tag(payload: &[u8]) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&payload[..8]);
    u64::from_le_bytes(b)
}

/// `CLOCK_MONOTONIC` in nanoseconds: comparable between processes on one machine.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The tags of every record `wal` replays.
fn replayed_tags(wal: &BlockWal) -> HashSet<u64> {
    block_on(wal.replay())
        .unwrap()
        .iter()
        .map(|r| tag(&r.payload))
        .collect()
}

/// What became of one append: its number, when it was issued, and its outcome (`None` when it
/// was acknowledged, else the error kind).
#[derive(Clone, Debug)]
struct Outcome {
    i: u64,
    issued_ns: u64,
    error: Option<String>,
}

/// Appends records `first..` keeping [`WINDOW`] in flight, reporting each outcome in order,
/// until `report` returns false.
fn append_loop(wal: &BlockWal, first: u64, mut report: impl FnMut(Outcome) -> bool) {
    let mut inflight: VecDeque<(u64, u64, WalFuture<WalPosition>)> = VecDeque::new();
    let mut i = first;
    loop {
        while inflight.len() < WINDOW {
            let issued_ns = monotonic_ns();
            inflight.push_back((i, issued_ns, wal.append(payload(i))));
            i += 1;
        }
        let Some((i, issued_ns, fut)) = inflight.pop_front() else {
            return;
        };
        let error = block_on(fut).err().map(|e| format!("{:?}", e.kind()));
        if !report(Outcome {
            i,
            issued_ns,
            error,
        }) {
            return;
        }
    }
}

/// Checks the fencing contract over a writer's outcomes, given when the takeover open
/// returned and what the new owner replays.
fn check_fenced(outcomes: &[Outcome], opened_ns: u64, replayed: &HashSet<u64>) {
    let acked: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_none()).collect();
    assert!(
        !acked.is_empty(),
        "the writer acknowledged nothing before the takeover"
    );
    let first_error = outcomes
        .iter()
        .position(|o| o.error.is_some())
        .expect("the writer was never fenced");
    assert!(
        outcomes[first_error..].iter().all(|o| o.error.is_some()),
        "an append was acknowledged after an error"
    );
    assert_eq!(outcomes[first_error].error.as_deref(), Some("Fenced"));
    for o in outcomes.iter().filter(|o| o.issued_ns > opened_ns) {
        assert_eq!(
            o.error.as_deref(),
            Some("Fenced"),
            "append {} was issued after the takeover returned",
            o.i
        );
    }
    for o in acked {
        assert!(
            replayed.contains(&o.i),
            "append {} was acknowledged but the new owner does not replay it",
            o.i
        );
    }
}

/// The old writer appends in a thread; once it has acknowledged some, the new owner opens.
fn takeover_in_process(open_old: impl FnOnce() -> BlockWal, open_new: impl FnOnce() -> BlockWal) {
    let old = Arc::new(open_old());
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (old, acked) = (old.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            let mut errors = 0;
            append_loop(&old, 0, |o| {
                if o.error.is_some() {
                    errors += 1;
                } else {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                outcomes.push(o);
                errors < 2 * WINDOW
            });
            outcomes
        })
    };
    let started = Instant::now();
    while acked.load(Ordering::Relaxed) < 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    let new = open_new();
    let opened_ns = monotonic_ns();
    let outcomes = writer.join().unwrap();
    check_fenced(&outcomes, opened_ns, &replayed_tags(&new));
    assert_eq!(old.check_owner().unwrap_err().kind(), WalErrorKind::Fenced);
    assert_eq!(
        block_on(old.trim(WalPosition(0))).unwrap_err().kind(),
        WalErrorKind::Fenced
    );
    // The new owner keeps working.
    block_on(new.append(payload(1 << 40))).unwrap();
}

/// Where the file-backed tests put their WAL (a disk filesystem: tmpfs refuses O_DIRECT).
fn file_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("block_fencing");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.wal"));
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn appends_issued_after_a_takeover_in_one_process_fail_fenced_on_memory() {
    let dev = MemDevice::new(DEVICE_BYTES as usize);
    takeover_in_process(
        || BlockWal::open_device(Arc::new(dev.clone()), 1, 1, options(false)).unwrap(),
        || BlockWal::open_device(Arc::new(dev.clone()), 2, 2, options(false)).unwrap(),
    );
}

#[test]
fn appends_issued_after_a_takeover_in_one_process_fail_fenced_on_a_file() {
    let path = file_path("in-process");
    takeover_in_process(
        || BlockWal::open(&path, 1, 1, options(true)).unwrap(),
        || BlockWal::open(&path, 2, 2, options(true)).unwrap(),
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn appends_issued_after_a_takeover_in_one_process_fail_fenced_on_a_loop_device() {
    let Some(dev) = LoopDevice::or_skip("fencing-in-process", DEVICE_BYTES) else {
        return;
    };
    takeover_in_process(
        || BlockWal::open(dev.path(), 1, 1, options(false)).unwrap(),
        || BlockWal::open(dev.path(), 2, 2, options(false)).unwrap(),
    );
}

/// The child's side: see the module docs. Does nothing unless the parent set the variables.
#[test]
fn child_process_entry_point() {
    let Ok(path) = std::env::var("OBJSTREAM_BLOCK_CHILD") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let epoch: u64 = var("OBJSTREAM_BLOCK_CHILD_EPOCH").parse().unwrap();
    let first: u64 = var("OBJSTREAM_BLOCK_CHILD_FIRST").parse().unwrap();
    let create = var("OBJSTREAM_BLOCK_CHILD_CREATE") == "1";
    let until_fenced = var("OBJSTREAM_BLOCK_CHILD_MODE") == "fence";
    let wal = BlockWal::open(&path, 1, epoch, options(create)).unwrap();
    // Earlier children's records were checked by the parent already: keep the ring free.
    block_on(wal.trim(wal.next_position())).unwrap();
    println!("ready");
    let mut errors = 0;
    append_loop(&wal, first, |o| {
        match &o.error {
            None => println!("ok {} {}", o.i, o.issued_ns),
            Some(kind) => {
                println!("err {} {} {kind}", o.i, o.issued_ns);
                errors += 1;
            }
        }
        !until_fenced || errors < 2 * WINDOW
    });
}

/// A child process running [`child_process_entry_point`] and the outcomes it reported.
struct ChildWriter {
    child: Child,
    outcomes: mpsc::Receiver<Outcome>,
    ready: mpsc::Receiver<()>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn spawn_child(path: &Path, create: bool, epoch: u64, first: u64, mode: &str) -> ChildWriter {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry_point",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("OBJSTREAM_BLOCK_CHILD", path)
        .env("OBJSTREAM_BLOCK_CHILD_EPOCH", epoch.to_string())
        .env("OBJSTREAM_BLOCK_CHILD_FIRST", first.to_string())
        .env(
            "OBJSTREAM_BLOCK_CHILD_CREATE",
            if create { "1" } else { "0" },
        )
        .env("OBJSTREAM_BLOCK_CHILD_MODE", mode)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, outcomes) = mpsc::channel();
    let (ready_tx, ready) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The harness prints the test's name without a newline before the child's first
            // line: "test child_process_entry_point ... ready".
            let line = line.rsplit("... ").next().unwrap_or_default();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["ready"] => {
                    let _ = ready_tx.send(());
                }
                ["ok" | "err", i, ns, rest @ ..] => {
                    let _ = tx.send(Outcome {
                        i: i.parse().unwrap(),
                        issued_ns: ns.parse().unwrap(),
                        error: rest.first().map(|k| k.to_string()),
                    });
                }
                _ => {}
            }
        }
    });
    ChildWriter {
        child,
        outcomes,
        ready,
        reader: Some(reader),
    }
}

impl Drop for ChildWriter {
    /// Never leaves the child running when a test fails.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl ChildWriter {
    fn wait_ready(&self) {
        self.ready
            .recv_timeout(Duration::from_secs(60))
            .expect("the child did not get ready");
    }

    /// Waits for the child to exit on its own (or kills it after `limit`), then returns every
    /// outcome it reported.
    fn finish(mut self, limit: Duration) -> Vec<Outcome> {
        self.join_after(limit)
    }

    fn join_after(&mut self, limit: Duration) -> Vec<Outcome> {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > limit {
                self.child.kill().unwrap();
                self.child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let outcomes = self.outcomes.try_iter().collect();
        assert!(
            status.is_some_and(|s| s.success()),
            "the child did not stop by itself: {status:?}"
        );
        outcomes
    }

    /// Kills the child (SIGKILL) and returns every outcome it reported.
    fn kill(mut self) -> Vec<Outcome> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.outcomes.try_iter().collect()
    }
}

/// A child appends; the parent takes the ring over once the child has acknowledged 200.
fn takeover_across_processes(path: &Path, create: bool) {
    let child = spawn_child(path, create, 1, 0, "fence");
    child.wait_ready();
    let mut early = Vec::new();
    let started = Instant::now();
    while early
        .iter()
        .filter(|o: &&Outcome| o.error.is_none())
        .count()
        < 200
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no progress");
        early.extend(child.outcomes.recv_timeout(Duration::from_secs(30)));
    }
    let new = BlockWal::open(path, 2, 2, options(false)).unwrap();
    let opened_ns = monotonic_ns();
    let mut outcomes = early;
    outcomes.extend(child.finish(Duration::from_secs(30)));
    check_fenced(&outcomes, opened_ns, &replayed_tags(&new));
}

#[test]
fn a_writer_in_another_process_is_fenced_once_the_takeover_returns_on_a_file() {
    let path = file_path("two-processes");
    takeover_across_processes(&path, true);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_writer_in_another_process_is_fenced_once_the_takeover_returns_on_a_loop_device() {
    let Some(dev) = LoopDevice::or_skip("fencing-two-processes", DEVICE_BYTES) else {
        return;
    };
    takeover_across_processes(dev.path(), false);
}

/// Children append and are killed at random moments; each reopen replays every record the
/// killed child acknowledged.
fn kill_cycles(path: &Path, create: bool, cycles: u64) {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for cycle in 0..cycles {
        let first = cycle << 32;
        let child = spawn_child(path, create && cycle == 0, cycle + 1, first, "crash");
        child.wait_ready();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(20 + rng % 300));
        let outcomes = child.kill();
        let acked: Vec<u64> = outcomes
            .iter()
            .filter(|o| o.error.is_none())
            .map(|o| o.i)
            .collect();
        assert!(
            outcomes.iter().all(|o| o.error.is_none()),
            "cycle {cycle}: an append failed before the kill"
        );
        let wal = BlockWal::open(path, 1, cycle + 1, options(false)).unwrap();
        let replayed = replayed_tags(&wal);
        for i in &acked {
            assert!(
                replayed.contains(i),
                "cycle {cycle}: acknowledged record {i} is not replayed"
            );
        }
        // What was replayed is a prefix of what the child issued, in order.
        let got: Vec<u64> = block_on(wal.replay())
            .unwrap()
            .iter()
            .map(|r| tag(&r.payload))
            .collect();
        let expected: Vec<u64> = (first..first + got.len() as u64).collect();
        assert_eq!(got, expected, "cycle {cycle}: replay is not a prefix");
    }
}

#[test]
fn sigkilled_writers_lose_no_acknowledged_append_on_a_file() {
    let path = file_path("kill-cycles");
    kill_cycles(&path, true, 4);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn sigkilled_writers_lose_no_acknowledged_append_on_a_loop_device() {
    let Some(dev) = LoopDevice::or_skip("kill-cycles", DEVICE_BYTES) else {
        return;
    };
    kill_cycles(dev.path(), false, 3);
}
