//! Object stores from URLs: `s3://bucket/prefix`, `file:///path`, `memory://`.
//!
//! [`open_url`] turns a URL and [`ObjectStoreOptions`] into a [`StoreLocation`]: the object
//! store and the key prefix every key of the store goes under.
//!
//! | URL | store | prefix |
//! |---|---|---|
//! | `s3://bucket/a/b` | `AmazonS3` on `bucket` (conditional PUT on: `If-None-Match`) | `a/b` |
//! | `file:///var/lib/objects` | `LocalFileSystem` rooted there (the directory is created) | empty |
//! | `memory://` or `memory://a/b` | `InMemory`, new on each call | empty or `a/b` |
//!
//! For S3, each setting comes from the options if set there, else from the usual AWS variable:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` then
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3` then `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`.
//! [`open_url`] reads them from the process; [`open_url_with_env`] from a map the caller gives
//! (tests, or programs that keep their configuration elsewhere).
//!
//! Credentials never leave this module in readable form: `Debug` of the options prints `***`,
//! serializing the options leaves the secret and the session token out, errors never quote
//! them, and a URL with credentials in it (`s3://key:secret@bucket`) is refused without
//! being echoed.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use object_store::ObjectStoreExt;
//! use objstream::config::{open_url, ObjectStoreOptions};
//!
//! let location = open_url("memory://cluster-a/streams", &ObjectStoreOptions::default())?;
//! assert_eq!(location.prefix.as_ref(), "cluster-a/streams");
//! location.store.put(&"k".into(), "v".into()).await.unwrap();
//! let components = location.into_components(); // ready for Store::open
//! # let _ = components;
//! # Ok::<_, objstream::Error>(()) }).unwrap();
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Components;

/// How to reach an S3 (or S3-compatible) store. Every field is optional; see each for where
/// its value comes from when unset. Ignored for `file://` and `memory://`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObjectStoreOptions {
    /// The endpoint, e.g. `http://127.0.0.1:9000` for a local server. Default:
    /// `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`, else AWS's endpoint for the region.
    pub endpoint: Option<String>,
    /// The region. Default: `AWS_REGION`, then `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Address the bucket as `bucket.host` (virtual-hosted style) instead of `host/bucket`
    /// (path style). Default false: path style, which every S3-compatible server accepts.
    pub virtual_hosted_style: bool,
    /// Allow plain `http://` endpoints. Default: `AWS_ALLOW_HTTP` (`true` or `false`), else false.
    pub allow_http: Option<bool>,
    /// The access key id. Default: `AWS_ACCESS_KEY_ID`; without one, object_store's instance
    /// credentials (EC2 metadata) are used.
    pub access_key_id: Option<String>,
    /// The secret access key; needed with an access key id. Default: `AWS_SECRET_ACCESS_KEY`.
    /// Never serialized.
    #[serde(skip_serializing)]
    pub secret_access_key: Option<String>,
    /// A session token for temporary credentials. Default: `AWS_SESSION_TOKEN`. Never serialized.
    #[serde(skip_serializing)]
    pub session_token: Option<String>,
    /// The bucket is an S3 Express One Zone directory bucket. Default false.
    pub s3_express: bool,
    /// How many times the client retries a failed request itself before the error reaches
    /// objstream, which retries transient errors again with capped backoff. Default 3.
    pub max_retries: usize,
    /// How long the client keeps retrying one request, in seconds. Default 30.
    pub retry_timeout_secs: u64,
    /// Timeout of one HTTP request, in seconds. Default 30. Large objects on slow links may need
    /// more.
    pub request_timeout_secs: u64,
}

impl Default for ObjectStoreOptions {
    fn default() -> Self {
        ObjectStoreOptions {
            endpoint: None,
            region: None,
            virtual_hosted_style: false,
            allow_http: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            s3_express: false,
            max_retries: 3,
            retry_timeout_secs: 30,
            request_timeout_secs: 30,
        }
    }
}

/// Prints `***` for a set credential, `None` for an unset one.
fn masked(value: &Option<String>) -> Option<&'static str> {
    value.as_ref().map(|_| "***")
}

impl fmt::Debug for ObjectStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &masked(&self.access_key_id))
            .field("secret_access_key", &masked(&self.secret_access_key))
            .field("session_token", &masked(&self.session_token))
            .field("s3_express", &self.s3_express)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout_secs", &self.retry_timeout_secs)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .finish()
    }
}

/// An object store and the prefix to keep every key under.
#[derive(Clone)]
pub struct StoreLocation {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// The key prefix (from the URL's path; empty for `file://`).
    pub prefix: Path,
}

impl StoreLocation {
    /// The store's [`Components`] with this object store and prefix.
    pub fn into_components(self) -> Components {
        Components::new(self.store, self.prefix)
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLocation")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix.as_ref())
            .finish()
    }
}

/// Opens the store `url` names, taking unset options from the process's AWS variables.
pub fn open_url(url: &str, options: &ObjectStoreOptions) -> Result<StoreLocation> {
    let env: HashMap<String, String> = std::env::vars().collect();
    open_url_with_env(url, options, &env)
}

