//! The inspection commands against real stores, as an operator runs them.

mod common;

use common::{
    build, object_files, run, run_json, stdout, Wal, BATCHES, ROUNDS, STREAMS, UNFLUSHED,
};

/// Records per stream committed to objects: every flushed batch holds two.
const COMMITTED: u64 = ROUNDS * BATCHES * 2;

#[test]
fn streams_lists_every_stream_with_its_owner_offsets_and_objects() {
    let built = build(Wal::File);
    let (out, json) = run_json(&["streams", &built.url]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let streams = json.as_array().unwrap();
    assert_eq!(streams.len() as u64, STREAMS);
    for s in streams {
        assert_eq!(s["status"], "open");
        assert_eq!(s["owner"], built.node);
        assert_eq!(s["epoch"], 1);
        assert_eq!(s["owner_node_epoch"], 1);
        assert_eq!(s["start"], 0);
        assert_eq!(s["end"], COMMITTED);
        assert!(s["objects"].as_u64().unwrap() >= ROUNDS);
        assert!(s["object_bytes"].as_u64().unwrap() > 0);
    }
    let text = run(&["streams", &built.url]);
    assert!(text.status.success());
    assert!(stdout(&text).contains("NODE_EPOCH"), "{}", stdout(&text));
}

#[test]
fn manifest_shows_the_log_record_by_record_and_nodes_shows_epochs_and_floors() {
    let built = build(Wal::File);
    let (out, json) = run_json(&["manifest", &built.url]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let records = json["records"].as_array().unwrap();
    assert_eq!(records[0]["seq"], 1);
    assert_eq!(records[0]["kind"], "open_node");
    assert_eq!(records[0]["change"]["node"], built.node);
    assert!(records.iter().any(|r| r["kind"] == "commit_objects"));
    assert!(!json["checkpoints"].as_array().unwrap().is_empty());

    let (_, page) = run_json(&["manifest", &built.url, "--from", "2", "--limit", "3"]);
    let seqs: Vec<u64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3, 4]);
    let text = stdout(&run(&["manifest", &built.url, "--limit", "2"]));
    assert!(
        text.contains("open_node") && text.contains("create_stream"),
        "{text}"
    );

    let (out, nodes) = run_json(&["nodes", &built.url]);
    assert!(out.status.success());
    let node = &nodes.as_array().unwrap()[0];
    assert_eq!(node["node"], built.node);
    assert_eq!(node["epoch"], 1);
    assert_eq!(node["live"], true);
    assert_eq!(node["open_streams"], STREAMS);
    assert!(node["wal_floor"].as_u64().unwrap() > 0);
}

