//! MovieLens-shaped synthetic data: users, movies and ratings from a planted low-rank model, so
//! that anyone can try the simulator at any scale without the GroupLens download, and learning
//! on it is measurable (the planted model's noise is the floor).
//!
//! The shape follows MovieLens: ratings per user are heavy-tailed (a minimum plus a log-normal
//! amount, capped), item popularity is Zipf-distributed over a fixed random order of the movies,
//! and every user rates distinct movies. A rating is `mean + user bias + item bias + <p_u, q_i> +
//! noise`, rounded to the star scale. Everything is a pure function of the seed: user `u` draws
//! from its own generator, so blocks of users are generated in parallel and written in order,
//! byte-identical for any thread count, with memory bounded by the items' model and a few blocks
//! of text (10 M users and 1 B ratings stream to disk).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use rand_distr::{Distribution, Exp1, LogNormal, StandardNormal, StandardUniform, Zipf};
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use rayon::prelude::*;

use crate::data::movielens::{self, Format, Ratings};
use crate::seeds::derive;

/// Shape of a MovieLens release a synthetic dataset can imitate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// ML-1M: 6,040 users, 3,706 movies, about 1.0 M whole-star ratings, at least 20 a user.
    Ml1m,
    /// ML-25M: 162,541 users, 59,047 movies, about 25 M half-star ratings, at least 20 a user.
    Ml25m,
}

impl std::str::FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ml-1m" => Ok(Shape::Ml1m),
            "ml-25m" => Ok(Shape::Ml25m),
            _ => Err(format!("unknown shape '{s}' (expected ml-1m or ml-25m)")),
        }
    }
}

/// Everything that determines a synthetic dataset (the output is a pure function of this).
#[derive(Clone, Debug, PartialEq)]
pub struct SynthOptions {
    /// Number of users (ids `1..=users`).
    pub users: u32,
    /// Number of movies (ids `1..=items`); movies nobody draws stay unrated.
    pub items: u32,
    /// Mean ratings per user (the total is about `users` times this).
    pub mean_ratings_per_user: f64,
    /// Fewest ratings of any user (MovieLens keeps users with at least 20).
    pub min_ratings_per_user: u32,
    /// Most ratings of any user (at most `items`).
    pub max_ratings_per_user: u32,
    /// Log-normal sigma of the ratings per user above the minimum: larger is a heavier tail.
    pub per_user_spread: f64,
    /// Zipf exponent of movie popularity: 0 is uniform, larger concentrates on few movies.
    pub popularity_exponent: f64,
    /// Rank of the planted model.
    pub rank: usize,
    /// Standard deviation of the planted interaction term `<p_u, q_i>`.
    pub signal: f64,
    /// Standard deviation of the noise added before rounding.
    pub noise: f64,
    /// Half stars (0.5 to 5, as ML-20M and later) instead of whole stars (1 to 5, as ML-1M).
    pub half_stars: bool,
    /// Seed of everything.
    pub seed: u64,
}

impl SynthOptions {
    /// Options imitating a MovieLens release's counts and per-user spread.
    pub fn shaped(shape: Shape) -> Self {
        let base = Self {
            users: 0,
            items: 0,
            mean_ratings_per_user: 0.0,
            min_ratings_per_user: 20,
            max_ratings_per_user: 0,
            per_user_spread: 1.35,
            popularity_exponent: 0.9,
            rank: 8,
            signal: 0.6,
            noise: 0.5,
            half_stars: true,
            seed: 1,
        };
        match shape {
            Shape::Ml1m => Self {
                users: 6040,
                items: 3706,
                mean_ratings_per_user: 165.6,
                max_ratings_per_user: 2314,
                per_user_spread: 1.15,
                half_stars: false,
                ..base
            },
            Shape::Ml25m => Self {
                users: 162_541,
                items: 59_047,
                mean_ratings_per_user: 153.8,
                max_ratings_per_user: 14_872,
                ..base
            },
        }
    }

