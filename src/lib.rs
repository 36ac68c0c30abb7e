//! flowctl library.

pub mod sandbox;
