//! Executing a plan's writes: read each new object's pieces, build it, PUT it.
//!
//! A plan's source objects are read whole, several at a time (one GET each), and its new objects
//! are built one at a time, so a pass holds at most one plan's sources and one new object (both
//! bounded by `max_plan_bytes`, decompressed batches aside). Encoding (zstd) runs on a blocking
//! thread, never on the runtime's workers that appends and readers use. Each new object gets an
//! id allocated through the manifest, so its key is its own: a PUT that is retried after a lost
//! response simply writes the same bytes again.
//!
//! Nothing here touches the manifest: the caller commits what [`write_outputs`] returns, and an
//! object written for a plan that is never committed is an orphan the garbage collector removes.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload};
use objstream::format::ObjectBuilder;
use objstream::keys::object_path;
use objstream::manifest::{ManifestStreamRange, ObjectMeta};
use objstream::retry::{retry_transient, Backoff};
use objstream::{Compression, ErrorDetail, ObjectId, Offset, Result, StoredBatch, StreamId};

use crate::plan::{Plan, PlannedObject};
use crate::source::ObjectAccess;

/// What writing a plan's outputs did.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// The new objects, as the manifest will know them.
    pub(crate) objects: Vec<ObjectMeta>,
    /// Bytes fetched from source objects.
    pub(crate) bytes_read: u64,
    /// Bytes of new objects written.
    pub(crate) bytes_written: u64,
    /// Records copied into new objects.
    pub(crate) records: u64,
}

/// How to build objects.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BuildOptions {
    pub(crate) block_bytes: usize,
    pub(crate) compression: Compression,
}

/// The records of the removed objects' ranges of `plan`, trimmed data included.
pub(crate) fn input_records(plan: &Plan) -> u64 {
    plan.outputs
        .iter()
        .flat_map(|o| &o.pieces)
        .map(|p| p.range.end.get() - p.range.start.get())
        .sum()
}

/// Reads, builds and writes the outputs of `plan`, taking ids from `ids` (at least one per
/// output). `dry` outputs are built but not written when `write_if` says so after the build:
/// the caller uses it to skip a rewrite that would drop nothing.
pub(crate) async fn write_outputs(
    access: &ObjectAccess,
    options: BuildOptions,
    plan: &Plan,
    ids: &[ObjectId],
    write_if: impl Fn(u64) -> bool,
) -> Result<Option<Written>> {
    if ids.len() < plan.outputs.len() {
        return Err(ErrorDetail::Internal(format!(
            "{} ids for {} new objects",
            ids.len(),
            plan.outputs.len()
        ))
        .into());
    }
    let (mut decoded, bytes_read) = fetch_sources(access, plan).await?;
    let mut written = Written {
        bytes_read,
        ..Written::default()
    };
    let mut built = Vec::new();
    for (output, id) in plan.outputs.iter().zip(ids) {
        let batches = gather(&mut decoded, output)?;
        if batches.is_empty() {
            continue;
        }
        written.records += batches
            .iter()
            .map(|(_, b)| u64::from(b.batch.count))
            .sum::<u64>();
        built.push((*id, output, batches));
    }
    if !write_if(written.records) {
        return Ok(None);
    }
    for (id, output, batches) in built {
        let meta = build_and_put(access, options, id, output, batches).await?;
        written.bytes_written += meta.size;
        written.objects.push(meta);
    }
    Ok(Some(written))
}

/// Source objects fetched at once.
const FETCH_CONCURRENCY: usize = 8;

/// The batches of each piece of a plan, by (source, stream, range start).
type Decoded = BTreeMap<(ObjectId, StreamId, Offset), Vec<StoredBatch>>;

