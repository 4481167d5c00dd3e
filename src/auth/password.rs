//! Password hashes, compatible with Jupyter in both directions.
//!
//! Reads what Jupyter and IPython wrote: `argon2:<PHC string>` (any argon2
//! variant, parameters and hash length, as verified by
//! `jupyter_server.auth.security.passwd_check`) and the legacy salted form
//! `ALG:SALT:HEXDIGEST` (`sha1`, `sha256`, `sha512`; digest of the UTF-8
//! password followed by the ASCII salt) of `IPython.lib.passwd`. Writes what
//! `jupyter_server.auth.passwd` writes: argon2id, m=10240, t=10, p=8.

use std::fmt;
use std::str::FromStr;

use argon2::password_hash::{PasswordHash as Phc, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::Digest;
use subtle::ConstantTimeEq;

/// A parsed, usable password hash. Its `Debug` output never shows the hash.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    text: String,
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    /// The PHC string after `argon2:`, already checked to parse.
    Argon2,
    Salted {
        alg: SaltedAlg,
        salt: String,
        digest: Vec<u8>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SaltedAlg {
    Sha1,
    Sha256,
    Sha512,
}

impl SaltedAlg {
    fn digest(self, data: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(data: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            for part in data {
                h.update(part);
            }
            h.finalize().to_vec()
        }
        match self {
            SaltedAlg::Sha1 => run::<sha1::Sha1>(data),
            SaltedAlg::Sha256 => run::<sha2::Sha256>(data),
            SaltedAlg::Sha512 => run::<sha2::Sha512>(data),
        }
    }
    fn len(self) -> usize {
        match self {
            SaltedAlg::Sha1 => 20,
            SaltedAlg::Sha256 => 32,
            SaltedAlg::Sha512 => 64,
        }
    }
}

const FORMS: &str = "expected \"argon2:$argon2id$v=19$m=...,t=...,p=...$SALT$HASH\" or \"sha1:SALT:HEXDIGEST\" (sha256, sha512) as Jupyter or IPython wrote it; run `sudo nbctl passwd` to set a new password";

impl FromStr for PasswordHash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let text = s.trim();
        let Some((alg, rest)) = text.split_once(':') else {
            return Err(format!("not a password hash; {FORMS}"));
        };
        let kind = match alg {
            "argon2" => {
                let phc =
                    Phc::new(rest).map_err(|e| format!("malformed argon2 hash ({e}); {FORMS}"))?;
                Algorithm::try_from(phc.algorithm)
                    .map_err(|_| format!("unknown argon2 variant {}; {FORMS}", phc.algorithm))?;
                // A parameter named twice is ambiguous: the checks below would
                // read the first, the argon2 crate uses the last.
                let mut seen: Vec<&str> = Vec::new();
                for (name, _) in phc.params.iter() {
                    if seen.contains(&name.as_str()) {
                        return Err(format!(
                            "bad argon2 parameters ({name} is given twice); {FORMS}"
                        ));
                    }
                    seen.push(name.as_str());
                }
                // argon2 0.5 computes 8 × p before it checks p's maximum, which
                // overflows (a panic where overflow checks are on) for p ≥ 2^29.
                if phc
                    .params
                    .get_decimal("p")
                    .is_some_and(|p| p > Params::MAX_P_COST)
                {
                    return Err(format!(
                        "bad argon2 parameters (p is above {}); {FORMS}",
                        Params::MAX_P_COST
                    ));
                }
                Params::try_from(&phc)
                    .map_err(|e| format!("bad argon2 parameters ({e}); {FORMS}"))?;
                if phc.salt.is_none() || phc.hash.is_none() {
                    return Err(format!("argon2 hash without salt or digest; {FORMS}"));
                }
                Kind::Argon2
            }
            "sha1" | "sha256" | "sha512" => {
                let alg = match alg {
                    "sha1" => SaltedAlg::Sha1,
                    "sha256" => SaltedAlg::Sha256,
                    _ => SaltedAlg::Sha512,
                };
                let Some((salt, hex_digest)) = rest.split_once(':') else {
                    return Err(format!("salted hash without a digest; {FORMS}"));
                };
                if salt.is_empty() || !salt.is_ascii() || salt.contains(':') {
                    return Err(format!(
                        "salted hash with an empty or non-ASCII salt; {FORMS}"
                    ));
                }
                let digest = hex::decode(hex_digest)
                    .ok()
                    .filter(|d| d.len() == alg.len())
                    .ok_or_else(|| {
                        format!(
                            "the {alg:?} digest must be {} hex digits; {FORMS}",
                            alg.len() * 2
                        )
                    })?;
                Kind::Salted {
                    alg,
                    salt: salt.to_string(),
                    digest,
                }
            }
            other => {
                return Err(format!(
                    "unknown hash algorithm {:?}; {FORMS}",
                    other.chars().take(20).collect::<String>()
                ));
            }
        };
        Ok(PasswordHash {
            text: text.to_string(),
            kind,
        })
    }
}

