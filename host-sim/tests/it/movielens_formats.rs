//! The MovieLens loader on small generated folders in each of the three layouts, including
//! malformed files (every error must name the file and the 1-based line).

use std::fs;
use std::path::{Path, PathBuf};

use fedrecon_host_sim::data::movielens::{self, Format, LoadError};

/// A temp folder holding the given files (name, bytes).
fn folder(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, bytes) in files {
        fs::write(dir.path().join(name), bytes).expect("write");
    }
    dir
}

fn load_err(files: &[(&str, &[u8])]) -> (String, PathBuf, tempfile::TempDir) {
    let dir = folder(files);
    let err = movielens::load(dir.path()).expect_err("must fail");
    let path = dir.path().join(files[0].0);
    (err.to_string(), path, dir)
}

fn assert_line_error(files: &[(&str, &[u8])], line: usize, what: &str) {
    let (msg, path, _dir) = load_err(files);
    assert_eq!(msg, format!("{}:{line}: {what}", path.display()));
}

#[test]
fn dat_remaps_ids_by_first_appearance_and_keeps_file_order() {
    let ratings =
        b"10::500::3::100\n3::20::5::101\n10::20::1::102\n7::500::4::103\n3::999::2::104\n";
    // Latin-1 title (0xE9 = 'é'), one movie never rated (42), one rated movie missing (999).
    let movies: &[u8] = b"20::Am\xe9lie (2001)::Comedy|Romance\n42::Never Rated (1999)::Drama\n500::Title: With Colons (1995)::Drama\n";
    let dir = folder(&[("ratings.dat", ratings), ("movies.dat", movies)]);
    let r = movielens::load(dir.path()).unwrap();
    assert_eq!(r.format(), Some(Format::Dat));
    assert_eq!(r.user_raw_ids(), [10, 3, 7]);
    assert_eq!(r.item_raw_ids(), [500, 20, 999]);
    assert_eq!(r.offsets(), [0, 2, 4, 5]);
    let u0 = r.user(0);
    assert_eq!(
        (u0.items, u0.values, u0.timestamps),
        (&[0, 1][..], &[3.0, 1.0][..], &[100, 102][..])
    );
    let u1 = r.user(1);
    assert_eq!(
        (u1.items, u1.values, u1.timestamps),
        (&[1, 2][..], &[5.0, 2.0][..], &[101, 104][..])
    );
    assert_eq!(r.user(2).items, [0]);
    assert_eq!(
        r.titles(),
        [
            Some("Title: With Colons (1995)".to_owned()),
            Some("Amélie (2001)".to_owned()),
            None
        ]
    );
}

#[test]
fn dat_without_movies_file_has_no_titles_and_tolerates_crlf_and_blank_lines() {
    let dir = folder(&[("ratings.dat", b"1::2::3::4\r\n\r\n1::3::4::5\r\n\n")]);
    let r = movielens::load(dir.path()).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r.titles(), [None, None]);
    assert_eq!(r.user(0).values, [3.0, 4.0]);
}

#[test]
fn u_data_and_u_item() {
    let data = b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t1\t878887116\n";
    let item: &[u8] = b"242|Kolya (1996)|24-Jan-1997||http://x|0|0\n302|L.A. Confidential (1997)|01-Jan-1997||http://y|0|1\n303|Caf\xe9 (1990)|01-Jan-1990||http://z|0|1\n";
    let dir = folder(&[("u.data", data), ("u.item", item)]);
    let r = movielens::load(dir.path()).unwrap();
    assert_eq!(r.format(), Some(Format::Tab100k));
    assert_eq!(r.user_raw_ids(), [196, 186]);
    assert_eq!(r.item_raw_ids(), [242, 302]);
    assert_eq!(r.user(0).items, [0, 1]);
    assert_eq!(r.user(1).items, [1]);
    assert_eq!(r.title(0), Some("Kolya (1996)"));
    assert_eq!(r.title(1), Some("L.A. Confidential (1997)"));
}