/// Opens the store `url` names, taking unset options from `env` instead of the process.
pub fn open_url_with_env(
    url: &str,
    options: &ObjectStoreOptions,
    env: &HashMap<String, String>,
) -> Result<StoreLocation> {
    let shown = redact_url(url);
    let parsed = url::Url::parse(url)
        .map_err(|e| Error::invalid(format!("object store URL {shown}: {e}")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::invalid(format!(
            "object store URL {shown}: credentials in the URL are not accepted; \
             set them in the options or the AWS_* variables"
        )));
    }
    let location = match parsed.scheme() {
        "s3" => open_s3(&parsed, &shown, options, env)?,
        "file" => open_file(&parsed, &shown)?,
        "memory" => StoreLocation {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: url_prefix(parsed.host_str().unwrap_or(""), parsed.path(), &shown)?,
        },
        other => {
            return Err(Error::invalid(format!(
            "object store URL {shown}: unknown scheme `{other}`; use s3://, file:// or memory://"
        )))
        }
    };
    tracing::info!(url = %shown, store = %location.store, prefix = %location.prefix, "object store opened");
    Ok(location)
}

/// `head/path` as a key prefix, percent-decoded, without empty segments.
fn url_prefix(head: &str, path: &str, shown: &str) -> Result<Path> {
    let joined = format!("{head}/{}", path.trim_start_matches('/'));
    let trimmed = joined.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Path::default());
    }
    Path::from_url_path(trimmed)
        .map_err(|e| Error::invalid(format!("object store URL {shown}: bad key prefix: {e}")))
}

fn open_file(url: &url::Url, shown: &str) -> Result<StoreLocation> {
    if url
        .host_str()
        .is_some_and(|h| !h.is_empty() && h != "localhost")
    {
        return Err(Error::invalid(format!(
            "object store URL {shown}: a file URL names a local directory (file:///path), not a host"
        )));
    }
    let dir = url.to_file_path().map_err(|()| {
        Error::invalid(format!(
            "object store URL {shown}: not an absolute directory path"
        ))
    })?;
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::invalid(format!(
            "object store URL {shown}: cannot create {}: {e}",
            dir.display()
        ))
    })?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| {
        Error::invalid(format!(
            "object store URL {shown}: cannot open {}: {e}",
            dir.display()
        ))
    })?;
    Ok(StoreLocation {
        store: Arc::new(store),
        prefix: Path::default(),
    })
}

fn open_s3(
    url: &url::Url,
    shown: &str,
    options: &ObjectStoreOptions,
    env: &HashMap<String, String>,
) -> Result<StoreLocation> {
    let bucket = url.host_str().unwrap_or("");
    if bucket.is_empty() {
        return Err(Error::invalid(format!(
            "object store URL {shown}: no bucket; write s3://bucket/prefix"
        )));
    }
    let prefix = url_prefix("", url.path(), shown)?;
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| env.get(*n).filter(|v| !v.is_empty()).cloned())
    };
    let pick = |set: &Option<String>, names: &[&str]| set.clone().or_else(|| var(names));
    let access_key_id = pick(&options.access_key_id, &["AWS_ACCESS_KEY_ID"]);
    let secret = pick(&options.secret_access_key, &["AWS_SECRET_ACCESS_KEY"]);
    let token = pick(&options.session_token, &["AWS_SESSION_TOKEN"]);
    let secrets: Vec<String> = [&access_key_id, &secret, &token]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let fail = |what: String| {
        Error::invalid(redact(
            &format!("object store URL {shown}: {what}"),
            &secrets,
        ))
    };
    let region = pick(&options.region, &["AWS_REGION", "AWS_DEFAULT_REGION"])
        .unwrap_or_else(|| "us-east-1".to_string());
    let endpoint = pick(
        &options.endpoint,
        &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
    );
    let allow_http = match (options.allow_http, var(&["AWS_ALLOW_HTTP"])) {
        (Some(set), _) => set,
        (None, None) => false,
        (None, Some(v)) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(fail(format!("AWS_ALLOW_HTTP is `{v}`, not true or false"))),
        },
    };
    if access_key_id.is_some() != secret.is_some() {
        return Err(fail(
            "an access key id and a secret access key go together; only one is set".to_string(),
        ));
    }
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_virtual_hosted_style_request(options.virtual_hosted_style)
        .with_s3_express(options.s3_express)
        // The manifest's commits are conditional creates (If-None-Match: *).
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(allow_http)
                .with_timeout(Duration::from_secs(options.request_timeout_secs.max(1))),
        )
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: options.max_retries,
            retry_timeout: Duration::from_secs(options.retry_timeout_secs),
        });
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let (Some(id), Some(secret)) = (access_key_id.clone(), secret) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
    }
    if let Some(token) = token {
        builder = builder.with_token(token);
    }
    let store = builder
        .build()
        .map_err(|e| fail(format!("cannot build the S3 client: {e}")))?;
    Ok(StoreLocation {
        store: Arc::new(store),
        prefix,
    })
}

/// `text` with every occurrence of each secret replaced by `***`.
fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
}

/// The URL as it may be shown: user name and password replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_with_credentials_is_shown_without_them() {
        assert_eq!(
            redact_url("s3://AKIA:hunter2@bucket/p"),
            "s3://***@bucket/p"
        );
        assert_eq!(redact_url("s3://bucket/p@x"), "s3://bucket/p@x");
        assert_eq!(redact_url("no scheme"), "no scheme");
    }

    #[test]
    fn redaction_replaces_every_secret() {
        let secrets = vec!["s3cr3t".to_string(), String::new()];
        assert_eq!(redact("a s3cr3t b s3cr3t", &secrets), "a *** b ***");
    }

    #[test]
    fn prefixes_drop_empty_segments_and_decode_escapes() {
        assert_eq!(url_prefix("", "/", "u").unwrap().as_ref(), "");
        assert_eq!(url_prefix("a", "/b/c/", "u").unwrap().as_ref(), "a/b/c");
        assert_eq!(url_prefix("", "/a%20b", "u").unwrap().as_ref(), "a b");
    }
}
