//! Host side of the target tests.
//!
//! `fedrecon-target-runner test-target [--target TRIPLE] [CARGO TEST ARGS] [-- TEST ARGS]`
//!     Runs `cargo test --target TRIPLE` in `target-tests/` (so its `.cargo/config.toml`
//!     applies), with this program as the cargo runner. TRIPLE defaults to
//!     `thumbv7em-none-eabihf` (the Cortex-M4F); `thumbv7m-none-eabi`, `thumbv6m-none-eabi`
//!     and `riscv32imc-unknown-none-elf` run on the FPU-less machines ([`Machine::for_target`]).
//!     This is what the `cargo test-target` alias of the repository root calls.
//!
//! `fedrecon-target-runner run-elf [--target TRIPLE] ELF [FILTER...] [--exact] [--list]
//!     [--nocapture] [--ignored | --include-ignored] [--test-threads N]`
//!     The cargo runner: reads the embedded-test test list from the ELF's `.embedded_test`
//!     section and boots the target's QEMU machine (fedrecon-qemu) once per test, passing
//!     `run_addr <address>` through semihosting. A test passes when QEMU exits with 0
//!     (non-zero for `#[should_panic]`) within its timeout (embedded-test's `#[timeout(s)]`,
//!     60 s by default). Prints libtest-style results; exits 101 if any test failed.

use fedrecon_qemu::{Machine, Qemu};
use object::{Object, ObjectSection, ObjectSymbol};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

/// The target when none is given: the Cortex-M4F the project started on.
const DEFAULT_TARGET: &str = "thumbv7em-none-eabihf";
const DEFAULT_TIMEOUT_S: u64 = 60;
/// embedded-test's protocol version (`EMBEDDED_TEST_VERSION`) this runner understands.
const PROTOCOL_VERSION: u32 = 1;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test-target") => test_target(&args[1..]),
        Some("run-elf") => run_elf(&args[1..]),
        _ => Err(
            "usage: fedrecon-target-runner (test-target [CARGO ARGS] | run-elf ELF [ARGS])"
                .to_string(),
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Splits a leading `--target TRIPLE` (or `--target=TRIPLE`) off `args`; the target defaults
/// to [`DEFAULT_TARGET`]. Returns the target, its machine and the remaining arguments.
fn take_target(args: &[String]) -> Result<(String, Machine, &[String]), String> {
    let (target, rest) = match args {
        [flag, t, rest @ ..] if flag == "--target" => (t.clone(), rest),
        [flag, rest @ ..] if flag.starts_with("--target=") => {
            (flag["--target=".len()..].to_string(), rest)
        }
        _ => (DEFAULT_TARGET.to_string(), args),
    };
    let machine = Machine::for_target(&target).ok_or_else(|| {
        let known: Vec<&str> = Machine::ALL
            .iter()
            .flat_map(|m| m.targets())
            .copied()
            .collect();
        format!(
            "--target {target}: no QEMU machine runs it; known targets: {}",
            known.join(", ")
        )
    })?;
    Ok((target, machine, rest))
}

/// `cargo test --target T` in target-tests/ with this executable as the runner.
fn test_target(args: &[String]) -> Result<ExitCode, String> {
    let (target, _, args) = take_target(args)?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe = env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let exe = exe.to_str().ok_or("non-UTF-8 runner path")?;
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let runner = format!(
        "target.{target}.runner=[{}, \"run-elf\", \"--target\", {}]",
        quote(exe),
        quote(&target)
    );
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&dir)
        .args(["test", "--target", &target, "--config", &runner])
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

struct Test {
    /// `module::case` (the crate name is stripped from the module path).
    name: String,
    addr: u32,
    timeout: Duration,
    should_panic: bool,
    ignored: bool,
}

#[derive(Default)]
struct Options {
    filters: Vec<String>,
    exact: bool,
    list: bool,
    nocapture: bool,
    ignored: bool,
    include_ignored: bool,
    threads: Option<usize>,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--exact" => o.exact = true,
            "--list" => o.list = true,
            "--nocapture" | "--no-capture" => o.nocapture = true,
            "--ignored" => o.ignored = true,
            "--include-ignored" => o.include_ignored = true,
            "--test-threads" => o.threads = Some(parse_threads(it.next())?),
            _ if a.starts_with("--test-threads=") => {
                o.threads = Some(parse_threads(a.split_once('=').map(|(_, v)| v))?)
            }
            // libtest flags that do not change what a runner of separate boots does.
            "-q" | "--quiet" | "--color=never" | "--color=auto" | "--color=always" => {}
            _ if a.starts_with('-') => return Err(format!("unsupported test argument `{a}`")),
            _ => o.filters.push(a.clone()),
        }
    }
    Ok(o)
}