/// Reads every source object of `plan` whole, several at a time, and decodes the pieces the
/// plan copies on a blocking thread while the other reads go on. Returns the batches and the
/// bytes read. The stored bytes are at most the plan's input bytes, which `max_plan_bytes`
/// bounds.
async fn fetch_sources(access: &ObjectAccess, plan: &Plan) -> Result<(Decoded, u64)> {
    let mut wanted: BTreeMap<ObjectId, (u64, Vec<ManifestStreamRange>)> = BTreeMap::new();
    for piece in plan.outputs.iter().flat_map(|o| &o.pieces) {
        let entry = wanted
            .entry(piece.source)
            .or_insert_with(|| (piece.source_size, Vec::new()));
        entry.1.push(piece.range);
    }
    let per_source: Vec<(Decoded, u64)> = futures::stream::iter(wanted)
        .map(|(id, (size, ranges))| async move {
            let object = access.whole(id, size).await?;
            let len = object.len();
            let decoded = tokio::task::spawn_blocking(move || -> Result<Decoded> {
                let mut out = Decoded::new();
                for r in ranges {
                    out.insert(
                        (id, r.stream, r.start),
                        object.batches(r.stream, r.start, r.end)?,
                    );
                }
                Ok(out)
            })
            .await
            .map_err(|e| ErrorDetail::Internal(format!("block decoding task: {e}")))??;
            Ok::<_, objstream::Error>((decoded, len))
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .try_collect()
        .await?;
    let mut all = Decoded::new();
    let mut read = 0;
    for (decoded, len) in per_source {
        all.extend(decoded);
        read += len;
    }
    Ok((all, read))
}

/// The batches an output copies, with the range each came from, trimmed data dropped.
fn gather(
    decoded: &mut Decoded,
    output: &PlannedObject,
) -> Result<Vec<(ManifestStreamRange, StoredBatch)>> {
    let mut out = Vec::new();
    for piece in &output.pieces {
        let r = piece.range;
        let batches = decoded
            .remove(&(piece.source, r.stream, r.start))
            .ok_or_else(|| {
                ErrorDetail::Internal(format!(
                    "{} {} at {} was not read",
                    piece.source, r.stream, r.start
                ))
            })?;
        out.extend(
            batches
                .into_iter()
                .filter(|b| b.next_offset() > piece.keep_from)
                .map(|b| (r, b)),
        );
    }
    Ok(out)
}

/// Encodes one object on a blocking thread and PUTs it.
async fn build_and_put(
    access: &ObjectAccess,
    options: BuildOptions,
    id: ObjectId,
    output: &PlannedObject,
    batches: Vec<(ManifestStreamRange, StoredBatch)>,
) -> Result<ObjectMeta> {
    let (bytes, ranges) = tokio::task::spawn_blocking(move || encode(options, batches))
        .await
        .map_err(|e| ErrorDetail::Internal(format!("object encoding task: {e}")))??;
    let size = bytes.len() as u64;
    access.bandwidth.acquire(size).await;
    let key = object_path(&access.prefix, id);
    retry_transient(
        "put compacted object",
        &key,
        Backoff::for_uploads(id.get()),
        || access.store.put(&key, PutPayload::from(bytes.clone())),
    )
    .await?;
    Ok(ObjectMeta {
        id,
        size,
        kind: output.kind,
        ranges,
    })
}

/// Builds the object and its manifest ranges: one per run of one stream under one epoch.
fn encode(
    options: BuildOptions,
    batches: Vec<(ManifestStreamRange, StoredBatch)>,
) -> Result<(bytes::Bytes, Vec<ManifestStreamRange>)> {
    let mut builder = ObjectBuilder::new(options.block_bytes, options.compression);
    let mut ranges: Vec<ManifestStreamRange> = Vec::new();
    for (source, b) in batches {
        builder.add(source.stream, b.base_offset, &b.batch)?;
        match ranges.last_mut() {
            Some(last)
                if last.stream == source.stream
                    && last.epoch == source.epoch
                    && last.end == b.base_offset =>
            {
                last.end = b.next_offset();
            }
            _ => ranges.push(ManifestStreamRange {
                stream: source.stream,
                epoch: source.epoch,
                start: b.base_offset,
                end: b.next_offset(),
            }),
        }
    }
    let object = builder.finish();
    check_ranges(&ranges, &object.ranges)?;
    Ok((object.bytes, ranges))
}

/// The manifest ranges must cover exactly what the builder wrote, stream by stream.
fn check_ranges(
    ranges: &[ManifestStreamRange],
    built: &[objstream::format::StreamRange],
) -> Result<()> {
    let mut spans: BTreeMap<StreamId, (u64, u64)> = BTreeMap::new();
    for r in ranges {
        let span = spans
            .entry(r.stream)
            .or_insert((r.start.get(), r.end.get()));
        span.0 = span.0.min(r.start.get());
        span.1 = span.1.max(r.end.get());
    }
    let same = built.len() == spans.len()
        && built
            .iter()
            .all(|b| spans.get(&b.stream) == Some(&(b.start.get(), b.end.get())));
    if same {
        Ok(())
    } else {
        Err(ErrorDetail::Internal(format!(
            "a compacted object's manifest ranges {ranges:?} differ from what was written {built:?}"
        ))
        .into())
    }
}
