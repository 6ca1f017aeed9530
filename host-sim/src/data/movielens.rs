//! MovieLens loading: ratings in CSR form per user, dense ids, titles, and summary statistics.
//!
//! The directory's contents pick the format: `ratings.dat` (ML-1M, ML-10M), `u.data` (ML-100k) or
//! `ratings.csv` (ML-20M, ML-25M, ML-32M). Ids are remapped densely in order of first appearance
//! in the ratings file (docs/SEMANTICS.md, "Data"); movies never rated get no dense id and so drop out of the
//! title table. Files are read whole and parsed by hand, because ML-1M must load in well under a
//! second and ML-32M has 32 million lines.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

/// Which MovieLens release layout a directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// ML-1M / ML-10M: `ratings.dat` (`UserID::MovieID::Rating::Timestamp`), `movies.dat` (Latin-1).
    Dat,
    /// ML-100k: `u.data` (tab separated), `u.item` (pipe separated, Latin-1).
    Tab100k,
    /// ML-20M / 25M / 32M: `ratings.csv` and `movies.csv` (UTF-8, quoted titles), with headers.
    Csv,
}

impl Format {
    /// All formats in detection priority order.
    pub const ALL: [Format; 3] = [Format::Dat, Format::Tab100k, Format::Csv];

    /// Name of the ratings file of this layout.
    pub fn ratings_file(self) -> &'static str {
        match self {
            Format::Dat => "ratings.dat",
            Format::Tab100k => "u.data",
            Format::Csv => "ratings.csv",
        }
    }

    /// Name of the movie (title) file of this layout.
    pub fn movies_file(self) -> &'static str {
        match self {
            Format::Dat => "movies.dat",
            Format::Tab100k => "u.item",
            Format::Csv => "movies.csv",
        }
    }

    fn separator(self) -> &'static [u8] {
        match self {
            Format::Dat => b"::",
            Format::Tab100k => b"\t",
            Format::Csv => b",",
        }
    }
}

/// Header line `ratings.csv` must start with.
const CSV_RATINGS_HEADER: &[u8] = b"userId,movieId,rating,timestamp";
/// Header line `movies.csv` must start with.
const CSV_MOVIES_HEADER: &[u8] = b"movieId,title,genres";
/// Names of the four rating fields, for error messages (1-based field numbers index this + 1).
const RATING_FIELDS: [&str; 4] = ["user id", "movie id", "rating", "timestamp"];

/// What is wrong with one line of a MovieLens file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line does not split into the expected number of fields.
    #[error("expected {expected} fields separated by '{separator}', found {found}")]
    FieldCount {
        /// Fields the format has.
        expected: usize,
        /// Fields on the line.
        found: usize,
        /// The separator, as text.
        separator: &'static str,
    },
    /// A numeric field is not a non-negative decimal number.
    #[error("field {field} ({name}) is not a number: '{text}'")]
    NotANumber {
        /// 1-based field number.
        field: usize,
        /// What the field holds.
        name: &'static str,
        /// The field's text (shortened if long).
        text: String,
    },
    /// An integer field does not fit in 32 bits.
    #[error("field {field} ({name}) does not fit in 32 bits: '{text}'")]
    TooLarge {
        /// 1-based field number.
        field: usize,
        /// What the field holds.
        name: &'static str,
        /// The field's text (shortened if long).
        text: String,
    },
    /// A rating outside MovieLens' scale (0.5 to 5 in half stars).
    #[error("field 3 (rating) is out of range 0.5..=5: '{text}'")]
    RatingOutOfRange {
        /// The field's text.
        text: String,
    },
    /// A rating between half-star steps; MovieLens only has whole and half stars.
    #[error("field 3 (rating) is not a multiple of 0.5: '{text}'")]
    RatingNotHalfStep {
        /// The field's text.
        text: String,
    },
    /// The CSV header is not the one MovieLens ships.
    #[error("expected header '{expected}', found '{found}'")]
    BadHeader {
        /// Header the format has.
        expected: &'static str,
        /// The line found.
        found: String,
    },
    /// A quoted CSV field has no closing quote on its line.
    #[error("unterminated quoted field")]
    UnterminatedQuote,
    /// A UTF-8 file holds a line that is not UTF-8.
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
}