#[test]
fn csv_with_half_stars_and_quoted_utf8_titles() {
    let ratings = b"userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n1,306,3.5,1147868817\n2,1,0.5,1147868828\n";
    let movies = "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n296,\"Pulp Fiction, \"\"Uncut\"\" (1994)\",Crime\n306,\"Trois couleurs : Rouge, l'été (1994)\",Drama\n";
    let dir = folder(&[("ratings.csv", ratings), ("movies.csv", movies.as_bytes())]);
    let r = movielens::load(dir.path()).unwrap();
    assert_eq!(r.format(), Some(Format::Csv));
    assert_eq!(r.values(), [5.0, 3.5, 0.5]);
    assert_eq!(r.item_raw_ids(), [296, 306, 1]);
    assert_eq!(r.title(0), Some("Pulp Fiction, \"Uncut\" (1994)"));
    assert_eq!(r.title(1), Some("Trois couleurs : Rouge, l'été (1994)"));
    assert_eq!(r.title(2), Some("Toy Story (1995)"));
}

#[test]
fn detection_prefers_ratings_dat() {
    let dir = folder(&[("ratings.csv", b"x"), ("ratings.dat", b"1::1::1::1\n")]);
    assert_eq!(movielens::detect_format(dir.path()).unwrap(), Format::Dat);
}

#[test]
fn malformed_dat_lines_name_file_and_line() {
    let ok = "1::2::3::4\n";
    let case = |bad: &str| format!("{ok}{ok}{bad}\n{ok}").into_bytes();
    assert_line_error(
        &[("ratings.dat", &case("1::2::3"))],
        3,
        "expected 4 fields separated by '::', found 3",
    );
    assert_line_error(
        &[("ratings.dat", &case("1::2::3::4::5"))],
        3,
        "expected 4 fields separated by '::', found 5",
    );
    assert_line_error(
        &[("ratings.dat", &case("1::2::x::4"))],
        3,
        "field 3 (rating) is not a number: 'x'",
    );
    assert_line_error(
        &[("ratings.dat", &case("u1::2::3::4"))],
        3,
        "field 1 (user id) is not a number: 'u1'",
    );
    assert_line_error(
        &[("ratings.dat", &case("1::-2::3::4"))],
        3,
        "field 2 (movie id) is not a number: '-2'",
    );
    assert_line_error(
        &[("ratings.dat", &case("1::2::3::"))],
        3,
        "field 4 (timestamp) is not a number: ''",
    );
    assert_line_error(
        &[("ratings.dat", &case("1::2::3.::4"))],
        3,
        "field 3 (rating) is not a number: '3.'",
    );
    assert_line_error(
        &[("ratings.dat", &case("1::2::0::4"))],
        3,
        "field 3 (rating) is out of range 0.5..=5: '0'",
    );
    assert_line_error(
        &[("ratings.dat", &case("1::2::5.5::4"))],
        3,
        "field 3 (rating) is out of range 0.5..=5: '5.5'",
    );
    assert_line_error(
        &[("ratings.dat", &case("1::2::-1::4"))],
        3,
        "field 3 (rating) is out of range 0.5..=5: '-1'",
    );
    assert_line_error(
        &[("ratings.dat", &case("1::2::3.7::4"))],
        3,
        "field 3 (rating) is not a multiple of 0.5: '3.7'",
    );
    assert_line_error(
        &[("ratings.dat", &case("4294967296::2::3::4"))],
        3,
        "field 1 (user id) does not fit in 32 bits: '4294967296'",
    );
    // Blank lines still count towards line numbers.
    assert_line_error(
        &[("ratings.dat", b"1::2::3::4\n\n1::2::x::4\n")],
        3,
        "field 3 (rating) is not a number: 'x'",
    );
}

#[test]
fn malformed_tab_and_csv_lines() {
    assert_line_error(
        &[("u.data", b"1\t2\t3\t4\n1\t2\t3\n")],
        2,
        "expected 4 fields separated by '\\t', found 3",
    );
    assert_line_error(
        &[(
            "ratings.csv",
            b"userId,movieId,rating,timestamp\n1,2,3.5,4\n1,2,abc,4\n",
        )],
        3,
        "field 3 (rating) is not a number: 'abc'",
    );
    assert_line_error(
        &[("ratings.csv", b"user,movie,rating,time\n1,2,3,4\n")],
        1,
        "expected header 'userId,movieId,rating,timestamp', found 'user,movie,rating,time'",
    );
}

