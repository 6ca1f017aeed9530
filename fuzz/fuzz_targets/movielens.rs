//! The MovieLens readers (`--data DIR`): byte 0 picks the format (`.dat`, ML-100k, `.csv`);
//! the rest is the ratings file, then, after a NUL byte (which no MovieLens file holds), the
//! movie file. Any bytes are refused with an error or give consistent ratings.
#![no_main]

use std::path::Path;

use fedrecon_host_sim::data::movielens::{Format, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&f, rest)) = data.split_first() else {
        return;
    };
    let format = Format::ALL[usize::from(f) % Format::ALL.len()];
    let (ratings, movies) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let Ok(r) = parse(
        format,
        (Path::new("ratings"), ratings),
        movies.map(|m| (Path::new("movies"), m)),
    ) else {
        return;
    };
    assert!(!r.is_empty());
    assert_eq!(r.offsets().len(), r.users() + 1);
    assert_eq!(*r.offsets().last().unwrap() as usize, r.len());
    assert!(
        r.offsets().windows(2).all(|w| w[0] < w[1]),
        "every user has a rating"
    );
    assert!(r.items_of().iter().all(|&i| (i as usize) < r.items()));
    assert!(r.values().iter().all(|v| (0.5..=5.0).contains(v)));
    assert_eq!(r.titles().len(), r.items());
});
