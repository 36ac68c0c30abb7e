//! `flowctl keygen`: creates the data endpoint's RSA key pair.
