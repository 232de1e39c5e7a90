//! The Kubernetes, Nomad and Marathon definitions in `deploy/`, checked offline by
//! `deploy/check` against the Kubernetes schemas, each other, the Swarm stack and this
//! binary's flags; and copies broken on purpose, each failing with the problem named, so
//! that every check is seen to catch what it is for.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::TempDir;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// `deploy/check` on `root` (a deploy/ directory): whether it passed, and what it said.
fn check(root: &Path) -> (bool, String) {
    let out = Command::new(deploy_dir().join("check"))
        .args(["--binary", env!("CARGO_BIN_EXE_sawmill"), "--root"])
        .arg(root)
        .output()
        .expect("run deploy/check (it needs python3)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // CI installs kubernetes-validate, python-hcl2 and PyYAML (.ci/run): one missing is a
    // failure naming the package, never a skipped check.
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "deploy/check could not check (exit {:?}):\n{text}",
        out.status.code()
    );
    (out.status.success(), text)
}

/// The definitions deploy/check reads, copied under a fresh directory (not the image's
/// staging directories that deploy/build-image may have left beside them).
fn copy_of_deploy(dir: &TempDir) -> PathBuf {
    let root = dir.path().join("deploy");
    for sub in ["kubernetes", "nomad", "marathon", "swarm"] {
        copy_dir(&deploy_dir().join(sub), &root.join(sub));
    }
    root
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of deploy/ with the first `from` in `file` replaced by `to` must fail the check,
/// its report naming the file and saying each of `expected`.
fn broken(file: &str, from: &str, to: &str, expected: &[&str]) {
    let dir = TempDir::new("deploy-check");
    let root = copy_of_deploy(&dir);
    let path = root.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(from),
        "deploy/{file} no longer contains {from:?}: make this test break it another way"
    );
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    let (passed, report) = check(&root);
    assert!(
        !passed,
        "deploy/check passed deploy/{file} with {from:?} changed to {to:?}:\n{report}"
    );
    for said in expected {
        assert!(
            report.contains(said),
            "expected deploy/check to say {said:?} of deploy/{file} ({from:?} changed to {to:?}); it said:\n{report}"
        );
    }
}

#[test]
fn deploy_definitions_pass_every_check() {
    let (passed, report) = check(&deploy_dir());
    assert!(passed, "deploy/check found problems:\n{report}");
    assert!(report.contains("no problems"), "{report}");
}

#[test]
fn a_renamed_indexer_service_leaves_the_shippers_name_dangling() {
    broken(
        "kubernetes/base/indexer-g1.yaml",
        "kind: Service\nmetadata:\n  name: indexer-g1",
        "kind: Service\nmetadata:\n  name: indexer-gone",
        &[
            "deploy/kubernetes/base/shipper.yaml: DaemonSet/shipper container `shipper` (`sawmill shipper`): `--indexer dns+http://indexer-g1:7280`: no Service `indexer-g1` in namespace `sawmill`",
            "`--indexer` reaches groups {`g0`}, the indexers here are groups {`g0`, `g1`}",
        ],
    );
}

#[test]
fn a_service_port_other_than_the_urls_is_reported() {
    broken(
        "kubernetes/base/indexer-g0.yaml",
        "      port: 7280",
        "      port: 7290",
        &[
            "deploy/kubernetes/base/query.yaml",
            "Service `indexer-g0` has no port 7280 (it has [7290])",
        ],
    );
}

#[test]
fn a_probe_on_another_port_than_the_listener_is_reported() {
    broken(
        "kubernetes/base/indexer-g0.yaml",
        "          readinessProbe:\n            httpGet:\n              path: /healthz\n              port: http",
        "          readinessProbe:\n            httpGet:\n              path: /healthz\n              port: 7281",
        &["deploy/kubernetes/base/indexer-g0.yaml: StatefulSet/indexer-g0 container `indexer` (`sawmill indexer`): readinessProbe asks port 7281, but the container listens on 7280"],
    );
}

#[test]
fn a_field_kubernetes_does_not_know_fails_strict_validation() {
    broken(
        "kubernetes/base/query.yaml",
        "  replicas: 2\n",
        "  replicas: 2\n  replicaz: 2\n",
        &[
            "deploy/kubernetes/base/query.yaml: kubernetes-validate --strict",
            "'replicaz' was unexpected",
        ],
    );
}

