//! `PasswordHash` from a string, and `verify`: never a panic; a parsed hash
//! keeps its text and parses again to the same hash; a salted hash made
//! here verifies its password and no other.
//!
//! Input: the hash on the first line, the password after it.
#![no_main]

use argon2::password_hash::PasswordHash as Phc;
use libfuzzer_sys::fuzz_target;
use notebookd::auth::password::PasswordHash;
use sha2::Digest;

/// Verifying argon2 costs what its parameters say: only small ones here.
fn cheap_to_verify(hash: &PasswordHash) -> bool {
    let Some(phc) = hash.as_str().strip_prefix("argon2:") else {
        return true;
    };
    let Ok(phc) = Phc::new(phc) else {
        return true;
    };
    let Ok(params) = argon2::Params::try_from(&phc) else {
        return true;
    };
    params.m_cost() <= 256 && params.t_cost() <= 2 && params.p_cost() <= 4
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (hash_text, password) = text.split_once('\n').unwrap_or((text, ""));
    match hash_text.parse::<PasswordHash>() {
        Ok(hash) => {
            assert_eq!(hash.as_str(), hash_text.trim());
            let again: PasswordHash = hash.as_str().parse().expect("a parsed hash parses again");
            assert!(again == hash);
            let shown = format!("{hash:?}");
            assert!(
                !shown.contains(hash.as_str()),
                "Debug shows the hash: {shown}"
            );
            if cheap_to_verify(&hash) {
                let _ = hash.verify(password);
            }
        }
        Err(e) => assert!(e.len() <= 1024, "an error of {} bytes", e.len()),
    }

    // The legacy salted form, built as IPython.lib.passwd did.
    let salt: String = hash_text
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(24)
        .collect();
    let salt = if salt.is_empty() {
        "s".to_string()
    } else {
        salt
    };
    let (alg, digest) = match data.len() % 3 {
        0 => (
            "sha1",
            hex::encode(sha1::Sha1::digest(
                [password.as_bytes(), salt.as_bytes()].concat(),
            )),
        ),
        1 => (
            "sha256",
            hex::encode(sha2::Sha256::digest(
                [password.as_bytes(), salt.as_bytes()].concat(),
            )),
        ),
        _ => (
            "sha512",
            hex::encode(sha2::Sha512::digest(
                [password.as_bytes(), salt.as_bytes()].concat(),
            )),
        ),
    };
    let salted: PasswordHash = format!("{alg}:{salt}:{digest}")
        .parse()
        .expect("a salted hash of the documented form parses");
    assert!(
        salted.verify(password),
        "{alg} hash does not verify its password"
    );
    assert!(
        !salted.verify(&format!("{password}x")),
        "{alg} hash verifies another password"
    );
});