#[test]
fn malformed_movie_files() {
    let dat = b"1::2::3::4\n";
    let (msg, _, dir) = load_err(&[
        ("ratings.dat", dat),
        ("movies.dat", b"2::Ok (1990)::Drama\nx::Bad::Drama\n"),
    ]);
    assert_eq!(
        msg,
        format!(
            "{}:2: field 1 (movie id) is not a number: 'x'",
            dir.path().join("movies.dat").display()
        )
    );
    let (msg, _, dir) = load_err(&[("ratings.dat", dat), ("movies.dat", b"2::No genres\n")]);
    assert_eq!(
        msg,
        format!(
            "{}:1: expected 3 fields separated by '::', found 2",
            dir.path().join("movies.dat").display()
        )
    );
    let csv = b"userId,movieId,rating,timestamp\n1,2,3,4\n";
    let (msg, _, dir) = load_err(&[
        ("ratings.csv", csv),
        (
            "movies.csv",
            b"movieId,title,genres\n2,\"Open quote,Drama\n",
        ),
    ]);
    assert_eq!(
        msg,
        format!(
            "{}:2: unterminated quoted field",
            dir.path().join("movies.csv").display()
        )
    );
    let (msg, _, dir) = load_err(&[
        ("ratings.csv", csv),
        ("movies.csv", b"movieId,title,genres\n2,Caf\xe9,Drama\n"),
    ]);
    assert_eq!(
        msg,
        format!(
            "{}:2: line is not valid UTF-8",
            dir.path().join("movies.csv").display()
        )
    );
}

#[test]
fn empty_and_missing_inputs_are_clear_errors() {
    let (msg, path, _d) = load_err(&[("ratings.dat", b"")]);
    assert_eq!(
        msg,
        format!("{}: file is empty (no ratings)", path.display())
    );
    let (msg, path, _d) = load_err(&[("ratings.dat", b"\n\r\n\n")]);
    assert_eq!(
        msg,
        format!("{}: file is empty (no ratings)", path.display())
    );
    let (msg, path, _d) = load_err(&[("ratings.csv", b"userId,movieId,rating,timestamp\n")]);
    assert_eq!(
        msg,
        format!("{}: file is empty (no ratings)", path.display())
    );

    let empty = tempfile::tempdir().unwrap();
    let err = movielens::load(empty.path()).unwrap_err();
    assert!(matches!(err, LoadError::EmptyDir(_)));
    assert_eq!(
        err.to_string(),
        format!(
            "MovieLens directory {} is empty (expected ratings.dat, u.data or ratings.csv)",
            empty.path().display()
        )
    );

    let other = folder(&[("users.dat", b"1::F::1::10::48067\n"), ("README", b"hi")]);
    assert_eq!(
        movielens::load(other.path()).unwrap_err().to_string(),
        format!(
            "no MovieLens ratings file in {} (expected ratings.dat, u.data or ratings.csv; found: README, users.dat)",
            other.path().display()
        )
    );

    let missing: PathBuf = empty.path().join("nope");
    assert_eq!(
        movielens::load(&missing).unwrap_err().to_string(),
        format!("MovieLens directory {} does not exist", missing.display())
    );
    let file: &Path = &other.path().join("README");
    assert_eq!(
        movielens::load(file).unwrap_err().to_string(),
        format!(
            "{} is not a directory (expected a MovieLens folder)",
            file.display()
        )
    );
}