    /// Checks every option, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |option: &'static str, why: String| Err(SynthError::Invalid { option, why });
        if self.users == 0 || self.users == u32::MAX {
            return bad(
                "users",
                format!("{} must be in 1..{}", self.users, u32::MAX),
            );
        }
        if self.items == 0 {
            return bad("items", "must be at least 1".into());
        }
        if self.min_ratings_per_user == 0 {
            return bad("min_ratings_per_user", "must be at least 1".into());
        }
        if self.max_ratings_per_user < self.min_ratings_per_user
            || self.max_ratings_per_user > self.items
        {
            return bad(
                "max_ratings_per_user",
                format!(
                    "{} must be in min_ratings_per_user..=items ({}..={})",
                    self.max_ratings_per_user, self.min_ratings_per_user, self.items
                ),
            );
        }
        let (lo, hi) = (
            f64::from(self.min_ratings_per_user),
            f64::from(self.max_ratings_per_user),
        );
        if !(self.mean_ratings_per_user > lo && self.mean_ratings_per_user < hi) {
            return bad(
                "mean_ratings_per_user",
                format!(
                    "{} must lie strictly between min_ratings_per_user ({lo}) and \
                     max_ratings_per_user ({hi})",
                    self.mean_ratings_per_user
                ),
            );
        }
        for (option, v) in [
            ("per_user_spread", self.per_user_spread),
            ("popularity_exponent", self.popularity_exponent),
            ("signal", self.signal),
            ("noise", self.noise),
        ] {
            if !(v.is_finite() && (0.0..=10.0).contains(&v)) {
                return bad(option, format!("{v} must be in 0..=10"));
            }
        }
        if !(1..=256).contains(&self.rank) {
            return bad("rank", format!("{} must be in 1..=256", self.rank));
        }
        Ok(())
    }
}

/// Changes to a shape's options, as the command line's flags and Python's keywords give them:
/// `None` keeps the shape's value. One place turns them into [`SynthOptions`], so `fedrecon
/// synth` and `fedrecon.synthetic` make the same data from the same settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// Users.
    pub users: Option<u32>,
    /// Movies.
    pub items: Option<u32>,
    /// About this many ratings in all (sets the mean per user; `ratings_per_user` wins).
    pub ratings: Option<u64>,
    /// Mean ratings per user.
    pub ratings_per_user: Option<f64>,
    /// Fewest ratings of a user.
    pub min_ratings_per_user: Option<u32>,
    /// Most ratings of a user (default: the shape's, at most `items`).
    pub max_ratings_per_user: Option<u32>,
    /// Log-normal sigma of ratings per user.
    pub spread: Option<f64>,
    /// Zipf exponent of movie popularity.
    pub popularity: Option<f64>,
    /// Rank of the planted model.
    pub rank: Option<usize>,
    /// Standard deviation of the planted interaction term.
    pub signal: Option<f64>,
    /// Standard deviation of the rating noise.
    pub noise: Option<f64>,
    /// Whole stars (1 to 5) even where the shape has half stars.
    pub whole_stars: bool,
    /// Seed.
    pub seed: Option<u64>,
}

impl SynthOptions {
    /// The options of `shape`, changed by `o` (not yet validated: see [`SynthOptions::validate`]).
    pub fn shaped_with(shape: Shape, o: &Overrides) -> Self {
        let mut s = Self::shaped(shape);
        s.users = o.users.unwrap_or(s.users);
        s.items = o.items.unwrap_or(s.items);
        s.max_ratings_per_user = o
            .max_ratings_per_user
            .unwrap_or(s.max_ratings_per_user.min(s.items));
        if let Some(total) = o.ratings {
            s.mean_ratings_per_user = total as f64 / f64::from(s.users.max(1));
        }
        let set = |v: &mut f64, given: Option<f64>| *v = given.unwrap_or(*v);
        set(&mut s.mean_ratings_per_user, o.ratings_per_user);
        set(&mut s.per_user_spread, o.spread);
        set(&mut s.popularity_exponent, o.popularity);
        set(&mut s.signal, o.signal);
        set(&mut s.noise, o.noise);
        s.min_ratings_per_user = o.min_ratings_per_user.unwrap_or(s.min_ratings_per_user);
        s.rank = o.rank.unwrap_or(s.rank);
        s.half_stars &= !o.whole_stars;
        s.seed = o.seed.unwrap_or(s.seed);
        s
    }
}

/// Why a synthetic dataset could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// An option is out of range.
    #[error("synthetic data option {option}: {why}")]
    Invalid {
        /// The option's name.
        option: &'static str,
        /// What is wrong.
        why: String,
    },
    /// Writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Counts of a generated dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthSummary {
    /// Users written.
    pub users: u32,
    /// Movies listed in `movies.csv`.
    pub items: u32,
    /// Ratings written.
    pub ratings: u64,
    /// Fewest ratings of a user.
    pub min_per_user: u32,
    /// Most ratings of a user.
    pub max_per_user: u32,
    /// Bytes of `ratings.csv`.
    pub ratings_bytes: u64,
}

