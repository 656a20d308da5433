//! `verify`: every manifest record and checkpoint, and every byte of every object the manifest
//! references, checked; every problem reported with where it is.
//!
//! ```text
//! LIST manifest/ and manifest-checkpoint/  (sorted by number here)
//!   ├─ every record: frame, crc32c, JSON, the sequence number in its key   (decode_record)
//!   ├─ every checkpoint: the same, and the state's invariants             (decode_checkpoint)
//!   ├─ gaps between records
//!   └─ replay: from the lowest state the log can start from (nothing, or a checkpoint just
//!      below the first record) apply each record with ManifestState::apply; a record that
//!      does not apply is a problem; each checkpoint reached must equal the replayed state
//! every object of the final state: GET whole, size as the manifest says, footer and index
//!   (decode_tail), every block (decode_block), and the manifest's ranges covered by the index
//! ```
//!
//! Problems name the key, and for a block its position in the object, its stream and offsets.
//! Progress goes to stderr (at most every two seconds) unless `--quiet`. Exits 1 when anything
//! is wrong.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use objstream::keys::{object_path, parse_object_path};
use objstream::manifest::{decode_checkpoint, decode_record, ManifestState, ObjectMeta, Record};
use serde::Serialize;
use serde_json::Value;

use crate::location::Store;
use crate::manifest_log::{self, checkpoint_key, record_key};
use crate::object::{self, ObjectReport};
use crate::output::print_json;
use crate::{CmdResult, Failure};

/// Objects fetched and checked at once.
const PARALLEL_OBJECTS: usize = 4;

/// One thing found wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The key of the manifest object or data object.
    pub location: String,
    /// What is wrong.
    pub what: String,
    /// For a block: where it starts in the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_position: Option<u64>,
    /// For a block or a range: the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<u64>,
    /// For a block or a range: its offsets, `[start, end)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsets: Option<[u64; 2]>,
}

impl Problem {
    fn at(location: impl ToString, what: impl ToString) -> Problem {
        Problem {
            location: location.to_string(),
            what: what.to_string(),
            block_position: None,
            stream: None,
            offsets: None,
        }
    }
}

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
struct Summary {
    records: usize,
    checkpoints: usize,
    /// The sequence number the replay reached.
    replayed_to: u64,
    objects: usize,
    blocks: usize,
    bytes: u64,
    warnings: Vec<String>,
    problems: Vec<Problem>,
    ok: bool,
}

/// Runs `verify`.
pub async fn run(store: &Store, quiet: bool, json: bool) -> CmdResult {
    let mut progress = Progress::new(quiet);
    let listing = manifest_log::list(store).await?;
    if listing.records.is_empty() && listing.checkpoints.is_empty() {
        return Err(manifest_log::no_manifest(store));
    }
    let mut summary = Summary {
        records: listing.records.len(),
        checkpoints: listing.checkpoints.len(),
        ..Summary::default()
    };
    summary.warnings.extend(
        listing
            .strays
            .iter()
            .map(|k| format!("{k}: not a record or checkpoint key")),
    );
    progress.say(format!(
        "reading {} manifest records and {} checkpoints",
        listing.records.len(),
        listing.checkpoints.len()
    ));

    let mut records: BTreeMap<u64, Option<Record>> = BTreeMap::new();
    let keys = listing
        .records
        .iter()
        .map(|&seq| record_key(&store.prefix, seq));
    let read = manifest_log::get_all(store, keys.collect()).await?;
    for (&seq, (key, bytes)) in listing.records.iter().zip(read) {
        let Some(bytes) = bytes else {
            continue;
        };
        match decode_record(key.as_ref(), seq, &bytes) {
            Ok(record) => {
                records.insert(seq, Some(record));
            }
            Err(e) => {
                summary.problems.push(Problem::at(&key, e));
                records.insert(seq, None);
            }
        }
    }
    let mut checkpoints: BTreeMap<u64, ManifestState> = BTreeMap::new();
    let keys = listing
        .checkpoints
        .iter()
        .map(|&seq| checkpoint_key(&store.prefix, seq));
    let read = manifest_log::get_all(store, keys.collect()).await?;
    for (&seq, (key, bytes)) in listing.checkpoints.iter().zip(read) {
        let Some(bytes) = bytes else {
            continue;
        };
        match decode_checkpoint(key.as_ref(), seq, &bytes) {
            Ok(state) => {
                checkpoints.insert(seq, state);
            }
            Err(e) => summary.problems.push(Problem::at(&key, e)),
        }
    }
    check_gaps(store, &listing.records, &checkpoints, &mut summary);
    let state = replay(store, &records, &checkpoints, &mut summary);
    if let Err(what) = state.check_invariants() {
        summary.problems.push(Problem::at(
            record_key(&store.prefix, summary.replayed_to),
            format!("the state as of this record is inconsistent: {what}"),
        ));
    }
    unreferenced_objects(store, &state, &mut summary).await?;

    let objects: Vec<ObjectMeta> = state.objects().cloned().collect();
    progress.say(format!(
        "checking {} objects of the manifest as of record {}",
        objects.len(),
        summary.replayed_to
    ));
    let total = objects.len();
    let mut checked = futures::stream::iter(objects)
        .map(|meta| check_object(store, meta))
        .buffered(PARALLEL_OBJECTS);
    while let Some(result) = checked.next().await {
        let (bytes, blocks, problems) = result?;
        summary.objects += 1;
        summary.blocks += blocks;
        summary.bytes += bytes;
        summary.problems.extend(problems);
        progress.tick(format!(
            "objects {}/{total}, {} bytes, {} problems",
            summary.objects,
            summary.bytes,
            summary.problems.len()
        ));
    }
    summary.ok = summary.problems.is_empty();
    progress.say(format!(
        "done: {} objects, {} problems",
        summary.objects,
        summary.problems.len()
    ));
    if json {
        print_json(&summary)?;
    } else {
        print_summary(&summary);
    }
    if summary.ok {
        Ok(())
    } else {
        Err(Failure::Reported)
    }
}

