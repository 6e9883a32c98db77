//! Keys: the public keys tokens are verified with (one PEM key or a JWKS
//! document) and the private key tokens are minted with.
//!
//! A key's algorithm follows from the key itself (RSA: RS256, EC P-256:
//! ES256, Ed25519: EdDSA), never from a token. Every key is parsed and
//! checked with the RustCrypto crate that will use it, so a damaged file
//! fails at load time, while the previous keys are still serving.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use pkcs8::{
    DecodePrivateKey, DecodePublicKey, ObjectIdentifier, PrivateKeyInfo, SubjectPublicKeyInfoRef,
};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;

use super::error::{InvalidReason, KeyError};
use super::KeySource;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Smaller RSA moduli are refused, for verifying and for minting. (The
/// `rsa` crate refuses moduli over 4096 bits itself.)
const MIN_RSA_BITS: usize = 2048;

/// The signature algorithm a key implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum KeyAlg {
    /// RSA PKCS#1 v1.5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl KeyAlg {
    /// The JOSE name, as in a token's `alg` header.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::Rs256 => "RS256",
            KeyAlg::Es256 => "ES256",
            KeyAlg::EdDsa => "EdDSA",
        }
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            KeyAlg::Rs256 => Algorithm::RS256,
            KeyAlg::Es256 => Algorithm::ES256,
            KeyAlg::EdDsa => Algorithm::EdDSA,
        }
    }
}

impl std::fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One verification key.
pub(crate) struct VerifyKey {
    pub alg: KeyAlg,
    pub kid: Option<String>,
    pub key: DecodingKey,
}

/// The keys loaded from one key source; replaced whole on reload.
pub(crate) struct KeySet {
    keys: Vec<VerifyKey>,
    /// JWKS: keys are chosen by `kid`. PEM: the single key serves every token.
    by_kid: bool,
}

impl KeySet {
    pub fn load(source: &KeySource) -> Result<KeySet, KeyError> {
        let path = source.path();
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| KeyError::Invalid {
            path: path.to_owned(),
            reason,
        };
        match source {
            KeySource::Pem(_) => {
                let key = public_key_from_pem(&bytes).map_err(invalid)?;
                Ok(KeySet {
                    keys: vec![key],
                    by_kid: false,
                })
            }
            KeySource::Jwks(_) => {
                let keys = keys_from_jwks(&bytes, path).map_err(invalid)?;
                Ok(KeySet { keys, by_kid: true })
            }
        }
    }

