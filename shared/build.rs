//! Rebuilds the crate when a migration is added or changed: `embed_migrations!` reads the
//! folder at compile time, and without this an incremental build could keep the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
