//! The model bundle, `OUT/model.npz`: everything a trained model is, in one file every command
//! reads and numpy opens with `np.load` (a zip of `.npy` arrays, stored uncompressed).
//!
//! | array | dtype, shape | what |
//! | --- | --- | --- |
//! | `format_version` | `<u4`, `()` | [`FORMAT_VERSION`]; a newer one is refused |
//! | `items` | `<f4`, `(n, K)` | the item rows, row `r` is movie `item_ids[r]` |
//! | `item_biases` | `<f4`, `(n,)` | item biases (zeros when the model has none) |
//! | `global_mean` | `<f4`, `()` | the training mean rating (0 when the model has no global mean) |
//! | `item_ids` | `<u4`, `(n,)` | raw MovieLens movie ids of the rows |
//! | `data_digest` | `<u8`, `()` | digest of the training data (its partition, or seen-user split) |
//! | `rounds` | `<u4`, `()` | training rounds done (0: `fedrecon centralized`'s model) |
//! | `config` | `<U…`, `()` | the run's configuration as TOML (`fedrecon config` text) |
//! | `implicit` | `<f4`, `(n + 1, K)` | only with `client.implicit`: row `r` is movie `item_ids[r]`'s implicit row, the last the mean row `m` |
//!
//! A user's predicted rating of row `r` is `global_mean + user_bias + item_biases[r] +
//! u · items[r]`, the user's `(u, user_bias)` reconstructed on their device with the
//! configuration's `client.reconstruction` and `client.user_l2` (with `client.implicit`, around
//! the prior mean `m + n^(-1/2) Σ implicit[j]` over the items `j` it reconstructs from). Rows
//! are keyed by raw movie
//! id, not by position: [`ModelBundle::align`] maps them onto a data set's dense ids and refuses
//! a data set whose movies differ, naming the first offending id.

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use crate::config::Config;
use crate::data::movielens::Ratings;

/// File name of the bundle inside a run directory.
pub const FILE: &str = "model.npz";

/// Format version written (and the newest read).
pub const FORMAT_VERSION: u32 = 1;

/// The largest array read from a bundle (untrusted input: a zip may claim any size).
const MAX_ARRAY_BYTES: u64 = 1 << 32;

/// A trained model with what is needed to use it safely on other data (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelBundle {
    /// The run's configuration, TOML text.
    pub config_toml: String,
    /// Embedding width.
    pub k: usize,
    /// Item rows, row-major `item_ids.len() × k`.
    pub items: Vec<f32>,
    /// One bias per row (zeros without item biases).
    pub item_biases: Vec<f32>,
    /// The global-mean term (0 without one).
    pub global_mean: f32,
    /// Raw MovieLens movie id of each row.
    pub item_ids: Vec<u32>,
    /// Digest of the training partition ([`crate::output::checkpoint`]'s data digest).
    pub data_digest: u64,
    /// Training rounds done.
    pub rounds: u32,
    /// With implicit feedback: one implicit row per item row, then the mean row, row-major
    /// `(item_ids.len() + 1) × k`; empty without.
    pub implicit: Vec<f32>,
}

/// A bundle's rows in a data set's dense item order, ready for the devices.
#[derive(Clone, Debug, PartialEq)]
pub struct AlignedModel {
    /// The bundle's configuration, parsed and validated.
    pub config: Config,
    /// Item rows by dense item id, row-major `items × k`.
    pub items: Vec<f32>,
    /// Item biases by dense item id (zeros without item biases).
    pub item_biases: Vec<f32>,
    /// The global-mean term.
    pub global_mean: f32,
    /// Implicit rows by dense item id, then the mean row; empty without implicit feedback.
    pub implicit: Vec<f32>,
}

impl ModelBundle {
    /// Rows in the bundle.
    pub fn len(&self) -> usize {
        self.item_ids.len()
    }

    /// True for a bundle without rows.
    pub fn is_empty(&self) -> bool {
        self.item_ids.is_empty()
    }

