//! Memory-mapped safetensors checkpoints, single file or sharded, with every tensor's file
//! recorded so that errors can name it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::TensorInfo};

use crate::error::{LoadError, Result};

struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
}

/// A read-only view of one stored tensor.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub name: &'a str,
    pub file: &'a Path,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    /// Little-endian element bytes, row-major.
    pub bytes: &'a [u8],
}

/// All tensors of a model folder, memory-mapped.
pub struct Checkpoint {
    shards: Vec<Shard>,
    /// name -> (shard index, header info); sorted for stable reports.
    tensors: BTreeMap<String, (usize, TensorInfo)>,
}

impl Checkpoint {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if index.is_file() {
            Self::open_index(dir, &index)
        } else if single.is_file() {
            Self::open_files(&[single], None)
        } else {
            Err(LoadError::NoWeights { dir: dir.to_path_buf() })
        }
    }

    fn open_index(dir: &Path, index: &Path) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: HashMap<String, String>,
        }
        let text = std::fs::read_to_string(index).map_err(|source| LoadError::Io {
            path: index.to_path_buf(),
            source,
        })?;
        let parsed: Index = serde_json::from_str(&text).map_err(|source| LoadError::Json {
            path: index.to_path_buf(),
            source,
        })?;
        let mut files: Vec<String> = parsed.weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        let expected: HashMap<String, PathBuf> = parsed
            .weight_map
            .into_iter()
            .map(|(name, file)| (name, dir.join(file)))
            .collect();
        Self::open_files(&paths, Some((index, expected)))
    }

    fn open_files(
        paths: &[PathBuf],
        index: Option<(&Path, HashMap<String, PathBuf>)>,
    ) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut tensors = BTreeMap::new();
        for (i, path) in paths.iter().enumerate() {
            let io = |source| LoadError::Io { path: path.clone(), source };
            let file = File::open(path).map_err(io)?;
            // SAFETY: the file is opened read-only and the map is only read. A checkpoint
            // modified by another process while it is mapped is outside what we guard against.
            let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
            let (header_len, metadata) =
                SafeTensors::read_metadata(&mmap).map_err(|e| LoadError::Safetensors {
                    path: path.clone(),
                    message: describe_safetensors_error(&e),
                })?;
            for (name, info) in metadata.tensors() {
                if tensors.insert(name.clone(), (i, info.clone())).is_some() {
                    return Err(LoadError::Safetensors {
                        path: path.clone(),
                        message: format!("tensor `{name}` is stored in more than one shard"),
                    });
                }
            }
            shards.push(Shard { path: path.clone(), mmap, data_start: 8 + header_len });
        }
        if let Some((index_path, expected)) = index {
            for (name, file) in expected {
                match tensors.get(&name) {
                    Some((i, _)) if shards[*i].path == file => {}
                    _ => {
                        return Err(LoadError::IndexMismatch {
                            path: index_path.to_path_buf(),
                            tensor: name,
                            file,
                        });
                    }
                }
            }
        }
        Ok(Self { shards, tensors })
    }

    /// SHA-256 (hex) of `dir`'s `config.json` and of every weight file this checkpoint reads
    /// (`model.safetensors`, or the index's shards, in name order): the key of cached plans.
    pub fn fingerprint(&self, dir: &Path) -> Result<String> {
        use sha2::{Digest, Sha256};
        let config = dir.join("config.json");
        let text = std::fs::read(&config).map_err(|source| LoadError::Io { path: config, source })?;
        let mut hash = Sha256::new();
        hash.update(&text);
        for shard in &self.shards {
            hash.update(shard.path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
            hash.update(&shard.mmap[..]);
        }
        Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The tensor called `name`, if stored.
    pub fn get(&self, name: &str) -> Option<TensorRef<'_>> {
        let (key, (shard, info)) = self.tensors.get_key_value(name)?;
        let shard = &self.shards[*shard];
        let (start, end) = info.data_offsets;
        Some(TensorRef {
            name: key,
            file: &shard.path,
            dtype: info.dtype,
            shape: &info.shape,
            bytes: &shard.mmap[shard.data_start + start..shard.data_start + end],
        })
    }

    /// Every stored tensor, in name order.
    pub fn iter(&self) -> impl Iterator<Item = TensorRef<'_>> {
        self.tensors.keys().filter_map(|n| self.get(n))
    }

    /// Path used in messages for a tensor that should exist but does not.
    pub fn location(&self) -> PathBuf {
        match self.shards.as_slice() {
            [one] => one.path.clone(),
            _ => self
                .shards
                .first()
                .and_then(|s| s.path.parent())
                .map(|d| d.join("model.safetensors.index.json"))
                .unwrap_or_default(),
        }
    }
}

fn describe_safetensors_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError::*;
    match e {
        MetadataIncompleteBuffer | InvalidHeaderLength | HeaderTooSmall => {
            format!("{e} (the file is truncated or padded)")
        }
        other => other.to_string(),
    }
}

impl TensorRef<'_> {
    /// Number of non-finite elements and the flat index of the first, for float dtypes.
    pub fn non_finite(&self) -> (usize, Option<usize>) {
        fn scan<const N: usize>(bytes: &[u8], is_bad: impl Fn([u8; N]) -> bool) -> (usize, Option<usize>) {
            let mut count = 0;
            let mut first = None;
            for (i, chunk) in bytes.chunks_exact(N).enumerate() {
                if is_bad(chunk.try_into().unwrap()) {
                    count += 1;
                    first.get_or_insert(i);
                }
            }
            (count, first)
        }
        match self.dtype {
            Dtype::BF16 => scan::<2>(self.bytes, |b| u16::from_le_bytes(b) & 0x7f80 == 0x7f80),
            Dtype::F16 => scan::<2>(self.bytes, |b| u16::from_le_bytes(b) & 0x7c00 == 0x7c00),
            Dtype::F32 => {
                scan::<4>(self.bytes, |b| u32::from_le_bytes(b) & 0x7f80_0000 == 0x7f80_0000)
            }
            _ => (0, None),
        }
    }
}