/// Warns about data objects in the store that the manifest does not reference: replaced ones
/// waiting out the grace period before deletion, or ones whose upload never committed.
async fn unreferenced_objects(
    store: &Store,
    state: &ManifestState,
    summary: &mut Summary,
) -> Result<(), Failure> {
    use futures::TryStreamExt;
    let dir = crate::location::key(&store.prefix, &["objects"]);
    let listed: Vec<object_store::ObjectMeta> = store
        .objects
        .list(Some(&dir))
        .try_collect()
        .await
        .map_err(|e| Failure::Failed(format!("listing {dir}: {e}")))?;
    let unreferenced = listed
        .iter()
        .filter_map(|m| parse_object_path(&m.location))
        .filter(|id| state.object(*id).is_none())
        .count();
    if unreferenced > 0 {
        summary.warnings.push(format!(
            "{unreferenced} data objects are not in the manifest (replaced ones waiting for \
             deletion, or uploads that never committed)"
        ));
    }
    Ok(())
}

/// Reports records missing between the first and the last, unless a checkpoint past the gap
/// explains them (records below a checkpoint are removed after a grace period).
fn check_gaps(
    store: &Store,
    seqs: &[u64],
    checkpoints: &BTreeMap<u64, ManifestState>,
    summary: &mut Summary,
) {
    let covered = |last_missing: u64| checkpoints.range(last_missing..).next().is_some();
    if let Some(&first) = seqs.first() {
        if first > 1 && !covered(first - 1) {
            summary.problems.push(Problem::at(
                record_key(&store.prefix, 1),
                format!(
                    "records 1..{} are missing and no checkpoint covers them",
                    first - 1
                ),
            ));
        }
    }
    for pair in seqs.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b > a + 1 && !covered(b - 1) {
            summary.problems.push(Problem::at(
                record_key(&store.prefix, a + 1),
                format!("records {}..{} are missing", a + 1, b - 1),
            ));
        }
    }
}

/// The state as JSON without its sequence number (a replayed state keeps the number of the
/// state it started from; only the content is compared).
fn content(state: &ManifestState) -> Value {
    let mut value = serde_json::to_value(state).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("seq");
    }
    value
}

/// Replays the log from the lowest state it can start from, checking each checkpoint it
/// passes; returns the newest state known (the replay's, or a newer checkpoint's when the
/// replay stopped early).
fn replay(
    store: &Store,
    records: &BTreeMap<u64, Option<Record>>,
    checkpoints: &BTreeMap<u64, ManifestState>,
    summary: &mut Summary,
) -> ManifestState {
    let first = records.keys().next().copied().unwrap_or(1);
    let (mut seq, mut state) = if first <= 1 {
        (0, ManifestState::new())
    } else {
        match checkpoints.range(first - 1..).next() {
            Some((&s, state)) => (s, state.clone()),
            None => match checkpoints.iter().next_back() {
                Some((&s, state)) => (s, state.clone()),
                None => (0, ManifestState::new()),
            },
        }
    };
    loop {
        let next = seq + 1;
        let Some(entry) = records.get(&next) else {
            break;
        };
        let Some(record) = entry else {
            summary.warnings.push(format!(
                "the replay stopped before record {next}, which does not decode"
            ));
            break;
        };
        if let Err(e) = state.apply(&record.change) {
            summary.problems.push(Problem::at(
                record_key(&store.prefix, next),
                format!("record does not apply to the state as of {seq}: {e}"),
            ));
            break;
        }
        seq = next;
        if let Some(checkpoint) = checkpoints.get(&seq) {
            if content(checkpoint) != content(&state) {
                summary.problems.push(Problem::at(
                    checkpoint_key(&store.prefix, seq),
                    format!("differs from the log replayed to record {seq}"),
                ));
            }
        }
    }
    match checkpoints.iter().next_back() {
        Some((&s, newer)) if s > seq => {
            summary.replayed_to = s;
            newer.clone()
        }
        _ => {
            summary.replayed_to = seq;
            state
        }
    }
}

