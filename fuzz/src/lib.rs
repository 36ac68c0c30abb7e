//! The fuzz targets' bodies live in `harness.rs`, shared with `tests/fuzz_regressions.rs`
//! of the main crate so that every committed seed is replayed by the normal test suite.

#[path = "harness.rs"]
mod harness;

pub use harness::*;
