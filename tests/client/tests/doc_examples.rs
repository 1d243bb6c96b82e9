//! Every SQL example of README.md and docs/*.md runs as written: the
//! ```sql blocks of each file, in order, through psql in one session (so a
//! block may use what an earlier one made, and psql's `\gset`), on a server
//! with syncguard and pg_cron preloaded. Each file gets a database of its own
//! where the extension is created first, unless one of its blocks creates
//! it; docs/operations.md runs in `postgres`, pg_cron's database. A guide
//! whose examples need more than one server is run by its own test instead
//! (`RUN_ELSEWHERE`).

use syncguard_client_tests::common;

use common::TestCluster;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    syncguard_client_tests::repo()
}

/// The ```sql blocks of `text`, each with the line its code starts on.
fn sql_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match current.as_mut() {
            None if line.trim_end() == "```sql" => current = Some((i + 2, String::new())),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.push(current.take().unwrap()),
            Some((_, code)) => {
                code.push_str(line);
                code.push('\n');
            }
        }
    }
    assert!(current.is_none(), "an unclosed ```sql block");
    blocks
}

/// Guides whose examples span servers, and the test that runs them as written.
const RUN_ELSEWHERE: &[(&str, &str)] = &[
    ("docs/reconcile.md", "tests/client/tests/reconcile.rs"),
    ("docs/citus.md", "tests/client/tests/citus.rs"),
];

fn docs() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut guides: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    guides.sort();
    files.extend(guides);
    files
}

fn name(path: &Path) -> String {
    path.strip_prefix(repo()).unwrap().display().to_string()
}

#[test]
fn every_sql_example_runs_as_written() {
    let cluster = TestCluster::with_settings(&[
        ("shared_preload_libraries", "syncguard,pg_cron"),
        ("cron.database_name", "postgres"),
    ]);
    let mut admin = cluster.connect();
    let mut total = 0;
    for path in docs() {
        let blocks = sql_blocks(&std::fs::read_to_string(&path).unwrap());
        if blocks.is_empty() {
            continue;
        }
        let doc = name(&path);
        if let Some((_, test)) = RUN_ELSEWHERE.iter().find(|(d, _)| *d == doc) {
            assert!(
                repo().join(test).exists(),
                "{doc}: its examples' test {test} is missing"
            );
            continue;
        }
        let db = if doc == "docs/operations.md" {
            "postgres".to_string()
        } else {
            let stem = path.file_stem().unwrap().to_string_lossy().to_lowercase();
            let db = format!("doc_{stem}");
            admin
                .batch_execute(&format!("CREATE DATABASE {db}"))
                .unwrap();
            db
        };
        let mut script = String::new();
        if !blocks
            .iter()
            .any(|(_, code)| code.contains("CREATE EXTENSION syncguard"))
        {
            script.push_str("CREATE EXTENSION syncguard;\n");
        }
        for (line, code) in &blocks {
            script.push_str(&format!("\\echo '>>> {doc}:{line}'\n{code}\n"));
        }
        if let Err(out) = cluster.psql(&db, &script) {
            let at = out
                .lines()
                .filter(|l| l.starts_with(">>> "))
                .last()
                .unwrap_or(">>> before the first block");
            panic!(
                "the example at {} does not run as written:\n{}",
                &at[4..],
                out.lines()
                    .rev()
                    .take(25)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        total += blocks.len();
    }
    assert!(total >= 20, "only {total} SQL examples found");
}