/// Why a MovieLens directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory does not exist.
    #[error("MovieLens directory {} does not exist", .0.display())]
    MissingDir(PathBuf),
    /// The path exists but is not a directory.
    #[error("{} is not a directory (expected a MovieLens folder)", .0.display())]
    NotADirectory(PathBuf),
    /// The directory has no entries at all.
    #[error(
        "MovieLens directory {} is empty (expected ratings.dat, u.data or ratings.csv)",
        .0.display()
    )]
    EmptyDir(PathBuf),
    /// The directory has files, but none a known ratings file.
    #[error(
        "no MovieLens ratings file in {} (expected ratings.dat, u.data or ratings.csv; found: {found})",
        dir.display()
    )]
    NoRatingsFile {
        /// The directory searched.
        dir: PathBuf,
        /// Up to a few of the entry names it holds, comma separated.
        found: String,
    },
    /// Reading a file or listing the directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The ratings file has no ratings (empty, blank, or only a header).
    #[error("{}: file is empty (no ratings)", .0.display())]
    EmptyFile(PathBuf),
    /// A line could not be parsed.
    #[error("{}:{line}: {problem}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: LineError,
    },
    /// More ratings, users or movies than 32-bit indices can address.
    #[error("{}: more than {} ratings are not supported", .0.display(), u32::MAX)]
    TooManyRatings(PathBuf),
}

/// All ratings of a MovieLens release, grouped per user (CSR), with dense ids.
///
/// User `u`'s ratings are `offsets[u]..offsets[u + 1]` in `items_of`, `values` and `timestamps`,
/// in ratings-file order. Dense user and item ids are in order of first appearance in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Ratings {
    format: Option<Format>,
    user_raw_ids: Vec<u32>,
    item_raw_ids: Vec<u32>,
    offsets: Vec<u32>,
    items_of: Vec<u32>,
    values: Vec<f32>,
    timestamps: Vec<u32>,
    titles: Vec<Option<String>>,
    share: Option<UserShare>,
}

/// The users a rank of a cluster keeps the ratings of: dense user `u` belongs to rank
/// `u mod ranks`. A share still numbers every user and item as the whole file does, so ids,
/// the user split and each kept user's ratings are those of a whole load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserShare {
    /// This rank.
    pub rank: usize,
    /// Ranks in the cluster.
    pub ranks: usize,
}

impl UserShare {
    /// The rank that owns dense user `user` in a cluster of `ranks` ranks.
    pub fn owner(user: u32, ranks: usize) -> usize {
        user as usize % ranks.max(1)
    }

    /// Whether this share keeps dense user `user`'s ratings.
    pub fn owns(&self, user: u32) -> bool {
        Self::owner(user, self.ranks) == self.rank
    }
}

/// One user's ratings, borrowed from [`Ratings`], in ratings-file order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UserRatings<'a> {
    /// Dense item ids.
    pub items: &'a [u32],
    /// Ratings (0.5 to 5).
    pub values: &'a [f32],
    /// Unix timestamps.
    pub timestamps: &'a [u32],
}

impl Ratings {
    /// Builds from `(raw user id, raw movie id, rating, timestamp)` records in file order, without
    /// titles; the loader and tests use it so both share one remapping and grouping path.
    pub fn from_records(records: impl IntoIterator<Item = (u32, u32, f32, u32)>) -> Self {
        let mut b = Builder::with_capacity(0, None);
        for (u, i, r, t) in records {
            b.push(u, i, r, t);
        }
        b.finish(None)
    }

    /// The share of the users whose ratings were kept (`None`: every user's).
    pub fn share(&self) -> Option<UserShare> {
        self.share
    }

    /// The layout it was loaded from (`None` when built from records).
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// Number of users (dense ids `0..users()`).
    pub fn users(&self) -> usize {
        self.user_raw_ids.len()
    }

    /// Number of rated movies (dense ids `0..items()`).
    pub fn items(&self) -> usize {
        self.item_raw_ids.len()
    }

    /// Total number of ratings.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are no ratings.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Original user id of each dense user.
    pub fn user_raw_ids(&self) -> &[u32] {
        &self.user_raw_ids
    }

    /// Original movie id of each dense item.
    pub fn item_raw_ids(&self) -> &[u32] {
        &self.item_raw_ids
    }

    /// CSR offsets, `users() + 1` long.
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// Dense item id of every rating, grouped per user.
    pub fn items_of(&self) -> &[u32] {
        &self.items_of
    }

    /// Rating value of every rating, grouped per user.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Timestamp of every rating, grouped per user.
    pub fn timestamps(&self) -> &[u32] {
        &self.timestamps
    }

    /// Title of every dense item (`None` when the movie file is absent or does not list it).
    pub fn titles(&self) -> &[Option<String>] {
        &self.titles
    }

    /// Title of dense item `item`, if known.
    pub fn title(&self, item: usize) -> Option<&str> {
        self.titles.get(item).and_then(|t| t.as_deref())
    }

    /// Ratings of dense user `user`.
    ///
    /// # Panics
    /// If `user >= self.users()`.
    pub fn user(&self, user: usize) -> UserRatings<'_> {
        let range = self.offsets[user] as usize..self.offsets[user + 1] as usize;
        UserRatings {
            items: &self.items_of[range.clone()],
            values: &self.values[range.clone()],
            timestamps: &self.timestamps[range],
        }
    }

    /// Number of ratings of dense user `user`.
    ///
    /// # Panics
    /// If `user >= self.users()`.
    pub fn user_len(&self, user: usize) -> usize {
        (self.offsets[user + 1] - self.offsets[user]) as usize
    }

    /// Summary statistics, as the TFF tutorial prints them and `data/README.md` lists them.
    pub fn stats(&self) -> Stats {
        Stats::of(self)
    }
}

