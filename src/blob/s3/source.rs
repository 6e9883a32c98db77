//! A bucket read as a tree of keys, for importing the original storage
//! element's S3 layout (`artfs import s3://BUCKET/FOLDER`, docs/IMPORT.md):
//! its files and their `.attr.json` sidecars under `FOLDER/YYYY/MM/DD/HH/`.
//! Read only; the client is the store's (same endpoint, region, credential
//! and retry rules).

use std::io::{self, Write};
use std::path::Path;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{S3Config, S3Store};

pub struct BucketTree {
    cfg: S3Config,
    client: AmazonS3,
    rt: tokio::runtime::Handle,
}

impl BucketTree {
    /// Reach the bucket of `cfg` (its prefix is the tree's root). `rt`
    /// runs the requests; call from outside it.
    pub fn open(cfg: S3Config, rt: tokio::runtime::Handle) -> io::Result<BucketTree> {
        let client = S3Store::client(&cfg, Default::default())?;
        Ok(BucketTree { cfg, client, rt })
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self) -> String {
        self.cfg.url()
    }

    /// The key of `rel` as listed: taken as it is (`Key::from` would
    /// percent-encode what the original wrote, such as non-ASCII names,
    /// and name another key).
    fn key(&self, rel: &str) -> io::Result<Key> {
        let full = match self.cfg.prefix.is_empty() {
            true => rel.to_string(),
            false => format!("{}/{rel}", self.cfg.prefix),
        };
        Key::parse(&full).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}/{rel}: not a key this client can ask for: {e}",
                    self.url()
                ),
            )
        })
    }

    fn failed(&self, what: &str, rel: &str, e: object_store::Error) -> io::Error {
        let kind = match e {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("S3 {what} {}/{rel}: {e}", self.url()))
    }

    /// Every key under the root, relative to it.
    pub fn keys(&self) -> io::Result<Vec<String>> {
        let prefix = (!self.cfg.prefix.is_empty()).then(|| Key::from(self.cfg.prefix.as_str()));
        let client = self.client.clone();
        let listed: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(async move { client.list(prefix.as_ref()).try_collect().await })
            .map_err(|e| self.failed("list", "", e))?;
        let root = format!("{}/", self.cfg.prefix);
        Ok(listed
            .into_iter()
            .map(|m| m.location.to_string())
            .map(|k| match self.cfg.prefix.is_empty() {
                true => k,
                false => k.strip_prefix(&root).unwrap_or(&k).to_string(),
            })
            .collect())
    }

    /// The bytes of `rel` (a sidecar: small).
    pub fn get(&self, rel: &str) -> io::Result<Vec<u8>> {
        let (client, key) = (self.client.clone(), self.key(rel)?);
        self.rt
            .block_on(async move { client.get(&key).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| self.failed("get", rel, e))
    }

    /// Stream `rel` into a new file at `to`, synced.
    pub fn download(&self, rel: &str, to: &Path) -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)?;
        let (client, key) = (self.client.clone(), self.key(rel)?);
        let mut stream = self
            .rt
            .block_on(async move { client.get(&key).await.map(|r| r.into_stream()) })
            .map_err(|e| self.failed("get", rel, e))?;
        while let Some(chunk) = self
            .rt
            .block_on(stream.try_next())
            .map_err(|e| self.failed("get", rel, e))?
        {
            file.write_all(&chunk)?;
        }
        file.sync_all()
    }
}
