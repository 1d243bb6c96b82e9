//! The extension keeps answering after the server is stopped, killed or has a
//! backend terminated: the scenarios later crash-safety tests build on.
use syncguard_client_tests::common;

use common::TestCluster;
use postgres::Client;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn syncguard_version(client: &mut Client) -> String {
    client
        .query_one("SELECT syncguard.version()", &[])
        .expect("syncguard.version()")
        .get(0)
}

fn extversion(client: &mut Client) -> String {
    client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'syncguard'",
            &[],
        )
        .expect("extension installed")
        .get(0)
}

#[test]
fn survives_kill_9_of_the_postmaster() {
    let mut cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    assert_eq!(syncguard_version(&mut client), VERSION);

    cluster.kill_postmaster();
    assert!(
        client.simple_query("SELECT 1").is_err(),
        "a session outlived its postmaster"
    );

    cluster.start(); // crash recovery
    let mut client = cluster.connect();
    assert_eq!(extversion(&mut client), VERSION);
    assert_eq!(syncguard_version(&mut client), VERSION);
}

#[test]
fn survives_kill_9_of_a_backend() {
    let mut cluster = TestCluster::new();
    let mut victim = cluster.connect_with_extension();
    let mut bystander = cluster.connect();
    let pid = cluster.backend_pid(&mut victim);

    cluster.kill_backend(pid);
    // The postmaster resets every session after a backend crash.
    assert!(victim.simple_query("SELECT 1").is_err());
    assert!(bystander.simple_query("SELECT 1").is_err());

    let mut client = cluster.connect();
    assert_eq!(syncguard_version(&mut client), VERSION);
}

#[test]
fn terminating_a_backend_leaves_the_others_alone() {
    let cluster = TestCluster::new();
    let mut victim = cluster.connect_with_extension();
    let mut bystander = cluster.connect();
    let pid = cluster.backend_pid(&mut victim);

    cluster.terminate_backend(pid);
    assert!(victim.query_one("SELECT syncguard.version()", &[]).is_err());
    assert_eq!(syncguard_version(&mut bystander), VERSION);
}

#[test]
fn clean_restart_keeps_the_extension() {
    let mut cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    assert_eq!(syncguard_version(&mut client), VERSION);

    cluster.restart();
    let mut client = cluster.connect();
    assert_eq!(extversion(&mut client), VERSION);
    assert_eq!(syncguard_version(&mut client), VERSION);
}