fn parse_threads<S: AsRef<str>>(v: Option<S>) -> Result<usize, String> {
    v.as_ref()
        .and_then(|v| v.as_ref().parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| "--test-threads needs a positive number".to_string())
}

/// Reads the tests embedded-test recorded in the ELF. Each is a symbol in `.embedded_test`
/// whose name is a JSON object (`{"disambiguator":…,"name":"case","ignored":false,
/// "should_panic":false[,"timeout":s]}`) and whose value is a `(fn() -> !, &'static str)`:
/// entry address, then the module path as pointer and length.
fn read_tests(elf_path: &Path) -> Result<Vec<Test>, String> {
    let data = fs::read(elf_path).map_err(|e| format!("{}: {e}", elf_path.display()))?;
    let elf = object::File::parse(&*data).map_err(|e| format!("not an ELF: {e}"))?;
    let section = elf.section_by_name(".embedded_test").ok_or(
        "no .embedded_test section: not an embedded-test binary, or -Tembedded-test.x missing",
    )?;
    let bytes = section.data().map_err(|e| e.to_string())?;
    let word = |off: u64| -> Result<u32, String> {
        let off = usize::try_from(off).map_err(|e| e.to_string())?;
        bytes
            .get(off..off + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| "symbol outside .embedded_test".to_string())
    };
    let mut tests = Vec::new();
    let mut version = None;
    for sym in elf.symbols() {
        if sym.section_index() != Some(section.index()) {
            continue;
        }
        let name = sym.name().map_err(|e| e.to_string())?;
        let off = sym
            .address()
            .checked_sub(section.address())
            .ok_or("bad symbol")?;
        if name == "EMBEDDED_TEST_VERSION" {
            version = Some(word(off)?);
        }
        if !name.starts_with('{') {
            continue;
        }
        let json = name;
        let case = json_str(json, "name").ok_or_else(|| format!("no name in {json}"))?;
        let (addr, path_ptr, path_len) = (word(off)?, word(off + 4)?, word(off + 8)?);
        let module = read_str(&elf, path_ptr, path_len)?;
        // Drop the crate name: `fedrecon_target_tests::smoke` -> `smoke`.
        let module = module.split_once("::").map_or("", |(_, rest)| rest);
        let timeout = json_raw(json, "timeout").and_then(|t| t.parse().ok());
        tests.push(Test {
            name: if module.is_empty() {
                case
            } else {
                format!("{module}::{case}")
            },
            addr,
            timeout: Duration::from_secs(timeout.unwrap_or(DEFAULT_TIMEOUT_S)),
            should_panic: json_raw(json, "should_panic") == Some("true"),
            ignored: json_raw(json, "ignored") == Some("true"),
        });
    }
    match version {
        Some(PROTOCOL_VERSION) => {}
        v => {
            return Err(format!(
                "embedded-test protocol version {v:?}, runner knows {PROTOCOL_VERSION}"
            ));
        }
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tests)
}

/// The unescaped value of string field `key` (names are Rust identifiers: no escapes).
fn json_str(json: &str, key: &str) -> Option<String> {
    let rest = json.split_once(&format!("\"{key}\":\""))?.1;
    Some(rest.split_once('"')?.0.to_string())
}

/// The raw text of a number or boolean field `key`.
fn json_raw<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let rest = json.split_once(&format!("\"{key}\":"))?.1;
    rest.split([',', '}']).next()
}

