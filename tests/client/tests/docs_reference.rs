//! The operator docs name everything the extension has. docs/reference.md
//! must mention every function, aggregate, operator, table, view and schema of
//! the installed extension (its members in pg_depend), every setting
//! (pg_settings `syncguard.%`); docs/errors.md must have a row for every
//! SQLSTATE the code raises (`ERRCODE = '…'` in sql/**/*.sql, `ERRCODE_…` names
//! and `SGnnn` codes in src/). A name counts as mentioned in backticks: `` `name(`` or
//! `` `syncguard.name``.

use syncguard_client_tests::common;

use common::TestCluster;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    syncguard_client_tests::repo()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every file under `dir` (recursively) whose name ends with `ext`.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path, ext));
        } else if path.to_string_lossy().ends_with(ext) {
            out.push(path);
        }
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `doc` names `name` in backticks, optionally schema-qualified, and
/// not as the start of a longer name.
fn mentions(doc: &str, name: &str) -> bool {
    ["`", "`syncguard."].iter().any(|prefix| {
        let needle = format!("{prefix}{name}");
        doc.match_indices(&needle)
            .any(|(at, _)| !doc[at + needle.len()..].chars().next().is_some_and(is_word))
    })
}

/// The words following each occurrence of `marker` in `text`, up to the
/// first character that cannot be part of an identifier.
fn words_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    text.match_indices(marker)
        .map(|(at, _)| {
            let rest = &text[at + marker.len()..];
            &rest[..rest.find(|c: char| !is_word(c)).unwrap_or(rest.len())]
        })
        .collect()
}

/// PostgreSQL's condition names and their codes, from the server's
/// utils/errcodes.h (`#define ERRCODE_X MAKE_SQLSTATE('2','2','0','2','3')`).
fn errcodes() -> BTreeMap<String, String> {
    let pg_config = std::env::var("PG_CONFIG").unwrap_or_else(|_| "/usr/bin/pg_config".into());
    let out = Command::new(pg_config)
        .arg("--includedir-server")
        .output()
        .expect("run pg_config");
    let dir = String::from_utf8(out.stdout).unwrap();
    let header = read(&Path::new(dir.trim()).join("utils/errcodes.h"));
    header
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("#define ")?;
            let (name, def) = rest.split_once(char::is_whitespace)?;
            let chars = def.trim().strip_prefix("MAKE_SQLSTATE(")?;
            let code: String = chars
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect();
            (code.len() == 5).then(|| (name.to_string(), code))
        })
        .collect()
}

/// Every SQLSTATE the code raises.
fn raised_sqlstates() -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    for path in files(&repo().join("sql"), ".sql") {
        let text = read(&path);
        for word in words_after(&text, "ERRCODE = '") {
            codes.insert(word.to_string());
        }
    }
    let names = errcodes();
    for path in files(&repo().join("src"), ".rs") {
        let text = read(&path);
        for word in words_after(&text, "PgSqlErrorCode::") {
            let code = names
                .get(word)
                .unwrap_or_else(|| panic!("{}: unknown condition {word}", path.display()));
            codes.insert(code.clone());
        }
        for word in words_after(&text, "sqlstate(b\"") {
            codes.insert(word.to_string());
        }
    }
    codes
}

#[test]
fn reference_and_errors_name_everything() {
    let reference = read(&repo().join("docs/reference.md"));
    let errors = read(&repo().join("docs/errors.md"));
    let cluster = TestCluster::new();
    let mut client = cluster.connect_with_extension();
    // Loads the library, which defines the settings.
    client.batch_execute("SELECT syncguard.version()").unwrap();

    let objects: Vec<(String, String)> = client
        .query(
            "SELECT CASE d.classid WHEN 'pg_proc'::regclass THEN
                         CASE p.prokind WHEN 'a' THEN 'aggregate' ELSE 'function' END
                        WHEN 'pg_class'::regclass THEN
                         CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END
                        WHEN 'pg_operator'::regclass THEN 'operator'
                        WHEN 'pg_namespace'::regclass THEN 'schema' END,
                    coalesce(p.proname, c.relname, o.oprname, n.nspname)::text
               FROM pg_depend d
               LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
               LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
                                   AND c.relkind IN ('r', 'p', 'v', 'm')
               LEFT JOIN pg_operator o ON d.classid = 'pg_operator'::regclass AND o.oid = d.objid
               LEFT JOIN pg_namespace n ON d.classid = 'pg_namespace'::regclass AND n.oid = d.objid
              WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
                AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'syncguard')
                AND coalesce(p.proname, c.relname, o.oprname, n.nspname) IS NOT NULL
              ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let settings: Vec<String> = client
        .query(
            "SELECT name FROM pg_settings WHERE name LIKE 'syncguard.%' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // The query and the scan must find something, or this test proves nothing.
    assert!(objects.len() > 50, "too few extension members: {objects:?}");
    assert!(settings.len() >= 6, "too few settings: {settings:?}");
    let sqlstates = raised_sqlstates();
    assert!(
        sqlstates.contains("22023") && sqlstates.contains("SG003") && sqlstates.contains("SG007"),
        "the SQLSTATE scan missed codes: {sqlstates:?}"
    );

    let mut missing = Vec::new();
    for (kind, name) in &objects {
        let found = match kind.as_str() {
            // an operator is written between its operands: `jsonb ||+ jsonb`
            "operator" => reference.contains(&format!(" {name} ")),
            _ => mentions(&reference, name),
        };
        if !found {
            missing.push(format!("reference.md: {kind} {name}"));
        }
    }
    for name in &settings {
        if !mentions(&reference, name) {
            missing.push(format!("reference.md: setting {name}"));
        }
    }
    for code in &sqlstates {
        // a row of the errors table starts with the code
        if !errors.contains(&format!("\n| `{code}` |")) {
            missing.push(format!("errors.md: a row for SQLSTATE {code}"));
        }
    }
    assert!(
        missing.is_empty(),
        "not documented:\n  {}",
        missing.join("\n  ")
    );
}
