//! Reaching the store: the URL argument, the S3 flags, and the credentials check.
//!
//! Settings come from the flags when given, else from the `AWS_*` variables that
//! [`objstream::config::open_url`] reads (`AWS_ENDPOINT_URL_S3`, `AWS_REGION`, `AWS_ALLOW_HTTP`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`). Secrets are taken only
//! from the environment, never from flags (flags show in `ps`), and never printed.
//!
//! Before any request to S3, the tool checks that credentials are there: an access key id
//! needs its secret, and without either it refuses unless `--instance-credentials` says to use
//! the machine's role, so a forgotten variable is a clear error at once instead of a timeout
//! against the instance metadata service.

use std::sync::Arc;

use object_store::path::Path;
use object_store::ObjectStore;
use objstream::config::{open_url, ObjectStoreOptions};
use objstream::ErrorKind;

use crate::Failure;

/// A store URL and how to reach it.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The store: `s3://bucket/prefix` or `file:///dir`.
    pub url: String,
    #[command(flatten)]
    pub s3: S3Args,
}

/// S3 settings; every one falls back to its `AWS_*` variable.
#[derive(Debug, Clone, clap::Args)]
pub struct S3Args {
    /// S3 endpoint, e.g. http://127.0.0.1:9000 [default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL]
    #[arg(long)]
    pub endpoint: Option<String>,
    /// S3 region [default: AWS_REGION, AWS_DEFAULT_REGION, us-east-1]
    #[arg(long)]
    pub region: Option<String>,
    /// Allow a plain http:// endpoint [default: AWS_ALLOW_HTTP]
    #[arg(long)]
    pub allow_http: bool,
    /// Address the bucket as bucket.host instead of host/bucket.
    #[arg(long)]
    pub virtual_hosted_style: bool,
    /// The bucket is an S3 Express One Zone directory bucket.
    #[arg(long)]
    pub s3_express: bool,
    /// Without AWS_ACCESS_KEY_ID, use the machine's instance role instead of refusing.
    #[arg(long)]
    pub instance_credentials: bool,
}

/// An opened store: where its keys live.
#[derive(Clone)]
pub struct Store {
    /// The object store.
    pub objects: Arc<dyn ObjectStore>,
    /// The key prefix of the store.
    pub prefix: Path,
}

impl StoreArgs {
    /// Opens the store the URL names.
    pub fn open(&self) -> Result<Store, Failure> {
        self.s3.open(&self.url)
    }
}

impl S3Args {
    /// Opens the store `url` names with these settings.
    pub fn open(&self, url: &str) -> Result<Store, Failure> {
        let options = ObjectStoreOptions {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            virtual_hosted_style: self.virtual_hosted_style,
            allow_http: self.allow_http.then_some(true),
            s3_express: self.s3_express,
            ..ObjectStoreOptions::default()
        };
        // The URL is checked first (open_url sends no request), then the credentials.
        let opened = open_url(url, &options);
        if opened.is_ok() && url.starts_with("s3://") {
            self.check_credentials()?;
        }
        match opened {
            Ok(location) => Ok(Store {
                objects: location.store,
                prefix: location.prefix,
            }),
            Err(e) if e.kind() == ErrorKind::InvalidInput => Err(Failure::Usage(e.to_string())),
            Err(e) => Err(Failure::Failed(e.to_string())),
        }
    }

    /// An access key id without its secret is refused by `open_url` already; here: no key
    /// at all, unless the instance role is wanted.
    fn check_credentials(&self) -> Result<(), Failure> {
        let key_set = std::env::var_os("AWS_ACCESS_KEY_ID").is_some_and(|v| !v.is_empty());
        if key_set || self.instance_credentials {
            return Ok(());
        }
        Err(Failure::Usage(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass \
             --instance-credentials to use the machine's instance role"
                .into(),
        ))
    }
}

/// The key `{prefix}/{part}/...`.
pub fn key(prefix: &Path, parts: &[&str]) -> Path {
    parts
        .iter()
        .fold(prefix.clone(), |key, part| key.join(*part))
}