#[test]
fn a_peer_in_another_group_is_reported() {
    broken(
        "kubernetes/base/indexer-g0.yaml",
        "--peer=dns+$(URL_SCHEME)://indexer-g0:7280",
        "--peer=dns+$(URL_SCHEME)://indexer-g1:7280",
        &["`--peer dns+http://indexer-g1:7280` reaches group `g1`, not this indexer's `g0`"],
    );
}

#[test]
fn a_manifest_left_out_of_the_kustomization_is_reported() {
    // Rendering the kustomizations takes `kubectl` (offline: `kubectl kustomize`); the
    // other checks do not.
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `kubectl` to render the kustomizations with");
        return;
    }
    broken(
        "kubernetes/base/kustomization.yaml",
        "  - ui.yaml\n",
        "",
        &["deploy/kubernetes/base/kustomization.yaml: does not list the file with Deployment `ui`"],
    );
}

#[test]
fn a_shipper_outside_a_system_job_is_reported() {
    broken(
        "nomad/shipper.nomad.hcl",
        "type        = \"system\"",
        "type        = \"service\"",
        &[
            "deploy/nomad/shipper.nomad.hcl: job `sawmill-shipper` group `shipper` task `shipper`: runs the shipper in a `service` job",
            "no system job runs `sawmill shipper`",
        ],
    );
}

#[test]
fn a_nomad_file_that_does_not_parse_is_reported() {
    broken(
        "nomad/sawmill.nomad.hcl",
        "count = 2",
        "count = = 2",
        &["deploy/nomad/sawmill.nomad.hcl: does not parse as HCL"],
    );
}

#[test]
fn a_marathon_shipper_without_unique_hostnames_is_reported() {
    broken(
        "marathon/shipper.json",
        "\"constraints\": [[\"hostname\", \"UNIQUE\"]],",
        "",
        &["deploy/marathon/shipper.json: app `/shipper` (`sawmill shipper`): no [\"hostname\", \"UNIQUE\"] constraint"],
    );
}

#[test]
fn a_marathon_app_without_what_marathon_requires_is_reported() {
    broken(
        "marathon/query.json",
        "  \"mem\": 512,\n",
        "",
        &["deploy/marathon/query.json: lacks what Marathon requires: mem"],
    );
}

#[test]
fn a_marathon_app_whose_flags_differ_from_the_swarm_stack_is_reported() {
    broken(
        "marathon/shipper.json",
        "    \"--docker\",\n",
        "",
        &["deploy/marathon/shipper.json: app `/shipper` (`sawmill shipper`): flags differ from the Swarm stack's `shipper`: without `--docker`"],
    );
}

#[test]
fn a_marathon_app_id_that_moves_its_srv_name_is_reported() {
    // Marathon names tasks after the app id, path reversed: `/sawmill/indexer-g0` gives
    // `_indexer-g0-sawmill._tcp.marathon.mesos`, which no --indexer names.
    broken(
        "marathon/indexer-g0.json",
        "\"/indexer-g0\"",
        "\"/sawmill/indexer-g0\"",
        &[
            "deploy/marathon/shipper.json: app `/shipper` (`sawmill shipper`): `--indexer dnssrv+http://_indexer-g0._tcp.marathon.mesos`: no app here has tasks named `indexer-g0`",
            "`/sawmill/indexer-g0` -> `indexer-g0-sawmill`",
        ],
    );
}

#[test]
fn a_flag_the_binary_does_not_have_is_reported() {
    broken(
        "nomad/sawmill.nomad.hcl",
        "\"--listen=0.0.0.0:7281\",",
        "\"--listen=0.0.0.0:7281\", \"--no-such-flag\",",
        &["deploy/nomad/sawmill.nomad.hcl: job `sawmill` group `query` task `query` (`sawmill query`): `--no-such-flag` is not a flag of `sawmill query`"],
    );
}

#[test]
fn a_variable_the_binary_does_not_read_is_reported() {
    broken(
        "marathon/indexer-g1.json",
        "\"SAWMILL_DATA\"",
        "\"SAWMILL_DATTA\"",
        &["deploy/marathon/indexer-g1.json: app `/indexer-g1` (`sawmill indexer`): `SAWMILL_DATTA` is not a variable `sawmill indexer` reads"],
    );
}