impl PasswordHash {
    /// Hashes `password` the way `jupyter_server.auth.passwd` does.
    pub fn generate(password: &str) -> Result<PasswordHash, String> {
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).map_err(|e| format!("no random numbers: {e}"))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        let params = Params::new(10240, 10, 8, Some(32)).map_err(|e| e.to_string())?;
        let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let phc = hasher
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| e.to_string())?;
        format!("argon2:{phc}").parse()
    }

    /// True when `password` matches. Slow for argon2 hashes (tens of
    /// milliseconds of CPU): call it off the async threads.
    pub fn verify(&self, password: &str) -> bool {
        match &self.kind {
            Kind::Argon2 => {
                let phc_text = &self.text["argon2:".len()..];
                // Parsed again here: `Phc` borrows, and this runs rarely.
                match Phc::new(phc_text) {
                    Ok(phc) => Argon2::default()
                        .verify_password(password.as_bytes(), &phc)
                        .is_ok(),
                    Err(_) => false,
                }
            }
            Kind::Salted { alg, salt, digest } => {
                let got = alg.digest(&[password.as_bytes(), salt.as_bytes()]);
                got.ct_eq(digest).into()
            }
        }
    }

    /// True for the argon2 form (slow to verify).
    pub fn is_slow(&self) -> bool {
        matches!(self.kind, Kind::Argon2)
    }

    /// The hash as written in the config file.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

impl serde::Serialize for PasswordHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// The shortest password `nbctl passwd` accepts without `--allow-weak`.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The most common passwords of at least [`MIN_PASSWORD_CHARS`] characters
/// (from the published top-100 lists), plus this product's obvious ones:
/// the first guesses of anyone who finds the login page.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "12345678",
    "123456789",
    "1234567890",
    "0123456789",
    "87654321",
    "11111111",
    "00000000",
    "12121212",
    "123123123",
    "qwertyuiop",
    "qwerty123",
    "qwerty12",
    "1q2w3e4r",
    "1qaz2wsx",
    "zaq12wsx",
    "asdfghjkl",
    "asdf1234",
    "abcd1234",
    "abc12345",
    "abcdefgh",
    "iloveyou",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "superman",
    "starwars",
    "whatever",
    "welcome1",
    "welcome123",
    "letmein1",
    "trustno1",
    "changeme",
    "mypassword",
    "secret123",
    "administrator",
    "admin123",
    "admin1234",
    "rootroot",
    "jupyter1",
    "jupyter123",
    "notebook",
    "notebook1",
    "notebook123",
    "ipython1",
];

/// Why `password` is too weak to be the login of a door to code execution,
/// or `None`: shorter than [`MIN_PASSWORD_CHARS`] characters, or one of the
/// most common passwords (case does not matter).
pub fn weakness(password: &str) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Some(format!(
            "it has {chars} character(s), fewer than {MIN_PASSWORD_CHARS}"
        ));
    }
    let lower = password.to_lowercase();
    if COMMON_PASSWORDS.contains(&lower.as_str()) {
        return Some("it is one of the most common passwords, the first ones guessed".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_hash_has_jupyters_form_and_verifies() {
        let h = PasswordHash::generate("s3cret").unwrap();
        assert!(
            h.as_str()
                .starts_with("argon2:$argon2id$v=19$m=10240,t=10,p=8$"),
            "{}",
            h.as_str()
        );
        assert!(h.verify("s3cret"));
        assert!(!h.verify("s3cret "));
    }

    #[test]
    fn debug_hides_the_hash() {
        let h: PasswordHash = "sha1:0e112c3ddfce:a68df677475c2b47b6e86d0467eec97ac5f4b85a"
            .parse()
            .unwrap();
        assert_eq!(format!("{h:?}"), "PasswordHash(<redacted>)");
    }

    /// Found by the `password_hash` fuzz target: a huge parallelism made
    /// the argon2 crate overflow (and panic, with overflow checks on).
    #[test]
    fn huge_argon2_parallelism_is_an_error() {
        for p in ["833333333", "536870912", "16777216", "4294967295"] {
            let text = format!("argon2:$argon2id$v=19$m=102,t=1018,p={p}");
            let e = text.parse::<PasswordHash>().unwrap_err();
            assert!(e.contains("bad argon2 parameters"), "{e}");
        }
        assert!(
            "argon2:$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$ZmFrZWRpZ2VzdGZha2VkaWdlc3Q"
                .parse::<PasswordHash>()
                .is_ok()
        );
    }

    /// Found by the `password_hash` fuzz target: with `p` named twice the
    /// check above read the first and the argon2 crate the second, huge one.
    #[test]
    fn argon2_parameter_named_twice_is_an_error() {
        for text in [
            "argon2:$argon2id$v=1984$m=102,t=1018,p=8333,t=1018,p=833333332,t=1",
            "argon2:$argon2id$v=19$m=64,t=1,p=1,p=1$c2FsdHNhbHQ$ZmFrZWRpZ2VzdGZha2VkaWdlc3Q",
            "argon2:$argon2id$v=19$m=64,m=64,t=1,p=1$c2FsdHNhbHQ$ZmFrZWRpZ2VzdGZha2VkaWdlc3Q",
        ] {
            let e = text.parse::<PasswordHash>().unwrap_err();
            assert!(e.contains("is given twice"), "{text}: {e}");
        }
    }

    #[test]
    fn wrong_digest_length_is_malformed() {
        assert!(
            "sha256:abc:a68df677475c2b47b6e86d0467eec97ac5f4b85a"
                .parse::<PasswordHash>()
                .is_err()
        );
        assert!(
            "argon2:$argon2id$v=19$m=10240,t=10,p=8$c2FsdHNhbHQ"
                .parse::<PasswordHash>()
                .is_err()
        );
    }

    #[test]
    fn weak_passwords_are_named() {
        assert!(weakness("abc").unwrap().contains("3 character(s)"));
        assert!(weakness("Password1").unwrap().contains("most common"));
        assert!(weakness("ünïcödé").is_some(), "7 characters, more bytes");
        assert_eq!(weakness("correct horse"), None);
        assert_eq!(weakness("ünïcödé!"), None);
    }
}