#[test]
fn stats_on_a_small_set() {
    // Users: a has 3 ratings, b has 1, c has 2 -> per-user median of [1, 2, 3] is 2.
    let r = movielens::Ratings::from_records([
        (1, 1, 4.0, 0),
        (1, 2, 3.5, 0),
        (2, 1, 0.5, 0),
        (1, 3, 5.0, 0),
        (3, 2, 3.5, 0),
        (3, 3, 1.0, 0),
    ]);
    let s = r.stats();
    assert_eq!((s.users, s.movies, s.ratings), (3, 3, 6));
    assert!((s.mean - 17.5 / 6.0).abs() < 1e-12);
    assert_eq!(s.median, 3.5); // sorted 0.5 1 3.5 3.5 4 5
    assert_eq!(
        (s.per_user_min, s.per_user_median, s.per_user_max),
        (1, 2.0, 3)
    );
    assert_eq!(
        s.counts_by_value,
        [(0.5, 1), (1.0, 1), (3.5, 2), (4.0, 1), (5.0, 1)]
    );
    assert_eq!(s.per_user_histogram[0].users, 3);
    let text = s.to_string();
    assert!(text.starts_with("Num users: 3\nNum movies: 3\nNum ratings: 6\nAverage rating: 2.9166666666666665\nMedian rating: 3.5\n"), "{text}");
    assert!(text.contains("  3.5: 2\n"), "{text}");
}

/// Raw user id, raw movie id, rating, timestamp.
type Record = (u32, u32, f32, u32);

/// A `ratings.csv` of `lines` ratings, several loader chunks (4 MiB) long, with users
/// interleaved (`grouped = false`: every user comes back) or grouped, and odd-but-valid lines
/// (`4`, `3.50`, `\r\n`, blank lines) scattered through it; plus the records it holds.
fn big_csv(lines: u32, grouped: bool) -> (Vec<u8>, Vec<Record>) {
    let mut text = b"userId,movieId,rating,timestamp\n".to_vec();
    let mut records = Vec::new();
    for k in 0..lines {
        let user = if grouped { k / 97 } else { k % 1013 } + 1;
        let item = (k.wrapping_mul(2_654_435_761) >> 7) % 50_000 + 1;
        let half = k % 10 + 1;
        let value = half as f32 / 2.0;
        let timestamp = 1_000_000_000 + k;
        let rating = match k % 1000 {
            1 if half % 2 == 0 => format!("{}", half / 2),
            2 => format!("{}.{}0", half / 2, (half % 2) * 5),
            _ => format!("{}.{}", half / 2, (half % 2) * 5),
        };
        let end = if k % 777 == 0 { "\r\n\n" } else { "\n" };
        text.extend_from_slice(format!("{user},{item},{rating},{timestamp}{end}").as_bytes());
        records.push((user, item, value, timestamp));
    }
    (text, records)
}

#[test]
fn multi_chunk_files_load_exactly_as_their_records() {
    for grouped in [true, false] {
        let (text, records) = big_csv(600_000, grouped);
        assert!(
            text.len() > 3 * (4 << 20),
            "{} bytes is too few chunks",
            text.len()
        );
        let dir = folder(&[("ratings.csv", &text)]);
        let loaded = movielens::load(dir.path()).unwrap();
        let expected = movielens::Ratings::from_records(records);
        assert_eq!(
            loaded.user_raw_ids(),
            expected.user_raw_ids(),
            "grouped {grouped}"
        );
        assert_eq!(loaded.item_raw_ids(), expected.item_raw_ids());
        assert_eq!(loaded.offsets(), expected.offsets());
        assert_eq!(loaded.items_of(), expected.items_of());
        assert_eq!(loaded.values(), expected.values());
        assert_eq!(loaded.timestamps(), expected.timestamps());
    }
}

#[test]
fn a_bad_line_deep_in_a_multi_chunk_file_is_named_by_its_line() {
    let (mut text, _) = big_csv(600_000, false);
    // Line numbers count the header, and the blank line after every 777th rating.
    let rating_lines = 550_000u32;
    let blank = rating_lines.div_ceil(777) as usize;
    let line = 1 + rating_lines as usize + blank + 1;
    let cut = text
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(line - 2)
        .unwrap()
        .0
        + 1;
    let mut bad = text.split_off(cut);
    let eol = bad.iter().position(|&b| b == b'\n').unwrap();
    bad.splice(0..eol, b"5,6,4.25,7".iter().copied());
    text.extend_from_slice(&bad);
    assert_line_error(
        &[("ratings.csv", &text)],
        line,
        "field 3 (rating) is not a multiple of 0.5: '4.25'",
    );
}
