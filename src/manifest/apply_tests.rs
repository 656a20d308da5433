//! Tests of [`ManifestState::apply`]: each change, allowed and refused.

use super::*;
use crate::error::ErrorKind;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const S: StreamId = StreamId(0);

/// Applies a change that must succeed, and checks the invariants afterwards.
fn ok(state: &mut ManifestState, change: Change) -> Outcome {
    let outcome = state
        .apply(&change)
        .unwrap_or_else(|e| panic!("{change:?} was refused: {e}"));
    state.check_invariants().unwrap();
    outcome
}

/// Applies a change that must be refused, and checks it changed nothing.
fn refused(state: &mut ManifestState, change: Change) -> Error {
    let before = state.clone();
    let err = state
        .apply(&change)
        .expect_err("the change must be refused");
    assert_eq!(*state, before, "a refused change modified the state");
    err
}

fn range(stream: StreamId, epoch: u64, start: u64, end: u64) -> ManifestStreamRange {
    ManifestStreamRange {
        stream,
        epoch: Epoch(epoch),
        start: Offset(start),
        end: Offset(end),
    }
}

fn object(id: u64, kind: ObjectKind, ranges: Vec<ManifestStreamRange>) -> ObjectMeta {
    ObjectMeta {
        id: ObjectId(id),
        size: 1000 + id,
        kind,
        ranges,
    }
}

fn commit(node: NodeId, node_epoch: u64, objects: Vec<ObjectMeta>) -> Change {
    Change::CommitObjects {
        node,
        node_epoch: Epoch(node_epoch),
        objects,
        wal_floor: None,
    }
}

/// Nodes A and B started at epoch 1; stream S created by A; object ids 0..100 allocated.
fn base() -> ManifestState {
    let mut state = ManifestState::new();
    ok(&mut state, Change::OpenNode { node: A });
    ok(&mut state, Change::OpenNode { node: B });
    ok(
        &mut state,
        Change::CreateStream {
            node: A,
            node_epoch: Epoch(1),
        },
    );
    ok(
        &mut state,
        Change::AllocateObjectIds {
            node: A,
            node_epoch: Epoch(1),
            count: 100,
        },
    );
    state
}

/// `base()` with S holding [0, 10) in object 0 and [10, 20) in object 1.
fn with_data() -> ManifestState {
    let mut state = base();
    ok(
        &mut state,
        commit(
            A,
            1,
            vec![object(0, ObjectKind::StreamSet, vec![range(S, 1, 0, 10)])],
        ),
    );
    ok(
        &mut state,
        commit(
            A,
            1,
            vec![object(1, ObjectKind::Stream, vec![range(S, 1, 10, 20)])],
        ),
    );
    state
}

fn stream(state: &ManifestState) -> &StreamMeta {
    state.stream(S).unwrap()
}

#[test]
fn opening_a_node_starts_at_epoch_one_and_counts_up() {
    let mut state = ManifestState::new();
    assert_eq!(
        ok(&mut state, Change::OpenNode { node: A }),
        Outcome::NodeEpoch(Epoch(1))
    );
    assert_eq!(
        ok(&mut state, Change::OpenNode { node: A }),
        Outcome::NodeEpoch(Epoch(2))
    );
    assert_eq!(state.node(A).unwrap().epoch, Epoch(2));
}

#[test]
fn a_fenced_node_stays_fenced_at_its_old_epoch_and_its_new_epoch_is_live() {
    let mut state = base();
    assert_eq!(
        ok(
            &mut state,
            Change::FenceNode {
                node: A,
                epoch: Epoch(1)
            }
        ),
        Outcome::Done
    );
    ok(&mut state, Change::OpenNode { node: A });
    let node = state.node(A).unwrap();
    assert_eq!(node.fenced_epoch, Some(Epoch(1)));
    assert!(node.is_live(Epoch(2)));
    assert!(!node.is_live(Epoch(1)));
}

#[test]
fn fencing_a_node_again_is_already_applied() {
    let mut state = base();
    let fence = Change::FenceNode {
        node: A,
        epoch: Epoch(1),
    };
    ok(&mut state, fence.clone());
    assert_eq!(ok(&mut state, fence), Outcome::AlreadyApplied);
}

