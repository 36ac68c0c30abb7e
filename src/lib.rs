//! flowctl library.

pub mod commands;
pub mod crypto;