/// Ids below this are remapped through a direct table; larger (unusual) ids through a hash map,
/// so a stray huge id cannot allocate gigabytes.
const DIRECT_ID_LIMIT: u32 = 1 << 24;

/// Raw id -> dense id in order of first appearance.
#[derive(Default)]
struct IdMap {
    direct: Vec<u32>,
    sparse: HashMap<u32, u32>,
    raw: Vec<u32>,
}

impl IdMap {
    const UNSEEN: u32 = u32::MAX;

    fn get_or_insert(&mut self, raw: u32) -> u32 {
        let next = self.raw.len() as u32;
        if raw < DIRECT_ID_LIMIT {
            let slot = raw as usize;
            if slot >= self.direct.len() {
                self.direct
                    .resize((slot + 1).next_power_of_two(), Self::UNSEEN);
            }
            if self.direct[slot] == Self::UNSEEN {
                self.direct[slot] = next;
                self.raw.push(raw);
            }
            self.direct[slot]
        } else {
            *self.sparse.entry(raw).or_insert_with(|| {
                self.raw.push(raw);
                next
            })
        }
    }

    fn get(&self, raw: u32) -> Option<u32> {
        if raw < DIRECT_ID_LIMIT {
            self.direct
                .get(raw as usize)
                .copied()
                .filter(|&d| d != Self::UNSEEN)
        } else {
            self.sparse.get(&raw).copied()
        }
    }
}

/// Accumulates records in file order, then groups them per user. While the file is grouped by
/// user (every release but ML-100k), ratings go straight into CSR order and no per-rating user
/// id is kept: the whole build then holds 12 bytes a rating.
struct Builder {
    users: IdMap,
    items: IdMap,
    /// Raw and dense id of the user of the last record, to skip the lookup within a user's run.
    last: Option<(u32, u32)>,
    /// While grouped: where each user's ratings start. Once not: unused.
    starts: Vec<u32>,
    /// Dense user of every rating, kept only once a user reappears after another one.
    user_of: Option<Vec<u32>>,
    items_of: Vec<u32>,
    values: Vec<f32>,
    timestamps: Vec<u32>,
    /// Keep only these users' ratings (every record still numbers its user and item).
    share: Option<UserShare>,
}