    /// The key a token with header `kid` must verify against.
    pub fn select(&self, kid: Option<&str>) -> Result<&VerifyKey, InvalidReason> {
        if !self.by_kid {
            return Ok(&self.keys[0]);
        }
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or(InvalidReason::UnknownKid),
            None if self.keys.len() == 1 => Ok(&self.keys[0]),
            None => Err(InvalidReason::MissingKid),
        }
    }

    /// For logs: `RS256` or `kid-a (RS256), kid-b (EdDSA)`.
    pub fn describe(&self) -> String {
        self.keys
            .iter()
            .map(|k| match &k.kid {
                Some(kid) => format!("{kid} ({})", k.alg),
                None => k.alg.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The single key block of a PEM file. `EC PARAMETERS` blocks (written by
/// `openssl ecparam -genkey`) are skipped.
fn single_pem(bytes: &[u8]) -> Result<pem::Pem, String> {
    let blocks = pem::parse_many(bytes).map_err(|e| format!("not a PEM file: {e}"))?;
    let mut keys: Vec<pem::Pem> = blocks
        .into_iter()
        .filter(|b| b.tag() != "EC PARAMETERS")
        .collect();
    match keys.len() {
        0 => Err("no PEM block found".to_string()),
        1 => Ok(keys.remove(0)),
        n => Err(format!("{n} PEM blocks; expected exactly one key")),
    }
}

fn public_key_from_pem(bytes: &[u8]) -> Result<VerifyKey, String> {
    let block = single_pem(bytes)?;
    let der = block.contents();
    let (alg, key) = match block.tag() {
        "PUBLIC KEY" => public_key_from_spki(der)?,
        "RSA PUBLIC KEY" => {
            let key = rsa::RsaPublicKey::from_pkcs1_der(der)
                .map_err(|e| format!("invalid RSA public key: {e}"))?;
            (KeyAlg::Rs256, rsa_decoding_key(&key)?)
        }
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
            return Err(
                "holds a private key; the verifier takes only the public key \
                 (openssl pkey -in PRIVATE.pem -pubout)"
                    .to_string(),
            )
        }
        "CERTIFICATE" => {
            return Err("certificates are not supported; extract the public key \
                 (openssl x509 -in CERT.pem -pubkey -noout)"
                .to_string())
        }
        other => return Err(format!("unsupported PEM block {other:?}")),
    };
    Ok(VerifyKey {
        alg,
        kid: None,
        key,
    })
}

fn public_key_from_spki(der: &[u8]) -> Result<(KeyAlg, DecodingKey), String> {
    let spki =
        SubjectPublicKeyInfoRef::try_from(der).map_err(|e| format!("invalid public key: {e}"))?;
    match spki.algorithm.oid {
        OID_RSA => {
            let key = rsa::RsaPublicKey::from_public_key_der(der)
                .map_err(|e| format!("invalid RSA public key: {e}"))?;
            Ok((KeyAlg::Rs256, rsa_decoding_key(&key)?))
        }
        OID_EC => {
            check_p256(spki.algorithm.parameters_oid().ok())?;
            let key = p256::PublicKey::from_public_key_der(der)
                .map_err(|e| format!("invalid EC P-256 public key: {e}"))?;
            // The ECDSA verifier takes the SEC1 point.
            let point = key.to_encoded_point(false);
            Ok((KeyAlg::Es256, DecodingKey::from_ec_der(point.as_bytes())))
        }
        OID_ED25519 => {
            let key = ed25519_dalek::VerifyingKey::from_public_key_der(der)
                .map_err(|e| format!("invalid Ed25519 public key: {e}"))?;
            Ok((KeyAlg::EdDsa, DecodingKey::from_ed_der(key.as_bytes())))
        }
        other => Err(unsupported_algorithm(other)),
    }
}

fn check_p256(curve: Option<ObjectIdentifier>) -> Result<(), String> {
    if curve == Some(OID_P256) {
        Ok(())
    } else {
        Err("EC key on a curve other than P-256 (only ES256 is supported)".to_string())
    }
}

fn unsupported_algorithm(oid: ObjectIdentifier) -> String {
    format!("unsupported key algorithm {oid} (expected RSA, EC P-256 or Ed25519)")
}

fn check_rsa_size(bits: usize) -> Result<(), String> {
    if bits < MIN_RSA_BITS {
        Err(format!(
            "RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"
        ))
    } else {
        Ok(())
    }
}

fn rsa_decoding_key(key: &rsa::RsaPublicKey) -> Result<DecodingKey, String> {
    check_rsa_size(key.size() * 8)?;
    Ok(DecodingKey::from_rsa_raw_components(
        &key.n().to_bytes_be(),
        &key.e().to_bytes_be(),
    ))
}

/// The usable signature keys of a JWKS document. Keys this verifier cannot
/// use (encryption keys, symmetric keys, other curves) are skipped with a
/// warning, as identity providers publish them side by side; a document
/// with no usable key, or two keys with the same `kid`, is refused.
fn keys_from_jwks(bytes: &[u8], path: &Path) -> Result<Vec<VerifyKey>, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let doc: Document =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys: Vec<VerifyKey> = Vec::new();
    for (i, raw) in doc.keys.into_iter().enumerate() {
        match key_from_jwk(raw) {
            Ok(key) => {
                if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
                    return Err(format!("two keys share the kid of key #{i}"));
                }
                keys.push(key);
            }
            Err(why) => tracing::warn!(path = %path.display(), "JWKS key #{i} skipped: {why}"),
        }
    }
    if keys.is_empty() {
        return Err("no usable signature key (RSA, EC P-256 or Ed25519)".to_string());
    }
    if keys.len() > 1 && keys.iter().any(|k| k.kid.is_none()) {
        tracing::warn!(
            path = %path.display(),
            "a JWKS key has no kid; with several keys no token can select it"
        );
    }
    Ok(keys)
}

fn key_from_jwk(raw: serde_json::Value) -> Result<VerifyKey, String> {
    let jwk: Jwk = serde_json::from_value(raw).map_err(|e| format!("not a usable JWK: {e}"))?;
    if let Some(usage) = &jwk.common.public_key_use {
        if *usage != PublicKeyUse::Signature {
            return Err("not a signature key (\"use\")".to_string());
        }
    }
    let (alg, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = b64url(&p.n, "n")?;
            let e = b64url(&p.e, "e")?;
            let key = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(&n),
                rsa::BigUint::from_bytes_be(&e),
            )
            .map_err(|e| format!("invalid RSA key: {e}"))?;
            (KeyAlg::Rs256, rsa_decoding_key(&key)?)
        }
        AlgorithmParameters::EllipticCurve(p) => {
            if p.curve != EllipticCurve::P256 {
                return Err("EC key on a curve other than P-256".to_string());
            }
            let (x, y) = (b64url(&p.x, "x")?, b64url(&p.y, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("EC P-256 coordinates must be 32 bytes".to_string());
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            p256::PublicKey::from_sec1_bytes(&point)
                .map_err(|_| "EC point is not on P-256".to_string())?;
            (KeyAlg::Es256, DecodingKey::from_ec_der(&point))
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Err("OKP key on a curve other than Ed25519".to_string());
            }
            let x: [u8; 32] = b64url(&p.x, "x")?
                .try_into()
                .map_err(|_| "Ed25519 key must be 32 bytes".to_string())?;
            ed25519_dalek::VerifyingKey::from_bytes(&x)
                .map_err(|e| format!("invalid Ed25519 key: {e}"))?;
            (KeyAlg::EdDsa, DecodingKey::from_ed_der(&x))
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (oct) keys are never accepted".to_string())
        }
    };
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RS256) => Some(KeyAlg::Rs256),
        Some(KeyAlgorithm::ES256) => Some(KeyAlg::Es256),
        Some(KeyAlgorithm::EdDSA) => Some(KeyAlg::EdDsa),
        Some(_) => return Err(format!("declared alg is not {alg}")),
    };
    if declared.is_some_and(|d| d != alg) {
        return Err(format!("declared alg is not {alg}"));
    }
    Ok(VerifyKey {
        alg,
        kid: jwk.common.key_id,
        key,
    })
}

