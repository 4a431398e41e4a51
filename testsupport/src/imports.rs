//! Import circles between a crate's modules: `a` uses `b` while `b` uses
//! `a`, directly or around a longer loop. A circle means neither module can
//! be read, tested or moved without the other, so kiln keeps none; the
//! workspace test `tests/architecture.rs` runs this over every crate.
//!
//! The graph is read from the source text (`crate::…`, `super::…` and
//! `self::…` paths, brace groups included), not from rustc: a module's
//! edges are the modules its paths name. Edges between a module and its own
//! ancestors or descendants are left out (a child using its parent's types,
//! a parent declaring its children is the tree, not a circle), and so are
//! test modules (`#[cfg(test)]` blocks and `tests.rs` files), which may use
//! anything.

use std::collections::{BTreeMap, BTreeSet};

/// One source file of a crate: its path under `src/` (`dfbuild/mod.rs`)
/// and its text.
#[derive(Debug, Clone)]
pub struct Source {
    /// Path relative to the crate's `src/`.
    pub path: String,
    /// The file's text.
    pub text: String,
}

/// The module path of a file under `src/`: `lib.rs` → `""`,
/// `dfbuild/mod.rs` → `dfbuild`, `dfbuild/copy_step.rs` →
/// `dfbuild::copy_step`.
pub fn module_of(path: &str) -> String {
    let path = path.trim_end_matches(".rs");
    let mut parts: Vec<&str> = path.split('/').collect();
    if matches!(parts.last(), Some(&"mod") | Some(&"lib") | Some(&"main")) {
        parts.pop();
    }
    parts.join("::")
}

/// The text before the first `#[cfg(test)]`: kiln keeps unit tests in a
/// module at the end of each file.
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// Every path a `use` or an expression writes after `crate::`, `super::`
/// or `self::`, with brace groups expanded, resolved to absolute segments.
fn paths(module: &str, text: &str) -> Vec<Vec<String>> {
    let here: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(String::from).collect()
    };
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &code[i..];
        let base = if !starts_word {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("self::") {
            Some((here.clone(), "self::".len()))
        } else if rest.starts_with("super::") {
            let mut base = here.clone();
            let mut len = 0;
            while code[i + len..].starts_with("super::") {
                base.pop();
                len += "super::".len();
            }
            Some((base, len))
        } else {
            None
        };
        match base {
            Some((base, len)) => {
                let (found, used) = expand(&code[i + len..]);
                for tail in found {
                    let mut full = base.clone();
                    full.extend(tail);
                    out.push(full);
                }
                i += len + used.max(1);
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    out
}

/// Reads one path tail (`a::b::Name`, `a::{b, c::D}`) from the start of
/// `text`: every expanded path, and how many bytes were read.
fn expand(text: &str) -> (Vec<Vec<String>>, usize) {
    let mut segments = Vec::new();
    let mut at = 0;
    loop {
        let rest = &text[at..];
        if let Some(inner) = rest.strip_prefix('{') {
            let Some(close) = matching_brace(inner) else {
                return (vec![segments], at);
            };
            let mut found = Vec::new();
            for item in split_top_level(&inner[..close]) {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                for tail in expand(item).0 {
                    let mut full = segments.clone();
                    full.extend(tail);
                    found.push(full);
                }
            }
            return (found, at + 1 + close + 1);
        }
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if word.is_empty() {
            return (vec![segments], at);
        }
        at += word.len();
        segments.push(word);
        if text[at..].starts_with("::") {
            at += 2;
        } else {
            return (vec![segments], at);
        }
    }
}

/// The index of the `}` that closes a group whose `{` came just before.
fn matching_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// Splits a brace group's items at the commas outside nested groups.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// Whether one module is the other or contains it.
fn related(a: &str, b: &str) -> bool {
    let inside = |outer: &str, inner: &str| {
        outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}::"))
    };
    inside(a, b) || inside(b, a)
}

/// Module → the modules it names, for one crate.
pub fn graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = sources.iter().map(|s| module_of(&s.path)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources {
        let from = module_of(&source.path);
        if from.rsplit("::").next() == Some("tests") {
            continue;
        }
        let targets = edges.entry(from.clone()).or_default();
        for path in paths(&from, without_tests(&source.text)) {
            // The longest prefix of the path that is a module.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| modules.contains(m));
            if let Some(target) = target
                && !related(&from, &target)
            {
                targets.insert(target);
            }
        }
    }
    edges
}

/// Every circle in a module graph, each as its modules in order (the first
/// repeated at the end), found once per strongly connected group.
pub fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    for start in graph.keys() {
        if done.contains(start) {
            continue;
        }
        if let Some(path) = path_back(graph, start) {
            done.extend(path.iter().cloned());
            found.push(path);
        }
    }
    found
}

