//! src's top-level modules import one another in one direction only.
//!
//! Every file under `src/` belongs to one top-level module (`src/foo.rs` and `src/foo/**` are `foo`).
//! This test reads every file, finds each `crate::…` path (in `use` lines, expressions, types, macro
//! bodies; not in comments, doc comments, string literals or `#[cfg(test)]` items) and the `super::…`
//! paths that climb to the crate root, and builds the directed graph "module A refers to module B". It
//! prints that graph as floors — a topological order of its condensation, floor 0 at the bottom — and
//! every cycle with the `file:line` of one edge in each direction, then asserts that there is no cycle.
//!
//! [`KNOWN_UPWARD`] lists the edges that close a cycle today and are being removed right now. The check
//! ignores exactly those edges; it fails when a new cycle appears, and also when an entry is stale (its
//! edge is gone or no longer closes a cycle), so the list only ever shrinks. When it is empty the check
//! is the full rule.
//!
//! Run it with `cargo test --test module_floors -- --nocapture` to see the floors.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Edges (from, to) that close a cycle today, each being removed by work in progress (issue 16). With
/// them gone the floors are values < config < limits, policy < identity < assertion, upstream <
/// runtime < proxy < server < cli.
/// Delete an entry when its edge goes (the test then says so); never add one.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

/// Where one reference is: a path relative to the crate and a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Site {
    file: String,
    line: usize,
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// from → to → every place `from` refers to `to`.
type Graph = BTreeMap<String, BTreeMap<String, Vec<Site>>>;

// ---------------------------------------------------------------------------------------------------
// Reading the sources

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file relative to `src/`: `identity/jwt/mod.rs` → `[identity, jwt]`,
/// `config.rs` → `[config]`; `lib.rs` → `[]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !(stem == "mod" || (parts.is_empty() && stem == "lib")) {
        parts.push(stem.to_string());
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A string literal whose whole content is a crate path (`#[serde(with = "crate::util::x")]`) names
/// code, so it is kept; any other literal is text.
fn is_path_literal(s: &str) -> bool {
    s.starts_with("crate::")
        && s.split("::")
            .all(|seg| !seg.is_empty() && seg.chars().all(is_ident))
}