impl Builder {
    fn with_capacity(n: usize, share: Option<UserShare>) -> Self {
        Self {
            share,
            users: IdMap::default(),
            items: IdMap::default(),
            last: None,
            starts: Vec::new(),
            user_of: None,
            items_of: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            timestamps: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, user: u32, item: u32, value: f32, timestamp: u32) {
        let u = match self.last {
            Some((raw, dense)) if raw == user => dense,
            _ => {
                let u = self.users.get_or_insert(user);
                if self.user_of.is_none() {
                    if u as usize == self.starts.len() {
                        self.starts.push(self.values.len() as u32);
                    } else {
                        self.ungroup();
                    }
                }
                self.last = Some((user, u));
                u
            }
        };
        let item = self.items.get_or_insert(item);
        if self.share.is_some_and(|s| !s.owns(u)) {
            return;
        }
        if let Some(user_of) = &mut self.user_of {
            user_of.push(u);
        }
        self.items_of.push(item);
        self.values.push(value);
        self.timestamps.push(timestamp);
    }

    /// A user came back after another: from here on keep every rating's user.
    fn ungroup(&mut self) {
        let mut user_of = Vec::with_capacity(self.values.capacity());
        let ends = self.starts[1..]
            .iter()
            .copied()
            .chain([self.values.len() as u32]);
        for (u, (&start, end)) in self.starts.iter().zip(ends).enumerate() {
            user_of.extend(std::iter::repeat_n(u as u32, (end - start) as usize));
        }
        self.user_of = Some(user_of);
    }

    /// Groups per user (stable, so each user keeps file order) into CSR.
    fn finish(mut self, format: Option<Format>) -> Ratings {
        let users = self.users.raw.len();
        let (offsets, items_of, values, timestamps) = match self.user_of.take() {
            None => {
                let mut offsets = std::mem::take(&mut self.starts);
                offsets.push(self.values.len() as u32);
                (offsets, self.items_of, self.values, self.timestamps)
            }
            Some(user_of) => {
                let mut offsets = vec![0u32; users + 1];
                for &u in &user_of {
                    offsets[u as usize + 1] += 1;
                }
                for u in 0..users {
                    offsets[u + 1] += offsets[u];
                }
                let n = user_of.len();
                let mut next: Vec<u32> = offsets[..users].to_vec();
                let mut items_of = vec![0u32; n];
                let mut values = vec![0f32; n];
                let mut timestamps = vec![0u32; n];
                for (k, &u) in user_of.iter().enumerate() {
                    let slot = next[u as usize] as usize;
                    next[u as usize] += 1;
                    items_of[slot] = self.items_of[k];
                    values[slot] = self.values[k];
                    timestamps[slot] = self.timestamps[k];
                }
                (offsets, items_of, values, timestamps)
            }
        };
        let titles = vec![None; self.items.raw.len()];
        let mut users_raw = self.users.raw;
        users_raw.shrink_to_fit();
        let mut r = Ratings {
            format,
            user_raw_ids: users_raw,
            item_raw_ids: self.items.raw,
            offsets,
            items_of,
            values,
            timestamps,
            titles,
            share: self.share,
        };
        r.items_of.shrink_to_fit();
        r.values.shrink_to_fit();
        r.timestamps.shrink_to_fit();
        r
    }
}

/// Finds which MovieLens layout `dir` holds.
pub fn detect_format(dir: &Path) -> Result<Format, LoadError> {
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(LoadError::MissingDir(dir.to_path_buf()));
        }
        Err(source) => {
            return Err(LoadError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    if !meta.is_dir() {
        return Err(LoadError::NotADirectory(dir.to_path_buf()));
    }
    if let Some(format) = Format::ALL
        .into_iter()
        .find(|f| dir.join(f.ratings_file()).is_file())
    {
        return Ok(format);
    }
    let io_err = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        names.push(
            entry
                .map_err(io_err)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    if names.is_empty() {
        return Err(LoadError::EmptyDir(dir.to_path_buf()));
    }
    names.sort();
    let shown = names.len().min(8);
    let mut found = names[..shown].join(", ");
    if names.len() > shown {
        found.push_str(&format!(", ... ({} entries)", names.len()));
    }
    Err(LoadError::NoRatingsFile {
        dir: dir.to_path_buf(),
        found,
    })
}

/// Loads the ratings (and titles, when the movie file is present) of the MovieLens folder `dir`.
pub fn load(dir: &Path) -> Result<Ratings, LoadError> {
    load_share(dir, None)
}

/// [`load`], keeping only the ratings of `share`'s users (all with `None`): a rank of a
/// cluster holds its own users' ratings while the file streams past, never the whole file.
pub fn load_share(dir: &Path, share: Option<UserShare>) -> Result<Ratings, LoadError> {
    let format = detect_format(dir)?;
    let path = dir.join(format.ratings_file());
    let mut ratings = read_ratings(&path, format, share)?;
    let movies = dir.join(format.movies_file());
    if movies.is_file() {
        let bytes = read(&movies)?;
        add_titles(&mut ratings, format, (&movies, &bytes))?;
    }
    Ok(ratings)
}

/// Parses the bytes of a ratings file and optionally its movie file, exactly as [`load`] reads
/// them from disk (`(path for messages, bytes)`); the fuzz target's entry point. A UTF-8
/// byte-order mark at the start of either is skipped.
pub fn parse(
    format: Format,
    ratings: (&Path, &[u8]),
    movies: Option<(&Path, &[u8])>,
) -> Result<Ratings, LoadError> {
    let (path, bytes) = ratings;
    let mut ratings = parse_ratings(bytes, bytes.len() as u64, format, path, None)?;
    if let Some(movies) = movies {
        add_titles(&mut ratings, format, movies)?;
    }
    Ok(ratings)
}

/// Fills in the titles of the movie file `(path, bytes)` for the items that have ratings.
fn add_titles(
    ratings: &mut Ratings,
    format: Format,
    (path, bytes): (&Path, &[u8]),
) -> Result<(), LoadError> {
    let mut items = IdMap::default();
    for &raw in &ratings.item_raw_ids {
        items.get_or_insert(raw);
    }
    parse_titles(strip_bom(bytes), format, path, |raw, title| {
        if let Some(dense) = items.get(raw) {
            ratings.titles[dense as usize] = Some(title);
        }
    })
}

/// `bytes` without a leading UTF-8 byte-order mark (editors on Windows add one; it would
/// otherwise become part of the first field: "not a number: 'ï»¿1'").
fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Lines with their 1-based numbers, `\r` stripped; blank lines skipped (as pandas does).
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.is_empty())
}

/// Splits `line` at `sep` into `out` (at most `out.len()` fields kept); returns the field count.
fn split_fields<'a>(line: &'a [u8], sep: &[u8], out: &mut [&'a [u8]]) -> usize {
    let mut count = 0;
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= line.len() {
        if line[i] == sep[0] && line[i..].starts_with(sep) {
            if count < out.len() {
                out[count] = &line[start..i];
            }
            count += 1;
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    if count < out.len() {
        out[count] = &line[start..];
    }
    count + 1
}

/// Field text for an error message: Latin-1 decoded, cut at 40 characters.
fn excerpt(field: &[u8]) -> String {
    let mut s = latin1(&field[..field.len().min(40)]);
    if field.len() > 40 {
        s.push_str("...");
    }
    s
}

/// Decodes Latin-1: every byte is the code point U+00XX.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// Parses a non-negative decimal `u32` field (1-based `field` for the error).
fn parse_u32(text: &[u8], field: usize) -> Result<u32, LineError> {
    let name = RATING_FIELDS.get(field - 1).copied().unwrap_or("id");
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Err(LineError::NotANumber {
            field,
            name,
            text: excerpt(text),
        });
    }
    text.iter()
        .try_fold(0u32, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
        })
        .ok_or_else(|| LineError::TooLarge {
            field,
            name,
            text: excerpt(text),
        })
}

/// Parses a rating: `-`? digits (`.` digits)?, which must be a half step in 0.5..=5.
fn parse_rating(text: &[u8]) -> Result<f32, LineError> {
    let not_a_number = || LineError::NotANumber {
        field: 3,
        name: "rating",
        text: excerpt(text),
    };
    let (negative, body) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = match body.iter().position(|&b| b == b'.') {
        Some(dot) => (&body[..dot], &body[dot + 1..]),
        None => (body, &body[body.len()..]),
    };
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if int.is_empty()
        || !digits(int)
        || !digits(frac)
        || (frac.is_empty() && body.len() > int.len())
    {
        return Err(not_a_number());
    }
    // Work in tenths of a star: exact for every MovieLens value, no float parsing needed.
    let int_value = int.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    let tenth = frac.first().map_or(0, |&d| u64::from(d - b'0'));
    let tenths = int_value.saturating_mul(10).saturating_add(tenth);
    let exact = frac.iter().skip(1).all(|&d| d == b'0');
    if negative || !(5..=50).contains(&tenths) || (tenths == 50 && !exact) {
        return Err(LineError::RatingOutOfRange {
            text: excerpt(text),
        });
    }
    if !exact || tenths % 5 != 0 {
        return Err(LineError::RatingNotHalfStep {
            text: excerpt(text),
        });
    }
    Ok(tenths as f32 / 10.0)
}

/// Bytes read per chunk of a ratings file; chunks are parsed in parallel and merged in order,
/// so memory holds the compact ratings plus a few chunks, never the file.
const CHUNK_BYTES: u64 = 4 << 20;

/// One chunk's records, or the first bad line in it (1-based within the chunk).
#[derive(Default)]
struct Parsed {
    users: Vec<u32>,
    items: Vec<u32>,
    values: Vec<f32>,
    timestamps: Vec<u32>,
    /// Line breaks in the chunk (the next chunk's first line is this many lines further).
    breaks: usize,
    error: Option<(usize, LineError)>,
}

/// Reads, parses (in parallel on the rayon pool) and merges a ratings file chunk by chunk.
fn read_ratings(
    path: &Path,
    format: Format,
    share: Option<UserShare>,
) -> Result<Ratings, LoadError> {
    let io_err = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    parse_ratings(file, size, format, path, share)
}

/// Parses the ratings streamed from `source` (about `size` bytes; `path` names it in errors):
/// chunks of whole lines are parsed in parallel and merged in order. A leading UTF-8
/// byte-order mark is skipped.
fn parse_ratings(
    mut source: impl Read + Send,
    size: u64,
    format: Format,
    path: &Path,
    share: Option<UserShare>,
) -> Result<Ratings, LoadError> {
    let io_err = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    // About 27 bytes a line in ML-25M; a slight over-reservation costs address space only.
    let mut builder = Builder::with_capacity((size / 24) as usize + 1, share);
    let batch = rayon::current_num_threads().max(1) * 2;
    let mut carry = Vec::new();
    let mut eof = false;
    let mut read_batch = |first: bool| -> io::Result<Vec<(bool, Vec<u8>)>> {
        let mut chunks = Vec::with_capacity(batch);
        while chunks.len() < batch && !eof {
            let mut chunk = std::mem::take(&mut carry);
            // Read until the chunk holds a line break (or the file ends).
            loop {
                let before = chunk.len();
                Read::by_ref(&mut source)
                    .take(CHUNK_BYTES)
                    .read_to_end(&mut chunk)?;
                if chunk.len() == before {
                    eof = true;
                    break;
                }
                // The first chunk reaches past any leading blank lines to the header.
                let seen_text =
                    !(first && chunks.is_empty()) || chunk.iter().any(|b| !b.is_ascii_whitespace());
                if chunk[before..].contains(&b'\n') && seen_text {
                    break;
                }
            }
            if !eof {
                let cut = chunk.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                carry = chunk.split_off(cut);
            }
            if !chunk.is_empty() {
                chunks.push((first && chunks.is_empty(), chunk));
            }
        }
        Ok(chunks)
    };
    let parse = |chunks: Vec<(bool, Vec<u8>)>| -> Vec<Parsed> {
        chunks
            .into_par_iter()
            .map(|(header, bytes)| parse_chunk(&bytes, format, header))
            .collect()
    };
    let mut line_base = 0usize;
    let mut merge = |parsed: Vec<Parsed>, builder: &mut Builder| -> Result<(), LoadError> {
        for p in parsed {
            if let Some((line, problem)) = p.error {
                return Err(LoadError::Malformed {
                    path: path.to_path_buf(),
                    line: line_base + line,
                    problem,
                });
            }
            if builder.values.len() + p.values.len() > u32::MAX as usize {
                return Err(LoadError::TooManyRatings(path.to_path_buf()));
            }
            for k in 0..p.values.len() {
                builder.push(p.users[k], p.items[k], p.values[k], p.timestamps[k]);
            }
            line_base += p.breaks;
        }
        Ok(())
    };
    // Parse one batch while the previous one is merged and the next one read.
    let mut first = read_batch(true).map_err(io_err)?;
    if let Some((_, chunk)) = first.first_mut()
        && chunk.starts_with(BOM)
    {
        // Editors on Windows add one; it would otherwise become part of the first field.
        chunk.drain(..BOM.len());
    }
    let mut parsed = parse(first);
    let mut chunks = read_batch(false).map_err(io_err)?;
    while !parsed.is_empty() {
        let ((merged, read), next) = rayon::join(
            || (merge(parsed, &mut builder), read_batch(false)),
            || parse(chunks),
        );
        merged?;
        parsed = next;
        chunks = read.map_err(io_err)?;
    }
    // Every record numbers its user, also those a share does not keep.
    if builder.users.raw.is_empty() {
        return Err(LoadError::EmptyFile(path.to_path_buf()));
    }
    Ok(builder.finish(Some(format)))
}

/// Parses one chunk of whole lines (`header`: it starts the file, whose first non-blank line is
/// the CSV header). Stops at the first bad line.
fn parse_chunk(bytes: &[u8], format: Format, header: bool) -> Parsed {
    let mut out = Parsed::default();
    let guess = bytes.len() / 24 + 1;
    out.users.reserve(guess);
    out.items.reserve(guess);
    out.values.reserve(guess);
    out.timestamps.reserve(guess);
    let sep = format.separator();
    let mut expect_header = header && format == Format::Csv;
    let mut no = 0;
    for line in bytes.split(|&b| b == b'\n') {
        no += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if expect_header {
            expect_header = false;
            if line.trim_ascii() != CSV_RATINGS_HEADER {
                out.error = Some((
                    no,
                    LineError::BadHeader {
                        expected: "userId,movieId,rating,timestamp",
                        found: excerpt(line),
                    },
                ));
                return out;
            }
            continue;
        }
        let record = match fast_record(line, sep) {
            Some(r) => Ok(r),
            None => slow_record(line, format),
        };
        match record {
            Ok((u, i, v, t)) => {
                out.users.push(u);
                out.items.push(i);
                out.values.push(v);
                out.timestamps.push(t);
            }
            Err(e) => {
                out.error = Some((no, e));
                return out;
            }
        }
    }
    // `split` yields one more piece than there are line breaks.
    out.breaks = no - 1;
    out
}

/// The common case of a rating line, `digits SEP digits SEP d[.d] SEP digits`, or `None` for
/// anything else (then [`slow_record`] parses it or says what is wrong).
#[inline]
fn fast_record(line: &[u8], sep: &[u8]) -> Option<(u32, u32, f32, u32)> {
    let mut at = 0;
    let number = |at: &mut usize, last: bool| -> Option<u32> {
        let start = *at;
        let mut v = 0u64;
        while *at < line.len() && line[*at].is_ascii_digit() && *at - start < 10 {
            v = v * 10 + u64::from(line[*at] - b'0');
            *at += 1;
        }
        if *at == start || v > u64::from(u32::MAX) {
            return None;
        }
        if last {
            (*at == line.len()).then_some(v as u32)
        } else {
            line[*at..].starts_with(sep).then(|| {
                *at += sep.len();
                v as u32
            })
        }
    };
    let user = number(&mut at, false)?;
    let item = number(&mut at, false)?;
    let rest = &line[at..];
    let (tenths, len) = match rest {
        [d, s, ..] if d.is_ascii_digit() && *s == sep[0] => (u32::from(d - b'0') * 10, 1),
        [d, b'.', f, s, ..] if d.is_ascii_digit() && f.is_ascii_digit() && *s == sep[0] => {
            (u32::from(d - b'0') * 10 + u32::from(f - b'0'), 3)
        }
        _ => return None,
    };
    if !(5..=50).contains(&tenths) || tenths % 5 != 0 || !rest[len..].starts_with(sep) {
        return None;
    }
    at += len + sep.len();
    let timestamp = number(&mut at, true)?;
    Some((user, item, tenths as f32 / 10.0, timestamp))
}

/// Any rating line: the record, or what is wrong with it.
fn slow_record(line: &[u8], format: Format) -> Result<(u32, u32, f32, u32), LineError> {
    let mut fields: [&[u8]; 4] = [&[]; 4];
    let found = split_fields(line, format.separator(), &mut fields);
    if found != 4 {
        return Err(LineError::FieldCount {
            expected: 4,
            found,
            separator: match format {
                Format::Dat => "::",
                Format::Tab100k => "\\t",
                Format::Csv => ",",
            },
        });
    }
    Ok((
        parse_u32(fields[0], 1)?,
        parse_u32(fields[1], 2)?,
        parse_rating(fields[2])?,
        parse_u32(fields[3], 4)?,
    ))
}

/// Parses a movie file, calling `sink(raw movie id, title)` for every movie.
fn parse_titles(
    bytes: &[u8],
    format: Format,
    path: &Path,
    mut sink: impl FnMut(u32, String),
) -> Result<(), LoadError> {
    let malformed = |line, problem| LoadError::Malformed {
        path: path.to_path_buf(),
        line,
        problem,
    };
    let id = |text: &[u8], no| {
        parse_u32(text, 1)
            .map_err(|e| match e {
                LineError::NotANumber { text, .. } => LineError::NotANumber {
                    field: 1,
                    name: "movie id",
                    text,
                },
                other => other,
            })
            .map_err(|e| malformed(no, e))
    };
    let mut lines = lines(bytes);
    match format {
        Format::Dat => {
            // `MovieID::Title::Genres`; the title sits between the first and last `::`.
            for (no, line) in lines {
                let mut fields: [&[u8]; 3] = [&[]; 3];
                let found = split_fields(line, b"::", &mut fields);
                if found < 3 {
                    return Err(malformed(
                        no,
                        LineError::FieldCount {
                            expected: 3,
                            found,
                            separator: "::",
                        },
                    ));
                }
                let raw = id(fields[0], no)?;
                let title_start = fields[0].len() + 2;
                let title_end = line.len() - fields_last_len(line, b"::") - 2;
                sink(raw, latin1(&line[title_start..title_end]));
            }
        }
        Format::Tab100k => {
            for (no, line) in lines {
                let mut fields: [&[u8]; 2] = [&[]; 2];
                let found = split_fields(line, b"|", &mut fields);
                if found < 2 {
                    return Err(malformed(
                        no,
                        LineError::FieldCount {
                            expected: 24,
                            found,
                            separator: "|",
                        },
                    ));
                }
                sink(id(fields[0], no)?, latin1(fields[1]));
            }
        }
        Format::Csv => {
            match lines.next() {
                None => return Ok(()),
                Some((no, line)) if line.trim_ascii() != CSV_MOVIES_HEADER => {
                    return Err(malformed(
                        no,
                        LineError::BadHeader {
                            expected: "movieId,title,genres",
                            found: excerpt(line),
                        },
                    ));
                }
                Some(_) => {}
            }
            for (no, line) in lines {
                let line =
                    std::str::from_utf8(line).map_err(|_| malformed(no, LineError::InvalidUtf8))?;
                let Some((raw, rest)) = line.split_once(',') else {
                    return Err(malformed(
                        no,
                        LineError::FieldCount {
                            expected: 3,
                            found: 1,
                            separator: ",",
                        },
                    ));
                };
                let raw = id(raw.as_bytes(), no)?;
                let title = csv_field(rest).map_err(|e| malformed(no, e))?;
                sink(raw, title);
            }
        }
    }
    Ok(())
}

/// Length of the text after the last `sep` in `line` (which contains `sep`).
fn fields_last_len(line: &[u8], sep: &[u8]) -> usize {
    let last = (0..=line.len() - sep.len())
        .rev()
        .find(|&i| line[i..].starts_with(sep))
        .unwrap_or(0);
    line.len() - last - sep.len()
}

/// The first CSV field of `rest`: quoted (with `""` escapes) or up to the next comma; a title
/// followed by no genres field is a field-count error.
fn csv_field(rest: &str) -> Result<String, LineError> {
    let missing_genres = LineError::FieldCount {
        expected: 3,
        found: 2,
        separator: ",",
    };
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut title = String::new();
        let mut chars = quoted.char_indices();
        while let Some((_, c)) = chars.next() {
            if c != '"' {
                title.push(c);
                continue;
            }
            match chars.next() {
                Some((_, '"')) => title.push('"'),
                Some((_, ',')) => return Ok(title),
                Some(_) => return Err(LineError::UnterminatedQuote),
                None => return Err(missing_genres),
            }
        }
        Err(LineError::UnterminatedQuote)
    } else {
        match rest.split_once(',') {
            Some((title, _)) => Ok(title.to_owned()),
            None => Err(missing_genres),
        }
    }
}