#[test]
fn object_shows_footer_index_and_every_block_by_id_or_by_file() {
    let built = build(Wal::File);
    let file = object_files(&built).remove(0);
    let id: u64 = file.file_name().unwrap().to_str().unwrap().parse().unwrap();
    let (out, json) = run_json(&["object", &built.url, &id.to_string()]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(json["id"], id);
    assert_eq!(json["footer"]["version"], 1);
    let blocks = json["blocks"].as_array().unwrap();
    assert!(blocks.len() > 1, "small blocks split the data");
    for b in blocks {
        assert_eq!(b["ok"], true);
        assert!(b["codec"] == "zstd" || b["codec"] == "none");
        assert_eq!(
            b["records"],
            b["end"].as_u64().unwrap() - b["start"].as_u64().unwrap()
        );
        assert_eq!(b["batches"], b["decoded_batches"]);
    }
    let by_file = run(&["object", file.to_str().unwrap()]);
    assert!(by_file.status.success());
    let text = stdout(&by_file);
    assert!(
        text.contains("footer: index at") && text.contains("CODEC"),
        "{text}"
    );
}

#[test]
fn stats_gives_bytes_records_and_the_gets_of_a_full_read_per_stream() {
    let built = build(Wal::File);
    let (out, json) = run_json(&["stats", &built.url]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    for s in json["streams"].as_array().unwrap() {
        assert_eq!(s["records"], COMMITTED);
        let stored = s["stored_bytes"].as_u64().unwrap();
        assert!(stored > 0 && stored <= s["raw_bytes"].as_u64().unwrap() + 48 * 100);
        // One tail GET and at least one block GET per object.
        assert!(s["full_read_gets"].as_u64().unwrap() >= 2 * s["objects"].as_u64().unwrap());
    }
    let kinds = &json["object_kinds"];
    let total: u64 = kinds
        .as_object()
        .unwrap()
        .values()
        .map(|k| k["objects"].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, object_files(&built).len());
}

/// The store records a WAL dump found: (stream, base offset, count).
fn wal_records(json: &serde_json::Value) -> Vec<(u64, u64, u64)> {
    json["parts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["rows"].as_array().unwrap())
        .filter_map(|r| {
            let rec = r.get("record")?;
            Some((
                rec["stream"].as_u64()?,
                rec["base_offset"].as_u64()?,
                rec["count"].as_u64()?,
            ))
        })
        .collect()
}

/// Every stream's unflushed appends are in the dump, each one record at the committed end on.
fn assert_unflushed_appends_are_listed(json: &serde_json::Value) {
    assert_eq!(json["corrupt"], false, "{json}");
    let found = wal_records(json);
    for stream in 0..STREAMS {
        for i in 0..UNFLUSHED {
            assert!(
                found.contains(&(stream, COMMITTED + i, 1)),
                "stream {stream} record {i} missing from {found:?}"
            );
        }
    }
}

#[test]
fn wal_file_dumps_each_record_without_touching_the_directory() {
    let built = build(Wal::File);
    let dir = built.wal_path.to_str().unwrap();
    let before = common::files_under(&built.wal_path)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect::<Vec<_>>();
    let (out, json) = run_json(&["wal", "file", dir]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(json["backend"], "file");
    assert_unflushed_appends_are_listed(&json);
    let after = common::files_under(&built.wal_path)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect::<Vec<_>>();
    assert!(before == after, "the dump changed the WAL directory");
    let text = stdout(&run(&["wal", "file", dir]));
    assert!(
        text.contains("no damage") && text.contains("PAYLOAD"),
        "{text}"
    );
}

#[test]
fn wal_block_dumps_header_slots_and_records_without_writing() {
    let built = build(Wal::Block);
    let path = built.wal_path.to_str().unwrap();
    let before = std::fs::read(&built.wal_path).unwrap();
    let (out, json) = run_json(&["wal", "block", path]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(json["backend"], "block");
    assert!(json["parts"][0]["info"]
        .as_str()
        .unwrap()
        .contains(&format!("node {} epoch 1", built.node)));
    assert_unflushed_appends_are_listed(&json);
    assert!(
        std::fs::read(&built.wal_path).unwrap() == before,
        "the dump wrote to the device"
    );
}

#[test]
fn wal_object_dumps_every_slot_with_gets_only() {
    let built = build(Wal::Object);
    let before = common::files_under(&built.objects);
    let node = built.node.to_string();
    let (out, json) = run_json(&["wal", "object", &built.url, &node]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(json["backend"], "object");
    assert!(json["parts"][0]["info"]
        .as_str()
        .unwrap()
        .contains("data owner 7"));
    assert_unflushed_appends_are_listed(&json);
    assert_eq!(
        common::files_under(&built.objects),
        before,
        "the dump wrote a fence"
    );
}

#[test]
fn a_damaged_wal_frame_before_later_writes_is_reported_with_exit_code_1() {
    let built = build(Wal::File);
    let segment = common::files_under(&built.wal_path)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .unwrap();
    // The body of the first frame: every append was its own write, so later frames prove it
    // had been durable.
    common::flip(&segment, 30);
    let (out, json) = run_json(&["wal", "file", built.wal_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json["corrupt"], true);
    let rows = json["parts"][0]["rows"].as_array().unwrap();
    assert_eq!(rows[0]["crc"], "bad");
    assert!(
        rows[0]["error"].as_str().unwrap().contains("crc"),
        "{}",
        rows[0]
    );
    assert!(rows.len() > 1, "the dump goes on after the damage");
}

#[test]
fn object_marks_a_damaged_block_bad_and_exits_1() {
    let built = build(Wal::File);
    let file = object_files(&built).remove(0);
    common::flip(&file, 60);
    let out = run(&["object", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("BAD: ") && text.contains("1 bad blocks"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains("BAD: ")).count(),
        1,
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.ends_with("  ok")),
        "the other blocks stay ok: {text}"
    );
}

#[test]
fn a_damaged_block_or_object_wal_record_is_reported_with_exit_code_1() {
    let built = build(Wal::Block);
    let (_, json) = run_json(&["wal", "block", built.wal_path.to_str().unwrap()]);
    let first = json["parts"][0]["rows"][0]["location"]
        .as_str()
        .unwrap()
        .to_string();
    let offset: i64 = first.trim_start_matches("device+").parse().unwrap();
    common::flip(&built.wal_path, offset + 30);
    let (out, json) = run_json(&["wal", "block", built.wal_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert_eq!(json["parts"][0]["rows"][0]["crc"], "bad");

    let built = build(Wal::Object);
    let slot = common::files_under(&built.objects.join("wal"))
        .pop()
        .unwrap();
    common::flip(&slot, -3);
    let (out, json) = run_json(&["wal", "object", &built.url, &built.node.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{json}");
    assert_eq!(json["corrupt"], true);
}