/// Users generated together by one task; a wave of blocks is in memory at once.
const BLOCK_USERS: u32 = 2048;
/// Global mean of the planted ratings (MovieLens' are 3.5 to 3.6).
const GLOBAL_MEAN: f64 = 3.55;
/// Standard deviations of the planted user and item biases.
const USER_BIAS_SD: f64 = 0.35;
const ITEM_BIAS_SD: f64 = 0.4;
/// Timestamps span MovieLens' years (1995-01-09 to 2019-11-21).
const FIRST_TIMESTAMP: f64 = 789_652_009.0;
const LAST_TIMESTAMP: f64 = 1_574_327_703.0;
/// A user's ratings fall within this many seconds of their first (about three years).
const USER_SPAN: f64 = 1e8;
/// Generator purposes: every stream of the dataset has its own.
const ITEM_ORDER: u64 = 1;
const ITEM_MODEL: u64 = 2;
const USER: u64 = 3;
/// MovieLens' genres, for `movies.csv`.
const GENRES: [&str; 18] = [
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// The planted model's item side and the popularity order, shared by every user.
struct Items {
    /// Movie id (0-based) of each popularity rank (0 = most popular).
    by_rank: Vec<u32>,
    /// Per movie id: bias, then `rank` factors.
    model: Vec<f32>,
    zipf: Zipf<f64>,
}

impl Items {
    fn new(o: &SynthOptions) -> Self {
        let n = o.items as usize;
        let mut order = rng(&[o.seed, ITEM_ORDER]);
        let mut by_rank: Vec<u32> = (0..o.items).collect();
        for i in (1..n).rev() {
            let j = (unit(&mut order) * (i + 1) as f64) as usize;
            by_rank.swap(i, j.min(i));
        }
        let width = o.rank + 1;
        let factor_sd = factor_sd(o);
        let mut model = vec![0f32; n * width];
        model
            .par_chunks_mut(width)
            .enumerate()
            .for_each(|(i, row)| {
                let mut rng = rng(&[o.seed, ITEM_MODEL, i as u64]);
                row[0] = (ITEM_BIAS_SD * normal(&mut rng)) as f32;
                for x in &mut row[1..] {
                    *x = (factor_sd * normal(&mut rng)) as f32;
                }
            });
        let zipf = Zipf::new(f64::from(o.items), o.popularity_exponent)
            .expect("validated: items >= 1, exponent >= 0");
        Self {
            by_rank,
            model,
            zipf,
        }
    }
}

/// Per-factor standard deviation giving `<p, q>` the standard deviation `signal`.
fn factor_sd(o: &SynthOptions) -> f64 {
    (o.signal / (o.rank as f64).sqrt()).sqrt()
}

fn rng(words: &[u64]) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(derive(words))
}

fn unit(rng: &mut Xoshiro256PlusPlus) -> f64 {
    StandardUniform.sample(rng)
}

fn normal(rng: &mut Xoshiro256PlusPlus) -> f64 {
    StandardNormal.sample(rng)
}

/// Reusable per-task buffers.
struct Scratch {
    /// `stamp[i] == user + 1` when movie `i` is already drawn for `user`.
    stamp: Vec<u32>,
    chosen: Vec<u32>,
    keys: Vec<(f64, u32)>,
    factors: Vec<f64>,
}

impl Scratch {
    fn new(items: usize) -> Self {
        Self {
            stamp: vec![0; items],
            chosen: Vec::new(),
            keys: Vec::new(),
            factors: Vec::new(),
        }
    }
}

