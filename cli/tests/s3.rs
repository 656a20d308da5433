//! The CLI against the S3 test server: a store built there with the objstream API (object WAL
//! in the same bucket), inspected and verified with the settings in `AWS_*` variables, and a
//! damaged object found. Needs the server named by `OBJSTREAM_TEST_S3_*` (`scripts/test`
//! starts it; by hand: `scripts/s3-server.sh start` and `eval "$(scripts/s3-server.sh env)"`).

mod common;

use std::collections::HashMap;
use std::process::{Command, Output};

use object_store::ObjectStoreExt;
use objstream::config::{open_url_with_env, ObjectStoreOptions};
use objstream::keys::object_path;
use objstream::ObjectId;

use common::{build_at, stderr, stdout, Wal};

fn test_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the S3 test server (scripts/s3-server.sh start) and eval \
             its env"
        )
    })
}

/// The test server as the AWS variables an operator would set.
fn server_env() -> HashMap<String, String> {
    HashMap::from([
        (
            "AWS_ENDPOINT_URL".into(),
            test_var("OBJSTREAM_TEST_S3_ENDPOINT"),
        ),
        (
            "AWS_ACCESS_KEY_ID".into(),
            test_var("OBJSTREAM_TEST_S3_ACCESS_KEY_ID"),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            test_var("OBJSTREAM_TEST_S3_SECRET_ACCESS_KEY"),
        ),
        ("AWS_REGION".into(), test_var("OBJSTREAM_TEST_S3_REGION")),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
    ])
}

fn run_with(env: &HashMap<String, String>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_objstream"));
    command.args(args).env("NO_PROXY", "127.0.0.1,localhost");
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command.envs(env).output().unwrap()
}

#[test]
fn inspect_and_verify_a_store_on_s3_without_printing_the_secret() {
    let env = server_env();
    let secret = env["AWS_SECRET_ACCESS_KEY"].clone();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("cli-{}-{nanos}", std::process::id());
    let url = format!("s3://{}/{prefix}", test_var("OBJSTREAM_TEST_S3_BUCKET"));
    let built = build_at(tempfile::tempdir().unwrap(), url.clone(), Wal::Object, &env);

    for args in [
        vec!["streams", url.as_str()],
        vec!["stats", url.as_str()],
        vec!["verify", url.as_str()],
        vec!["wal", "object", url.as_str(), "7"],
    ] {
        let out = run_with(&env, &args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!stdout(&out).contains(&secret) && !stderr(&out).contains(&secret));
    }
    let streams = stdout(&run_with(&env, &["streams", &url]));
    assert!(streams.contains(&format!("{}", built.node)), "{streams}");

    // Damage object 0 in the bucket: one byte of its first block.
    let location = open_url_with_env(&url, &ObjectStoreOptions::default(), &env).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let key = object_path(&location.prefix, ObjectId(0));
        let mut bytes = location
            .store
            .get(&key)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        bytes[60] ^= 0xff;
        location.store.put(&key, bytes.into()).await.unwrap();
    });
    let out = run_with(&env, &["verify", "-q", &url]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("block at 0"), "{}", stdout(&out));
}
