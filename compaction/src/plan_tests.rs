use super::*;
use objstream::manifest::{Change, Outcome};
use objstream::{Epoch, NodeId};

const NODE: NodeId = NodeId(1);

/// A state with `streams` streams, built through `apply` as the manifest would.
struct Fixture {
    state: ManifestState,
    settings: CompactorSettings,
}

impl Fixture {
    fn new(streams: usize) -> Fixture {
        let mut state = ManifestState::new();
        state.apply(&Change::OpenNode { node: NODE }).unwrap();
        for _ in 0..streams {
            state
                .apply(&Change::CreateStream {
                    node: NODE,
                    node_epoch: Epoch(1),
                })
                .unwrap();
        }
        let settings = CompactorSettings {
            min_object_bytes: 100,
            fanout: 3,
            stream_split_bytes: 1_000,
            max_stream_set_object_bytes: 10_000,
            max_stream_object_bytes: 100_000,
            max_plan_bytes: 100_000,
            max_bytes_per_pass: 1_000_000,
            max_objects_per_plan: 8,
            ..CompactorSettings::default()
        };
        Fixture { state, settings }
    }

    /// Commits one object holding `records` more records of each listed stream.
    fn commit(&mut self, kind: ObjectKind, size: u64, streams: &[(u64, u64)]) -> ObjectId {
        let ids = match self
            .state
            .apply(&Change::AllocateObjectIds {
                node: NODE,
                node_epoch: Epoch(1),
                count: 1,
            })
            .unwrap()
        {
            Outcome::ObjectIds(r) => r,
            other => panic!("{other:?}"),
        };
        let id = ObjectId(ids.start);
        let ranges = streams
            .iter()
            .map(|&(s, records)| {
                let end = self.state.stream(StreamId(s)).unwrap().end;
                ManifestStreamRange {
                    stream: StreamId(s),
                    epoch: Epoch(1),
                    start: end,
                    end: end.add(records),
                }
            })
            .collect();
        let object = ObjectMeta {
            id,
            size,
            kind,
            ranges,
        };
        let change = serde_json::from_value(serde_json::json!({
            "commit_objects": { "node": NODE, "node_epoch": Epoch(1), "objects": [object] }
        }))
        .unwrap();
        self.state.apply(&change).unwrap();
        id
    }

    fn plans(&self) -> Vec<Plan> {
        plan(&self.state, &self.settings, &BTreeSet::new())
    }
}

#[test]
fn nothing_is_planned_for_an_empty_manifest() {
    assert!(Fixture::new(2).plans().is_empty());
}

#[test]
fn objects_holding_only_trimmed_or_deleted_data_are_removed_without_replacement() {
    let mut f = Fixture::new(2);
    let trimmed = f.commit(ObjectKind::Stream, 5_000, &[(0, 10)]);
    let deleted = f.commit(ObjectKind::Stream, 5_000, &[(1, 10)]);
    let live = f.commit(ObjectKind::Stream, 5_000, &[(0, 10)]);
    f.state
        .apply(&Change::TrimStream {
            stream: StreamId(0),
            epoch: Epoch(1),
            new_start: Offset(10),
            compactor_epoch: None,
        })
        .unwrap();
    f.state
        .apply(&Change::DeleteStream {
            stream: StreamId(1),
            epoch: Epoch(1),
        })
        .unwrap();
    let plans = f.plans();
    assert_eq!(plans.len(), 1, "{plans:?}");
    assert_eq!(plans[0].kind, PlanKind::DeleteDead);
    assert_eq!(plans[0].removed, vec![trimmed, deleted]);
    assert!(plans[0].outputs.is_empty());
    assert!(!plans.iter().any(|p| p.removed.contains(&live)));
}

#[test]
fn fanout_small_stream_set_objects_merge_and_big_streams_split_out() {
    let mut f = Fixture::new(3);
    let mut ids = Vec::new();
    for _ in 0..3 {
        // Stream 0 gets most of each object's records: 3 × 900 bytes passes the split size.
        ids.push(f.commit(ObjectKind::StreamSet, 1_000, &[(0, 90), (1, 5), (2, 5)]));
    }
    let plans = f.plans();
    assert_eq!(plans.len(), 1, "{plans:?}");
    let p = &plans[0];
    assert_eq!(p.kind, PlanKind::MergeStreamSet);
    assert_eq!(p.removed, ids);
    let kinds: Vec<ObjectKind> = p.outputs.iter().map(|o| o.kind).collect();
    assert_eq!(kinds, vec![ObjectKind::Stream, ObjectKind::StreamSet]);
    assert!(p.outputs[0]
        .pieces
        .iter()
        .all(|x| x.range.stream == StreamId(0)));
    assert_eq!(p.outputs[0].pieces.len(), 3);
    let shared: BTreeSet<StreamId> = p.outputs[1].pieces.iter().map(|x| x.range.stream).collect();
    assert_eq!(shared, [StreamId(1), StreamId(2)].into_iter().collect());
}