    /// The bundle's configuration, parsed and validated (`origin` names the file in errors).
    pub fn config(&self, origin: &str) -> Result<Config> {
        let cfg = Config::from_toml_str(&self.config_toml, &format!("{origin} (config)"), None)?;
        cfg.validate()
            .with_context(|| format!("{origin}: the configuration"))?;
        ensure!(
            cfg.model.k == self.k,
            "{origin}: the configuration says model.k = {} but the item rows have {} columns",
            cfg.model.k,
            self.k
        );
        Ok(cfg)
    }

    /// The bundle's bytes (deterministic: no timestamps).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let n = self.item_ids.len();
        ensure!(
            self.items.len() == n * self.k
                && self.item_biases.len() == n
                && (self.implicit.is_empty() || self.implicit.len() == (n + 1) * self.k),
            "internal: a bundle of {n} ids has {} row values (k = {}), {} biases and {} implicit \
             values",
            self.items.len(),
            self.k,
            self.item_biases.len(),
            self.implicit.len()
        );
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let chars: Vec<u8> = self
            .config_toml
            .chars()
            .flat_map(|c| u32::from(c).to_le_bytes())
            .collect();
        let config_descr = format!("<U{}", self.config_toml.chars().count().max(1));
        let mut arrays: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = vec![
            (
                "format_version",
                "<u4",
                vec![],
                FORMAT_VERSION.to_le_bytes().to_vec(),
            ),
            ("items", "<f4", vec![n, self.k], f32s(&self.items)),
            ("item_biases", "<f4", vec![n], f32s(&self.item_biases)),
            ("global_mean", "<f4", vec![], f32s(&[self.global_mean])),
            (
                "item_ids",
                "<u4",
                vec![n],
                self.item_ids.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            (
                "data_digest",
                "<u8",
                vec![],
                self.data_digest.to_le_bytes().to_vec(),
            ),
            ("rounds", "<u4", vec![], self.rounds.to_le_bytes().to_vec()),
            (
                "config",
                &config_descr,
                vec![],
                if chars.is_empty() { vec![0; 4] } else { chars },
            ),
        ];
        if !self.implicit.is_empty() {
            arrays.push(("implicit", "<f4", vec![n + 1, self.k], f32s(&self.implicit)));
        }
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(self.items.len() * 4 >= u32::MAX as usize);
        for (name, descr, shape, body) in arrays {
            zip.start_file(format!("{name}.npy"), opts)?;
            zip.write_all(&super::npy_header_of(descr, &shape))?;
            zip.write_all(&body)?;
        }
        Ok(zip.finish()?.into_inner())
    }

