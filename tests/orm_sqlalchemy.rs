//! A real ORM, unchanged, writing partial sync results to a protected table.
//!
//! `tests/orm/sqlalchemy_partial.py` uses SQLAlchemy 2 with psycopg 3 the
//! ordinary way (`session.get` + assignment, `session.merge`, and the
//! PostgreSQL `insert(...).on_conflict_do_update(...)`) to save a payload
//! whose billing part is missing and whose name is None. This test gives it a
//! server with a protected table and a plain twin, runs it, and checks in SQL
//! that the protected rows kept every earlier field and took the new values,
//! while the plain rows lost what the payload lacked.
//!
//! The Python packages come from PyPI into a virtualenv under the target
//! directory (`target/orm-venv`), created on the first run and reused after.
//! It needs `python3` with the `venv` module (Debian: `python3`,
//! `python3-venv`, which `scripts/setup.sh` installs); without them the test
//! fails and says so.
mod common;
mod profiles;

use common::TestCluster;
use postgres::Client;
use profiles::{create_tables, fetched, merged, seed, LAST_SYNC, NAME};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const REQUIREMENTS: [&str; 2] = ["SQLAlchemy>=2.0,<3", "psycopg[binary]>=3.1,<4"];
/// Succeeds in a virtualenv that already has what `REQUIREMENTS` asks for.
const VENV_CHECK: &str = "import sqlalchemy, psycopg; \
    assert sqlalchemy.__version__.split('.')[0] == '2', sqlalchemy.__version__; \
    assert psycopg.__version__.split('.')[0] == '3', psycopg.__version__";

fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run `cmd`, panicking with its output (and `hint`) unless it succeeds.
fn run(cmd: &mut Command, hint: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}\n{hint}"));
    if !out.status.success() {
        panic!("{}\n{hint}", describe(cmd, &out));
    }
    out
}

/// The system's python: `/usr/bin/python3` when there is one (a pyenv shim
/// earlier on PATH may point at an interpreter without venv), else `python3`.
fn system_python() -> PathBuf {
    let usr = Path::new("/usr/bin/python3");
    if usr.exists() {
        usr.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

/// The virtualenv's python, with SQLAlchemy 2 and psycopg 3 installed.
fn orm_venv() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp: the venv goes next to it.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target directory");
    let venv = target.join("orm-venv");
    let python = venv.join("bin").join("python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", VENV_CHECK])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if ready(&python) {
        return python;
    }

    let started = Instant::now();
    let system = system_python();
    eprintln!(
        "creating {} with {} (first run only)",
        venv.display(),
        system.display()
    );
    run(
        Command::new(&system)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        "This test needs python3 with the venv module (Debian packages python3 and \
         python3-venv; scripts/setup.sh, run by `make test`, installs them).",
    );
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(REQUIREMENTS),
        "pip could not install the ORM's packages from PyPI.",
    );
    assert!(
        ready(&python),
        "{} still lacks SQLAlchemy 2 / psycopg 3 after pip install",
        venv.display()
    );
    eprintln!("virtualenv ready in {:.0?}", started.elapsed());
    python
}

fn setup(client: &mut Client) {
    create_tables(client, true);
    for table in ["profiles", "profiles_plain"] {
        for id in 1..=3 {
            seed(client, table, id);
        }
    }
}

/// Every row of `table`: (id, name, external_data, synced_at moved on).
fn rows(client: &mut Client, table: &str) -> Vec<(i32, Option<String>, Value, bool)> {
    client
        .query(
            &format!(
                "SELECT id, name, external_data::text,
                        coalesce(synced_at > $1::text::timestamptz, false)
                   FROM {table} ORDER BY id"
            ),
            &[&LAST_SYNC],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let doc: String = r.get(2);
            (
                r.get(0),
                r.get(1),
                serde_json::from_str(&doc).unwrap(),
                r.get(3),
            )
        })
        .collect()
}

#[test]
fn sqlalchemy_partial_writes_keep_every_field() {
    let python = orm_venv();
    let cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    setup(&mut client);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/orm/sqlalchemy_partial.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--host")
        .arg(cluster.socket_dir())
        .args(["--port", &cluster.port().to_string()])
        .args(["--user", "postgres", "--dbname", "postgres"])
        // The documents it writes and expects: the same as this test's.
        .arg("--fixture")
        .arg(json!({"name": NAME, "fetched": fetched(), "merged": merged()}).to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let report = describe(&cmd, &out);
    assert!(
        out.status.success(),
        "the SQLAlchemy script failed\n{report}\n{}",
        cluster.log_tail()
    );
    println!("{report}");

    // Protected: rows 1-3 (get+assign, merge, on_conflict_do_update) merged;
    // row 4 was new and is stored as given.
    let protected = rows(&mut client, "profiles");
    assert_eq!(protected.len(), 4, "{protected:?}\n{report}");
    for (id, name, doc, synced) in &protected[..3] {
        assert_eq!(
            doc,
            &merged(),
            "profiles row {id}: every earlier field and the new values\n{report}"
        );
        assert_eq!(
            name.as_deref(),
            Some(NAME),
            "profiles row {id}: name kept\n{report}"
        );
        assert!(
            synced,
            "profiles row {id}: synced_at took the new value\n{report}"
        );
    }
    let (_, name, doc, _) = &protected[3];
    assert_eq!(
        (name.as_deref(), doc),
        (Some("Charles Babbage"), &fetched()),
        "profiles row 4, inserted"
    );

    // The same, asked in SQL of the stored rows.
    let kept: i64 = client
        .query_one(
            "SELECT count(*) FROM profiles
              WHERE id <= 3
                AND external_data -> 'billing' = '{\"plan\": \"pro\", \"card_last4\": \"4242\", \"vat_id\": \"GB123456789\"}'
                AND external_data #>> '{contact,address,city}' = 'London'
                AND external_data #>> '{contact,email}' = 'ada@new.example'
                AND external_data #>> '{contact,mobile}' = '+44 7700 900123'
                AND external_data #>> '{preferences,language}' = 'en'
                AND external_data #> '{preferences,newsletter}' = 'false'
                AND external_data #>> '{preferences,timezone}' = 'Europe/London'
                AND name = 'Ada Lovelace'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        kept, 3,
        "protected rows with every field kept and the new values"
    );

    // The control: the same ORM calls replaced the plain rows whole, so the
    // protection above is what kept the fields.
    let plain = rows(&mut client, "profiles_plain");
    assert_eq!(plain.len(), 4, "{plain:?}");
    for (id, name, doc, _) in &plain[..3] {
        assert_eq!(
            doc,
            &fetched(),
            "profiles_plain row {id}: full replace\n{report}"
        );
        assert_eq!(
            name, &None,
            "profiles_plain row {id}: name nulled\n{report}"
        );
    }
    let lost: i64 = client
        .query_one(
            "SELECT count(*) FROM profiles_plain
              WHERE id <= 3 AND NOT external_data ? 'billing' AND name IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(lost, 3, "plain rows lost billing and name");
}
