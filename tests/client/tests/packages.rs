//! The packages `make package` builds. The PGXN distribution's META.json
//! must be valid under the PGXN meta spec (checked with the spec's own JSON
//! schemas, from the pgxn_meta crate) and name this version; the Debian
//! packages are tested by the `package` tier (scripts/package.sh test),
//! which installs one into a new chroot of its PostgreSQL version.

use pgxn_meta::valid::Validator;
use serde_json::Value;

#[test]
fn meta_json_is_valid_pgxn_metadata_for_this_version() {
    let path = syncguard_client_tests::repo().join("META.json");
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Validator::new()
        .validate(&meta)
        .unwrap_or_else(|e| panic!("META.json is not valid PGXN metadata: {e}"));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(meta["version"], version);
    assert_eq!(meta["provides"]["syncguard"]["version"], version);
    let control =
        std::fs::read_to_string(syncguard_client_tests::repo().join("syncguard.control")).unwrap();
    assert!(
        control.contains("default_version = '@CARGO_VERSION@'"),
        "{control}"
    );
}