/// Writes `users` (0-based) of `o` as `ratings.csv` lines into `out`; returns (ratings, min, max).
fn user_block(
    o: &SynthOptions,
    items: &Items,
    users: std::ops::Range<u32>,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> (u64, u32, u32) {
    let spread = o.per_user_spread;
    let above = o.mean_ratings_per_user - f64::from(o.min_ratings_per_user);
    let per_user = LogNormal::new(above.ln() - spread * spread / 2.0, spread)
        .expect("validated: finite, non-negative spread");
    let factor_sd = factor_sd(o);
    let width = o.rank + 1;
    let (mut total, mut min, mut max) = (0u64, u32::MAX, 0u32);
    let mut ints = itoa::Buffer::new();
    for user in users {
        let mut rng = rng(&[o.seed, USER, u64::from(user)]);
        let extra: f64 = per_user.sample(&mut rng);
        let n = (f64::from(o.min_ratings_per_user) + extra.round())
            .min(f64::from(o.max_ratings_per_user)) as u32;
        let bias = GLOBAL_MEAN + USER_BIAS_SD * normal(&mut rng);
        s.factors.clear();
        s.factors
            .extend((0..o.rank).map(|_| factor_sd * normal(&mut rng)));
        draw_items(o, items, user, n as usize, &mut rng, s);
        s.chosen.sort_unstable();
        let start =
            FIRST_TIMESTAMP + unit(&mut rng) * (LAST_TIMESTAMP - FIRST_TIMESTAMP - USER_SPAN);
        let span = USER_SPAN * unit(&mut rng);
        let user_text = ints.format(user + 1).as_bytes().to_vec();
        for &item in &s.chosen {
            let row = &items.model[item as usize * width..(item as usize + 1) * width];
            let dot: f64 = row[1..]
                .iter()
                .zip(&s.factors)
                .map(|(&q, &p)| f64::from(q) * p)
                .sum();
            let value = bias + f64::from(row[0]) + dot + o.noise * normal(&mut rng);
            let timestamp = (start + span * unit(&mut rng)) as u32;
            out.extend_from_slice(&user_text);
            out.push(b',');
            out.extend_from_slice(ints.format(item + 1).as_bytes());
            out.push(b',');
            out.extend_from_slice(stars(value, o.half_stars));
            out.push(b',');
            out.extend_from_slice(ints.format(timestamp).as_bytes());
            out.push(b'\n');
        }
        total += u64::from(n);
        min = min.min(n);
        max = max.max(n);
    }
    (total, min, max)
}

/// `value` rounded to the star scale, as MovieLens' CSV writes it (`4.0`, `3.5`).
fn stars(value: f64, half: bool) -> &'static [u8] {
    const TEXT: [&[u8]; 10] = [
        b"0.5", b"1.0", b"1.5", b"2.0", b"2.5", b"3.0", b"3.5", b"4.0", b"4.5", b"5.0",
    ];
    let index = if half {
        ((value * 2.0).round().clamp(1.0, 10.0) as usize) - 1
    } else {
        (value.round().clamp(1.0, 5.0) as usize) * 2 - 1
    };
    TEXT[index]
}

/// Draws `n` distinct movies for `user` into `s.chosen`, by popularity: rejection from the
/// Zipf law while the user rates a small share of the movies, otherwise weighted sampling
/// without replacement (exponential keys over all movies), which costs O(items) but never
/// stalls on a nearly exhausted catalogue.
fn draw_items(
    o: &SynthOptions,
    items: &Items,
    user: u32,
    n: usize,
    rng: &mut Xoshiro256PlusPlus,
    s: &mut Scratch,
) {
    s.chosen.clear();
    let count = items.by_rank.len();
    if n.saturating_mul(8) <= count {
        let stamp = user + 1;
        while s.chosen.len() < n {
            let rank = (items.zipf.sample(rng) as usize - 1).min(count - 1);
            let item = items.by_rank[rank];
            if s.stamp[item as usize] != stamp {
                s.stamp[item as usize] = stamp;
                s.chosen.push(item);
            }
        }
    } else {
        s.keys.clear();
        s.keys
            .extend(items.by_rank.iter().enumerate().map(|(rank, &item)| {
                let weight = ((rank + 1) as f64).powf(-o.popularity_exponent);
                let e: f64 = Exp1.sample(rng);
                (e / weight, item)
            }));
        s.keys
            .select_nth_unstable_by(n - 1, |a, b| a.0.total_cmp(&b.0));
        s.chosen.extend(s.keys[..n].iter().map(|&(_, item)| item));
    }
}

