//! Bad input gets a clear message and the right exit code, never a panic.

mod common;

use common::{run, stderr};

fn assert_clean_failure(out: &std::process::Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn usage_errors_exit_with_code_2() {
    assert_clean_failure(&run(&[]), 2, "Usage");
    assert_clean_failure(&run(&["streams"]), 2, "<URL>");
    assert_clean_failure(&run(&["streams", "file:///tmp", "--bogus"]), 2, "--bogus");
    assert_clean_failure(&run(&["wal", "sideways", "x"]), 2, "sideways");
}

#[test]
fn a_bad_url_is_a_usage_error_that_names_the_problem() {
    assert_clean_failure(&run(&["streams", "ftp://host/x"]), 2, "unknown scheme");
    assert_clean_failure(&run(&["streams", "not a url"]), 2, "object store URL");
    let with_secret = run(&["streams", "s3://AKID:topsecret@bucket/p"]);
    assert_clean_failure(&with_secret, 2, "credentials in the URL");
    assert!(!stderr(&with_secret).contains("topsecret"));
}

#[test]
fn s3_without_credentials_is_refused_before_any_request() {
    assert_clean_failure(
        &run(&["streams", "s3://bucket/prefix"]),
        2,
        "no S3 credentials",
    );
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_objstream"));
    let out = command
        .args(["verify", "s3://bucket/prefix"])
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert_clean_failure(&out, 2, "secret access key");
}

#[test]
fn missing_files_and_stores_fail_with_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let missing = missing.to_str().unwrap();
    assert_clean_failure(&run(&["object", missing]), 1, "reading");
    assert_clean_failure(&run(&["wal", "file", missing]), 1, "reading the directory");
    assert_clean_failure(&run(&["wal", "block", missing]), 1, "opening");
    let empty = dir.path().to_str().unwrap();
    assert_clean_failure(&run(&["wal", "file", empty]), 1, "no file WAL segments");
    let url = format!("file://{empty}");
    for command in ["verify", "streams", "manifest", "nodes", "stats"] {
        assert_clean_failure(&run(&[command, &url]), 1, "no manifest");
    }
    assert_clean_failure(&run(&["object", &url, "42"]), 1, "object 42 not found");
}

#[test]
fn pointing_object_at_something_else_says_it_is_not_an_object() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(
        &file,
        "these are not the bytes you are looking for, not at all",
    )
    .unwrap();
    let out = run(&["object", file.to_str().unwrap()]);
    assert_clean_failure(&out, 1, "not a readable objstream object");
    assert_clean_failure(&run(&["object", "file:///tmp"]), 2, "give the object id");
}

#[test]
fn a_block_wal_dump_of_a_file_that_is_not_one_reports_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("junk");
    std::fs::write(&file, vec![0x5a; 16 << 10]).unwrap();
    let out = run(&["wal", "block", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(common::stdout(&out).contains("no valid header slot"));
}

#[test]
fn an_object_wal_dump_of_a_node_without_slots_says_so_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let out = run(&["wal", "object", &url, "12"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no slots under wal/00000000000000000012"),
        "{}",
        stderr(&out)
    );
}
