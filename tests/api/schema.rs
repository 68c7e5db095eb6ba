//! `schema.graphql` is the SDL the code prints; this test fails when they differ.
//! Run with `UPDATE_SCHEMA=1` to rewrite the file after an intended change.

#[test]
fn the_committed_schema_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let printed = parley::graphql::sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &printed).expect("write schema.graphql");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == printed,
        "schema.graphql is out of date; run `UPDATE_SCHEMA=1 cargo test --test api schema` and commit it"
    );
}
