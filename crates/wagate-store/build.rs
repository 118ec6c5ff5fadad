fn main() {
    // sqlx::migrate! embeds these directories; rebuild when a migration changes.
    println!("cargo:rerun-if-changed=migrations");
}