#[test]
fn fewer_than_fanout_objects_of_a_tier_wait() {
    let mut f = Fixture::new(1);
    f.commit(ObjectKind::StreamSet, 200, &[(0, 10)]);
    f.commit(ObjectKind::StreamSet, 200, &[(0, 10)]);
    // Another tier: does not count towards the first.
    f.commit(ObjectKind::StreamSet, 5_000, &[(0, 10)]);
    assert!(f.plans().is_empty());
}

#[test]
fn a_large_stream_set_object_is_split_into_one_stream_object_per_stream() {
    let mut f = Fixture::new(2);
    let id = f.commit(ObjectKind::StreamSet, 20_000, &[(0, 10), (1, 10)]);
    let plans = f.plans();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].kind, PlanKind::SplitStreamSet);
    assert_eq!(plans[0].removed, vec![id]);
    assert_eq!(plans[0].outputs.len(), 2);
    assert!(plans[0]
        .outputs
        .iter()
        .all(|o| o.kind == ObjectKind::Stream));
}

#[test]
fn newer_stream_objects_merge_once_they_outgrow_an_older_one_and_big_old_ones_stay() {
    let mut f = Fixture::new(1);
    let big = f.commit(ObjectKind::Stream, 50_000, &[(0, 100)]);
    let small: Vec<ObjectId> = (0..4)
        .map(|_| f.commit(ObjectKind::Stream, 150, &[(0, 10)]))
        .collect();
    let plans = f.plans();
    assert_eq!(plans.len(), 1, "{plans:?}");
    assert_eq!(plans[0].kind, PlanKind::MergeStreamObjects);
    assert_eq!(plans[0].removed, small);
    assert!(!plans[0].removed.contains(&big));
    let pieces = &plans[0].outputs[0].pieces;
    assert_eq!(pieces.first().unwrap().range.start, Offset(100));
    assert_eq!(pieces.last().unwrap().range.end, Offset(140));
}

#[test]
fn stream_objects_with_sizes_shrinking_by_the_factor_are_left_alone() {
    let mut f = Fixture::new(1);
    // With fanout 3, each object is more than twice all newer ones together.
    for size in [100_000, 24_000, 5_500, 1_300, 300] {
        f.commit(ObjectKind::Stream, size, &[(0, 10)]);
    }
    assert!(f.plans().is_empty(), "{:?}", f.plans());
}

#[test]
fn stream_objects_separated_by_another_object_merge_only_with_their_neighbours() {
    let mut f = Fixture::new(1);
    let a = f.commit(ObjectKind::Stream, 150, &[(0, 10)]);
    let b = f.commit(ObjectKind::Stream, 150, &[(0, 10)]);
    f.commit(ObjectKind::StreamSet, 5_000, &[(0, 10)]);
    let c = f.commit(ObjectKind::Stream, 150, &[(0, 10)]);
    let plans = f.plans();
    let merges: Vec<&Plan> = plans
        .iter()
        .filter(|p| p.kind == PlanKind::MergeStreamObjects)
        .collect();
    assert_eq!(merges.len(), 1, "{plans:?}");
    assert_eq!(merges[0].removed, vec![a, b]);
    assert!(!merges[0].removed.contains(&c));
}

#[test]
fn a_mostly_trimmed_object_is_rewritten_keeping_the_live_part() {
    let mut f = Fixture::new(1);
    let id = f.commit(ObjectKind::Stream, 50_000, &[(0, 100)]);
    f.state
        .apply(&Change::TrimStream {
            stream: StreamId(0),
            epoch: Epoch(1),
            new_start: Offset(70),
            compactor_epoch: None,
        })
        .unwrap();
    let plans = f.plans();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].kind, PlanKind::DropTrimmed);
    assert_eq!(plans[0].removed, vec![id]);
    assert_eq!(plans[0].outputs[0].pieces[0].keep_from, Offset(70));
    // Objects to skip are left alone, until they hold nothing live.
    let skip: BTreeSet<ObjectId> = [id].into_iter().collect();
    assert!(plan(&f.state, &f.settings, &skip).is_empty());
    f.state
        .apply(&Change::DeleteStream {
            stream: StreamId(0),
            epoch: Epoch(1),
        })
        .unwrap();
    let plans = plan(&f.state, &f.settings, &skip);
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].kind, PlanKind::DeleteDead);
}

#[test]
fn no_object_is_in_two_plans() {
    let mut f = Fixture::new(3);
    for i in 0..40u64 {
        let kind = if i % 3 == 0 {
            ObjectKind::Stream
        } else {
            ObjectKind::StreamSet
        };
        let streams: Vec<(u64, u64)> = match kind {
            ObjectKind::Stream => vec![(i % 3, 5)],
            ObjectKind::StreamSet => vec![(0, 3), (1, 1 + i % 4), (2, 2)],
        };
        f.commit(kind, 100 + (i * 337) % 3_000, &streams);
    }
    let plans = f.plans();
    assert!(!plans.is_empty());
    let mut seen = BTreeSet::new();
    for p in &plans {
        for id in &p.removed {
            assert!(seen.insert(*id), "{id} is in two plans");
        }
    }
}
