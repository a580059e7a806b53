//! Keeps the README's floors table true: every top-level module of `shared/src` is on exactly
//! one floor, no module uses one on a higher floor, and no two modules use each other (on one
//! floor either).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Module -> floor, read from the README's "Where code goes" table: in each row, the
/// backticked names that open the modules column (a backticked name after `(` or `:` is a
/// part of a module, not one).
fn floors(readme: &str) -> BTreeMap<String, u32> {
    let mut floors = BTreeMap::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, floor, modules, ..] = cells.as_slice() else { continue };
        let Ok(floor) = floor.parse::<u32>() else { continue };
        let mut depth = 0;
        let mut rest = *modules;
        while let Some(start) = rest.find(['`', '(', ')']) {
            let c = rest.as_bytes()[start];
            rest = &rest[start + 1..];
            match c {
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ => {
                    let end = rest.find('`').expect("closing backtick");
                    if depth == 0 {
                        floors.insert(rest[..end].to_owned(), floor);
                    }
                    rest = &rest[end + 1..];
                }
            }
        }
    }
    floors
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`bus/outbox.rs` -> `bus`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// The top-level modules `code` names through `crate::` (in `use` trees too: `use crate::{a,
/// b::c}`), leaving out tests (`#[cfg(test)] mod tests` sits at a file's end).
fn used(code: &str) -> BTreeSet<String> {
    let code = code.split("#[cfg(test)]").next().unwrap_or(code);
    let code: String =
        code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // A use tree: the names at its first level.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        found.insert(ident(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

#[test]
fn the_readme_floors_table_holds_for_shared() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("../README.md")).expect("README.md");
    let floors = floors(&readme);
    let src = root.join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);

    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let code = fs::read_to_string(file).expect("source");
        let entry = uses.entry(module.clone()).or_default();
        entry.extend(used(&code).into_iter().filter(|m| *m != module));
    }

    let mut problems = Vec::new();
    for module in uses.keys() {
        if !floors.contains_key(module) {
            problems.push(format!("`{module}` is on no floor of the README's table"));
        }
    }
    for module in floors.keys() {
        if !uses.contains_key(module) {
            problems.push(format!("the README's table names `{module}`, which shared/src lacks"));
        }
    }
    for (module, targets) in &uses {
        let Some(own) = floors.get(module) else { continue };
        for target in targets {
            let Some(theirs) = floors.get(target) else { continue };
            if theirs > own {
                problems.push(format!(
                    "`{module}` (floor {own}) uses `{target}` (floor {theirs}), a floor above it"
                ));
            }
            if module < target && uses.get(target).is_some_and(|t| t.contains(module)) {
                problems.push(format!("`{module}` and `{target}` use each other"));
            }
        }
    }
    assert!(problems.is_empty(), "the floors do not hold:\n{}", problems.join("\n"));
}

#[test]
fn the_checker_reads_use_trees_and_table_rows() {
    let code = "use crate::{\n    bus::{self, x},\n    db::PgPool,\n};\nfn f() { crate::metrics::pruned(); }\n// crate::app is a comment\n#[cfg(test)]\nmod tests { use crate::http; }";
    assert_eq!(used(code), BTreeSet::from(["bus".into(), "db".into(), "metrics".into()]));
    let table = "| 2 | `db` (pool, `group_commit`), `bus` (`verify`: x) | what |";
    assert_eq!(floors(table), BTreeMap::from([("db".into(), 2), ("bus".into(), 2)]));
}
