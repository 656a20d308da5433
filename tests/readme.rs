//! The README's quick start is what CI runs: its two commands exist as written, `.ci/run` runs
//! exactly the test command, and the test command runs the README's main job. (The main job
//! itself runs at the end of `scripts/test`; the README's Rust code compiles as a doctest.)

use std::path::Path;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The commands of the README's first `sh` block, comments stripped.
fn quick_start_commands() -> Vec<String> {
    let readme = read("README.md");
    let start = readme
        .find("## Quick start")
        .expect("the README has a quick start");
    let block = readme[start..]
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the quick start has an sh block");
    block
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim().to_string())
        .filter(|line| !line.is_empty())
        .collect()
}

#[test]
fn the_quick_start_is_two_commands_the_main_job_and_the_tests() {
    assert_eq!(
        quick_start_commands(),
        [
            "cargo run --release --example feedback_loop",
            "scripts/test"
        ]
    );
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/feedback_loop.rs")
        .exists());
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let ci = read(".ci/run");
    let commands: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        commands.contains(&"exec scripts/test"),
        ".ci/run must exec scripts/test: {commands:?}"
    );
}

#[test]
fn the_test_command_runs_the_readme_main_job() {
    let script = read("scripts/test");
    assert!(
        script.contains("cargo run --release --example feedback_loop"),
        "scripts/test must run the README's main job"
    );
}
