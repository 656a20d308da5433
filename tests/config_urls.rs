//! `objstream::config`: object stores from `s3://`, `file://` and `memory://` URLs, options that
//! fall back to the AWS variables of an injected environment, clear errors for bad URLs, and
//! credentials that never show in Debug output, serialized options or errors.
//!
//! The S3 tests talk to the test server named by `OBJSTREAM_TEST_S3_*` (see `tests/support`).

mod support;

use std::collections::HashMap;

use object_store::{ObjectStoreExt, PutMode};
use objstream::config::{open_url_with_env, ObjectStoreOptions};
use objstream::{ErrorKind, RecordBatch, Settings, Store, WalSettings};

const SECRET: &str = "do-not-print-this-secret";
const TOKEN: &str = "do-not-print-this-token";

fn test_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the S3 test server (scripts/s3-server.sh start) and eval its env")
    })
}

/// The test server's settings as the AWS variables a deployment would set.
fn server_env() -> HashMap<String, String> {
    HashMap::from([
        (
            "AWS_ENDPOINT_URL".to_string(),
            test_var("OBJSTREAM_TEST_S3_ENDPOINT"),
        ),
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            test_var("OBJSTREAM_TEST_S3_ACCESS_KEY_ID"),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            test_var("OBJSTREAM_TEST_S3_SECRET_ACCESS_KEY"),
        ),
        (
            "AWS_DEFAULT_REGION".to_string(),
            test_var("OBJSTREAM_TEST_S3_REGION"),
        ),
        ("AWS_ALLOW_HTTP".to_string(), "true".to_string()),
    ])
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("config-{name}-{}-{nanos}", std::process::id())
}

fn assert_hides_credentials(text: &str) {
    assert!(!text.contains(SECRET), "a secret leaked: {text}");
    assert!(!text.contains(TOKEN), "a session token leaked: {text}");
}

#[tokio::test]
async fn memory_urls_give_a_fresh_in_memory_store_and_their_prefix() {
    let options = ObjectStoreOptions::default();
    let none = HashMap::new();
    let a = open_url_with_env("memory://", &options, &none).unwrap();
    assert_eq!(a.prefix.as_ref(), "");
    let b = open_url_with_env("memory://cluster/streams/", &options, &none).unwrap();
    assert_eq!(b.prefix.as_ref(), "cluster/streams");
    a.store.put(&"k".into(), "v".into()).await.unwrap();
    assert!(
        b.store.head(&"k".into()).await.is_err(),
        "each URL opens its own store"
    );
}

#[tokio::test]
async fn file_urls_create_their_directory_and_keep_objects_there() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("not/yet/there");
    let url = format!("file://{}", root.display());
    let location =
        open_url_with_env(&url, &ObjectStoreOptions::default(), &HashMap::new()).unwrap();
    assert!(root.is_dir());
    assert_eq!(location.prefix.as_ref(), "");
    location
        .store
        .put(&"a/b".into(), "bytes".into())
        .await
        .unwrap();
    assert_eq!(std::fs::read(root.join("a/b")).unwrap(), b"bytes");
}

