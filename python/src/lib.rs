//! `fedrecon._native`: the host simulator's library ([`fedrecon_host_sim::session`]) for Python.
//! The pure-Python package `fedrecon` wraps it (pandas frames, dict configs, downloads); this
//! layer converts types, releases the GIL while Rust works, and turns errors into
//! `fedrecon.FedreconError` carrying the command line's message text.

use std::path::PathBuf;
use std::sync::Arc;

use fedrecon_host_sim::config::{Config, Preset};
use fedrecon_host_sim::data::movielens::{self, Ratings};
use fedrecon_host_sim::data::synth;
use fedrecon_host_sim::output::Record;
use fedrecon_host_sim::round::Split;
use fedrecon_host_sim::session::Session;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _native,
    FedreconError,
    PyException,
    "An error of the fedrecon simulator; the message is the command line's."
);

/// The error as `fedrecon` prints it (`error: {e:#}` minus the prefix).
fn err(e: impl Into<anyhow::Error>) -> PyErr {
    FedreconError::new_err(format!("{:#}", e.into()))
}

fn json<T: serde::Serialize>(v: &T) -> PyResult<String> {
    serde_json::to_string(v).map_err(err)
}

/// MovieLens ratings held in Rust (any supported layout, or built from arrays).
#[pyclass(module = "fedrecon._native", name = "Data", frozen)]
struct Data {
    ratings: Arc<Ratings>,
    dir: PathBuf,
}

#[pymethods]
impl Data {
    /// Loads a MovieLens folder (ml-100k, ml-1m, ml-10m, ml-20m/25m/32m layouts).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Data> {
        let r = py.detach(|| movielens::load(&path)).map_err(|e| {
            err(anyhow::Error::new(e).context(format!("--data {}", path.display())))
        })?;
        Ok(Data {
            ratings: Arc::new(r),
            dir: std::path::absolute(&path).unwrap_or(path),
        })
    }

    /// Builds from parallel arrays of raw user ids, raw movie ids, ratings and timestamps, in
    /// file order (ids are remapped in order of first appearance, as the loader does).
    #[staticmethod]
    fn from_arrays(
        users: PyReadonlyArray1<'_, u32>,
        movies: PyReadonlyArray1<'_, u32>,
        ratings: PyReadonlyArray1<'_, f32>,
        timestamps: PyReadonlyArray1<'_, u32>,
    ) -> PyResult<Data> {
        let (u, m, r, t) = (
            users.as_slice()?,
            movies.as_slice()?,
            ratings.as_slice()?,
            timestamps.as_slice()?,
        );
        if m.len() != u.len() || r.len() != u.len() || t.len() != u.len() {
            return Err(FedreconError::new_err(format!(
                "users, movies, ratings and timestamps must have one length (got {}, {}, {}, {})",
                u.len(),
                m.len(),
                r.len(),
                t.len()
            )));
        }
        if let Some(i) = r.iter().position(|x| !x.is_finite()) {
            return Err(FedreconError::new_err(format!(
                "ratings[{i}] = {} is not a finite number",
                r[i]
            )));
        }
        let records = (0..u.len()).map(|i| (u[i], m[i], r[i], t[i]));
        Ok(Data {
            ratings: Arc::new(Ratings::from_records(records)),
            dir: PathBuf::new(),
        })
    }

    /// A synthetic MovieLens-shaped population from the generator of `fedrecon synth`
    /// (`data::synth`): the shape's options, changed by the keywords given; the same settings
    /// give the same ratings as the command line (where the shape's mean fits below the
    /// per-user cap). Returns the data and `movies.csv`'s text.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (shape, users=None, items=None, ratings_per_user=None,
        min_ratings_per_user=None, max_ratings_per_user=None, rank=None, signal=None,
        noise=None, popularity=None, spread=None, whole_stars=false, seed=None))]
    fn synthetic(
        py: Python<'_>,
        shape: &str,
        users: Option<u32>,
        items: Option<u32>,
        ratings_per_user: Option<f64>,
        min_ratings_per_user: Option<u32>,
        max_ratings_per_user: Option<u32>,
        rank: Option<usize>,
        signal: Option<f64>,
        noise: Option<f64>,
        popularity: Option<f64>,
        spread: Option<f64>,
        whole_stars: bool,
        seed: Option<u64>,
    ) -> PyResult<(Data, String)> {
        let shape: synth::Shape = shape.parse().map_err(FedreconError::new_err)?;
        let overrides = synth::Overrides {
            users,
            items,
            ratings: None,
            ratings_per_user,
            min_ratings_per_user,
            max_ratings_per_user,
            spread,
            popularity,
            rank,
            signal,
            noise,
            whole_stars,
            seed,
        };
        let mut o = synth::SynthOptions::shaped_with(shape, &overrides);
        // Without a mean, small catalogues (where the shape's mean does not fit below the
        // per-user cap) get the mean halfway between the minimum and the cap.
        if ratings_per_user.is_none()
            && o.mean_ratings_per_user >= f64::from(o.max_ratings_per_user)
        {
            o.mean_ratings_per_user =
                (f64::from(o.min_ratings_per_user) + f64::from(o.max_ratings_per_user)) / 2.0;
        }
        let (ratings, movies) = py.detach(|| synth::in_memory(&o)).map_err(err)?;
        let data = Data {
            ratings: Arc::new(ratings),
            dir: PathBuf::new(),
        };
        Ok((data, movies))
    }

    /// Number of users.
    #[getter]
    fn users(&self) -> usize {
        self.ratings.users()
    }

    /// Number of rated movies.
    #[getter]
    fn items(&self) -> usize {
        self.ratings.items()
    }

    /// The folder it was loaded from (`None` for arrays).
    #[getter]
    fn path(&self) -> Option<PathBuf> {
        (!self.dir.as_os_str().is_empty()).then(|| self.dir.clone())
    }

    fn __len__(&self) -> usize {
        self.ratings.len()
    }

    /// `(user, movie, rating, timestamp)` arrays in file order, with raw ids.
    #[allow(clippy::type_complexity)]
    fn arrays<'py>(
        &self,
        py: Python<'py>,
    ) -> (
        Bound<'py, PyArray1<u32>>,
        Bound<'py, PyArray1<u32>>,
        Bound<'py, PyArray1<f32>>,
        Bound<'py, PyArray1<u32>>,
    ) {
        let r = &self.ratings;
        let (uid, iid) = (r.user_raw_ids(), r.item_raw_ids());
        let mut users = Vec::with_capacity(r.len());
        for (u, w) in r.offsets().windows(2).enumerate() {
            users.extend(std::iter::repeat_n(uid[u], (w[1] - w[0]) as usize));
        }
        let movies: Vec<u32> = r.items_of().iter().map(|&i| iid[i as usize]).collect();
        (
            users.into_pyarray(py),
            movies.into_pyarray(py),
            r.values().to_vec().into_pyarray(py),
            r.timestamps().to_vec().into_pyarray(py),
        )
    }

    /// Raw movie id of every item row, in row order.
    fn movie_ids<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u32>> {
        self.ratings.item_raw_ids().to_vec().into_pyarray(py)
    }

    /// Title of every item row (`None` where the movie file has none).
    fn titles(&self) -> Vec<Option<String>> {
        self.ratings.titles().to_vec()
    }

    /// `fedrecon stats`'s summary.
    fn stats(&self) -> String {
        self.ratings.stats().to_string()
    }
}

