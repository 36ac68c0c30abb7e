//! flowctl library.
