//! Throughput of the data endpoint's decryption: `flowctl::crypto::decrypt_request`
//! (aws-lc-rs RSA-OAEP + AES-128-GCM) on one thread and on every core, against RustCrypto
//! `rsa` 0.10's OAEP decryption alone.
//!
//! Run with `cargo run --release --example bench_crypto [seconds-per-measurement]`.

use std::time::{Duration, Instant};

use flowctl::crypto::{decrypt_request, encrypt_request, EncryptedRequest, PrivateKey};
use rsa::pkcs8::DecodePrivateKey as _;

const SAMPLE_REQUEST: &[u8] = br#"{"version":"3.0","action":"data_exchange","screen":"Q1_RATING","data":{"q1_rating":"5_etoiles","q2_recommend":"oui"},"flow_token":"flow_2f7c1e9a0001"}"#;

fn main() -> anyhow::Result<()> {
    let secs: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3.0);
    let window = Duration::from_secs_f64(secs);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let (key, pem) = PrivateKey::generate()?;
    let rustcrypto = rsa::PrivateKey::from_pkcs8_pem(&pem)?;
    let requests: Vec<EncryptedRequest> = (0..64)
        .map(|_| encrypt_request(&key.public_key(), SAMPLE_REQUEST).0)
        .collect();
    let wrapped: Vec<Vec<u8>> = requests
        .iter()
        .map(|r| base64_decode(&r.encrypted_aes_key))
        .collect::<Result<_, _>>()?;

    println!(
        "RSA-{} key, {}-byte request, {secs} s per measurement, {threads} cores",
        key.modulus_bits(),
        SAMPLE_REQUEST.len()
    );

    let aws_one = measure(window, 1, |i| {
        decrypt_request(&key, &requests[i % requests.len()]).is_ok()
    });
    let aws_all = measure(window, threads, |i| {
        decrypt_request(&key, &requests[i % requests.len()]).is_ok()
    });
    let oaep = || rsa::Oaep::<rsa::sha2::Sha256>::new();
    let rc_one = measure(window, 1, |i| {
        rustcrypto
            .decrypt(oaep(), &wrapped[i % wrapped.len()])
            .is_ok()
    });
    let rc_all = measure(window, threads, |i| {
        rustcrypto
            .decrypt(oaep(), &wrapped[i % wrapped.len()])
            .is_ok()
    });

    println!("decrypt_request (aws-lc-rs RSA-OAEP + AES-GCM), 1 thread : {aws_one:>9.0} ops/s");
    println!(
        "decrypt_request (aws-lc-rs RSA-OAEP + AES-GCM), {threads} threads: {aws_all:>9.0} ops/s"
    );
    println!("RustCrypto rsa 0.10 OAEP decrypt only,          1 thread : {rc_one:>9.0} ops/s");
    println!(
        "RustCrypto rsa 0.10 OAEP decrypt only,          {threads} threads: {rc_all:>9.0} ops/s"
    );
    println!(
        "ratio aws-lc-rs / RustCrypto: {:.1}x (1 thread), {:.1}x ({threads} threads)",
        aws_one / rc_one,
        aws_all / rc_all
    );
    Ok(())
}

/// Runs `op` on `threads` threads for `window`; returns successful operations per second.
/// Panics if any operation fails, so a broken build cannot report a fast number.
fn measure(window: Duration, threads: usize, op: impl Fn(usize) -> bool + Sync) -> f64 {
    let start = Instant::now();
    let total: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let op = &op;
                scope.spawn(move || {
                    let mut n = 0u64;
                    let mut i = t;
                    while start.elapsed() < window {
                        assert!(op(i), "operation failed during the benchmark");
                        n += 1;
                        i += threads;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

fn base64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text)
}
