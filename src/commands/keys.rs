//! `flowctl keygen`, `flowctl keys upload` and `flowctl keys check`.

use super::{exit, UsageError};
use crate::cli::KeygenArgs;
use crate::config::KeysSettings;
use crate::graph::GraphClient;

/// `flowctl keygen`: writes the key pair and prints the public key.
pub fn run_keygen(args: &KeygenArgs) -> anyhow::Result<i32> {
    for path in [args.out.clone(), super::keygen::public_path(&args.out)] {
        if path.exists() && !args.force {
            return Err(UsageError(format!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            ))
            .into());
        }
    }
    let public = super::keygen::keygen(&args.out, args.force)?;
    super::print_or_closed(&public)?;
    if super::quiet() {
        return Ok(exit::OK);
    }
    eprintln!(
        "flowctl: private key written to {} (mode 0600), public key to {}. Next: flowctl keys upload --private-key-file {}",
        args.out.display(),
        super::keygen::public_path(&args.out).display(),
        args.out.display()
    );
    Ok(exit::OK)
}

/// `flowctl keys upload`: registers the local key's public half.
///
/// On a terminal, replacing a different key already registered asks first (`yes` skips the
/// question): the data endpoint of every Flow in use switches to the new key at once.
pub async fn run_upload(settings: KeysSettings, yes: bool) -> anyhow::Result<i32> {
    let (graph, key) = (GraphClient::new(settings.graph)?, settings.key);
    if !yes && super::interactive() {
        let replaces = match graph.registered_public_key().await? {
            Some(r) => !key.matches_public_pem(&r.pem),
            None => false,
        };
        if replaces
            && !super::ask(&format!(
                "A different public key is registered for {}. Replace it with the local one (fingerprint {})? Requests encrypted with the old key will fail to decrypt.",
                graph.settings().phone_number_id,
                key.public_key_fingerprint()
            ))?
        {
            eprintln!("flowctl: nothing uploaded (not confirmed; --yes skips the question)");
            return Ok(exit::FAILED);
        }
    }
    graph.upload_public_key(&key.public_key_pem()).await?;
    super::print_json(&super::with_snake_case_keys(serde_json::json!({
        "uploaded": true,
        "phoneNumberId": graph.settings().phone_number_id,
        "fingerprint": key.public_key_fingerprint(),
    })))?;
    Ok(exit::OK)
}

/// `flowctl keys check`: compares the registered key with the local one. Exit 1 when none is
/// registered (the usual cause of endless 421s), when it differs from the local key, or when
/// Meta reports its signature as `MISMATCH`.
pub async fn run_check(settings: KeysSettings) -> anyhow::Result<i32> {
    let (graph, key) = (GraphClient::new(settings.graph)?, settings.key);
    let registered = graph.registered_public_key().await?;
    let (matches, status) = match &registered {
        Some(r) => (key.matches_public_pem(&r.pem), r.signature_status.clone()),
        None => (false, None),
    };
    super::print_json(&super::with_snake_case_keys(serde_json::json!({
        "registered": registered.is_some(),
        "matches": matches,
        "signatureStatus": status,
        "localFingerprint": key.public_key_fingerprint(),
    })))?;
    if registered.is_none() {
        eprintln!(
            "flowctl: no public key is registered for this number; run `flowctl keys upload`"
        );
        return Ok(exit::FAILED);
    }
    let mut code = exit::OK;
    if !matches {
        eprintln!(
            "flowctl: the registered public key does not match the local private key; WhatsApp clients will get 421 until you run `flowctl keys upload`"
        );
        code = exit::FAILED;
    }
    // Meta signs the business public key for each phone number when it is uploaded, and GET
    // reports that signature as VALID or MISMATCH:
    // https://developers.facebook.com/docs/whatsapp/cloud-api/reference/whatsapp-business-encryption
    // A MISMATCH is a failure even when the PEM matches the local key.
    if status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case(SIGNATURE_MISMATCH))
    {
        eprintln!(
            "flowctl: Meta reports business_public_key_signature_status MISMATCH: the registered key is not validly signed for this phone number, and Flows with a data endpoint may fail until you upload it again with `flowctl keys upload` (an upload has Meta sign the key for this number)"
        );
        code = exit::FAILED;
    }
    Ok(code)
}

/// The `business_public_key_signature_status` Meta reports for a key whose signature does not
/// hold for the phone number (the other documented value is `VALID`).
const SIGNATURE_MISMATCH: &str = "MISMATCH";
