//! G1 and G3 under real crashes: a child process appends through a WAL (file, block or object)
//! and is killed with SIGKILL at a random moment; the node then restarts (WAL replay, upload,
//! commit) or another node takes it over, and every acknowledged batch must be readable at its
//! offset with identical bytes, offsets dense.
//! Repeated for many cycles on each backend (a local directory and the S3 server).
//!
//! The child is this same test binary, started with `OBJSTREAM_CRASH_CHILD` set; it runs
//! [`child_process_entry_point`], which does nothing in a normal test run.

mod common;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{payload, Node};
use futures::stream::{FuturesOrdered, StreamExt};
use object_store::ObjectStore;
use objstream::{Offset, RecordBatch, StreamId};

const STREAMS: usize = 3;

/// Node `id` in `dir` with the WAL backend named `wal` ("file", "block" or "object": WAL
/// objects in the data store, reachable by every node).
fn node(dir: &Path, id: u64, wal: &str) -> Node {
    let mut node = Node::new(dir, id);
    match wal {
        "block" => {
            node.settings.wal =
                objstream::WalSettings::block(dir.join(format!("block-{id}.wal")), Some(32 << 20))
        }
        "object" => node.settings.wal = objstream::WalSettings::object(None),
        _ => {}
    }
    node
}

fn objects_for(backend: &str, dir: &Path) -> Arc<dyn ObjectStore> {
    match backend {
        "local" => common::local_objects(dir),
        _ => support::s3_store().store,
    }
}

/// Runs the child's workload forever when this process is a crash child.
#[test]
fn child_process_entry_point() {
    let Ok(dir) = std::env::var("OBJSTREAM_CRASH_CHILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let backend = std::env::var("OBJSTREAM_CRASH_BACKEND").unwrap();
    let prefix = object_store::path::Path::from(std::env::var("OBJSTREAM_CRASH_PREFIX").unwrap());
    let wal = std::env::var("OBJSTREAM_CRASH_WAL").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let objects = objects_for(&backend, &dir);
        let store = node(&dir, 1, &wal).open(&objects, &prefix).await;
        let ids_file = dir.join("streams");
        let mut streams = Vec::new();
        if let Ok(ids) = std::fs::read_to_string(&ids_file) {
            for id in ids.split_whitespace() {
                streams.push(
                    store
                        .open_stream(StreamId(id.parse().unwrap()))
                        .await
                        .unwrap(),
                );
            }
        } else {
            for _ in 0..STREAMS {
                streams.push(store.create_stream().await.unwrap());
            }
            let ids: Vec<String> = streams.iter().map(|s| s.id().0.to_string()).collect();
            let tmp = dir.join("streams.tmp");
            std::fs::write(&tmp, ids.join(" ")).unwrap();
            std::fs::File::open(&tmp).unwrap().sync_all().unwrap();
            std::fs::rename(&tmp, &ids_file).unwrap();
        }
        println!("ready");
        let mut next: Vec<Offset> = streams
            .iter()
            .map(|s| s.confirmed_offset().unwrap())
            .collect();
        let mut in_flight = FuturesOrdered::new();
        let mut n = 0u64;
        let out = std::io::stdout();
        loop {
            let i = (n % STREAMS as u64) as usize;
            let s = &streams[i];
            let count = 1 + (n % 3) as u32;
            let base = next[i];
            next[i] = base.add(u64::from(count));
            let fut = s.append_if(RecordBatch::new(count, 0, payload(s.id().0, base.0)), base);
            let id = s.id();
            in_flight.push_back(async move { (id, fut.await) });
            n += 1;
            while in_flight.len() >= 16 {
                let (id, r) = in_flight.next().await.unwrap();
                let r: objstream::AppendResult = r.unwrap();
                let mut out = out.lock();
                writeln!(out, "ack {} {} {}", id.0, r.base_offset.0, r.next_offset.0).unwrap();
                out.flush().unwrap();
            }
        }
    });
}

