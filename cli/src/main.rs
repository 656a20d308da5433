//! `objstream`: the operator's tool to inspect and verify a store.
//!
//! Every command only reads. It is pointed at a store by URL (`s3://bucket/prefix`,
//! `file:///dir`), opened with [`objstream::config::open_url`]; S3 settings come from the flags
//! and the usual `AWS_*` variables, and credentials are never printed.
//!
//! | command | what it shows | module |
//! |---|---|---|
//! | `streams URL` | every stream: status, epochs, owner, offsets, objects | [`streams`] |
//! | `manifest URL` | the manifest log record by record, and its checkpoints | [`manifest`] |
//! | `nodes URL` | node epochs, fenced epochs, WAL floors | [`manifest`] |
//! | `object URL ID` / `object PATH` | footer, index, every block with its crc status | [`object`] |
//! | `wal file DIR` / `wal block PATH` / `wal object URL NODE` | a WAL record by record | [`wal`] |
//! | `verify URL` | every manifest record, checkpoint, object and block, checked | [`verify`] |
//! | `stats URL` | per stream bytes and GETs for a full read; objects by kind | [`stats`] |
//!
//! Exit codes: 0 success, 1 corruption found or a failure (I/O, a missing object), 2 a usage
//! error (bad arguments, a bad URL, missing credentials). Results go to stdout (text, or JSON
//! with `--json`); errors and progress go to stderr.

mod location;
mod manifest;
mod manifest_log;
mod object;
mod output;
mod stats;
mod streams;
mod verify;
mod wal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use location::StoreArgs;

/// Inspect and verify an objstream store: streams, manifest, objects and WALs. Read-only.
#[derive(Debug, Parser)]
#[command(name = "objstream", version, about, long_about = None)]
struct Cli {
    /// Print JSON instead of text (one document on stdout).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every stream: status, epoch, owner node and its epoch, offsets, objects and bytes.
    Streams {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The manifest log record by record: sequence number, kind, the change.
    Manifest {
        #[command(flatten)]
        store: StoreArgs,
        /// First record to show.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Show at most this many records.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Every node: its epoch, the epoch it was fenced at, its WAL floor.
    Nodes {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// One data object: footer, index entries, and every block with codec, sizes, record
    /// counts and crc status. Either `object URL ID` or `object PATH` (a local copy).
    Object {
        /// A store URL (with ID), or the path of an object file (without).
        target: String,
        /// The object id, when TARGET is a store URL.
        id: Option<u64>,
        #[command(flatten)]
        s3: location::S3Args,
    },
    /// Dump a write-ahead log record by record, without changing it.
    Wal {
        #[command(subcommand)]
        kind: wal::WalCommand,
    },
    /// Check every manifest record and checkpoint, and every byte of every object the manifest
    /// references. Exits 1 when anything is corrupt.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// No progress on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Per stream: objects, stored and uncompressed bytes, GETs a full read takes; objects by
    /// kind.
    Stats {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Why a command failed, and the exit code that says so.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments: exit 2.
    Usage(String),
    /// Something failed or is corrupt: exit 1. The message was not printed yet.
    Failed(String),
    /// Corruption was found and reported on stdout already: exit 1.
    Reported,
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Failed(_) | Failure::Reported => 1,
        }
    }
}

impl From<objstream::Error> for Failure {
    fn from(e: objstream::Error) -> Self {
        Failure::Failed(e.to_string())
    }
}

impl From<objstream_wal::WalError> for Failure {
    fn from(e: objstream_wal::WalError) -> Self {
        Failure::Failed(e.to_string())
    }
}

/// Lets a closed pipe (`objstream wal file DIR | head`) end the process quietly, as it ends
/// other command-line tools, instead of failing a print.
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any other thread exists; setting a signal's
    // disposition to its default has no other effect on the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The result of a command.
pub type CmdResult = Result<(), Failure>;

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("objstream: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Streams { store } => streams::run(&store.open()?, json).await,
            Command::Manifest { store, from, limit } => {
                manifest::history(&store.open()?, from, limit, json).await
            }
            Command::Nodes { store } => manifest::nodes(&store.open()?, json).await,
            Command::Object { target, id, s3 } => object::run(&target, id, &s3, json).await,
            Command::Wal { kind } => wal::run(kind, json).await,
            Command::Verify { store, quiet } => verify::run(&store.open()?, quiet, json).await,
            Command::Stats { store } => stats::run(&store.open()?, json).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            match &failure {
                Failure::Usage(m) => eprintln!("objstream: {m}"),
                Failure::Failed(m) => eprintln!("objstream: error: {m}"),
                Failure::Reported => {}
            }
            ExitCode::from(failure.exit_code())
        }
    }
}