#[test]
fn fencing_an_unknown_node_or_a_future_epoch_is_invalid() {
    let mut state = base();
    let unknown = Change::FenceNode {
        node: NodeId(9),
        epoch: Epoch(1),
    };
    assert_eq!(refused(&mut state, unknown).kind(), ErrorKind::InvalidInput);
    let future = Change::FenceNode {
        node: A,
        epoch: Epoch(2),
    };
    assert_eq!(refused(&mut state, future).kind(), ErrorKind::InvalidInput);
}

#[test]
fn creating_streams_assigns_dense_ids_opened_by_the_creator_at_epoch_one() {
    let mut state = base();
    assert_eq!(
        ok(
            &mut state,
            Change::CreateStream {
                node: B,
                node_epoch: Epoch(1)
            }
        ),
        Outcome::StreamCreated(StreamId(1))
    );
    let created = state.stream(StreamId(1)).unwrap();
    assert_eq!(created.status, StreamStatus::Open);
    assert_eq!(created.epoch, Epoch(1));
    assert_eq!((created.owner, created.owner_node_epoch), (B, Epoch(1)));
    assert_eq!((created.start, created.end), (Offset(0), Offset(0)));
    assert_eq!(state.next_stream_id(), StreamId(2));
    assert_eq!(state.streams_owned_by(B), vec![StreamId(1)]);
    assert_eq!(state.streams_owned_by(A), vec![S]);
}