#[tokio::test]
async fn a_file_url_with_a_host_is_refused() {
    let err = open_url_with_env(
        "file://somehost/data",
        &ObjectStoreOptions::default(),
        &HashMap::new(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

#[tokio::test]
async fn s3_urls_take_everything_from_the_given_environment() {
    let bucket = test_var("OBJSTREAM_TEST_S3_BUCKET");
    let prefix = unique("env");
    let url = format!("s3://{bucket}/{prefix}/streams");
    let location = open_url_with_env(&url, &ObjectStoreOptions::default(), &server_env()).unwrap();
    assert_eq!(location.prefix.as_ref(), format!("{prefix}/streams"));
    let key = object_store::path::Path::from(format!("{prefix}/streams/record"));
    location
        .store
        .put_opts(&key, "first".into(), PutMode::Create.into())
        .await
        .unwrap();
    // Conditional PUT is on: a second create of the key is refused.
    let again = location
        .store
        .put_opts(&key, "second".into(), PutMode::Create.into())
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    let got = location
        .store
        .get(&key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], b"first");
}

#[tokio::test]
async fn options_win_over_the_environment() {
    let bucket = test_var("OBJSTREAM_TEST_S3_BUCKET");
    let mut env = server_env();
    env.insert("AWS_SECRET_ACCESS_KEY".into(), SECRET.into());
    env.insert("AWS_ALLOW_HTTP".into(), "false".into());
    let options = ObjectStoreOptions {
        secret_access_key: Some(test_var("OBJSTREAM_TEST_S3_SECRET_ACCESS_KEY")),
        allow_http: Some(true),
        max_retries: 0,
        ..ObjectStoreOptions::default()
    };
    let url = format!("s3://{bucket}/{}", unique("options"));
    let location = open_url_with_env(&url, &options, &env).unwrap();
    location
        .store
        .put(&format!("{}/k", location.prefix).into(), "v".into())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_wrong_secret_fails_requests_without_printing_it() {
    let bucket = test_var("OBJSTREAM_TEST_S3_BUCKET");
    let mut env = server_env();
    env.insert("AWS_SECRET_ACCESS_KEY".into(), SECRET.into());
    env.insert("AWS_SESSION_TOKEN".into(), TOKEN.into());
    let options = ObjectStoreOptions {
        max_retries: 0,
        ..ObjectStoreOptions::default()
    };
    let location = open_url_with_env(
        &format!("s3://{bucket}/{}", unique("wrong")),
        &options,
        &env,
    )
    .unwrap();
    let err = location
        .store
        .put(&format!("{}/k", location.prefix).into(), "v".into())
        .await
        .unwrap_err();
    assert_hides_credentials(&err.to_string());
    assert_hides_credentials(&format!("{err:?}"));
    assert_hides_credentials(&format!("{location:?}"));
}

#[test]
fn unknown_schemes_missing_buckets_and_non_urls_are_invalid_input() {
    let options = ObjectStoreOptions::default();
    let env = HashMap::new();
    for (url, says) in [
        ("gs://bucket/p", "unknown scheme `gs`"),
        ("s3://", "no bucket"),
        ("s3:///prefix-only", "no bucket"),
        ("just a path", "object store URL"),
    ] {
        let err = open_url_with_env(url, &options, &env).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{url}: {err}");
        assert!(err.to_string().contains(says), "{url}: {err}");
    }
}

#[test]
fn credentials_in_a_url_are_refused_and_never_echoed() {
    let url = format!("s3://AKIDEXAMPLE:{SECRET}@bucket/prefix");
    let err = open_url_with_env(&url, &ObjectStoreOptions::default(), &HashMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("credentials in the URL"), "{err}");
    assert_hides_credentials(&err.to_string());
    assert_hides_credentials(&format!("{err:?}"));
    assert!(!err.to_string().contains("AKIDEXAMPLE"), "{err}");
}

#[test]
fn half_a_key_pair_is_an_error_that_quotes_neither_half() {
    let options = ObjectStoreOptions {
        secret_access_key: Some(SECRET.into()),
        session_token: Some(TOKEN.into()),
        ..ObjectStoreOptions::default()
    };
    let err = open_url_with_env("s3://bucket/p", &options, &HashMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("go together"), "{err}");
    assert_hides_credentials(&err.to_string());
    assert_hides_credentials(&format!("{err:?}"));
}

#[test]
fn a_bad_allow_http_variable_is_invalid_input() {
    let env = HashMap::from([("AWS_ALLOW_HTTP".to_string(), "sometimes".to_string())]);
    let err = open_url_with_env("s3://bucket/p", &ObjectStoreOptions::default(), &env).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("AWS_ALLOW_HTTP"), "{err}");
}

#[test]
fn debug_masks_credentials_and_serializing_leaves_secrets_out() {
    let options = ObjectStoreOptions {
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some(SECRET.into()),
        session_token: Some(TOKEN.into()),
        endpoint: Some("http://127.0.0.1:9000".into()),
        ..ObjectStoreOptions::default()
    };
    let debug = format!("{options:?}");
    assert_hides_credentials(&debug);
    assert!(!debug.contains("AKIDEXAMPLE"), "{debug}");
    assert!(
        debug.contains("***") && debug.contains("127.0.0.1:9000"),
        "{debug}"
    );
    let json = serde_json::to_string(&options).unwrap();
    assert_hides_credentials(&json);
    // Reading options from a file: missing fields take their defaults.
    let read: ObjectStoreOptions =
        serde_json::from_str(r#"{ "region": "eu-west-1", "secret_access_key": "x" }"#).unwrap();
    assert_eq!(read.region.as_deref(), Some("eu-west-1"));
    assert_eq!(read.secret_access_key.as_deref(), Some("x"));
    assert_eq!(read.max_retries, ObjectStoreOptions::default().max_retries);
    assert!(!read.virtual_hosted_style, "path style by default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opens_on_components_from_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let location = open_url_with_env(
        "memory://app/events",
        &ObjectStoreOptions::default(),
        &HashMap::new(),
    )
    .unwrap();
    let objects = location.store.clone();
    let settings = Settings {
        wal: WalSettings::file(dir.path().join("wal")),
        ..Settings::default()
    };
    let store = Store::open(settings, location.into_components())
        .await
        .unwrap();
    let stream = store.create_stream().await.unwrap();
    stream
        .append(RecordBatch::new(1, 0, "event"))
        .await
        .unwrap();
    store.flush().await.unwrap();
    store.shutdown().await.unwrap();
    let keys: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(objects.list(None))
        .await
        .unwrap();
    assert!(
        keys.iter()
            .all(|m| m.location.as_ref().starts_with("app/events/")),
        "every key under the URL's prefix"
    );
    assert!(keys
        .iter()
        .any(|m| m.location.as_ref().contains("/objects/")));
}