/// GETs and checks one object: (bytes read, blocks checked, problems).
async fn check_object(
    store: &Store,
    meta: ObjectMeta,
) -> Result<(u64, usize, Vec<Problem>), Failure> {
    let key = object_path(&store.prefix, meta.id);
    let Some(bytes) = manifest_log::get(store, &key).await? else {
        return Ok((
            0,
            0,
            vec![Problem::at(
                &key,
                format!(
                    "object {} is in the manifest but not in the store",
                    meta.id.0
                ),
            )],
        ));
    };
    let mut problems = Vec::new();
    if bytes.len() as u64 != meta.size {
        problems.push(Problem::at(
            &key,
            format!("{} bytes, the manifest says {}", bytes.len(), meta.size),
        ));
    }
    let report = tokio::task::spawn_blocking({
        let key = key.to_string();
        let bytes = bytes.clone();
        move || object::check(meta.id, key, &bytes)
    })
    .await
    .map_err(|e| Failure::Failed(format!("checking {key}: {e}")))?;
    problems.extend(report_problems(&report));
    if report.error.is_none() {
        problems.extend(uncovered_ranges(key.as_ref(), &meta, &report));
    }
    Ok((bytes.len() as u64, report.blocks.len(), problems))
}

/// The problems an object check found.
fn report_problems(report: &ObjectReport) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(e) = &report.error {
        problems.push(Problem::at(&report.location, e));
    }
    for b in report.blocks.iter().filter(|b| !b.ok) {
        problems.push(Problem {
            location: report.location.clone(),
            what: b.error.clone().unwrap_or_default(),
            block_position: Some(b.position),
            stream: Some(b.stream),
            offsets: Some([b.start, b.end]),
        });
    }
    problems
}

/// Ranges the manifest says the object holds that its index does not cover.
fn uncovered_ranges(key: &str, meta: &ObjectMeta, report: &ObjectReport) -> Vec<Problem> {
    let mut problems = Vec::new();
    for range in &meta.ranges {
        let mut next = range.start.0;
        for b in report.blocks.iter().filter(|b| b.stream == range.stream.0) {
            if b.start <= next && next < b.end {
                next = b.end;
            }
        }
        if next < range.end.0 {
            problems.push(Problem {
                location: key.to_string(),
                what: format!(
                    "the manifest says the object holds offsets {}..{}; its index covers up to {next}",
                    range.start.0, range.end.0
                ),
                block_position: None,
                stream: Some(range.stream.0),
                offsets: Some([range.start.0, range.end.0]),
            });
        }
    }
    problems
}

fn print_summary(summary: &Summary) {
    println!(
        "manifest: {} records, {} checkpoints, replayed to record {}",
        summary.records, summary.checkpoints, summary.replayed_to
    );
    println!(
        "objects: {} checked, {} blocks, {} bytes",
        summary.objects, summary.blocks, summary.bytes
    );
    for w in &summary.warnings {
        println!("warning: {w}");
    }
    if summary.ok {
        println!("OK: no corruption found");
        return;
    }
    println!("CORRUPT: {} problems", summary.problems.len());
    for p in &summary.problems {
        let mut at = p.location.clone();
        if let Some(pos) = p.block_position {
            at.push_str(&format!(" block at {pos}"));
        }
        if let Some(stream) = p.stream {
            at.push_str(&format!(" stream {stream}"));
        }
        if let Some([a, b]) = p.offsets {
            at.push_str(&format!(" offsets {a}..{b}"));
        }
        println!("  {at}: {}", p.what);
    }
}

/// Progress lines on stderr, at most one every two seconds.
struct Progress {
    quiet: bool,
    last: Instant,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            last: Instant::now(),
        }
    }

    fn say(&mut self, line: String) {
        if !self.quiet {
            eprintln!("verify: {line}");
            self.last = Instant::now();
        }
    }

    fn tick(&mut self, line: String) {
        if self.last.elapsed() >= Duration::from_secs(2) {
            self.say(line);
        }
    }
}