/// A shortest path from `start` back to itself, by breadth-first search.
fn path_back(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    // Predecessor of each node reached; `start` itself has none.
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_string()]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(&node).into_iter().flatten() {
            if next == start {
                // Walk back from `node` to `start`, then read it forwards.
                let mut back = vec![node.clone()];
                while let Some(prev) = came_from.get(back.last()?) {
                    back.push(prev.clone());
                }
                back.reverse();
                back.push(start.to_string());
                return Some(back);
            }
            if next != start && !came_from.contains_key(next) {
                came_from.insert(next.clone(), node.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(path: &str, text: &str) -> Source {
        Source {
            path: path.into(),
            text: text.into(),
        }
    }

    #[test]
    fn files_name_modules() {
        assert_eq!(module_of("lib.rs"), "");
        assert_eq!(module_of("dfbuild/mod.rs"), "dfbuild");
        assert_eq!(module_of("dfbuild/copy_step.rs"), "dfbuild::copy_step");
    }

    #[test]
    fn brace_groups_and_super_are_followed() {
        let g = graph(&[
            src("lib.rs", "mod a; mod b; mod c;"),
            src("a/mod.rs", "use crate::{b::{X, y::Z}, c};\nmod inner;"),
            src("a/inner.rs", "use super::super::c::W;"),
            src("b/mod.rs", "pub mod y;"),
            src("b/y.rs", ""),
            src("c.rs", "fn f() { crate::b::y::g(); }"),
        ]);
        assert_eq!(
            g["a"],
            ["b", "b::y", "c"].map(String::from).into_iter().collect()
        );
        assert_eq!(g["a::inner"], ["c".to_string()].into_iter().collect());
        assert_eq!(g["c"], ["b::y".to_string()].into_iter().collect());
        assert!(circles(&g).is_empty());
    }

    #[test]
    fn a_circle_is_found_with_its_path() {
        let g = graph(&[
            src("lib.rs", "mod build; mod code; mod push;"),
            src("build.rs", "use crate::code::layer;"),
            src("code.rs", "use crate::push::upload;"),
            src("push.rs", "use crate::build::{Options, Report};"),
        ]);
        assert_eq!(circles(&g), vec![vec!["build", "code", "push", "build"]]);
    }

    #[test]
    fn tests_comments_and_the_tree_are_no_edges() {
        let g = graph(&[
            src("lib.rs", "mod a; mod b;"),
            src(
                "a/mod.rs",
                "// uses crate::b::X in a comment\nmod child;\nuse self::child::Y;\n#[cfg(test)]\nmod tests { use crate::b::X; }",
            ),
            src("a/child.rs", "use super::Z; use crate::a::W;"),
            src("a/tests.rs", "use crate::b::X;"),
            src("b.rs", "use crate::a::Q; fn f() -> notcrate::x {}"),
        ]);
        assert!(g["a"].is_empty(), "{g:?}");
        assert!(g["a::child"].is_empty(), "{g:?}");
        assert_eq!(g["b"], ["a".to_string()].into_iter().collect());
        assert!(circles(&g).is_empty());
    }
}
