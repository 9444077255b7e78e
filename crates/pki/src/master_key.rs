//! The master key: 32 random bytes that seal platform secrets at rest with
//! AES-256-GCM, starting with the CA's private key.
//!
//! Every replica of one cluster needs the same master key, so an operator
//! either copies `<data_dir>/master.key` or passes the key as base64.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// Name of the key file inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Format version written as the first byte of every sealed value.
const SEAL_VERSION: u8 = 1;

/// Length of the AES-GCM authentication tag appended to the ciphertext.
const TAG_LEN: usize = 16;

/// The key that seals secrets stored in the database.
///
/// `Debug` prints `MasterKey([redacted])`, never the key.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; MASTER_KEY_LEN],
}

/// Errors from reading or creating a master key.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key must be {MASTER_KEY_LEN} bytes, got {0}")]
    InvalidLength(usize),
    #[error("master key is not valid base64: {0}")]
    InvalidBase64(base64::DecodeError),
    #[error("failed to read master key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to write master key file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A sealed value that could not be opened: it was altered, was sealed
/// with another key or associated data, or is not a sealed value at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to open sealed data: wrong key, wrong associated data or corrupted data")]
pub struct OpenError;

impl MasterKey {
    /// Generates a new key from the thread-local CSPRNG, which the
    /// operating system seeds.
    pub fn generate() -> Self {
        let mut bytes = [0u8; MASTER_KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        Self { bytes }
    }

    /// Builds a key from exactly [`MASTER_KEY_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MasterKeyError> {
        let bytes: [u8; MASTER_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| MasterKeyError::InvalidLength(bytes.len()))?;
        Ok(Self { bytes })
    }

    /// Decodes a key from standard base64, ignoring surrounding whitespace.
    pub fn from_base64(encoded: &str) -> Result<Self, MasterKeyError> {
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(MasterKeyError::InvalidBase64)?;
        Self::from_bytes(&bytes)
    }