/// The configuration: a preset, then a TOML text (a file's, or a dict's), validated.
fn build_config(
    preset: Option<&str>,
    toml_text: Option<&str>,
    origin: Option<&str>,
) -> PyResult<Config> {
    let preset: Option<Preset> = preset
        .map(|p| p.parse::<Preset>())
        .transpose()
        .map_err(|e| err(anyhow::anyhow!("{e}")))?;
    let cfg = match toml_text {
        Some(text) => {
            Config::from_toml_str(text, origin.unwrap_or("config"), preset).map_err(err)?
        }
        None => Config::preset(preset.unwrap_or(Preset::Tutorial)),
    };
    cfg.validate().map_err(err)?;
    Ok(cfg)
}

/// The full configuration as TOML (what `fedrecon config` prints).
#[pyfunction]
#[pyo3(signature = (preset=None, toml_text=None, origin=None))]
fn config_toml(
    preset: Option<&str>,
    toml_text: Option<&str>,
    origin: Option<&str>,
) -> PyResult<String> {
    Ok(build_config(preset, toml_text, origin)?.to_toml_string())
}

/// Converts a JSON object (a Python dict's `json.dumps`) to TOML text.
#[pyfunction]
fn json_to_toml(text: &str) -> PyResult<String> {
    let table: toml::Table = serde_json::from_str(text)
        .map_err(|e| FedreconError::new_err(format!("config dict: {e}")))?;
    toml::to_string(&table).map_err(|e| FedreconError::new_err(format!("config dict: {e}")))
}

fn split(name: &str) -> PyResult<Split> {
    match name {
        "val" | "validation" => Ok(Split::Val),
        "test" => Ok(Split::Test),
        other => Err(FedreconError::new_err(format!(
            "split '{other}': expected 'val' or 'test'"
        ))),
    }
}

fn records_json(r: &[Record]) -> PyResult<String> {
    json(&r)
}

/// A federated-reconstruction experiment (see `fedrecon.Simulation`).
#[pyclass(module = "fedrecon._native", name = "Simulation")]
struct Simulation {
    session: Session,
}

#[pymethods]
impl Simulation {
    #[new]
    #[pyo3(signature = (data, preset=None, toml_text=None, origin=None))]
    fn new(
        py: Python<'_>,
        data: &Data,
        preset: Option<&str>,
        toml_text: Option<&str>,
        origin: Option<&str>,
    ) -> PyResult<Self> {
        let cfg = build_config(preset, toml_text, origin)?;
        let ratings = Arc::clone(&data.ratings);
        let dir = data.dir.clone();
        let session = py.detach(|| Session::new(cfg, ratings, dir)).map_err(err)?;
        Ok(Simulation { session })
    }

