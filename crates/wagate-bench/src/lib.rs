//! Whole-gateway benchmarks; see `benches/emulated.rs` and docs/PERFORMANCE.md.
