//! A model test of `Stream`: random sequences of appends, conditional appends, fetches, trims,
//! flushes, clean restarts and crashes (the store dropped without a shutdown, its WAL replayed
//! on the next open) run against the real store and a plain in-memory model; after every step
//! the stream must agree with the model.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::Node;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use objstream::{ErrorKind, Offset, RecordBatch, Store, Stream, StreamId};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append {
        count: u32,
        len: usize,
    },
    AppendIfWrongOffset,
    Fetch {
        from: u16,
        span: u16,
        max_bytes: u32,
    },
    Trim {
        at: u16,
    },
    Flush,
    Restart,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u32..5, 1usize..3000).prop_map(|(count, len)| Op::Append { count, len }),
        1 => Just(Op::AppendIfWrongOffset),
        3 => (any::<u16>(), any::<u16>(), 1u32..20_000)
            .prop_map(|(from, span, max_bytes)| Op::Fetch { from, span, max_bytes }),
        1 => any::<u16>().prop_map(|at| Op::Trim { at }),
        1 => Just(Op::Flush),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

#[derive(Default)]
struct Model {
    start: u64,
    batches: Vec<(u64, u32, Bytes)>,
}

impl Model {
    fn end(&self) -> u64 {
        self.batches.last().map_or(0, |(b, c, _)| b + u64::from(*c))
    }
    /// `x` scaled into `[lo, hi]`.
    fn pick(lo: u64, hi: u64, x: u16) -> u64 {
        lo + (hi - lo) * u64::from(x) / u64::from(u16::MAX)
    }
}

struct Harness {
    node: Node,
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    store: Option<Store>,
    stream: Option<Stream>,
    id: StreamId,
}

impl Harness {
    async fn reopen(&mut self) {
        // After a crash the dropped store's WAL may take a moment to release its lock.
        let mut tries = 0;
        let store = loop {
            match self.node.try_open(&self.objects, &self.prefix).await {
                Ok(s) => break s,
                Err(e) if tries < 200 && e.to_string().contains("in use") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        self.stream = Some(store.open_stream(self.id).await.unwrap());
        self.store = Some(store);
    }

    fn stream(&self) -> &Stream {
        self.stream.as_ref().unwrap()
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::new(dir.path(), 1);
    node.settings.upload_threshold_bytes = 8 << 10;
    node.settings.log_cache_bytes = 64 << 10;
    node.settings.max_batch_bytes = 16 << 10;
    node.settings.block_bytes = 2 << 10;
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let prefix = Path::from("model");
    let store = node.open(&objects, &prefix).await;
    let stream = store.create_stream().await.unwrap();
    let id = stream.id();
    let mut h = Harness {
        node,
        objects,
        prefix,
        store: Some(store),
        stream: Some(stream),
        id,
    };
    let mut model = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match &op {
            Op::Append { count, len } => {
                let end = model.end();
                let payload = Bytes::from(vec![(step % 251) as u8 + 1; *len]);
                let r = h
                    .stream()
                    .append(RecordBatch::new(*count, step as i64, payload.clone()))
                    .await
                    .unwrap();
                assert_eq!(r.base_offset, Offset(end));
                model.batches.push((end, *count, payload));
            }
            Op::AppendIfWrongOffset => {
                let wrong = Offset(model.end() + 1);
                let e = h
                    .stream()
                    .append_if(RecordBatch::new(1, 0, "x"), wrong)
                    .await
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
            }
            Op::Fetch {
                from,
                span,
                max_bytes,
            } => {
                let end = model.end();
                let start = Model::pick(model.start, end, *from);
                let stop = Model::pick(start, end, *span);
                let got = h
                    .stream()
                    .fetch(Offset(start), Offset(stop), *max_bytes as usize)
                    .await
                    .unwrap();
                if start == stop {
                    assert!(got.is_empty() || start < end, "step {step}");
                }
                if start < stop {
                    assert!(
                        !got.is_empty(),
                        "step {step}: nothing for [{start}, {stop})"
                    );
                    let first = model
                        .batches
                        .partition_point(|(b, c, _)| b + u64::from(*c) <= start);
                    for (i, b) in got.iter().enumerate() {
                        let (base, count, payload) = &model.batches[first + i];
                        assert_eq!(b.base_offset, Offset(*base), "step {step}");
                        assert_eq!(b.batch.count, *count);
                        assert_eq!(&b.batch.payload, payload);
                        assert!(
                            b.base_offset < Offset(stop),
                            "step {step}: past the end asked for"
                        );
                    }
                }
            }
            Op::Trim { at } => {
                let to = Model::pick(model.start, model.end(), *at);
                h.stream().trim(Offset(to)).await.unwrap();
                model.start = model.start.max(to);
            }
            Op::Flush => h.store.as_ref().unwrap().flush().await.unwrap(),
            Op::Restart => {
                h.store.take().unwrap().shutdown().await.unwrap();
                h.stream = None;
                h.reopen().await;
            }
            Op::Crash => {
                h.stream = None;
                drop(h.store.take());
                h.reopen().await;
            }
        }
        assert_eq!(
            h.stream().confirmed_offset().unwrap(),
            Offset(model.end()),
            "step {step}: {op:?}"
        );
        assert_eq!(
            h.stream().start_offset().unwrap(),
            Offset(model.start),
            "step {step}: {op:?}"
        );
    }
    h.store.take().unwrap().shutdown().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn a_stream_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