    /// Writes the bundle to `path`, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes = self.encode()?;
        super::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// Parses a bundle's bytes (untrusted: every array's dtype and shape is checked).
    pub fn decode(bytes: &[u8]) -> Result<ModelBundle> {
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).context("not a zip (.npz) file")?;
        let has_implicit = zip.file_names().any(|f| f == "implicit.npy");
        let mut array = |name: &str| -> Result<(String, Vec<usize>, Vec<u8>)> {
            let mut f = zip
                .by_name(&format!("{name}.npy"))
                .with_context(|| format!("no array '{name}'"))?;
            ensure!(
                f.size() <= MAX_ARRAY_BYTES,
                "array '{name}' claims {} bytes",
                f.size()
            );
            let mut bytes = Vec::new();
            f.by_ref()
                .take(MAX_ARRAY_BYTES + 1)
                .read_to_end(&mut bytes)
                .with_context(|| format!("array '{name}' cannot be read"))?;
            let (descr, shape, body) =
                super::parse_npy_parts(&bytes).with_context(|| format!("array '{name}'"))?;
            Ok((descr, shape, body.to_vec()))
        };
        let mut typed = |name: &str, want: &str, dims: usize| -> Result<(Vec<usize>, Vec<u8>)> {
            let (descr, shape, body) = array(name)?;
            ensure!(
                descr == want && shape.len() == dims,
                "array '{name}' is '{descr}' of shape {shape:?}, expected '{want}' with {dims} \
                 dimension(s)"
            );
            Ok((shape, body))
        };
        let u32s = |b: &[u8]| -> Vec<u32> {
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let f32s = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let version = u32s(&typed("format_version", "<u4", 0)?.1)[0];
        ensure!(
            (1..=FORMAT_VERSION).contains(&version),
            "format_version {version}: this fedrecon reads versions 1 to {FORMAT_VERSION} \
             (a newer fedrecon wrote it?)"
        );
        let (shape, items) = typed("items", "<f4", 2)?;
        let (n, k) = (shape[0], shape[1]);
        let (bshape, biases) = typed("item_biases", "<f4", 1)?;
        let (ishape, ids) = typed("item_ids", "<u4", 1)?;
        ensure!(
            bshape[0] == n && ishape[0] == n,
            "items has {n} rows but item_biases {} and item_ids {}",
            bshape[0],
            ishape[0]
        );
        let global_mean = f32s(&typed("global_mean", "<f4", 0)?.1)[0];
        let digest = typed("data_digest", "<u8", 0)?.1;
        let rounds = u32s(&typed("rounds", "<u4", 0)?.1)[0];
        let implicit = if has_implicit {
            let (shape, body) = typed("implicit", "<f4", 2)?;
            ensure!(
                shape == [n + 1, k],
                "array 'implicit' has shape {shape:?}, expected ({}, {k}): one row per item and \
                 the mean row",
                n + 1
            );
            f32s(&body)
        } else {
            Vec::new()
        };
        let (descr, shape, text) = array("config")?;
        ensure!(
            descr.starts_with("<U") && shape.is_empty(),
            "array 'config' is '{descr}' of shape {shape:?}, expected a '<U' string"
        );
        let config_toml = u32s(&text)
            .into_iter()
            .take_while(|&c| c != 0)
            .map(|c| char::from_u32(c).context("array 'config' holds a non-character"))
            .collect::<Result<String>>()?;
        let item_ids = u32s(&ids);
        let mut seen = HashMap::with_capacity(n);
        for (row, &id) in item_ids.iter().enumerate() {
            if let Some(first) = seen.insert(id, row) {
                bail!("item_ids lists movie {id} twice (rows {first} and {row})");
            }
        }
        Ok(ModelBundle {
            config_toml,
            k,
            items: f32s(&items),
            item_biases: f32s(&biases),
            global_mean,
            item_ids,
            data_digest: u64::from_le_bytes(digest[..8].try_into().expect("8 bytes by shape")),
            rounds,
            implicit,
        })
    }

    /// Reads a bundle, with errors naming the file.
    pub fn read(path: &Path) -> Result<ModelBundle> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        ModelBundle::decode(&bytes)
            .with_context(|| format!("{}: not a fedrecon model bundle", path.display()))
    }

    /// The bundle's rows in `ratings`' dense item order, with its configuration. `model` and
    /// `data` name the bundle and the data set in errors. The data's movies must be exactly
    /// the model's (in any order): a movie of either that the other lacks is an error naming
    /// the first such id, so a model is never used on data it was not trained for.
    pub fn align(&self, ratings: &Ratings, model: &Path, data: &Path) -> Result<AlignedModel> {
        let origin = model.display().to_string();
        let config = self.config(&origin)?;
        let row_of: HashMap<u32, usize> = self
            .item_ids
            .iter()
            .enumerate()
            .map(|(r, &id)| (id, r))
            .collect();
        let raw = ratings.item_raw_ids();
        if let Some(&missing) = raw.iter().find(|id| !row_of.contains_key(id)) {
            bail!(
                "{}: movie {missing} is not in the model {origin} (trained on other data: \
                 its {} movies are not this data's {})",
                data.display(),
                self.len(),
                raw.len()
            );
        }
        if raw.len() != self.len() {
            let have: std::collections::HashSet<u32> = raw.iter().copied().collect();
            let extra = self
                .item_ids
                .iter()
                .find(|id| !have.contains(id))
                .expect("more distinct model ids than data ids, all data ids in the model");
            bail!(
                "{origin}: movie {extra} of the model is not in {} (the model was trained on \
                 other data: {} movies, this data has {})",
                data.display(),
                self.len(),
                raw.len()
            );
        }
        ensure!(
            config.client.implicit != self.implicit.is_empty(),
            "{origin}: the configuration says client.implicit = {} but the bundle {} implicit \
             rows",
            config.client.implicit,
            if self.implicit.is_empty() {
                "has no"
            } else {
                "has"
            }
        );
        let k = self.k;
        let mut items = Vec::with_capacity(raw.len() * k);
        let mut item_biases = Vec::with_capacity(raw.len());
        let mut implicit = Vec::with_capacity(self.implicit.len());
        for id in raw {
            let r = row_of[id];
            items.extend_from_slice(&self.items[r * k..(r + 1) * k]);
            item_biases.push(self.item_biases[r]);
            if !self.implicit.is_empty() {
                implicit.extend_from_slice(&self.implicit[r * k..(r + 1) * k]);
            }
        }
        if !self.implicit.is_empty() {
            implicit.extend_from_slice(&self.implicit[self.len() * k..]);
        }
        if !config.model.item_bias {
            ensure!(
                self.item_biases.iter().all(|&b| b == 0.0),
                "{origin}: the configuration has no item biases but item_biases is not zero"
            );
        }
        Ok(AlignedModel {
            config,
            items,
            item_biases,
            global_mean: self.global_mean,
            implicit,
        })
    }
}