    /// Continues a checkpointed run on the same data.
    #[staticmethod]
    fn resume(py: Python<'_>, path: PathBuf, data: &Data) -> PyResult<Self> {
        let ratings = Arc::clone(&data.ratings);
        let session = py.detach(|| Session::resume(&path, ratings)).map_err(err)?;
        Ok(Simulation { session })
    }

    /// The untrained validation of the schedule (when `run.eval_every > 0`); JSON records.
    fn start(&mut self, py: Python<'_>) -> PyResult<String> {
        let s = &mut self.session;
        records_json(&py.detach(|| s.start()).map_err(err)?)
    }

    /// One scheduled round (training, then validation when due); JSON records.
    fn step(&mut self, py: Python<'_>) -> PyResult<String> {
        let s = &mut self.session;
        records_json(&py.detach(|| s.step()).map_err(err)?)
    }

    /// Final validation and test; JSON of the test report.
    fn finish(&mut self, py: Python<'_>) -> PyResult<String> {
        let s = &mut self.session;
        json(&py.detach(|| s.finish()).map_err(err)?)
    }

    /// Every remaining scheduled round, then `finish`; checks for Ctrl-C between rounds (a
    /// KeyboardInterrupt leaves the simulation after a whole round, ready to continue).
    fn run(&mut self, py: Python<'_>) -> PyResult<String> {
        {
            let s = &mut self.session;
            py.detach(|| s.start()).map_err(err)?;
        }
        while !self.session.done() {
            let s = &mut self.session;
            py.detach(|| s.step()).map_err(err)?;
            py.check_signals()?;
        }
        self.finish(py)
    }

    /// Evaluates on `"val"` or `"test"` users; JSON of the report.
    fn evaluate(&mut self, py: Python<'_>, split_name: &str) -> PyResult<String> {
        let sp = split(split_name)?;
        let s = &mut self.session;
        json(&py.detach(|| s.evaluate(sp)).map_err(err)?)
    }

    /// Every record so far as JSON (the lines of `metrics.jsonl`).
    fn records(&self) -> PyResult<String> {
        records_json(self.session.records())
    }

    /// The item matrix (`items × k`, float32): a copy of the server's rows, handed to numpy
    /// without a second copy.
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let mut p = self.session.params().map_err(err)?;
        let (n, k) = (self.session.num_items(), self.session.config().model.k);
        p.truncate(n * k);
        p.into_pyarray(py).reshape([n, k])
    }

    /// The item biases (float32; empty without `model.item_bias`).
    fn item_biases<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let p = self.session.params().map_err(err)?;
        // The biases follow every row of the model (implicit rows included), one per row; the
        // items' come first.
        let n = self.session.num_items();
        let rows = fedrecon_host_sim::round::model_rows(self.session.config(), n);
        let biases = &p[rows * self.session.config().model.k..];
        Ok(biases[..biases.len().min(n)].to_vec().into_pyarray(py))
    }

    /// `(movie id, title or None, score)` of the `k` best unrated movies of a user.
    fn recommend(
        &self,
        py: Python<'_>,
        user: u32,
        k: usize,
    ) -> PyResult<Vec<(u32, Option<String>, f32)>> {
        let s = &self.session;
        let top = py.detach(|| s.recommend(user, k)).map_err(err)?;
        let r = s.ratings();
        Ok(top
            .into_iter()
            .map(|(i, score)| {
                let i = i as usize;
                (r.item_raw_ids()[i], r.title(i).map(str::to_owned), score)
            })
            .collect())
    }

    /// Writes the model bundle (`model.npz`, what `fedrecon train --out` writes and
    /// `fedrecon recommend --model` reads) to a file.
    fn save_model(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let s = &self.session;
        py.detach(|| s.save_model(&path)).map_err(err)
    }

    /// Writes a checkpoint (and config.toml, metrics.jsonl, metrics.csv) into a folder.
    fn save_checkpoint(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let s = &self.session;
        py.detach(|| s.save_checkpoint(&path)).map_err(err)
    }

    /// Training rounds done.
    #[getter]
    fn rounds_done(&self) -> u32 {
        self.session.rounds_done()
    }

    /// True once `run.rounds` rounds are done.
    #[getter]
    fn done(&self) -> bool {
        self.session.done()
    }

    /// The full configuration as TOML.
    #[getter]
    fn config_toml(&self) -> String {
        self.session.config().to_toml_string()
    }

    /// `{split: (users, ratings)}`.
    fn split_sizes(&self) -> [(String, usize, usize); 3] {
        let z = self.session.split_sizes();
        [
            ("train".into(), z.train.0, z.train.1),
            ("val".into(), z.val.0, z.val.1),
            ("test".into(), z.test.0, z.test.1),
        ]
    }
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("FedreconError", m.py().get_type::<FedreconError>())?;
    m.add_class::<Data>()?;
    m.add_class::<Simulation>()?;
    m.add_function(wrap_pyfunction!(config_toml, m)?)?;
    m.add_function(wrap_pyfunction!(json_to_toml, m)?)?;
    Ok(())
}