/// A `&'static str` of the target, from whichever loaded section holds it (debug sections
/// also start at address 0, so only code and data sections count).
fn read_str(elf: &object::File, addr: u32, len: u32) -> Result<String, String> {
    use object::SectionKind::{Data, ReadOnlyData, ReadOnlyDataWithRel, ReadOnlyString, Text};
    let loaded = |s: &object::Section| {
        matches!(
            s.kind(),
            Text | Data | ReadOnlyData | ReadOnlyDataWithRel | ReadOnlyString
        )
    };
    for s in elf.sections().filter(loaded) {
        if let Ok(Some(b)) = s.data_range(u64::from(addr), u64::from(len)) {
            return String::from_utf8(b.to_vec()).map_err(|e| e.to_string());
        }
    }
    Err(format!("string at {addr:#x} not found in the ELF"))
}

enum Outcome {
    Ok,
    Failed(String),
}

/// Boots QEMU for one test and waits for it (up to its timeout).
fn run_one(machine: Machine, elf: &Path, test: &Test, nocapture: bool) -> Outcome {
    let qemu = Qemu::new(machine, elf)
        .semihosting_arg("run_addr")
        .semihosting_arg(test.addr.to_string());
    let done = match qemu.run(test.timeout) {
        Ok(done) => done,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    if nocapture {
        print!("{}", done.stdout);
        eprint!("{}", done.stderr);
    }
    let verdict = match done.code {
        _ if done.timed_out => Some(format!("timed out after {} s", test.timeout.as_secs())),
        None => Some("QEMU was killed by a signal".to_string()),
        Some(0) if test.should_panic => Some("exited 0 but should panic".to_string()),
        Some(0) => None,
        Some(_) if test.should_panic => None,
        Some(c) => Some(format!("exit code {c}")),
    };
    match verdict {
        None => Outcome::Ok,
        Some(v) => {
            let output = if nocapture {
                String::new()
            } else {
                done.output()
            };
            let sep = if output.ends_with('\n') || output.is_empty() {
                ""
            } else {
                "\n"
            };
            Outcome::Failed(format!("{output}{sep}{v}"))
        }
    }
}

fn run_elf(args: &[String]) -> Result<ExitCode, String> {
    let (_, machine, args) = take_target(args)?;
    let (elf, args) = args.split_first().ok_or("run-elf needs the ELF path")?;
    let elf = PathBuf::from(elf);
    let opts = parse_options(args)?;
    let all = read_tests(&elf)?;
    let selected: Vec<&Test> = all
        .iter()
        .filter(|t| {
            opts.filters.is_empty()
                || opts.filters.iter().any(|f| {
                    if opts.exact {
                        t.name == *f
                    } else {
                        t.name.contains(f.as_str())
                    }
                })
        })
        .collect();
    if opts.list {
        for t in &selected {
            println!("{}: test", t.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (to_run, skipped): (Vec<&Test>, Vec<&Test>) = selected
        .iter()
        .partition(|t| opts.include_ignored || t.ignored == opts.ignored);
    let filtered_out = all.len() - selected.len();

    let threads = opts
        .threads
        .or_else(|| thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .min(to_run.len().max(1));
    println!();
    println!(
        "running {} tests on {machine}, one boot each ({threads} at a time)",
        to_run.len()
    );
    for t in &skipped {
        println!("test {} ... ignored", t.name);
    }
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(t) = to_run.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = run_one(machine, &elf, t, opts.nocapture);
                    let mut failures = failures.lock().expect("no poisoning");
                    match outcome {
                        Outcome::Ok => println!("test {} ... ok", t.name),
                        Outcome::Failed(why) => {
                            println!("test {} ... FAILED", t.name);
                            failures.push((t.name.clone(), why));
                        }
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("no poisoning");
    failures.sort();
    if !failures.is_empty() {
        println!("\nfailures:\n");
        for (name, why) in &failures {
            println!("---- {name} ----\n{why}\n");
        }
        println!("failures:");
        for (name, _) in &failures {
            println!("    {name}");
        }
    }
    let verdict = if failures.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {} passed; {} failed; {} ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        to_run.len() - failures.len(),
        failures.len(),
        skipped.len(),
        start.elapsed().as_secs_f64(),
    );
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    })
}