fn b64url(s: &str, what: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("{what} is not base64url"))
}

/// A private key to mint with.
pub(crate) struct SignKey {
    pub alg: KeyAlg,
    pub key: EncodingKey,
}

/// Parse a private key PEM: PKCS#8 (`PRIVATE KEY`, what `openssl genpkey`
/// writes) for all three types, or the traditional `RSA PRIVATE KEY` and
/// `EC PRIVATE KEY`.
pub(crate) fn signing_key_from_pem(bytes: &[u8]) -> Result<SignKey, String> {
    let block = single_pem(bytes)?;
    let der = block.contents();
    match block.tag() {
        "PRIVATE KEY" => {
            let info =
                PrivateKeyInfo::try_from(der).map_err(|e| format!("invalid private key: {e}"))?;
            match info.algorithm.oid {
                OID_RSA => {
                    let key = rsa::RsaPrivateKey::from_pkcs8_der(der)
                        .map_err(|e| format!("invalid RSA private key: {e}"))?;
                    rsa_signing_key(&key)
                }
                OID_EC => {
                    check_p256(info.algorithm.parameters_oid().ok())?;
                    p256::SecretKey::from_pkcs8_der(der)
                        .map_err(|e| format!("invalid EC P-256 private key: {e}"))?;
                    // The ECDSA signer takes the PKCS#8 document.
                    Ok(SignKey {
                        alg: KeyAlg::Es256,
                        key: EncodingKey::from_ec_der(der),
                    })
                }
                OID_ED25519 => {
                    ed25519_dalek::SigningKey::from_pkcs8_der(der)
                        .map_err(|e| format!("invalid Ed25519 private key: {e}"))?;
                    Ok(SignKey {
                        alg: KeyAlg::EdDsa,
                        key: EncodingKey::from_ed_der(der),
                    })
                }
                other => Err(unsupported_algorithm(other)),
            }
        }
        "RSA PRIVATE KEY" => {
            let key = rsa::RsaPrivateKey::from_pkcs1_der(der)
                .map_err(|e| format!("invalid RSA private key: {e}"))?;
            rsa_signing_key(&key)
        }
        "EC PRIVATE KEY" => {
            let key = p256::SecretKey::from_sec1_der(der)
                .map_err(|e| format!("invalid or non-P-256 EC private key: {e}"))?;
            let doc = p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&key)
                .map_err(|e| format!("cannot convert the EC key: {e}"))?;
            Ok(SignKey {
                alg: KeyAlg::Es256,
                key: EncodingKey::from_ec_der(doc.as_bytes()),
            })
        }
        "ENCRYPTED PRIVATE KEY" => Err("encrypted private keys are not supported; \
             decrypt it first (openssl pkey -in KEY.pem -out PLAIN.pem)"
            .to_string()),
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {
            Err("holds a public key; minting needs the private key".to_string())
        }
        other => Err(format!("unsupported PEM block {other:?}")),
    }
}

fn rsa_signing_key(key: &rsa::RsaPrivateKey) -> Result<SignKey, String> {
    check_rsa_size(key.size() * 8)?;
    key.validate()
        .map_err(|e| format!("invalid RSA private key: {e}"))?;
    // The RSA signer takes the PKCS#1 document.
    let doc = key
        .to_pkcs1_der()
        .map_err(|e| format!("cannot convert the RSA key: {e}"))?;
    Ok(SignKey {
        alg: KeyAlg::Rs256,
        key: EncodingKey::from_rsa_der(doc.as_bytes()),
    })
}
