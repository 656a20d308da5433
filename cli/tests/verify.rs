//! `verify` against real stores: a clean one passes, a flipped byte anywhere is found.

mod common;

use common::{build, flip, object_files, run, stdout, Built, Wal};

fn verify(built: &Built) -> (Option<i32>, String, serde_json::Value) {
    let out = run(&["verify", &built.url]);
    let (json_out, json) = common::run_json(&["verify", "--quiet", &built.url]);
    assert_eq!(out.status.code(), json_out.status.code());
    (out.status.code(), stdout(&out), json)
}

#[test]
fn a_clean_store_verifies_with_exit_code_0_for_every_wal_backend() {
    for wal in [Wal::File, Wal::Block, Wal::Object] {
        let built = build(wal);
        let (code, text, json) = verify(&built);
        assert_eq!(code, Some(0), "{wal:?}: {text}");
        assert!(text.contains("OK: no corruption found"), "{text}");
        assert_eq!(json["ok"], true);
        assert_eq!(
            json["objects"].as_u64().unwrap() as usize,
            object_files(&built).len()
        );
        assert!(json["checkpoints"].as_u64().unwrap() > 0);
    }
}

#[test]
fn verify_reports_progress_on_stderr_and_nothing_with_quiet() {
    let built = build(Wal::File);
    let loud = run(&["verify", &built.url]);
    assert!(common::stderr(&loud).contains("verify: checking"));
    let quiet = run(&["verify", "-q", &built.url]);
    assert!(common::stderr(&quiet).is_empty());
}

fn manifest_file(built: &Built, folder: &str, seq: u64) -> std::path::PathBuf {
    built.objects.join(folder).join(format!("{seq:020}"))
}

#[test]
fn a_flipped_byte_in_a_manifest_record_is_reported_with_its_key() {
    let built = build(Wal::File);
    flip(&manifest_file(&built, "manifest", 2), 30);
    let (code, text, json) = verify(&built);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("manifest/00000000000000000002"), "{text}");
    let location = json["problems"][0]["location"].as_str().unwrap();
    assert!(
        location.ends_with("manifest/00000000000000000002"),
        "{location}"
    );
}

#[test]
fn a_flipped_byte_in_a_checkpoint_is_reported_with_its_key() {
    let built = build(Wal::File);
    let checkpoint = common::files_under(&built.objects.join("manifest-checkpoint")).remove(0);
    flip(&checkpoint, 40);
    let (code, text, _) = verify(&built);
    assert_eq!(code, Some(1), "{text}");
    let name = checkpoint.file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains(&format!("manifest-checkpoint/{name}")),
        "{text}"
    );
}

#[test]
fn a_flipped_byte_in_a_data_block_is_reported_with_object_block_stream_and_offsets() {
    let built = build(Wal::File);
    let object = object_files(&built).remove(0);
    // Inside the first block's body (its 48-byte header comes first).
    flip(&object, 60);
    let (code, text, json) = verify(&built);
    assert_eq!(code, Some(1), "{text}");
    let problem = &json["problems"][0];
    let name = object.file_name().unwrap().to_str().unwrap();
    assert!(
        problem["location"].as_str().unwrap().ends_with(name),
        "{problem}"
    );
    assert_eq!(problem["block_position"], 0);
    assert!(
        problem["stream"].is_u64() && problem["offsets"].is_array(),
        "{problem}"
    );
    assert!(text.contains("block at 0 stream"), "{text}");
    assert!(text.contains("crc32c mismatch"), "{text}");
}