#[test]
fn a_stale_or_fenced_node_epoch_cannot_create_a_stream() {
    let mut state = base();
    ok(&mut state, Change::OpenNode { node: A });
    let stale = Change::CreateStream {
        node: A,
        node_epoch: Epoch(1),
    };
    assert!(refused(&mut state, stale).is_fenced());
    ok(
        &mut state,
        Change::FenceNode {
            node: A,
            epoch: Epoch(2),
        },
    );
    let fenced = Change::CreateStream {
        node: A,
        node_epoch: Epoch(2),
    };
    assert!(refused(&mut state, fenced).is_fenced());
    let never_started = Change::CreateStream {
        node: NodeId(9),
        node_epoch: Epoch(1),
    };
    assert_eq!(
        refused(&mut state, never_started).kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn opening_a_stream_open_on_a_live_node_is_busy() {
    let mut state = base();
    let open = Change::OpenStream {
        stream: S,
        node: B,
        node_epoch: Epoch(1),
    };
    let err = refused(&mut state, open);
    assert!(matches!(
        err.detail(),
        ErrorDetail::StreamBusy {
            stream: S,
            owner: A,
            epoch: Epoch(1)
        }
    ));
}

#[test]
fn a_restarted_but_unfenced_node_still_holds_its_streams() {
    let mut state = base();
    ok(&mut state, Change::OpenNode { node: A });
    let open = Change::OpenStream {
        stream: S,
        node: B,
        node_epoch: Epoch(1),
    };
    assert!(matches!(
        refused(&mut state, open).detail(),
        ErrorDetail::StreamBusy { .. }
    ));
}

#[test]
fn a_fenced_nodes_streams_can_be_opened_elsewhere_at_their_committed_end() {
    let mut state = with_data();
    ok(
        &mut state,
        Change::FenceNode {
            node: A,
            epoch: Epoch(1),
        },
    );
    let outcome = ok(
        &mut state,
        Change::OpenStream {
            stream: S,
            node: B,
            node_epoch: Epoch(1),
        },
    );
    assert_eq!(
        outcome,
        Outcome::StreamOpened {
            epoch: Epoch(2),
            start: Offset(0),
            end: Offset(20)
        }
    );
    assert_eq!(stream(&state).owner, B);
    assert_eq!(state.streams_owned_by(A), Vec::<StreamId>::new());
    assert_eq!(state.streams_owned_by(B), vec![S]);
}

#[test]
fn opening_a_closed_stream_raises_its_epoch_and_moves_ownership() {
    let mut state = base();
    ok(
        &mut state,
        Change::CloseStream {
            stream: S,
            epoch: Epoch(1),
            node: A,
            node_epoch: Epoch(1),
        },
    );
    assert_eq!(stream(&state).status, StreamStatus::Closed);
    let outcome = ok(
        &mut state,
        Change::OpenStream {
            stream: S,
            node: B,
            node_epoch: Epoch(1),
        },
    );
    assert!(matches!(
        outcome,
        Outcome::StreamOpened {
            epoch: Epoch(2),
            ..
        }
    ));
    let meta = stream(&state);
    assert_eq!(
        (meta.status, meta.owner, meta.owner_node_epoch),
        (StreamStatus::Open, B, Epoch(1))
    );
}

#[test]
fn opening_a_deleted_or_unknown_stream_fails() {
    let mut state = base();
    ok(
        &mut state,
        Change::DeleteStream {
            stream: S,
            epoch: Epoch(1),
        },
    );
    let open = |stream| Change::OpenStream {
        stream,
        node: B,
        node_epoch: Epoch(1),
    };
    assert!(matches!(
        refused(&mut state, open(S)).detail(),
        ErrorDetail::StreamDeleted(S)
    ));
    assert!(matches!(
        refused(&mut state, open(StreamId(7))).detail(),
        ErrorDetail::UnknownStream(StreamId(7))
    ));
}

#[test]
fn closing_needs_the_current_stream_epoch_and_the_owner_and_a_second_close_is_a_no_op() {
    let mut state = base();
    let close = |epoch, node| Change::CloseStream {
        stream: S,
        epoch: Epoch(epoch),
        node,
        node_epoch: Epoch(1),
    };
    assert!(refused(&mut state, close(1, B)).is_fenced());
    assert_eq!(
        refused(&mut state, close(2, A)).kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(ok(&mut state, close(1, A)), Outcome::Done);
    assert_eq!(ok(&mut state, close(1, A)), Outcome::AlreadyApplied);
    ok(
        &mut state,
        Change::OpenStream {
            stream: S,
            node: B,
            node_epoch: Epoch(1),
        },
    );
    assert!(refused(&mut state, close(1, A)).is_fenced());
}

#[test]
fn trimming_moves_the_start_within_the_committed_range() {
    let mut state = with_data();
    let trim = |epoch, to| Change::TrimStream {
        stream: S,
        epoch: Epoch(epoch),
        new_start: Offset(to),
        compactor_epoch: None,
    };
    assert_eq!(ok(&mut state, trim(1, 15)), Outcome::Done);
    assert_eq!(stream(&state).start, Offset(15));
    assert_eq!(ok(&mut state, trim(1, 15)), Outcome::AlreadyApplied);
    assert!(matches!(
        refused(&mut state, trim(1, 21)).detail(),
        ErrorDetail::OffsetOutOfRange {
            offset: Offset(21),
            end: Offset(20),
            ..
        }
    ));
    assert!(matches!(
        refused(&mut state, trim(1, 5)).detail(),
        ErrorDetail::OffsetOutOfRange { .. }
    ));
    assert_eq!(ok(&mut state, trim(1, 20)), Outcome::Done);
    ok(
        &mut state,
        Change::FenceNode {
            node: A,
            epoch: Epoch(1),
        },
    );
    ok(
        &mut state,
        Change::OpenStream {
            stream: S,
            node: B,
            node_epoch: Epoch(1),
        },
    );
    assert!(refused(&mut state, trim(1, 20)).is_fenced());
}

#[test]
fn deleting_needs_the_current_epoch_and_a_second_delete_is_a_no_op() {
    let mut state = base();
    let delete = |epoch| Change::DeleteStream {
        stream: S,
        epoch: Epoch(epoch),
    };
    assert_eq!(
        refused(&mut state, delete(2)).kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(ok(&mut state, delete(1)), Outcome::Done);
    assert_eq!(stream(&state).status, StreamStatus::Deleted);
    assert_eq!(ok(&mut state, delete(1)), Outcome::AlreadyApplied);
    assert!(matches!(
        refused(&mut state, delete(0)).detail(),
        ErrorDetail::StreamDeleted(S)
    ));
    assert!(state.streams_owned_by(A).is_empty());
}

#[test]
fn allocating_object_ids_hands_out_consecutive_ranges() {
    let mut state = base();
    let allocate = |count| Change::AllocateObjectIds {
        node: B,
        node_epoch: Epoch(1),
        count,
    };
    assert_eq!(ok(&mut state, allocate(3)), Outcome::ObjectIds(100..103));
    assert_eq!(ok(&mut state, allocate(1)), Outcome::ObjectIds(103..104));
    assert_eq!(
        refused(&mut state, allocate(0)).kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        refused(&mut state, allocate(u64::MAX)).kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn committing_objects_extends_the_committed_end_and_indexes_the_objects() {
    let state = with_data();
    assert_eq!(stream(&state).end, Offset(20));
    assert_eq!(
        state.objects_covering(S, Offset(5), Offset(15)),
        vec![
            (ObjectId(0), 1000, Offset(0), Offset(10)),
            (ObjectId(1), 1001, Offset(10), Offset(20)),
        ]
    );
}

#[test]
fn a_range_not_starting_at_the_committed_end_is_a_conflict() {
    let mut state = with_data();
    for start in [19, 21] {
        let gap = commit(
            A,
            1,
            vec![object(2, ObjectKind::Stream, vec![range(S, 1, start, 30)])],
        );
        let err = refused(&mut state, gap);
        match err.detail() {
            ErrorDetail::Conflict(message) => {
                assert!(message.contains("must start at 20"), "{message}");
                assert!(message.contains(&format!("starts at {start}")), "{message}");
            }
            other => panic!("not a conflict: {other}"),
        }
    }
}

#[test]
fn a_replayed_identical_commit_is_already_applied() {
    let mut state = with_data();
    let again = commit(
        A,
        1,
        vec![object(1, ObjectKind::Stream, vec![range(S, 1, 10, 20)])],
    );
    assert_eq!(ok(&mut state, again), Outcome::AlreadyApplied);
    assert_eq!(stream(&state).end, Offset(20));
}

#[test]
fn a_committed_id_with_other_contents_is_a_conflict() {
    let mut state = with_data();
    let other = commit(
        A,
        1,
        vec![object(1, ObjectKind::Stream, vec![range(S, 1, 20, 30)])],
    );
    assert_eq!(refused(&mut state, other).kind(), ErrorKind::Retry);
    let partly = commit(
        A,
        1,
        vec![
            object(1, ObjectKind::Stream, vec![range(S, 1, 10, 20)]),
            object(2, ObjectKind::Stream, vec![range(S, 1, 20, 30)]),
        ],
    );
    assert!(matches!(
        refused(&mut state, partly).detail(),
        ErrorDetail::Conflict(_)
    ));
}

#[test]
fn a_commit_under_a_stale_stream_epoch_is_fenced() {
    let mut state = with_data();
    ok(
        &mut state,
        Change::CloseStream {
            stream: S,
            epoch: Epoch(1),
            node: A,
            node_epoch: Epoch(1),
        },
    );
    ok(
        &mut state,
        Change::OpenStream {
            stream: S,
            node: A,
            node_epoch: Epoch(1),
        },
    );
    let stale = commit(
        A,
        1,
        vec![object(2, ObjectKind::Stream, vec![range(S, 1, 20, 30)])],
    );
    assert!(refused(&mut state, stale).is_fenced());
    let current = commit(
        A,
        1,
        vec![object(2, ObjectKind::Stream, vec![range(S, 2, 20, 30)])],
    );
    ok(&mut state, current);
}

#[test]
fn a_commit_from_a_stale_or_fenced_node_epoch_is_fenced() {
    let mut state = with_data();
    let next = || {
        commit(
            A,
            1,
            vec![object(2, ObjectKind::Stream, vec![range(S, 1, 20, 30)])],
        )
    };
    let mut restarted = state.clone();
    ok(&mut restarted, Change::OpenNode { node: A });
    assert!(refused(&mut restarted, next()).is_fenced());
    ok(
        &mut state,
        Change::FenceNode {
            node: A,
            epoch: Epoch(1),
        },
    );
    assert!(refused(&mut state, next()).is_fenced());
}

#[test]
fn a_restarted_node_commits_and_closes_what_its_earlier_epoch_opened() {
    let mut state = with_data();
    ok(&mut state, Change::OpenNode { node: A });
    ok(
        &mut state,
        Change::AllocateObjectIds {
            node: A,
            node_epoch: Epoch(2),
            count: 4,
        },
    );
    let id = state.next_object_id().0 - 1;
    ok(
        &mut state,
        commit(
            A,
            2,
            vec![object(id, ObjectKind::Stream, vec![range(S, 1, 20, 30)])],
        ),
    );
    assert_eq!(state.stream(S).unwrap().end, Offset(30));
    ok(
        &mut state,
        Change::CloseStream {
            stream: S,
            epoch: Epoch(1),
            node: A,
            node_epoch: Epoch(2),
        },
    );
}

#[test]
fn a_live_node_commits_and_closes_the_streams_of_a_fenced_node() {
    let mut state = with_data();
    ok(
        &mut state,
        Change::AllocateObjectIds {
            node: B,
            node_epoch: Epoch(1),
            count: 4,
        },
    );
    let id = state.next_object_id().0 - 1;
    let recovered = || {
        commit(
            B,
            1,
            vec![object(id, ObjectKind::Stream, vec![range(S, 1, 20, 30)])],
        )
    };
    assert!(
        refused(&mut state.clone(), recovered()).is_fenced(),
        "not while A is live"
    );
    ok(
        &mut state,
        Change::FenceNode {
            node: A,
            epoch: Epoch(1),
        },
    );
    ok(&mut state, recovered());
    ok(
        &mut state,
        Change::CloseStream {
            stream: S,
            epoch: Epoch(1),
            node: B,
            node_epoch: Epoch(1),
        },
    );
    assert_eq!(state.stream(S).unwrap().end, Offset(30));
}

#[test]
fn a_commit_to_another_nodes_stream_is_fenced() {
    let mut state = with_data();
    let foreign = commit(
        B,
        1,
        vec![object(2, ObjectKind::Stream, vec![range(S, 1, 20, 30)])],
    );
    assert!(refused(&mut state, foreign).is_fenced());
}

#[test]
fn a_commit_of_unallocated_or_repeated_ids_is_invalid() {
    let mut state = with_data();
    let unallocated = commit(
        A,
        1,
        vec![object(100, ObjectKind::Stream, vec![range(S, 1, 20, 30)])],
    );
    assert_eq!(
        refused(&mut state, unallocated).kind(),
        ErrorKind::InvalidInput
    );
    let twice = commit(
        A,
        1,
        vec![
            object(2, ObjectKind::Stream, vec![range(S, 1, 20, 30)]),
            object(2, ObjectKind::Stream, vec![range(S, 1, 30, 40)]),
        ],
    );
    assert_eq!(refused(&mut state, twice).kind(), ErrorKind::InvalidInput);
}

#[test]
fn ranges_of_one_commit_chain_in_order_across_its_objects() {
    let mut state = with_data();
    ok(
        &mut state,
        Change::CreateStream {
            node: A,
            node_epoch: Epoch(1),
        },
    );
    let t = StreamId(1);
    let out_of_order = commit(
        A,
        1,
        vec![
            object(3, ObjectKind::Stream, vec![range(S, 1, 30, 40)]),
            object(2, ObjectKind::StreamSet, vec![range(S, 1, 20, 30)]),
        ],
    );
    assert!(matches!(
        refused(&mut state, out_of_order).detail(),
        ErrorDetail::Conflict(_)
    ));
    let chained = commit(
        A,
        1,
        vec![
            object(
                2,
                ObjectKind::StreamSet,
                vec![range(S, 1, 20, 30), range(t, 1, 0, 5)],
            ),
            object(3, ObjectKind::Stream, vec![range(S, 1, 30, 40)]),
        ],
    );
    ok(&mut state, chained);
    assert_eq!(stream(&state).end, Offset(40));
    assert_eq!(state.stream(t).unwrap().end, Offset(5));
    assert_eq!(state.objects_covering(S, Offset(0), Offset(40)).len(), 4);
}

#[test]
fn a_commit_to_a_closed_deleted_or_unknown_stream_fails() {
    let mut state = with_data();
    let next = |stream| {
        commit(
            A,
            1,
            vec![object(
                2,
                ObjectKind::Stream,
                vec![range(stream, 1, 20, 30)],
            )],
        )
    };
    assert!(matches!(
        refused(&mut state, next(StreamId(5))).detail(),
        ErrorDetail::UnknownStream(StreamId(5))
    ));
    let mut closed = state.clone();
    ok(
        &mut closed,
        Change::CloseStream {
            stream: S,
            epoch: Epoch(1),
            node: A,
            node_epoch: Epoch(1),
        },
    );
    assert!(matches!(
        refused(&mut closed, next(S)).detail(),
        ErrorDetail::StreamClosed(S)
    ));
    ok(
        &mut state,
        Change::DeleteStream {
            stream: S,
            epoch: Epoch(1),
        },
    );
    assert!(matches!(
        refused(&mut state, next(S)).detail(),
        ErrorDetail::StreamDeleted(S)
    ));
}

#[test]
fn empty_ranges_and_mixed_stream_objects_are_invalid() {
    let mut state = with_data();
    ok(
        &mut state,
        Change::CreateStream {
            node: A,
            node_epoch: Epoch(1),
        },
    );
    let empty = commit(
        A,
        1,
        vec![object(2, ObjectKind::Stream, vec![range(S, 1, 20, 20)])],
    );
    assert_eq!(refused(&mut state, empty).kind(), ErrorKind::InvalidInput);
    let no_ranges = commit(A, 1, vec![object(2, ObjectKind::Stream, vec![])]);
    assert_eq!(
        refused(&mut state, no_ranges).kind(),
        ErrorKind::InvalidInput
    );
    let mixed = commit(
        A,
        1,
        vec![object(
            2,
            ObjectKind::Stream,
            vec![range(S, 1, 20, 30), range(StreamId(1), 1, 0, 5)],
        )],
    );
    assert_eq!(refused(&mut state, mixed).kind(), ErrorKind::InvalidInput);
    assert_eq!(
        refused(&mut state, commit(A, 1, vec![])).kind(),
        ErrorKind::InvalidInput
    );
}

fn compacting() -> ManifestState {
    let mut state = with_data();
    assert_eq!(
        ok(&mut state, Change::OpenCompactor),
        Outcome::CompactorEpoch(Epoch(1))
    );
    state
}

fn replace(epoch: u64, removed: &[u64], added: Vec<ObjectMeta>) -> Change {
    Change::ReplaceObjects {
        compactor_epoch: Epoch(epoch),
        removed: removed.iter().map(|id| ObjectId(*id)).collect(),
        added,
    }
}

#[test]
fn a_replacement_holding_the_same_offsets_swaps_the_objects() {
    let mut state = compacting();
    let merged = object(5, ObjectKind::Stream, vec![range(S, 1, 0, 20)]);
    assert_eq!(
        ok(&mut state, replace(1, &[0, 1], vec![merged.clone()])),
        Outcome::Done
    );
    assert_eq!(
        state.objects_covering(S, Offset(0), Offset(20)),
        vec![(ObjectId(5), 1005, Offset(0), Offset(20))]
    );
    assert!(state.object(ObjectId(0)).is_none());
    assert_eq!(
        ok(&mut state, replace(1, &[0, 1], vec![merged])),
        Outcome::AlreadyApplied
    );
}

#[test]
fn a_stale_or_unstarted_compactor_is_refused() {
    let mut state = with_data();
    let merged = || vec![object(5, ObjectKind::Stream, vec![range(S, 1, 0, 20)])];
    assert_eq!(
        refused(&mut state, replace(0, &[0, 1], merged())).kind(),
        ErrorKind::InvalidInput
    );
    ok(&mut state, Change::OpenCompactor);
    ok(&mut state, Change::OpenCompactor);
    assert!(refused(&mut state, replace(1, &[0, 1], merged())).is_fenced());
    ok(&mut state, replace(2, &[0, 1], merged()));
}

#[test]
fn a_retention_trim_from_a_fenced_compactor_is_refused() {
    let mut state = compacting();
    ok(&mut state, Change::OpenCompactor);
    let trim = |compactor: u64, new_start: u64| Change::TrimStream {
        stream: S,
        epoch: Epoch(1),
        new_start: Offset(new_start),
        compactor_epoch: Some(Epoch(compactor)),
    };
    assert!(refused(&mut state, trim(1, 5)).is_fenced());
    assert_eq!(stream(&state).start, Offset(0));
    ok(&mut state, trim(2, 5));
    assert_eq!(stream(&state).start, Offset(5));
}

#[test]
fn a_replacement_that_loses_offsets_above_the_trim_point_is_refused() {
    let mut state = compacting();
    ok(
        &mut state,
        Change::TrimStream {
            stream: S,
            epoch: Epoch(1),
            new_start: Offset(5),
            compactor_epoch: None,
        },
    );
    let short = vec![object(5, ObjectKind::Stream, vec![range(S, 1, 6, 20)])];
    assert_eq!(
        refused(&mut state, replace(1, &[0, 1], short)).kind(),
        ErrorKind::InvalidInput
    );
    let trimmed = vec![object(5, ObjectKind::Stream, vec![range(S, 1, 5, 20)])];
    ok(&mut state, replace(1, &[0, 1], trimmed));
    assert_eq!(
        state.objects_covering(S, Offset(5), Offset(20)),
        vec![(ObjectId(5), 1005, Offset(5), Offset(20))]
    );
}

#[test]
fn a_replacement_may_drop_everything_below_the_trim_point_or_of_a_deleted_stream() {
    let mut state = compacting();
    ok(
        &mut state,
        Change::TrimStream {
            stream: S,
            epoch: Epoch(1),
            new_start: Offset(10),
            compactor_epoch: None,
        },
    );
    ok(&mut state, replace(1, &[0], vec![]));
    assert_eq!(state.objects().count(), 1);
    ok(
        &mut state,
        Change::DeleteStream {
            stream: S,
            epoch: Epoch(1),
        },
    );
    ok(&mut state, replace(1, &[1], vec![]));
    assert_eq!(state.objects().count(), 0);
    assert!(stream(&state).objects.is_empty());
}

#[test]
fn a_replacement_that_adds_offsets_it_did_not_remove_is_refused() {
    let mut state = compacting();
    let grown = vec![object(5, ObjectKind::Stream, vec![range(S, 1, 0, 21)])];
    assert_eq!(
        refused(&mut state, replace(1, &[0, 1], grown)).kind(),
        ErrorKind::InvalidInput
    );
    let overlapping = vec![
        object(5, ObjectKind::Stream, vec![range(S, 1, 0, 12)]),
        object(6, ObjectKind::Stream, vec![range(S, 1, 10, 20)]),
    ];
    assert_eq!(
        refused(&mut state, replace(1, &[0, 1], overlapping)).kind(),
        ErrorKind::InvalidInput
    );
    let reused = vec![object(1, ObjectKind::Stream, vec![range(S, 1, 0, 20)])];
    assert!(matches!(
        refused(&mut state, replace(1, &[0], reused)).detail(),
        ErrorDetail::Conflict(_)
    ));
}

#[test]
fn replaying_the_same_changes_yields_the_same_state() {
    let changes = vec![
        Change::OpenNode { node: A },
        Change::CreateStream {
            node: A,
            node_epoch: Epoch(1),
        },
        Change::AllocateObjectIds {
            node: A,
            node_epoch: Epoch(1),
            count: 2,
        },
        commit(
            A,
            1,
            vec![object(0, ObjectKind::StreamSet, vec![range(S, 1, 0, 7)])],
        ),
        Change::TrimStream {
            stream: S,
            epoch: Epoch(1),
            new_start: Offset(3),
            compactor_epoch: None,
        },
    ];
    let mut first = ManifestState::new();
    let mut second = ManifestState::new();
    for change in &changes {
        assert_eq!(first.apply(change).unwrap(), second.apply(change).unwrap());
    }
    assert_eq!(
        serde_json::to_string(&first).unwrap(),
        serde_json::to_string(&second).unwrap()
    );
}

fn trim_wal(node: NodeId, node_epoch: u64, owner: NodeId, floor: u64) -> Change {
    Change::TrimWal {
        node,
        node_epoch: Epoch(node_epoch),
        owner,
        floor,
    }
}

#[test]
fn a_commit_records_the_wal_floor_of_its_node_and_the_floor_never_falls() {
    let mut state = base();
    let mut change = commit(
        A,
        1,
        vec![object(0, ObjectKind::StreamSet, vec![range(S, 1, 0, 10)])],
    );
    if let Change::CommitObjects { wal_floor, .. } = &mut change {
        *wal_floor = Some(4096);
    }
    ok(&mut state, change);
    assert_eq!(state.node(A).unwrap().wal_floor, 4096);
    assert_eq!(state.node(B).unwrap().wal_floor, 0);
    assert_eq!(
        ok(&mut state, trim_wal(A, 1, A, 100)),
        Outcome::AlreadyApplied
    );
    assert_eq!(
        state.node(A).unwrap().wal_floor,
        4096,
        "a lower floor is ignored"
    );
    assert_eq!(ok(&mut state, trim_wal(A, 1, A, 8192)), Outcome::Done);
    assert_eq!(state.node(A).unwrap().wal_floor, 8192);
}

#[test]
fn only_the_owner_or_a_live_node_after_fencing_it_may_raise_a_wal_floor() {
    let mut state = base();
    let err = refused(&mut state, trim_wal(B, 1, A, 10));
    assert_eq!(err.kind(), ErrorKind::Reopen, "A is live: {err}");
    ok(
        &mut state,
        Change::FenceNode {
            node: A,
            epoch: Epoch(1),
        },
    );
    let err = refused(&mut state, trim_wal(A, 1, A, 10));
    assert_eq!(err.kind(), ErrorKind::Reopen, "A is fenced: {err}");
    ok(&mut state, trim_wal(B, 1, A, 10));
    assert_eq!(state.node(A).unwrap().wal_floor, 10);
    let err = refused(&mut state, trim_wal(B, 1, NodeId(9), 10));
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    // After a restart A raises its own floor again; B no longer may.
    ok(&mut state, Change::OpenNode { node: A });
    refused(&mut state, trim_wal(B, 1, A, 20));
    ok(&mut state, trim_wal(A, 2, A, 20));
}

fn collect(epoch: u64, ids: &[u64]) -> Change {
    Change::CollectObjects {
        compactor_epoch: Epoch(epoch),
        ids: ids.iter().map(|id| ObjectId(*id)).collect(),
    }
}

#[test]
fn collecting_allocated_uncommitted_ids_records_them() {
    let mut state = compacting();
    assert_eq!(ok(&mut state, collect(1, &[7, 3, 7])), Outcome::Done);
    assert!(state.is_collected(ObjectId(3)) && state.is_collected(ObjectId(7)));
    assert_eq!(
        state.collected().collect::<Vec<_>>(),
        vec![ObjectId(3), ObjectId(7)]
    );
}

#[test]
fn collecting_a_committed_id_is_a_conflict() {
    let mut state = compacting();
    let err = refused(&mut state, collect(1, &[5, 1]));
    assert_eq!(err.kind(), ErrorKind::Retry, "{err}");
    assert!(matches!(err.detail(), ErrorDetail::Conflict(_)), "{err}");
}

#[test]
fn collecting_under_a_stale_or_unstarted_compactor_epoch_is_refused() {
    let mut state = with_data();
    assert_eq!(
        refused(&mut state, collect(0, &[5])).kind(),
        ErrorKind::InvalidInput
    );
    ok(&mut state, Change::OpenCompactor);
    ok(&mut state, Change::OpenCompactor);
    assert!(refused(&mut state, collect(1, &[5])).is_fenced());
    ok(&mut state, collect(2, &[5]));
}

#[test]
fn collecting_nothing_or_an_unallocated_id_is_invalid() {
    let mut state = compacting();
    assert_eq!(
        refused(&mut state, collect(1, &[])).kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        refused(&mut state, collect(1, &[5, 100])).kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn a_replayed_collection_is_already_applied_and_a_wider_one_adds_the_rest() {
    let mut state = compacting();
    ok(&mut state, collect(1, &[5, 6]));
    let after = state.clone();
    assert_eq!(ok(&mut state, collect(1, &[6, 5])), Outcome::AlreadyApplied);
    assert_eq!(state, after);
    assert_eq!(ok(&mut state, collect(1, &[5, 8])), Outcome::Done);
    assert!(state.is_collected(ObjectId(8)));
}

#[test]
fn a_commit_naming_a_collected_id_is_a_conflict_and_fresh_ids_commit() {
    let mut state = compacting();
    ok(&mut state, collect(1, &[2]));
    let late = commit(
        A,
        1,
        vec![object(2, ObjectKind::Stream, vec![range(S, 1, 20, 30)])],
    );
    let err = refused(&mut state, late);
    assert!(matches!(err.detail(), ErrorDetail::Conflict(_)), "{err}");
    assert!(err.to_string().contains("collected"), "{err}");
    let again = commit(
        A,
        1,
        vec![object(3, ObjectKind::Stream, vec![range(S, 1, 20, 30)])],
    );
    assert_eq!(ok(&mut state, again), Outcome::Done);
    assert_eq!(stream(&state).end, Offset(30));
}

#[test]
fn a_commit_that_lands_first_makes_the_collection_of_its_ids_a_conflict() {
    let mut state = compacting();
    ok(
        &mut state,
        commit(
            A,
            1,
            vec![object(2, ObjectKind::Stream, vec![range(S, 1, 20, 30)])],
        ),
    );
    refused(&mut state, collect(1, &[2, 4]));
    assert!(
        !state.is_collected(ObjectId(4)),
        "nothing of a refused collection stays"
    );
}

#[test]
fn a_replacement_adding_a_collected_id_is_a_conflict() {
    let mut state = compacting();
    ok(&mut state, collect(1, &[5]));
    let merged = vec![object(5, ObjectKind::Stream, vec![range(S, 1, 0, 20)])];
    let err = refused(&mut state, replace(1, &[0, 1], merged));
    assert!(matches!(err.detail(), ErrorDetail::Conflict(_)), "{err}");
}