/// One bucket of the ratings-per-user histogram: users with `lo <= count < hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Inclusive lower bound on ratings per user.
    pub lo: usize,
    /// Exclusive upper bound (`None`: unbounded).
    pub hi: Option<usize>,
    /// Users in the bucket.
    pub users: usize,
}

/// Lower edges of the ratings-per-user histogram; 300 is the presets' per-user cap.
const BUCKET_EDGES: [usize; 9] = [1, 20, 50, 100, 200, 300, 500, 1000, 2000];

/// Summary statistics of a [`Ratings`], comparable with `data/README.md` and the TFF tutorial.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Number of users.
    pub users: usize,
    /// Number of rated movies.
    pub movies: usize,
    /// Number of ratings.
    pub ratings: usize,
    /// Mean rating (numpy `np.mean`).
    pub mean: f64,
    /// Median rating (numpy `np.median`: mean of the two middle values for an even count).
    pub median: f64,
    /// Fewest ratings of any user.
    pub per_user_min: usize,
    /// Median ratings per user (numpy convention).
    pub per_user_median: f64,
    /// Most ratings of any user.
    pub per_user_max: usize,
    /// `(rating value, count)` for every value that occurs, ascending.
    pub counts_by_value: Vec<(f32, usize)>,
    /// Users per ratings-count bucket.
    pub per_user_histogram: Vec<Bucket>,
}

