//! Rebuilds the controller when a migration is added or changed: the
//! migrations are embedded at compile time (`refinery::embed_migrations!`),
//! and cargo tracks the files it includes but not a new file beside them.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
