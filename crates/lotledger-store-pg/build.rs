// Re-embed the migrations when the folder changes (sqlx::migrate! reads it at compile time).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