impl Stats {
    fn of(r: &Ratings) -> Self {
        // Ratings are half steps 0.5..=5, so index by twice the value.
        let mut counts = [0usize; 11];
        let mut sum = 0f64;
        for &v in r.values() {
            counts[(v * 2.0) as usize] += 1;
            sum += f64::from(v);
        }
        let n = r.len();
        let nth = |k: usize| {
            let mut seen = 0;
            for (half, &c) in counts.iter().enumerate() {
                seen += c;
                if seen > k {
                    return half as f64 / 2.0;
                }
            }
            f64::NAN
        };
        let median = match n {
            0 => f64::NAN,
            n if n % 2 == 1 => nth(n / 2),
            n => (nth(n / 2 - 1) + nth(n / 2)) / 2.0,
        };
        let mut per_user: Vec<usize> = (0..r.users()).map(|u| r.user_len(u)).collect();
        per_user.sort_unstable();
        let per_user_median = match per_user.len() {
            0 => f64::NAN,
            m if m % 2 == 1 => per_user[m / 2] as f64,
            m => (per_user[m / 2 - 1] + per_user[m / 2]) as f64 / 2.0,
        };
        let per_user_histogram = BUCKET_EDGES
            .iter()
            .enumerate()
            .map(|(b, &lo)| {
                let hi = BUCKET_EDGES.get(b + 1).copied();
                let users = per_user
                    .iter()
                    .filter(|&&c| c >= lo && hi.is_none_or(|hi| c < hi))
                    .count();
                Bucket { lo, hi, users }
            })
            .collect();
        Stats {
            users: r.users(),
            movies: r.items(),
            ratings: n,
            mean: if n == 0 { f64::NAN } else { sum / n as f64 },
            median,
            per_user_min: per_user.first().copied().unwrap_or(0),
            per_user_median,
            per_user_max: per_user.last().copied().unwrap_or(0),
            counts_by_value: counts
                .iter()
                .enumerate()
                .filter(|&(_, &c)| c > 0)
                .map(|(half, &c)| (half as f32 / 2.0, c))
                .collect(),
            per_user_histogram,
        }
    }
}

impl fmt::Display for Stats {
    /// The tutorial's lines first (`Num users`, `Num movies`, `Average rating`, `Median rating`,
    /// floats printed like Python), then the per-user figures and the two histograms.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Num users: {}", self.users)?;
        writeln!(f, "Num movies: {}", self.movies)?;
        writeln!(f, "Num ratings: {}", self.ratings)?;
        writeln!(f, "Average rating: {:?}", self.mean)?;
        writeln!(f, "Median rating: {:?}", self.median)?;
        writeln!(
            f,
            "Ratings per user: min {}, median {:?}, max {}",
            self.per_user_min, self.per_user_median, self.per_user_max
        )?;
        writeln!(f, "Rating counts:")?;
        for (value, count) in &self.counts_by_value {
            writeln!(f, "  {value:.1}: {count}")?;
        }
        writeln!(f, "Users by ratings per user:")?;
        for b in &self.per_user_histogram {
            match b.hi {
                Some(hi) => writeln!(f, "  [{}, {}): {}", b.lo, hi, b.users)?,
                None => writeln!(f, "  [{}, ...): {}", b.lo, b.users)?,
            }
        }
        Ok(())
    }
}
