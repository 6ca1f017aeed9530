//! Every citation of the project's reference documents points at something that exists: a
//! quoted section name after `docs/SEMANTICS.md` or `WIRE.md`, or a section number after
//! `WIRE.md`, in code, tests and docs names a heading of that file, and no file cites the shared
//! folder's notes the repository does not have. Reads the sources as text; no build artefacts,
//! no data.

use std::fs;
use std::path::{Path, PathBuf};

/// A cited document: how it is named in text and where it lives in the repository.
struct Doc {
    name: &'static str,
    path: &'static str,
}

const DOCS: [Doc; 2] = [
    Doc {
        name: "SEMANTICS.md",
        path: "docs/SEMANTICS.md",
    },
    Doc {
        name: "WIRE.md",
        path: "core/WIRE.md",
    },
];

/// One citation found in a source file.
#[derive(Debug, PartialEq)]
struct Citation {
    /// Index into [`DOCS`].
    doc: usize,
    /// What it points at inside the document.
    target: Target,
}

#[derive(Debug, PartialEq)]
enum Target {
    /// The document as a whole.
    File,
    /// A heading, quoted.
    Heading(String),
    /// A numbered section (`WIRE.md 3`): a heading starting with `3.`.
    Number(u32),
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Source and documentation files of the repository, without build outputs or VCS data.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                sources(&path, out);
            }
        } else if ["rs", "md", "toml", "sh", "py"]
            .iter()
            .any(|ext| name.ends_with(&format!(".{ext}")))
        {
            out.push(path);
        }
    }
}

/// The text with comment markers removed and lines joined, so a citation wrapped over two
/// comment lines reads as one.
fn flatten(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut l = line.trim_start();
        for marker in ["//!", "///", "//", "#", "*"] {
            if let Some(rest) = l.strip_prefix(marker) {
                l = rest;
                break;
            }
        }
        out.push_str(l.trim());
        out.push(' ');
    }
    out
}

/// Every citation of a [`DOCS`] entry in `text`.
fn citations(text: &str) -> Vec<Citation> {
    let flat = flatten(text);
    let mut found = Vec::new();
    for (doc, d) in DOCS.iter().enumerate() {
        let mut from = 0;
        while let Some(at) = flat[from..].find(d.name) {
            let start = from + at;
            from = start + d.name.len();
            let mut rest = &flat[from..];
            rest = rest.strip_prefix('`').unwrap_or(rest);
            rest = rest.strip_prefix(',').unwrap_or(rest);
            // A section follows after a space; a quote right after the name closes a string
            // literal that merely holds the name.
            if !rest.starts_with(' ') {
                found.push(Citation {
                    doc,
                    target: Target::File,
                });
                continue;
            }
            rest = rest.trim_start();
            let mut targets = Vec::new();
            while let Some(q) = rest.strip_prefix('"') {
                let Some(end) = q.find('"') else { break };
                targets.push(Target::Heading(q[..end].to_string()));
                rest = q[end + 1..].trim_start();
                match rest.strip_prefix(',') {
                    Some(r) if r.trim_start().starts_with('"') => rest = r.trim_start(),
                    _ => break,
                }
            }
            if targets.is_empty() {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                targets.push(match digits.parse() {
                    Ok(n) => Target::Number(n),
                    Err(_) => Target::File,
                });
            }
            found.extend(targets.into_iter().map(|target| Citation { doc, target }));
        }
    }
    found
}

/// The headings of a Markdown text (outside code fences), without their `#`s.
fn headings(md: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in md.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.push(line.trim_start_matches('#').trim().to_string());
        }
    }
    out
}

/// Why `c` does not resolve against `heads` (the cited document's headings), if it does not.
fn unresolved(c: &Citation, heads: &[String]) -> Option<String> {
    match &c.target {
        Target::File => None,
        Target::Heading(h) => {
            (!heads.iter().any(|x| x == h)).then(|| format!("no heading \"{h}\""))
        }
        Target::Number(n) => {
            let prefix = format!("{n}. ");
            (!heads.iter().any(|x| x.starts_with(&prefix))).then(|| format!("no section {n}"))
        }
    }
}

#[test]
fn the_parser_finds_what_the_project_writes() {
    let text = "//! See docs/SEMANTICS.md \"One client's round\", \"Server\" and\n\
                /// `core/WIRE.md` \"Version\n/// history\"; WIRE.md 3, kind 10; docs/SEMANTICS.md's values;\n\
                name: \"WIRE.md\", path: \"core/WIRE.md\"";
    assert_eq!(
        citations(text),
        vec![
            Citation {
                doc: 0,
                target: Target::Heading("One client's round".into())
            },
            Citation {
                doc: 0,
                target: Target::Heading("Server".into())
            },
            Citation {
                doc: 0,
                target: Target::File
            },
            Citation {
                doc: 1,
                target: Target::Heading("Version history".into())
            },
            Citation {
                doc: 1,
                target: Target::Number(3)
            },
            Citation {
                doc: 1,
                target: Target::File
            },
            Citation {
                doc: 1,
                target: Target::File
            },
        ]
    );
    let heads = headings("# T\n## 3. Payload\n```\n# not a heading\n```\n### Server\n");
    assert_eq!(heads, ["T", "3. Payload", "Server"]);
    let bad = Citation {
        doc: 0,
        target: Target::Heading("Servers".into()),
    };
    assert_eq!(
        unresolved(&bad, &heads).as_deref(),
        Some("no heading \"Servers\"")
    );
    assert_eq!(
        unresolved(
            &Citation {
                doc: 1,
                target: Target::Number(4)
            },
            &heads
        )
        .as_deref(),
        Some("no section 4")
    );
}

#[test]
fn every_citation_resolves() {
    let root = repo_root();
    let heads: Vec<Vec<String>> = DOCS
        .iter()
        .map(|d| {
            let p = root.join(d.path);
            headings(&fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        })
        .collect();
    let mut files = Vec::new();
    sources(&root, &mut files);
    // The reference notes of the shared folder are not in the repository: cite docs/ instead.
    let shared_notes = concat!("SPEC", ".md");
    let (mut problems, mut headed) = (Vec::new(), 0);
    for f in &files {
        let Ok(text) = fs::read_to_string(f) else {
            continue;
        };
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        if text.contains(shared_notes) {
            problems.push(format!(
                "{rel}: cites {shared_notes}, which is not in the repository"
            ));
        }
        for c in citations(&text) {
            if !matches!(c.target, Target::File) {
                headed += 1;
            }
            if let Some(why) = unresolved(&c, &heads[c.doc]) {
                problems.push(format!(
                    "{rel}: cites {} but it has {why}",
                    DOCS[c.doc].path
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The scan must have seen the project's citations (a broken walk would pass vacuously).
    assert!(headed >= 20, "only {headed} section citations found");
}