#[test]
fn a_flipped_byte_in_an_object_index_or_footer_is_reported() {
    // The index ends 48 bytes before the end (its crc is its last 4 bytes); the footer is the
    // last 48 bytes.
    for (at, what) in [(-60i64, "index"), (-20, "footer")] {
        let built = build(Wal::File);
        let object = object_files(&built).remove(0);
        flip(&object, at);
        let (code, text, _) = verify(&built);
        assert_eq!(code, Some(1), "{what}: {text}");
        assert!(text.contains(what), "{what}: {text}");
        let name = object.file_name().unwrap().to_str().unwrap();
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn a_missing_object_is_reported() {
    let built = build(Wal::File);
    let object = object_files(&built).remove(0);
    std::fs::remove_file(&object).unwrap();
    let (code, text, _) = verify(&built);
    assert_eq!(code, Some(1));
    assert!(text.contains("not in the store"), "{text}");
}

#[test]
fn an_object_the_manifest_does_not_reference_is_a_warning_not_a_failure() {
    let built = build(Wal::File);
    let object = object_files(&built).remove(0);
    let stray = object.with_file_name(format!("{:020}", 999_999));
    std::fs::copy(&object, stray).unwrap();
    let (code, text, json) = verify(&built);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("1 data objects are not in the manifest"),
        "{text}"
    );
    assert_eq!(json["warnings"].as_array().unwrap().len(), 1);
}

#[test]
fn manifest_shows_a_damaged_record_as_corrupt_and_exits_1() {
    let built = build(Wal::File);
    flip(&manifest_file(&built, "manifest", 3), 30);
    let out = run(&["manifest", &built.url]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let line = text.lines().find(|l| l.starts_with("3 ")).unwrap();
    assert!(line.contains("CORRUPT") && line.contains("crc"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("4 ")),
        "later records are still shown"
    );
}

#[test]
fn a_well_formed_record_that_does_not_apply_is_reported() {
    use objstream::manifest::{decode_record, encode_record, Change};
    let built = build(Wal::File);
    let path = manifest_file(&built, "manifest", 3);
    let mut record = decode_record("r", 3, &std::fs::read(&path).unwrap()).unwrap();
    // Opening a stream that does not exist: checksums fine, history impossible.
    record.change = Change::OpenStream {
        stream: objstream::StreamId(99),
        node: objstream::NodeId(built.node),
        node_epoch: objstream::Epoch(1),
    };
    std::fs::write(&path, encode_record(&record).unwrap()).unwrap();
    let (code, text, _) = verify(&built);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("manifest/00000000000000000003"), "{text}");
    assert!(text.contains("does not apply"), "{text}");
}

#[test]
fn a_well_formed_checkpoint_that_disagrees_with_the_log_is_reported() {
    use objstream::manifest::{decode_checkpoint, encode_checkpoint, ManifestState};
    let built = build(Wal::File);
    let path = common::files_under(&built.objects.join("manifest-checkpoint")).remove(0);
    let seq: u64 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
    let state = decode_checkpoint("c", seq, &std::fs::read(&path).unwrap()).unwrap();
    // The same state with one more object id handed out: valid, but not what the log says.
    let mut json = serde_json::to_value(&state).unwrap();
    let next = json["next_object_id"].as_u64().unwrap();
    json["next_object_id"] = (next + 1).into();
    let changed: ManifestState = serde_json::from_value(json).unwrap();
    std::fs::write(&path, encode_checkpoint(&changed).unwrap()).unwrap();
    let (code, text, _) = verify(&built);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("differs from the log replayed to record {seq}")),
        "{text}"
    );
}

#[test]
fn records_removed_below_a_checkpoint_are_fine_and_a_hole_in_the_log_is_not() {
    let built = build(Wal::File);
    let checkpoints = common::files_under(&built.objects.join("manifest-checkpoint"));
    let first: u64 = checkpoints[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // As the store's garbage collection leaves it: the records up to the first checkpoint gone.
    for seq in 1..=first {
        std::fs::remove_file(manifest_file(&built, "manifest", seq)).unwrap();
    }
    let (code, text, json) = verify(&built);
    assert_eq!(code, Some(0), "{text}");
    let last = common::files_under(&built.objects.join("manifest")).len() as u64 + first;
    assert_eq!(json["replayed_to"], last);

    // A record missing past every checkpoint is a hole.
    for checkpoint in &checkpoints[1..] {
        std::fs::remove_file(checkpoint).unwrap();
    }
    std::fs::remove_file(manifest_file(&built, "manifest", last - 1)).unwrap();
    let (code, text, _) = verify(&built);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("records {}..{} are missing", last - 1, last - 1)),
        "{text}"
    );
}