/// Writes `ratings.csv` (`userId,movieId,rating,timestamp`, grouped by user, movies ascending
/// within a user, as ML-25M) to `out`, generating on the current rayon pool.
pub fn write_ratings(o: &SynthOptions, out: &mut (impl Write + Send)) -> io::Result<SynthSummary> {
    o.validate().map_err(io::Error::other)?;
    let items = Items::new(o);
    let mut summary = SynthSummary {
        users: o.users,
        items: o.items,
        ratings: 0,
        min_per_user: u32::MAX,
        max_per_user: 0,
        ratings_bytes: 0,
    };
    let header = b"userId,movieId,rating,timestamp\n";
    out.write_all(header)?;
    summary.ratings_bytes += header.len() as u64;
    let blocks = o.users.div_ceil(BLOCK_USERS);
    let wave = (rayon::current_num_threads() as u32 * 4).max(1);
    let generate = |first: u32| -> Vec<(Vec<u8>, (u64, u32, u32))> {
        (first..(first + wave).min(blocks))
            .into_par_iter()
            .map_init(
                || Scratch::new(o.items as usize),
                |s, b| {
                    let users = b * BLOCK_USERS..((b + 1) * BLOCK_USERS).min(o.users);
                    let mut text = Vec::new();
                    let counts = user_block(o, &items, users, s, &mut text);
                    (text, counts)
                },
            )
            .collect()
    };
    // Write one wave while the next is generated.
    let mut ready = generate(0);
    let mut next = wave;
    while !ready.is_empty() {
        let write = |wave: Vec<(Vec<u8>, (u64, u32, u32))>,
                     summary: &mut SynthSummary,
                     out: &mut dyn Write|
         -> io::Result<()> {
            for (text, (n, lo, hi)) in wave {
                out.write_all(&text)?;
                summary.ratings_bytes += text.len() as u64;
                summary.ratings += n;
                summary.min_per_user = summary.min_per_user.min(lo);
                summary.max_per_user = summary.max_per_user.max(hi);
            }
            Ok(())
        };
        let current = std::mem::take(&mut ready);
        let (written, upcoming) = rayon::join(
            || write(current, &mut summary, out),
            || {
                if next < blocks {
                    generate(next)
                } else {
                    Vec::new()
                }
            },
        );
        written?;
        ready = upcoming;
        next += wave;
    }
    Ok(summary)
}

/// Writes `movies.csv` (`movieId,title,genres`) for every movie of `o`.
pub fn write_movies(o: &SynthOptions, out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"movieId,title,genres\n")?;
    for item in 0..o.items {
        let mut rng = rng(&[o.seed, ITEM_MODEL, u64::from(item), 1]);
        let year = 1920 + (unit(&mut rng) * 100.0) as u32;
        let first = (unit(&mut rng) * GENRES.len() as f64) as usize;
        let second = (unit(&mut rng) * GENRES.len() as f64) as usize;
        let genres = if second == first {
            GENRES[first].to_string()
        } else {
            format!("{}|{}", GENRES[first], GENRES[second])
        };
        writeln!(
            out,
            "{},Synthetic Movie {} ({year}),{genres}",
            item + 1,
            item + 1
        )?;
    }
    Ok(())
}

/// Writes `ratings.csv` and `movies.csv` of `o` into `dir` (created if missing), streaming.
pub fn generate(o: &SynthOptions, dir: &Path) -> Result<SynthSummary, SynthError> {
    o.validate()?;
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SynthError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let movies = dir.join("movies.csv");
    let mut w = BufWriter::new(File::create(&movies).map_err(io_err(&movies))?);
    write_movies(o, &mut w)
        .and_then(|()| w.flush())
        .map_err(io_err(&movies))?;
    let ratings = dir.join("ratings.csv");
    let mut w =
        BufWriter::with_capacity(1 << 20, File::create(&ratings).map_err(io_err(&ratings))?);
    let summary = write_ratings(o, &mut w).map_err(io_err(&ratings))?;
    w.flush().map_err(io_err(&ratings))?;
    Ok(summary)
}

/// Generates `o` in memory and parses it as the loader parses `ratings.csv` and `movies.csv`
/// written by [`generate`] (same ratings, same dense ids, same titles), for small populations
/// that need no folder (Python's `fedrecon.synthetic`, tests). Returns the ratings and the
/// text of `movies.csv` (titles and genres).
pub fn in_memory(o: &SynthOptions) -> Result<(Ratings, String), SynthError> {
    o.validate()?;
    let io_err = |name: &str| {
        let path = PathBuf::from(name);
        move |source| SynthError::Io { path, source }
    };
    let mut movies = Vec::new();
    write_movies(o, &mut movies).map_err(io_err("movies.csv"))?;
    let mut ratings = Vec::new();
    write_ratings(o, &mut ratings).map_err(io_err("ratings.csv"))?;
    let parsed = movielens::parse(
        Format::Csv,
        (Path::new("ratings.csv"), &ratings),
        Some((Path::new("movies.csv"), &movies)),
    )
    .map_err(|e| SynthError::Io {
        path: PathBuf::from("ratings.csv"),
        source: io::Error::other(e),
    })?;
    let movies = String::from_utf8(movies).map_err(|e| SynthError::Io {
        path: PathBuf::from("movies.csv"),
        source: io::Error::other(e),
    })?;
    Ok((parsed, movies))
}