    /// Encodes the key as standard base64, the form `--master-key` takes.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.bytes)
    }

    /// Reads `<data_dir>/master.key`, creating it with a new key when it
    /// does not exist.
    ///
    /// The file contains the key in base64 and a newline; a file of exactly
    /// 32 raw bytes is read as well. A new file is written to a temporary
    /// file with mode 0600 and renamed into place, so a crash never leaves
    /// a partial key behind. Returns the key and whether it was created.
    pub fn load_or_create(data_dir: &Path) -> Result<(Self, bool), MasterKeyError> {
        let path = data_dir.join(MASTER_KEY_FILE);
        match std::fs::read(&path) {
            Ok(contents) => Ok((Self::from_file_contents(&contents)?, false)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                key.write_new_file(&path)?;
                // Another process may have created the file first; the
                // file on disk is the key of record.
                let contents = std::fs::read(&path).map_err(|source| MasterKeyError::Read {
                    path: path.clone(),
                    source,
                })?;
                let stored = Self::from_file_contents(&contents)?;
                let created = stored.bytes == key.bytes;
                Ok((stored, created))
            }
            Err(source) => Err(MasterKeyError::Read { path, source }),
        }
    }

    fn from_file_contents(contents: &[u8]) -> Result<Self, MasterKeyError> {
        if contents.len() == MASTER_KEY_LEN {
            return Self::from_bytes(contents);
        }
        let text = String::from_utf8_lossy(contents);
        Self::from_base64(&text)
    }

    /// Writes the key to a temporary file beside `path`, then moves it to
    /// `path` unless that already exists.
    fn write_new_file(&self, path: &Path) -> Result<(), MasterKeyError> {
        let write_error = |source| MasterKeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(write_error)?;
        let mut suffix = [0u8; 8];
        rand::rng().fill_bytes(&mut suffix);
        let temp = dir.join(format!(
            ".{MASTER_KEY_FILE}.{:016x}.tmp",
            u64::from_le_bytes(suffix)
        ));
        let result = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.mode(0o600);
            }
            let mut file = options.open(&temp)?;
            file.write_all(format!("{}\n", self.to_base64()).as_bytes())?;
            file.sync_all()?;
            // A hard link fails when `path` exists, so a key that another
            // process wrote in the meantime is never replaced, as a rename
            // would replace it. File systems without hard links get the
            // rename.
            match std::fs::hard_link(&temp, path) {
                Ok(()) => Ok(()),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(_) => std::fs::rename(&temp, path),
            }
        })();
        let _ = std::fs::remove_file(&temp);
        result.map_err(write_error)
    }

    fn aead_key(&self) -> LessSafeKey {
        let unbound = UnboundKey::new(&AES_256_GCM, &self.bytes)
            .expect("a 32-byte key is valid for AES-256-GCM");
        LessSafeKey::new(unbound)
    }

    /// Encrypts and authenticates `plaintext` with AES-256-GCM.
    ///
    /// `associated_data` is authenticated but not stored, so `open` must
    /// be given the same bytes. It binds a sealed value to its use, such as
    /// a table and row. The output is a version byte (1), a random 96-bit
    /// nonce, and the ciphertext followed by the 128-bit tag.
    pub fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut in_out = plaintext.to_vec();
        self.aead_key()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data),
                &mut in_out,
            )
            .expect("AES-GCM seals any input shorter than 64 GiB");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        sealed.push(SEAL_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&in_out);
        sealed
    }

    /// Decrypts a value produced by [`MasterKey::seal`] with the same key
    /// and associated data.
    pub fn open(&self, sealed: &[u8], associated_data: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (&version, rest) = sealed.split_first().ok_or(OpenError)?;
        if version != SEAL_VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError)?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = self
            .aead_key()
            .open_in_place(nonce, Aad::from(associated_data), &mut in_out)
            .map_err(|_| OpenError)?;
        Ok(plaintext.to_vec())
    }

    /// Derives a 32-byte key for `purpose` (such as `files.download`) with
    /// HKDF-SHA256, so each use of the master key gets its own key and
    /// every replica with the same master key derives the same one.
    pub fn derive_key(&self, purpose: &str) -> agyn_core::Secret<[u8; 32]> {
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"agyn master key");
        let info = [purpose.as_bytes()];
        let mut derived = [0u8; 32];
        salt.extract(&self.bytes)
            .expand(&info, Len32)
            .and_then(|okm| okm.fill(&mut derived))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        agyn_core::Secret::new(derived)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"secret value", b"row 1");
        assert_eq!(sealed[0], SEAL_VERSION);
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 12 + TAG_LEN);
        assert_eq!(key.open(&sealed, b"row 1").unwrap(), b"secret value");
    }

    #[test]
    fn derived_keys_depend_on_key_and_purpose() {
        let key = MasterKey::generate();
        let download = key.derive_key("files.download");
        assert_eq!(download.expose(), key.derive_key("files.download").expose());
        assert_ne!(download.expose(), key.derive_key("other").expose());
        let other = MasterKey::generate();
        assert_ne!(
            download.expose(),
            other.derive_key("files.download").expose()
        );
        assert_ne!(download.expose(), &key.bytes);
    }

    #[test]
    fn seal_uses_a_fresh_nonce() {
        let key = MasterKey::generate();
        assert_ne!(key.seal(b"x", b""), key.seal(b"x", b""));
    }

    #[test]
    fn open_rejects_tampered_bytes() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"secret value", b"aad");
        for index in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x01;
            assert_eq!(
                key.open(&tampered, b"aad"),
                Err(OpenError),
                "flipped byte {index}"
            );
        }
    }

    #[test]
    fn open_rejects_truncated_input() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"", b"");
        assert_eq!(key.open(&sealed, b"").unwrap(), b"");
        assert_eq!(key.open(&sealed[..sealed.len() - 1], b""), Err(OpenError));
        assert_eq!(key.open(&[], b""), Err(OpenError));
    }

    #[test]
    fn open_rejects_wrong_associated_data() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"secret value", b"platform_ca 1");
        assert_eq!(key.open(&sealed, b"platform_ca 2"), Err(OpenError));
        assert_eq!(key.open(&sealed, b""), Err(OpenError));
    }

    #[test]
    fn open_rejects_wrong_key() {
        let sealed = MasterKey::generate().seal(b"secret value", b"");
        assert_eq!(MasterKey::generate().open(&sealed, b""), Err(OpenError));
    }

    #[test]
    fn debug_redacts_key() {
        let key = MasterKey::from_bytes(&[0xab; MASTER_KEY_LEN]).unwrap();
        let printed = format!("{key:?}");
        assert_eq!(printed, "MasterKey([redacted])");
        assert!(!printed.contains(&key.to_base64()));
    }

    #[test]
    fn wrong_length_is_rejected() {
        let error = MasterKey::from_bytes(&[0; 16]).unwrap_err();
        assert_eq!(error.to_string(), "master key must be 32 bytes, got 16");
        let error = MasterKey::from_base64(&BASE64.encode([0u8; 31])).unwrap_err();
        assert_eq!(error.to_string(), "master key must be 32 bytes, got 31");
        let error = MasterKey::from_base64("not base64!").unwrap_err();
        assert!(matches!(error, MasterKeyError::InvalidBase64(_)), "{error}");
    }

    #[test]
    fn base64_round_trips() {
        let key = MasterKey::generate();
        let decoded = MasterKey::from_base64(&format!(" {}\n", key.to_base64())).unwrap();
        assert_eq!(decoded.bytes, key.bytes);
    }

    fn temp_dir(label: &str) -> PathBuf {
        let mut suffix = [0u8; 8];
        rand::rng().fill_bytes(&mut suffix);
        let dir = std::env::temp_dir().join(format!(
            "agyn-master-key-{label}-{:016x}",
            u64::from_le_bytes(suffix)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = temp_dir("once");
        let (first, created) = MasterKey::load_or_create(&dir).unwrap();
        assert!(created);
        let (second, created) = MasterKey::load_or_create(&dir).unwrap();
        assert!(!created);
        assert_eq!(first.bytes, second.bytes);
        let contents = std::fs::read_to_string(dir.join(MASTER_KEY_FILE)).unwrap();
        assert_eq!(contents, format!("{}\n", first.to_base64()));
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name != MASTER_KEY_FILE)
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[cfg(unix)]
    #[test]
    fn key_file_has_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = temp_dir("mode");
        MasterKey::load_or_create(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(MASTER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn raw_key_file_is_read() {
        let dir = temp_dir("raw");
        std::fs::write(dir.join(MASTER_KEY_FILE), [7u8; MASTER_KEY_LEN]).unwrap();
        let (key, created) = MasterKey::load_or_create(&dir).unwrap();
        assert!(!created);
        assert_eq!(key.bytes, [7u8; MASTER_KEY_LEN]);
    }

    #[test]
    fn invalid_key_file_is_rejected() {
        let dir = temp_dir("invalid");
        std::fs::write(dir.join(MASTER_KEY_FILE), BASE64.encode([1u8; 20])).unwrap();
        let error = MasterKey::load_or_create(&dir).unwrap_err();
        assert_eq!(error.to_string(), "master key must be 32 bytes, got 20");
    }

    #[test]
    fn unreadable_key_file_is_rejected() {
        let dir = temp_dir("unreadable");
        // A directory in place of the file cannot be read as one.
        std::fs::create_dir(dir.join(MASTER_KEY_FILE)).unwrap();
        let error = MasterKey::load_or_create(&dir).unwrap_err();
        assert!(matches!(error, MasterKeyError::Read { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("failed to read master key file "),
            "{error}"
        );
    }
}