/// Where the bundle of `--model PATH` is: `PATH` itself, `PATH/model.npz` for a run directory,
/// or the `model.npz` beside an `items.npy` (which holds no movie ids, so it is never read
/// alone).
pub fn locate(path: &Path) -> Result<PathBuf> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        let p = path.join(FILE);
        ensure!(
            p.is_file(),
            "{}: a directory without {FILE} (not a `fedrecon train --out` directory?)",
            path.display()
        );
        return Ok(p);
    }
    if path.extension().is_some_and(|e| e == "npy") {
        let p = path.with_file_name(FILE);
        ensure!(
            p.is_file(),
            "{}: an .npy holds no movie ids, so it cannot be matched to a data set; pass the \
             run's {FILE} (no {} beside it)",
            path.display(),
            p.display()
        );
        return Ok(p);
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelBundle {
        ModelBundle {
            config_toml: {
                let mut c = crate::config::Config::preset(crate::config::Preset::Best);
                c.model.k = 8;
                c.to_toml_string()
            },
            k: 8,
            items: (0..24).map(|i| i as f32 * 0.25 - 2.0).collect(),
            item_biases: vec![0.5, -0.25, 0.0],
            global_mean: 3.58,
            item_ids: vec![10, 3, 2571],
            data_digest: 0xDEAD_BEEF_0123_4567,
            rounds: 7,
            implicit: Vec::new(),
        }
    }

    #[test]
    fn implicit_rows_roundtrip_and_their_shape_is_checked() {
        let mut b = sample();
        b.implicit = (0..32).map(|i| i as f32 * -0.5).collect();
        assert_eq!(ModelBundle::decode(&b.encode().unwrap()).unwrap(), b);
        // One row short of "one per item and the mean row".
        b.implicit.truncate(24);
        assert!(b.encode().is_err());
    }

    #[test]
    fn roundtrips_and_is_deterministic() {
        let b = sample();
        let bytes = b.encode().unwrap();
        assert_eq!(bytes, b.encode().unwrap());
        assert_eq!(ModelBundle::decode(&bytes).unwrap(), b);
        assert_eq!(b.config("m").unwrap().model.k, 8);
    }

    #[test]
    fn damaged_bundles_are_refused() {
        let bytes = sample().encode().unwrap();
        for n in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                ModelBundle::decode(&bytes[..n]).is_err(),
                "truncated to {n}"
            );
        }
        let mut dup = sample();
        dup.item_ids[2] = 10;
        let e = format!(
            "{:#}",
            ModelBundle::decode(&dup.encode().unwrap()).unwrap_err()
        );
        assert!(e.contains("movie 10 twice"), "{e}");
    }
}
