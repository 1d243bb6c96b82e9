//! Unit tests of write_policy.rs.

use super::*;

fn parse(s: &str) -> Result<WritePolicy, PolicyError> {
    WritePolicy::parse(&serde_json::from_str(s).unwrap())
}

#[test]
fn a_call_merges_its_way_under_the_tables_guards() {
    let table =
        parse(r#"{"last_write_wins":"ts","version":"v","arrays":"union","freshness":{"d":"f"}}"#)
            .unwrap();
    // '{}' is the table's policy itself.
    assert_eq!(parse("{}").unwrap().under(&table).unwrap(), table);
    // The call's merge keys win; the guards stay.
    let p = parse(r#"{"arrays":"concat","nulls":"overwrite","columns":{"d":"replace"}}"#)
        .unwrap()
        .under(&table)
        .unwrap();
    assert_eq!(p.last_write_wins.as_deref(), Some("ts"));
    assert_eq!(p.version.as_deref(), Some("v"));
    assert_eq!(p.freshness, vec![("d".to_string(), "f".to_string())]);
    assert_eq!(p.rule("d", true), ColumnRule::Replace);
    assert_eq!(
        p.rule("e", true),
        ColumnRule::Merge {
            policy: r#"{"arrays":"concat","nulls":"overwrite"}"#.into(),
            nulls_overwrite: true
        }
    );
    assert_eq!(p.guard_columns(), ["ts", "v", "f"]);
    // Repeating a guard is fine; changing one is an error naming both.
    assert!(parse(r#"{"version":"v"}"#).unwrap().under(&table).is_ok());
    for call in [
        r#"{"version":"w"}"#,
        r#"{"last_write_wins":"other"}"#,
        r#"{"last_write_wins":"ts","max_clock_skew":"1 year"}"#,
        r#"{"freshness":{"d":"g"}}"#,
    ] {
        let e = parse(call).unwrap().under(&table).unwrap_err();
        assert!(
            e.message.contains("contradicts the table's protection"),
            "{call}: {}",
            e.message
        );
    }
    // A guard the table lacks may be added.
    let bare = parse("{}").unwrap();
    let p = parse(r#"{"version":"v"}"#).unwrap().under(&bare).unwrap();
    assert_eq!(p.version.as_deref(), Some("v"));
}

#[test]
fn defaults_merge_and_keep_nulls() {
    let p = parse("null").unwrap();
    assert_eq!(
        p.rule("data", true),
        ColumnRule::Merge {
            policy: "{}".into(),
            nulls_overwrite: false
        }
    );
    assert_eq!(
        p.rule("name", false),
        ColumnRule::Merge {
            policy: String::new(),
            nulls_overwrite: false
        }
    );
}

#[test]
fn column_overrides_extend_the_top_level() {
    let p = parse(
        r#"{"arrays":"union","nulls":"overwrite","columns":{"a":{"arrays":"concat"},"b":"replace","c":"merge"}}"#,
    )
    .unwrap();
    assert_eq!(
        p.rule("a", true),
        ColumnRule::Merge {
            policy: r#"{"arrays":"concat","nulls":"overwrite"}"#.into(),
            nulls_overwrite: true
        }
    );
    assert_eq!(p.rule("b", true), ColumnRule::Replace);
    assert_eq!(p.rule("b", false), ColumnRule::Replace);
    assert!(matches!(
        p.rule("c", false),
        ColumnRule::Merge {
            nulls_overwrite: true,
            ..
        }
    ));
    let keep = parse(r#"{"nulls":"overwrite","columns":{"x":{"nulls":"keep"}}}"#).unwrap();
    assert!(matches!(
        keep.rule("x", false),
        ColumnRule::Merge {
            nulls_overwrite: false,
            ..
        }
    ));
}

#[test]
fn conflict_keys() {
    let p = parse(
        r#"{"last_write_wins":"ts","max_clock_skew":"1 min","version":"v","freshness":{"d":"f"}}"#,
    )
    .unwrap();
    assert_eq!(p.last_write_wins.as_deref(), Some("ts"));
    assert_eq!(p.max_clock_skew.as_deref(), Some("1 min"));
    assert_eq!(p.version.as_deref(), Some("v"));
    assert_eq!(p.freshness, vec![("d".to_string(), "f".to_string())]);
    assert_eq!(
        p.named_columns(),
        vec![
            ("last_write_wins", "ts"),
            ("version", "v"),
            ("freshness", "d"),
            ("freshness", "f")
        ]
    );
}

#[test]
fn errors_name_the_bad_part() {
    let cases = [
        ("[1]", "must be a JSON object"),
        (r#"{"colums":{}}"#, "unknown key \"colums\""),
        (r#"{"arrays":"zip"}"#, "\"arrays\""),
        (r#"{"columns":{"a":"delete"}}"#, "rule of column \"a\""),
        (
            r#"{"columns":{"a":{"value":"max"}}}"#,
            "unknown key \"value\" in the rule of column \"a\"",
        ),
        (r#"{"columns":{"a":{"nulls":"drop"}}}"#, "column \"a\""),
        (r#"{"columns":[]}"#, "\"columns\" must be an object"),
        (r#"{"version":1}"#, "\"version\" must be a column name"),
        (
            r#"{"last_write_wins":""}"#,
            "\"last_write_wins\" must be a column name",
        ),
        (r#"{"max_clock_skew":"1 min"}"#, "needs \"last_write_wins\""),
        (
            r#"{"last_write_wins":"t","max_clock_skew":60}"#,
            "interval string",
        ),
        (r#"{"freshness":{"d":"d"}}"#, "its own freshness"),
        (r#"{"freshness":"d"}"#, "\"freshness\" must be an object"),
    ];
    for (doc, want) in cases {
        let e = parse(doc).expect_err(doc);
        assert!(
            e.message.starts_with("invalid write policy") || e.message.contains("merge policy"),
            "{doc}: {}",
            e.message
        );
        assert!(
            e.message.contains(want),
            "{doc}: {} lacks {want}",
            e.message
        );
        assert!(!e.hint.is_empty(), "{doc}");
    }
}
