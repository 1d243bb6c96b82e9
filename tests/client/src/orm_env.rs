//! The real ORMs the client tests drive, installed from their registries
//! into the target directory on the first run and reused after:
//!
//! - a Python virtualenv (`target/orm-venv`) with SQLAlchemy 2, Django and
//!   psycopg 3 from PyPI; it needs `python3` with the `venv` module (Debian:
//!   `python3`, `python3-venv`);
//! - `target/orm-node/node_modules` with Knex and node-postgres from npm; it
//!   needs `node` and `npm` (Debian: `nodejs`, `npm`).
//!
//! `scripts/setup.sh` (run by `make test`) installs the system parts; without
//! them a test fails and says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const PYTHON_REQUIREMENTS: [&str; 3] = [
    "SQLAlchemy>=2.0,<3",
    "psycopg[binary]>=3.1,<4",
    "Django>=4.2,<6",
];
/// Succeeds in a virtualenv that already has what the requirements ask for.
const VENV_CHECK: &str = "import sqlalchemy, psycopg, django; \
    assert sqlalchemy.__version__.split('.')[0] == '2', sqlalchemy.__version__; \
    assert psycopg.__version__.split('.')[0] == '3', psycopg.__version__; \
    assert django.VERSION[:2] >= (4, 2), django.VERSION";

const NODE_PACKAGES: [&str; 2] = ["knex@3", "pg@8"];

pub fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "{cmd:?} exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run `cmd`, panicking with its output (and `hint`) unless it succeeds.
pub fn run(cmd: &mut Command, hint: &str) -> Output {
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

/// The virtualenv's python, with the ORMs installed.
pub fn python() -> PathBuf {
    let venv = crate::target_dir().join("orm-venv");
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
    if !python.exists() {
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
    }
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PYTHON_REQUIREMENTS),
        "pip could not install the ORMs' packages from PyPI.",
    );
    assert!(
        ready(&python),
        "{} still lacks the ORMs after pip install",
        venv.display()
    );
    eprintln!("virtualenv ready in {:.0?}", started.elapsed());
    python
}

/// A directory whose `node_modules` holds Knex and node-postgres: run node
/// scripts with it as their working directory or `NODE_PATH`.
pub fn node_modules() -> PathBuf {
    let dir = crate::target_dir().join("orm-node");
    let ready = |dir: &Path| {
        Command::new("node")
            .current_dir(dir)
            .args(["-e", "require('knex'); require('pg')"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if dir.exists() && ready(&dir) {
        return dir.join("node_modules");
    }
    std::fs::create_dir_all(&dir).expect("create the node directory");
    std::fs::write(
        dir.join("package.json"),
        r#"{"name": "syncguard-orm-tests", "private": true}"#,
    )
    .expect("write package.json");
    let started = Instant::now();
    run(
        Command::new("npm")
            .current_dir(&dir)
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .args(NODE_PACKAGES),
        "This test needs node and npm (Debian packages nodejs and npm; scripts/setup.sh, \
         run by `make test`, installs them) and the npm registry.",
    );
    assert!(
        ready(&dir),
        "{} still lacks knex and pg after npm install",
        dir.display()
    );
    eprintln!("node modules ready in {:.0?}", started.elapsed());
    dir.join("node_modules")
}
