//! The compactor as a process of its own, beside brokers that run stores on the same prefix.
//!
//! It needs nothing but the object store: it reads the manifest, takes the next compactor
//! epoch (fencing any compactor that ran before), and runs passes. Killing it at any moment is
//! safe: a plan not committed leaves orphans, which the next compactor deletes after the grace.
//!
//! ```text
//! cargo run --release -p objstream-compaction --example compactor_standalone -- \
//!     --url file:///var/lib/objstream [--node 1000] [--settings compactor.json] [--passes 0]
//! ```
//!
//! `--url` is `file:///dir` or `s3://bucket/prefix` (S3 options come from the `AWS_*`
//! variables); `--settings` a JSON `CompactorSettings` (missing fields take their defaults);
//! `--passes 0` runs until the process is stopped, `--passes N` runs N passes and exits.

use std::time::Duration;

use objstream::config::{open_url, ObjectStoreOptions};
use objstream::NodeId;
use objstream_compaction::{Compactor, CompactorComponents, CompactorSettings};

struct Args {
    url: String,
    node: u64,
    settings: Option<String>,
    passes: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: String::new(),
        node: 1_000,
        settings: None,
        passes: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => args.url = value,
            "--node" => args.node = value.parse().map_err(|e| format!("--node: {e}"))?,
            "--settings" => args.settings = Some(value),
            "--passes" => args.passes = value.parse().map_err(|e| format!("--passes: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.url.is_empty() {
        return Err("--url is required (file:///dir or s3://bucket/prefix)".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| format!("{e}\nsee the example's docs for usage"))?;
    let settings: CompactorSettings = match &args.settings {
        Some(path) => serde_json::from_slice(&std::fs::read(path)?)?,
        None => CompactorSettings::default(),
    };
    let location = open_url(&args.url, &ObjectStoreOptions::default())?;
    let components = CompactorComponents::new(location.store, location.prefix, NodeId(args.node));
    let compactor = Compactor::open(settings, components).await?;
    println!("compactor epoch {} on {}", compactor.epoch(), args.url);
    let interval = Duration::from_millis(compactor.settings().pass_interval_ms);
    let mut pass = 0u64;
    loop {
        let report = compactor.run_pass().await?;
        pass += 1;
        println!(
            "pass {pass}: committed {:?}, removed {} added {} objects, read {} wrote {} bytes, \
             trimmed {} streams, deleted {} of {} unreferenced objects",
            report.committed,
            report.objects_removed,
            report.objects_added,
            report.bytes_read,
            report.bytes_written,
            report.trimmed_streams,
            report.gc.deleted,
            report.gc.unreferenced
        );
        if args.passes != 0 && pass >= args.passes {
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}
