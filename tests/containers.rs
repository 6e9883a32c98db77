//! The container path's contract, checked without a container engine:
//! docker-compose.test.yml gives the runner every outside service the
//! harness reads (tests/common/services.rs: one list for the native and the
//! container path), healthy before the runner starts, sets no test variable
//! the harness would ignore, lets the runner mount FUSE, and runs the
//! README's test command from a Dockerfile stage that exists.

mod common;

use std::collections::BTreeMap;

use common::services::EXTERNAL;
use serde::Deserialize;

#[derive(Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Service {
    image: Option<String>,
    build: Option<Build>,
    environment: BTreeMap<String, String>,
    healthcheck: Option<Healthcheck>,
    depends_on: BTreeMap<String, DependsOn>,
    devices: Vec<String>,
    cap_add: Vec<String>,
    security_opt: Vec<String>,
    command: Vec<String>,
}

#[derive(Deserialize)]
struct Build {
    context: String,
    target: String,
}

#[derive(Deserialize)]
struct Healthcheck {
    test: Vec<String>,
}

#[derive(Deserialize)]
struct DependsOn {
    condition: String,
}

const RUNNER: &str = "tests";

fn repo_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compose() -> Compose {
    serde_saphyr::from_str(&repo_file("docker-compose.test.yml"))
        .expect("docker-compose.test.yml parses")
}

/// The command in the README's "Run the whole test suite" block.
fn readme_test_command() -> String {
    let readme = repo_file("README.md");
    let at = readme
        .find("Run the whole test suite")
        .expect("README names the test command");
    let block = &readme[at..];
    let start = block.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + block[start..].find("```").expect("the block ends");
    let cmd = block[start..end].trim();
    assert!(!cmd.contains('\n'), "one command, got {cmd:?}");
    cmd.to_string()
}

#[test]
fn every_service_the_harness_reads_is_there_and_healthy_first() {
    let c = compose();
    let runner = &c.services[RUNNER];
    assert!(!EXTERNAL.is_empty());
    for ext in EXTERNAL {
        let svc = c
            .services
            .get(ext.service)
            .unwrap_or_else(|| panic!("no service {:?} for {}", ext.service, ext.var));
        assert!(svc.image.is_some(), "{} has an image", ext.service);
        let hc = svc.healthcheck.as_ref().unwrap_or_else(|| {
            panic!("{} has no healthcheck", ext.service);
        });
        assert!(hc.test.len() >= 2, "{}: a healthcheck command", ext.service);
        assert_eq!(
            runner
                .depends_on
                .get(ext.service)
                .map(|d| d.condition.as_str()),
            Some("service_healthy"),
            "the runner waits for {} to be healthy",
            ext.service
        );
        let value = runner
            .environment
            .get(ext.var)
            .unwrap_or_else(|| panic!("the runner does not set {}", ext.var));
        assert!(
            value.contains(&format!("@{}:", ext.service))
                || value.contains(&format!("//{}:", ext.service)),
            "{} = {value:?} points at the {} service",
            ext.var,
            ext.service
        );
    }
    // Whatever the runner waits for is healthchecked too.
    for (name, dep) in &runner.depends_on {
        assert_eq!(dep.condition, "service_healthy", "{name}");
        assert!(c.services[name].healthcheck.is_some(), "{name}");
    }
}

#[test]
fn the_harness_reads_the_variables_services_rs_lists() {
    // tests/common/s3.rs is self-contained (the crate's unit tests include
    // it), so it names its variable itself.
    assert_eq!(common::s3::ENDPOINT_VAR, common::services::S3_ENDPOINT);
}

#[test]
fn the_runner_sets_no_variable_the_harness_ignores() {
    let c = compose();
    for var in c.services[RUNNER].environment.keys() {
        if var.starts_with("ARTFS_") {
            assert!(
                EXTERNAL.iter().any(|e| e.var == var),
                "{var} is set for the runner but the harness does not read it \
                 (tests/common/services.rs)"
            );
        }
    }
}

#[test]
fn the_runner_can_mount_fuse() {
    let c = compose();
    let r = &c.services[RUNNER];
    assert!(
        r.devices
            .iter()
            .any(|d| d.split(':').next() == Some("/dev/fuse")),
        "devices: {:?}",
        r.devices
    );
    assert!(
        r.cap_add.iter().any(|c| c == "SYS_ADMIN"),
        "{:?}",
        r.cap_add
    );
    assert!(
        r.security_opt.iter().any(|s| s == "apparmor:unconfined"),
        "{:?}",
        r.security_opt
    );
}

#[test]
fn the_runner_runs_the_readme_test_command_from_a_real_stage() {
    let c = compose();
    let r = &c.services[RUNNER];
    assert_eq!(r.command.join(" "), readme_test_command());
    let build = r.build.as_ref().expect("the runner is built here");
    assert_eq!(build.context, ".");
    let dockerfile = repo_file("Dockerfile");
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {}", build.target))),
        "Dockerfile has no stage {:?}",
        build.target
    );
    // The stage's own default command is the same one.
    let cmd = format!(
        "CMD {}",
        serde_json::to_string(&readme_test_command().split(' ').collect::<Vec<_>>()).unwrap()
    )
    .replace(",", ", ");
    assert!(dockerfile.contains(&cmd), "Dockerfile lacks {cmd}");
    // And CI runs it too.
    assert_eq!(
        repo_file(".ci/run").lines().last().map(str::trim),
        Some(readme_test_command().as_str())
    );
}