/// Verifies, on a restarted node, that every acknowledged batch is there with its bytes and that
/// offsets are dense from 0 to the confirmed offset.
async fn verify(
    objects: &Arc<dyn ObjectStore>,
    prefix: &object_store::path::Path,
    dir: &Path,
    acked: &HashMap<u64, BTreeMap<u64, u64>>,
    label: &str,
    takeover: bool,
    wal: &str,
) -> usize {
    let mut recovered = 0;
    let store = if takeover {
        // Another node takes the killed node over through its WAL.
        let store = Node::new(dir, 2).open(objects, prefix).await;
        let failed = node(dir, 1, wal);
        let report = store
            .recover_node_from(objstream::NodeId(1), &failed.settings.wal)
            .await
            .unwrap();
        assert!(report.millis < 60_000, "{label}: {report:?}");
        recovered = report.batches_recovered;
        store
    } else {
        node(dir, 1, wal).open(objects, prefix).await
    };
    let Ok(ids) = std::fs::read_to_string(dir.join("streams")) else {
        assert!(acked.is_empty(), "{label}: acks without streams");
        store.shutdown().await.unwrap();
        return recovered;
    };
    for id in ids.split_whitespace() {
        let id: u64 = id.parse().unwrap();
        let s = store.open_stream(StreamId(id)).await.unwrap();
        let end = s.confirmed_offset().unwrap();
        let mut pos = Offset(0);
        let mut seen = BTreeMap::new();
        while pos < end {
            let got = s.fetch(pos, end, 256 << 10).await.unwrap();
            for b in got {
                assert_eq!(
                    b.base_offset, pos,
                    "{label}: {id} has a hole or overlap at {pos}"
                );
                assert_eq!(
                    b.batch.payload,
                    payload(id, pos.0),
                    "{label}: {id} bytes at {pos}"
                );
                seen.insert(b.base_offset.0, b.next_offset().0);
                pos = b.next_offset();
            }
        }
        for (base, next) in acked.get(&id).into_iter().flatten() {
            assert_eq!(
                seen.get(base),
                Some(next),
                "{label}: acknowledged batch {id}@{base}..{next} is lost"
            );
        }
        s.close().await.unwrap();
    }
    store.shutdown().await.unwrap();
    recovered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill_at_random_moments() {
    let cycles: u64 = std::env::var("OBJSTREAM_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    kill_cycles(cycles, false, "file").await;
}

/// The same with the block WAL (an O_DIRECT ring in a preallocated file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill_with_the_block_wal() {
    kill_cycles(20, false, "block").await;
}

/// Another node takes over the killed node's block WAL: it opens the device at a higher node
/// epoch, replays it and commits what was not in objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_with_a_block_wal_is_taken_over_by_another_node() {
    kill_cycles(6, true, "block").await;
}

/// The same with the object WAL: WAL objects in the data store, sealed by the restarted node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill_with_the_object_wal() {
    kill_cycles(12, false, "object").await;
}

/// Another node takes over the killed node's object WAL: it fences the node in the manifest,
/// seals the WAL from the floor the manifest records, replays it and commits what was not in
/// objects; the next child (node 1 again) seals once more and continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_with_an_object_wal_is_taken_over_by_another_node() {
    kill_cycles(8, true, "object").await;
}

/// The killed node does not come back: another node recovers it from its WAL, and the next
/// child (node 1 again) continues the streams after that node hands them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_taken_over_by_another_node_with_nothing_acknowledged_lost() {
    kill_cycles(6, true, "file").await;
}

async fn kill_cycles(cycles: u64, takeover: bool, wal: &str) {
    for backend in support::backends() {
        let dir = tempfile::tempdir().unwrap();
        let mut acked: HashMap<u64, BTreeMap<u64, u64>> = HashMap::new();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let started = Instant::now();
        let mut recovered = 0;
        for cycle in 0..cycles {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "child_process_entry_point",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("OBJSTREAM_CRASH_CHILD", dir.path())
                .env("OBJSTREAM_CRASH_BACKEND", backend.name)
                .env("OBJSTREAM_CRASH_PREFIX", backend.prefix.as_ref())
                .env("OBJSTREAM_CRASH_WAL", wal)
                .stdout(Stdio::piped())
                .stderr(
                    std::fs::File::create(dir.path().join(format!("child-{cycle}.log"))).unwrap(),
                )
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let run_for = Duration::from_millis(30 + rng % 400);
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let reader = std::thread::spawn(move || {
                let mut lines = Vec::new();
                let mut r = BufReader::new(stdout);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    if line.ends_with('\n') {
                        if line.ends_with("ready\n") {
                            let _ = ready_tx.send(());
                        }
                        lines.push(line.trim_end().to_string());
                    }
                    line.clear();
                }
                lines
            });
            // Let the child open (and recover), then kill it at a random moment of its appends.
            ready_rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    let log =
                        std::fs::read_to_string(dir.path().join(format!("child-{cycle}.log")));
                    panic!("cycle {cycle}: the child did not get ready: {log:?}")
                });
            std::thread::sleep(run_for);
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let lines = reader.join().unwrap();
            let mut this_cycle = 0;
            for l in lines.iter().filter(|l| l.starts_with("ack ")) {
                let v: Vec<u64> = l[4..].split(' ').map(|x| x.parse().unwrap()).collect();
                acked.entry(v[0]).or_default().insert(v[1], v[2]);
                this_cycle += 1;
            }
            let label = format!("{} cycle {cycle} ({this_cycle} acks)", backend.name);
            let objects = objects_for(backend.name, dir.path());
            recovered += verify(
                &objects,
                &backend.prefix,
                dir.path(),
                &acked,
                &label,
                takeover,
                wal,
            )
            .await;
        }
        if takeover {
            assert!(
                recovered > 0,
                "{}: no takeover found uncommitted batches",
                backend.name
            );
        }
        let total: usize = acked.values().map(|m| m.len()).sum();
        assert!(
            total > 0,
            "{}: the child never acknowledged anything",
            backend.name
        );
        eprintln!(
            "{} ({wal} WAL): {cycles} kill cycles, {total} acknowledged batches verified ({recovered} recovered by another node) in {:.1} s",
            backend.name,
            started.elapsed().as_secs_f64()
        );
    }
}
