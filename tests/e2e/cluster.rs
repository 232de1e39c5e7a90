//! Indexers as members of a cluster (issue 11): each belongs to a replica group and has a
//! replica id that lives in its data directory.

use crate::util::*;

/// What `/healthz` says of an indexer: (replica, group).
fn identity(ix: &Indexer) -> (String, String) {
    let (status, v) = get(&ix.api("/healthz"));
    assert_eq!(status, 200, "{v}");
    let health: sawmill_record::api::Health = serde_json::from_value(v.clone()).unwrap();
    (health.replica, health.group)
}

#[test]
fn a_replica_keeps_its_id_with_its_data_and_a_new_directory_is_a_new_replica() {
    let dir = TempDir::new("identity");
    let data = dir.path().join("a");
    let ix = Indexer::start(&data, &["--group", "g1"]);
    let (first, group) = identity(&ix);
    assert_eq!(group, "g1");
    assert_eq!(first.len(), 32, "{first}");
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    ix.terminate();

    // The same data directory after a restart is the same replica, whatever its group flag.
    let ix = Indexer::start(&data, &[]);
    assert_eq!(identity(&ix), (first.clone(), "default".to_string()));
    ix.terminate();

    // An empty directory (a task moved to another machine) is another replica.
    let ix = Indexer::start(&dir.path().join("b"), &["--group", "g1"]);
    let (other, group) = identity(&ix);
    assert_eq!(group, "g1");
    assert_ne!(other, first);
}

#[test]
fn a_group_name_that_cannot_be_a_label_is_refused_at_start() {
    let out = sawmill()
        .args(["indexer", "--listen", "127.0.0.1:0", "--group", "g 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("may only hold letters, digits"),
        "the refusal says why: {err}"
    );
}