/// The code with comments (line, block, nested, doc), string literals and char literals replaced by
/// spaces; newlines are kept so positions still give line numbers.
fn strip_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out: Vec<char> = c.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for ch in out.iter_mut().take(to.min(c.len())).skip(from) {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    };
    let prev_ident = |i: usize| i > 0 && is_ident(c[i - 1]);
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        match c[i] {
            '/' if next == Some('/') => {
                let end = c[i..]
                    .iter()
                    .position(|&x| x == '\n')
                    .map_or(c.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            '/' if next == Some('*') => {
                let (mut j, mut depth) = (i + 2, 1);
                while j < c.len() && depth > 0 {
                    if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                        depth += 1;
                        j += 2;
                    } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            // Raw strings: r"…", r#"…"#, br"…" (not an identifier ending in r, not r#ident).
            'r' if (!prev_ident(i) || (c[i - 1] == 'b' && !prev_ident(i - 1))) && {
                let mut j = i + 1;
                while c.get(j) == Some(&'#') {
                    j += 1;
                }
                c.get(j) == Some(&'"')
            } =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while c[j] == '#' {
                    hashes += 1;
                    j += 1;
                }
                let body = j + 1;
                let mut k = body;
                let end = loop {
                    if k >= c.len() {
                        break c.len();
                    }
                    if c[k] == '"' && (1..=hashes).all(|h| c.get(k + h) == Some(&'#')) {
                        break k + 1 + hashes;
                    }
                    k += 1;
                };
                blank(&mut out, i, end);
                i = end;
            }
            '"' => {
                let mut j = i + 1;
                while j < c.len() && c[j] != '"' {
                    j += if c[j] == '\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(c.len());
                let content: String = c[i + 1..j.min(c.len())].iter().collect();
                if is_path_literal(&content) {
                    blank(&mut out, i, i + 1);
                    blank(&mut out, j, end);
                } else {
                    blank(&mut out, i, end);
                }
                i = end;
            }
            // A char literal ('x', '\n', '\u{1F600}', '\''); anything else is a lifetime or label.
            '\'' if next == Some('\\') => {
                let mut j = i + 3;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                blank(&mut out, i, j + 1);
                i = j + 1;
            }
            '\'' if c.get(i + 2) == Some(&'\'') => {
                blank(&mut out, i, i + 3);
                i += 3;
            }
            _ => i += 1,
        }
    }
    out.into_iter().collect()
}

/// Blanks every item under `#[cfg(test)]` (a `mod tests { … }`, a test-only `use` or `fn`): test code
/// may reach anywhere. A test-only file module (`#[cfg(test)] mod x;`) is returned so its file is
/// skipped.
fn strip_test_items(code: &str) -> (String, Vec<String>) {
    const ATTR: &str = "#[cfg(test)]";
    let mut out: Vec<char> = code.chars().collect();
    let chars = out.clone();
    let text: String = code.to_string();
    let mut test_files = Vec::new();
    let mut search = 0;
    while let Some(found) = text[search..].find(ATTR) {
        let start_byte = search + found;
        search = start_byte + ATTR.len();
        let start = text[..start_byte].chars().count();
        let mut j = start + ATTR.chars().count();
        // Further attributes on the same item.
        loop {
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if chars.get(j) == Some(&'#') {
                let mut depth = 0;
                while j < chars.len() {
                    match chars[j] {
                        '[' => depth += 1,
                        ']' => {
                            depth -= 1;
                            if depth == 0 {
                                j += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            } else {
                break;
            }
        }
        // The item: up to a `;` outside brackets, or the end of its first `{ … }` block.
        let item_start = j;
        let mut depth = 0i32;
        while j < chars.len() {
            match chars[j] {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' => depth -= 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        j += 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    j += 1;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let item: String = chars[item_start..j].iter().collect();
        let words: Vec<&str> = item
            .split(|ch: char| !is_ident(ch))
            .filter(|w| !w.is_empty())
            .collect();
        if item.trim_end().ends_with(';') {
            if let Some(pos) = words.iter().position(|w| *w == "mod") {
                if let Some(name) = words.get(pos + 1) {
                    test_files.push(name.to_string());
                }
            }
        }
        for ch in out.iter_mut().take(j).skip(start) {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    }
    (out.into_iter().collect(), test_files)
}

/// The first segment of every path that leaves the file's own top-level module: `crate::X…`,
/// `crate::{X…, Y…}`, and `super::…` chains that climb to the crate root. Returns (segment, line).
fn root_references(code: &str, modpath: &[String]) -> Vec<(String, usize)> {
    let c: Vec<char> = code.chars().collect();
    let mut line_of = Vec::with_capacity(c.len() + 1);
    let mut line = 1;
    for &ch in &c {
        line_of.push(line);
        if ch == '\n' {
            line += 1;
        }
    }
    line_of.push(line);
    let skip_ws = |mut j: usize| {
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let word_at = |j: usize| -> String { c[j..].iter().take_while(|&&ch| is_ident(ch)).collect() };
    // `::` after optional whitespace; the position after it.
    let colons = |j: usize| {
        let j = skip_ws(j);
        (c.get(j) == Some(&':') && c.get(j + 1) == Some(&':')).then(|| skip_ws(j + 2))
    };
    let mut refs = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if !is_ident(c[i]) || (i > 0 && is_ident(c[i - 1])) {
            i += 1;
            continue;
        }
        let w = word_at(i);
        let after = i + w.chars().count();
        let at_root = match w.as_str() {
            "crate" => colons(after),
            "super" => {
                // super::super::… : how far up, and whether that is the crate root.
                let mut ups = 1;
                let mut j = after;
                let mut root = None;
                while let Some(k) = colons(j) {
                    if word_at(k) == "super" {
                        ups += 1;
                        j = k + "super".len();
                    } else {
                        root = Some(k);
                        break;
                    }
                }
                root.filter(|_| ups >= modpath.len())
            }
            _ => None,
        };
        let Some(j) = at_root else {
            i = after;
            continue;
        };
        if c.get(j) == Some(&'{') {
            // A group: the first segment of each element at depth 1.
            let mut k = j + 1;
            let mut depth = 1;
            let mut expect = true;
            while k < c.len() && depth > 0 {
                match c[k] {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => expect = true,
                    ch if expect && depth == 1 && is_ident(ch) => {
                        let seg = word_at(k);
                        refs.push((seg.clone(), line_of[k]));
                        expect = false;
                        k += seg.chars().count();
                        continue;
                    }
                    _ => {}
                }
                k += 1;
            }
            i = k;
        } else {
            let seg = word_at(j);
            if !seg.is_empty() {
                refs.push((seg, line_of[j]));
            }
            i = j.max(after);
        }
    }
    refs.retain(|(seg, _)| seg != "self");
    refs
}

/// Names `lib.rs` re-exports at the crate root (`pub use error::{Refusal, RefusalKind};`), so a
/// `crate::Refusal` is an edge to `error`.
fn root_reexports(lib_code: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for stmt in lib_code.split(';') {
        let s = stmt.trim();
        let Some(rest) = s
            .strip_prefix("pub use ")
            .or_else(|| s.strip_prefix("use "))
        else {
            continue;
        };
        let rest = rest.trim().trim_start_matches("crate::");
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        let module = module.trim().to_string();
        for name in names
            .split(|ch: char| !is_ident(ch))
            .filter(|w| !w.is_empty() && *w != "as" && *w != "self")
        {
            map.insert(name.to_string(), module.clone());
        }
    }
    map
}

/// The graph of `src/` and the references that name nothing it knows.
fn build_graph(src: &Path) -> (Graph, Vec<String>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let rel = |p: &Path| p.strip_prefix(src).unwrap().to_path_buf();
    let top = |r: &Path| module_path(r).first().cloned();
    // `lib.rs` is the root, not a module; `main.rs` is the root of another crate (the binary).
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let reexports = root_reexports(&strip_comments_and_literals(&lib));
    let modules: BTreeSet<String> = files
        .iter()
        .filter(|p| !matches!(rel(p).to_str(), Some("lib.rs" | "main.rs")))
        .filter_map(|p| top(&rel(p)))
        .collect();
    let mut skip: BTreeSet<PathBuf> = BTreeSet::new();
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    let mut unresolved = Vec::new();
    for p in &files {
        let r = rel(p);
        if matches!(r.to_str(), Some("lib.rs" | "main.rs")) || skip.contains(&r) {
            continue;
        }
        let modpath = module_path(&r);
        let from = modpath[0].clone();
        let text = std::fs::read_to_string(p).unwrap();
        let (code, test_mods) = strip_test_items(&strip_comments_and_literals(&text));
        let dir: PathBuf = modpath.iter().collect();
        for m in test_mods {
            skip.insert(dir.join(format!("{m}.rs")));
            skip.insert(dir.join(&m).join("mod.rs"));
        }
        let file = format!("src/{}", r.display());
        for (seg, line) in root_references(&code, &modpath) {
            let to = if modules.contains(&seg) {
                seg
            } else if let Some(m) = reexports.get(&seg) {
                m.clone()
            } else {
                unresolved.push(format!("{file}:{line}: crate::{seg}"));
                continue;
            };
            if to != from {
                graph
                    .get_mut(&from)
                    .unwrap()
                    .entry(to)
                    .or_default()
                    .push(Site {
                        file: file.clone(),
                        line,
                    });
            }
        }
    }
    (graph, unresolved)
}

// ---------------------------------------------------------------------------------------------------
// Graph algorithms (plain adjacency sets, so the unit test can hand-build one)

type Adj = BTreeMap<String, BTreeSet<String>>;

fn adjacency(graph: &Graph, without: &[(&str, &str)]) -> Adj {
    graph
        .iter()
        .map(|(from, tos)| {
            let kept = tos
                .keys()
                .filter(|to| !without.contains(&(from.as_str(), to.as_str())))
                .cloned()
                .collect();
            (from.clone(), kept)
        })
        .collect()
}

/// Tarjan's strongly connected components, each sorted; the list comes out sinks first (a component
/// is emitted after every component it reaches).
fn sccs(adj: &Adj) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        adj: &'a Adj,
        next: usize,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.adj.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                comp.sort();
                self.out.push(comp);
            }
        }
    }
    let mut t = Tarjan {
        adj,
        next: 0,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = adj
        .iter()
        .flat_map(|(f, ts)| std::iter::once(f.as_str()).chain(ts.iter().map(String::as_str)))
        .collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

/// The condensation in floors: floor 0 refers to no other component, floor n to nothing above n − 1.
fn floors(adj: &Adj) -> Vec<Vec<Vec<String>>> {
    let comps = sccs(adj);
    let comp_of: BTreeMap<&str, usize> = comps
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let mut floor = vec![0usize; comps.len()];
    // Sinks first, so every successor's floor is known.
    for (i, comp) in comps.iter().enumerate() {
        floor[i] = comp
            .iter()
            .flat_map(|m| adj.get(m).into_iter().flatten())
            .map(|to| comp_of[to.as_str()])
            .filter(|&j| j != i)
            .map(|j| floor[j] + 1)
            .max()
            .unwrap_or(0);
    }
    let top = floor.iter().copied().max().unwrap_or(0);
    let mut out = vec![Vec::new(); top + 1];
    for (i, comp) in comps.into_iter().enumerate() {
        out[floor[i]].push(comp);
    }
    for f in &mut out {
        f.sort();
    }
    out
}

/// The shortest path `from` ⇝ `to` (both included), by breadth-first search.
fn shortest_path(adj: &Adj, from: &str, to: &str) -> Option<Vec<String>> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([from]);
    let mut seen = BTreeSet::from([from]);
    while let Some(v) = queue.pop_front() {
        if v == to {
            let mut path = vec![to.to_string()];
            let mut cur = to;
            while cur != from {
                cur = prev[cur];
                path.push(cur.to_string());
            }
            path.reverse();
            return Some(path);
        }
        for w in adj.get(v).into_iter().flatten() {
            if seen.insert(w.as_str()) {
                prev.insert(w.as_str(), v);
                queue.push_back(w.as_str());
            }
        }
    }
    None
}

/// The cycle an edge closes: `from → to`, then the shortest way from `to` back to `from` in `adj`, as
/// the list of modules starting at `from` (the edge back to `from` is implied).
fn cycle_through(adj: &Adj, from: &str, to: &str) -> Option<Vec<String>> {
    let mut back = shortest_path(adj, to, from)?;
    back.pop();
    let mut cycle = vec![from.to_string()];
    cycle.extend(back);
    Some(cycle)
}

/// One cycle per edge inside a component (the shortest through that edge), without repeats: every
/// edge of a strongly connected component lies on a cycle, so this names them all.
fn component_cycles(adj: &Adj, comp: &[String]) -> Vec<Vec<String>> {
    let inside: Adj = comp
        .iter()
        .map(|m| {
            let tos = adj[m]
                .iter()
                .filter(|t| comp.contains(t))
                .cloned()
                .collect();
            (m.clone(), tos)
        })
        .collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for (from, tos) in &inside {
        for to in tos {
            let Some(mut cycle) = cycle_through(&inside, from, to) else {
                continue;
            };
            // The same cycle from its smallest member, so a repeat is recognised.
            let min = (0..cycle.len()).min_by_key(|&i| &cycle[i]).unwrap();
            cycle.rotate_left(min);
            if !out.contains(&cycle) {
                out.push(cycle);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// The report and the rule

fn sites(graph: &Graph, from: &str, to: &str, all: bool) -> String {
    let list = &graph[from][to];
    if all {
        list.iter()
            .map(Site::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    } else if list.len() > 1 {
        format!("{} +{}", list[0], list.len() - 1)
    } else {
        list[0].to_string()
    }
}

/// `a → b (site) → c (site) → a (site)`.
fn describe_cycle(graph: &Graph, cycle: &[String]) -> String {
    let mut s = cycle[0].clone();
    for (i, from) in cycle.iter().enumerate() {
        let to = &cycle[(i + 1) % cycle.len()];
        write!(s, " → {to} ({})", sites(graph, from, to, false)).unwrap();
    }
    s
}

fn print_floors(s: &mut String, graph: &Graph, adj: &Adj) {
    for (n, floor) in floors(adj).iter().enumerate().rev() {
        for comp in floor {
            for m in comp {
                let tos: Vec<String> = adj[m]
                    .iter()
                    .map(|to| format!("{to}×{}", graph[m][to].len()))
                    .collect();
                let cyc = if comp.len() > 1 { "  [in a cycle]" } else { "" };
                writeln!(s, "  floor {n:>2}  {m:<13} → {}{cyc}", tos.join(" ")).unwrap();
            }
        }
    }
}

fn report(graph: &Graph) -> String {
    let full = adjacency(graph, &[]);
    let rest = adjacency(graph, KNOWN_UPWARD);
    let mut s = String::new();
    writeln!(
        s,
        "src's top-level modules as floors (a topological order of the condensation: a module refers to\n\
         floors below it only, or to its own component when that is a cycle; `×n` is how many references):"
    )
    .unwrap();
    print_floors(&mut s, graph, &full);
    let comps: Vec<Vec<String>> = sccs(&full).into_iter().filter(|c| c.len() > 1).collect();
    if comps.is_empty() {
        writeln!(s, "cycles: none").unwrap();
        return s;
    }
    for comp in &comps {
        writeln!(s, "cycle: {{{}}} reach one another", comp.join(", ")).unwrap();
    }
    writeln!(
        s,
        "every cycle, by the upward edge that closes it (each reference that makes the edge), then the\n\
         shortest way back down (one reference per edge, +n more):"
    )
    .unwrap();
    for &(from, to) in KNOWN_UPWARD {
        if graph.get(from).is_none_or(|t| !t.contains_key(to)) {
            writeln!(s, "  KNOWN_UPWARD {from} → {to}: gone (delete the entry)").unwrap();
            continue;
        }
        writeln!(
            s,
            "  KNOWN_UPWARD {from} → {to}: {}",
            sites(graph, from, to, true)
        )
        .unwrap();
        match cycle_through(&rest, from, to) {
            Some(cycle) => writeln!(s, "      {}", describe_cycle(graph, &cycle)).unwrap(),
            None => writeln!(s, "      closes no cycle (delete the entry)").unwrap(),
        }
    }
    for comp in sccs(&rest).iter().filter(|c| c.len() > 1) {
        for cycle in component_cycles(&rest, comp) {
            writeln!(s, "  NEW  {}", describe_cycle(graph, &cycle)).unwrap();
        }
    }
    writeln!(s, "floors once the KNOWN_UPWARD edges are gone:").unwrap();
    print_floors(&mut s, graph, &rest);
    s
}

#[test]
fn src_top_level_modules_import_one_another_in_one_direction_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (graph, unresolved) = build_graph(&src);
    let text = report(&graph);
    println!("{text}");
    assert!(
        unresolved.is_empty(),
        "crate paths whose first segment is no top-level module of src/ nor a root re-export \
         (teach this test about them):\n{}",
        unresolved.join("\n")
    );

    // Without the known edges, no cycle at all.
    let rest = adjacency(&graph, KNOWN_UPWARD);
    let new: Vec<String> = sccs(&rest)
        .iter()
        .filter(|c| c.len() > 1)
        .flat_map(|c| component_cycles(&rest, c))
        .map(|cycle| describe_cycle(&graph, &cycle))
        .collect();
    assert!(
        new.is_empty(),
        "src's top-level modules must refer to one another in one direction only. New cycles (make the \
         lower module stop referring to the higher one, e.g. by moving the shared item down):\n  {}\n\n{text}",
        new.join("\n  ")
    );

    // The allow-list only shrinks: an entry whose edge is gone, or that no longer closes a cycle with
    // the edges outside the list, must be deleted so the edge cannot come back unnoticed.
    for &(from, to) in KNOWN_UPWARD {
        assert!(
            graph.get(from).is_some_and(|t| t.contains_key(to)),
            "KNOWN_UPWARD has ({from:?}, {to:?}) but {from} no longer refers to {to}: delete the entry"
        );
        assert!(
            shortest_path(&rest, to, from).is_some(),
            "KNOWN_UPWARD has ({from:?}, {to:?}) but that edge no longer closes a cycle: delete the entry"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// The check checks

fn hand_built(edges: &[(&str, &str)]) -> Adj {
    let mut adj = Adj::new();
    for &(a, b) in edges {
        adj.entry(a.into()).or_default().insert(b.into());
        adj.entry(b.into()).or_default();
    }
    adj
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn cycle_detection_finds_a_hand_built_cycle_and_floors_the_rest() {
    // config → util; policy → config; identity → policy → audit → identity (a cycle); server → identity.
    let adj = hand_built(&[
        ("config", "util"),
        ("policy", "config"),
        ("identity", "policy"),
        ("policy", "audit"),
        ("audit", "identity"),
        ("server", "identity"),
    ]);
    let cyclic: Vec<Vec<String>> = sccs(&adj).into_iter().filter(|c| c.len() > 1).collect();
    assert_eq!(cyclic, vec![names(&["audit", "identity", "policy"])]);
    assert_eq!(
        component_cycles(&adj, &cyclic[0]),
        vec![names(&["audit", "identity", "policy"])]
    );
    assert_eq!(
        cycle_through(&adj, "audit", "identity"),
        Some(names(&["audit", "identity", "policy"]))
    );
    assert_eq!(cycle_through(&adj, "server", "identity"), None);
    assert_eq!(
        floors(&adj),
        vec![
            vec![names(&["util"])],
            vec![names(&["config"])],
            vec![names(&["audit", "identity", "policy"])],
            vec![names(&["server"])],
        ]
    );

    // Two cycles through one module are both named; without their upward edges none is left.
    let adj = hand_built(&[("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")]);
    let comp = sccs(&adj).into_iter().find(|c| c.len() > 1).unwrap();
    assert_eq!(comp, names(&["a", "b", "c"]));
    assert_eq!(
        component_cycles(&adj, &comp),
        vec![names(&["a", "b"]), names(&["b", "c"])]
    );
    let mut without = adj.clone();
    without.get_mut("a").unwrap().remove("b");
    without.get_mut("c").unwrap().remove("b");
    assert!(sccs(&without).iter().all(|c| c.len() == 1));
    assert_eq!(
        floors(&without),
        vec![vec![names(&["a"]), names(&["c"])], vec![names(&["b"])]]
    );
}

#[test]
fn references_come_from_code_only() {
    let src = r##"
//! Docs name crate::docs_only and [`crate::linked`].
use crate::config::Config;
use crate::{identity::Identity, policy::{Policy, ScopeSet}, self};
use super::sibling; // inside this module
/* a block comment: crate::commented /* nested crate::nested */ still comment crate::x */
fn f() {
    let s = "crate::in_a_string is text";
    let r = r#"crate::in_a_raw_string"#;
    let c = '"'; let l: &'static str = "";
    crate::metrics::get();
    let x = super::super::limits::LIMIT;
}
#[serde(with = "crate::util::duration")]
struct S;
#[cfg(test)]
mod tests {
    use crate::test_only::Thing;
}
"##;
    let code = strip_test_items(&strip_comments_and_literals(src)).0;
    let refs = root_references(&code, &["server".into(), "stack".into()]);
    assert_eq!(
        refs,
        vec![
            ("config".to_string(), 3),
            ("identity".to_string(), 4),
            ("policy".to_string(), 4),
            ("metrics".to_string(), 11),
            ("limits".to_string(), 12),
            ("util".to_string(), 14),
        ]
    );
    // From a file directly under src/, one `super` is the crate root.
    let refs = root_references("use super::config::X;", &["cli".into()]);
    assert_eq!(refs, vec![("config".to_string(), 1)]);
    assert_eq!(
        root_reexports("pub use error::{Refusal, RefusalKind};")["Refusal"],
        "error"
    );
}
