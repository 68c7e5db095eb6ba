// `sqlx::migrate!` embeds the migrations when this crate compiles; without this, a new
// migration file alone would not make cargo compile it again (sqlx's documented fix).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
