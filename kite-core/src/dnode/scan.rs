//! Which callback paths lead somewhere in a peer's JSON text, found in one pass without
//! parsing the text into a tree and without recursion.
//!
//! A peer's `callbacks` may name any number of paths, of any length, into arguments of any
//! depth. Walking each path with a parser would cost the text's length per path (and recurse
//! once per step); here every path is put in one trie and the text is scanned once, skipping
//! the parts no path enters, so the cost is the text's length plus the paths' lengths.

use std::collections::HashMap;

use super::path::Segment;

/// A trie node: the paths ending here, and the steps further. A step may enter a list item
/// (its segment read as an index: `Segment::as_index`) or an object member (its segment as a
/// key: an index is its decimal text), so each step is filed both ways; which one applies
/// depends on what the document holds there.
#[derive(Default)]
struct Node {
    /// The step that leads here from the parent.
    step: Option<Segment>,
    ends: Vec<usize>,
    by_index: HashMap<usize, Vec<usize>>,
    by_key: HashMap<String, Vec<usize>>,
}

struct Trie {
    nodes: Vec<Node>,
}

impl Trie {
    fn new(paths: &[&[Segment]]) -> Trie {
        let mut nodes = vec![Node::default()];
        for (n, path) in paths.iter().enumerate() {
            let mut at = 0;
            for segment in path.iter() {
                // One child per (parent, step), shared by the paths that take that step.
                let key = segment.to_string();
                let existing = nodes[at].by_key.get(&key).and_then(|c| {
                    c.iter()
                        .copied()
                        .find(|&c| nodes[c].step.as_ref() == Some(segment))
                });
                let child = match existing {
                    Some(c) => c,
                    None => {
                        let c = nodes.len();
                        nodes.push(Node {
                            step: Some(segment.clone()),
                            ..Node::default()
                        });
                        nodes[at].by_key.entry(key).or_default().push(c);
                        if let Some(i) = segment.as_index() {
                            nodes[at].by_index.entry(i).or_default().push(c);
                        }
                        c
                    }
                };
                at = child;
            }
            nodes[at].ends.push(n);
        }
        Trie { nodes }
    }

    fn has_children(&self, node: usize) -> bool {
        let n = &self.nodes[node];
        !n.by_index.is_empty() || !n.by_key.is_empty()
    }

    /// The steps into list item `i` from `nodes`.
    fn item(&self, nodes: &[usize], i: usize) -> Vec<usize> {
        nodes
            .iter()
            .flat_map(|&n| {
                self.nodes[n]
                    .by_index
                    .get(&i)
                    .into_iter()
                    .flatten()
                    .copied()
            })
            .collect()
    }

    /// The steps into member `key` from `nodes`.
    fn member(&self, nodes: &[usize], key: &str) -> Vec<usize> {
        nodes
            .iter()
            .flat_map(|&n| self.nodes[n].by_key.get(key).into_iter().flatten().copied())
            .collect()
    }
}

/// For each of `paths`, whether it leads to a value inside `text` (valid JSON, as a peer's
/// message is once parsed). Anything unexpected reads as "leads nowhere".
pub(crate) fn existing(text: &str, paths: &[&[Segment]]) -> Vec<bool> {
    let mut found = vec![false; paths.len()];
    let trie = Trie::new(paths);
    let mut scanner = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    // The containers entered, each with the trie nodes of its children and the index of the
    // next item.
    struct Open {
        nodes: Vec<usize>,
        list: bool,
        next: usize,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut current: Vec<usize> = vec![0];
    loop {
        // A value starts here, reached by the trie nodes `current`.
        scanner.ws();
        for &node in &current {
            for &n in &trie.nodes[node].ends {
                found[n] = true;
            }
        }
        let enters = current.iter().any(|&n| trie.has_children(n));
        match scanner.peek() {
            Some(open @ (b'[' | b'{')) if enters => {
                scanner.i += 1;
                stack.push(Open {
                    nodes: std::mem::take(&mut current),
                    list: open == b'[',
                    next: 0,
                });
            }
            Some(_) => {
                if !scanner.skip_value() {
                    return found;
                }
            }
            None => return found,
        }
        // Move to the next value: the next item or member of an open container, closing those
        // that end.
        loop {
            let Some(top) = stack.last_mut() else {
                return found;
            };
            scanner.ws();
            match scanner.peek() {
                Some(b']' | b'}') => {
                    scanner.i += 1;
                    stack.pop();
                    continue;
                }
                Some(b',') => scanner.i += 1,
                Some(_) if top.next == 0 => {}
                _ => return found,
            }
            scanner.ws();
            // An empty container right after its opening bracket.
            if let Some(b']' | b'}') = scanner.peek() {
                continue;
            }
            if top.list {
                current = trie.item(&top.nodes, top.next);
            } else {
                let Some(key) = scanner.string() else {
                    return found;
                };
                scanner.ws();
                if scanner.peek() != Some(b':') {
                    return found;
                }
                scanner.i += 1;
                current = trie.member(&top.nodes, &key);
            }
            top.next += 1;
            break;
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Skips one value (a whole list or object included) without recursion.
    fn skip_value(&mut self) -> bool {
        match self.peek() {
            None => false,
            Some(b'"') => self.skip_string(),
            Some(b'[' | b'{') => {
                self.i += 1;
                let mut depth = 1usize;
                loop {
                    match self.peek() {
                        None => return false,
                        Some(b'"') => {
                            if !self.skip_string() {
                                return false;
                            }
                        }
                        Some(b'[' | b'{') => {
                            depth += 1;
                            self.i += 1;
                        }
                        Some(b']' | b'}') => {
                            self.i += 1;
                            depth -= 1;
                            if depth == 0 {
                                return true;
                            }
                        }
                        Some(_) => self.i += 1,
                    }
                }
            }
            Some(_) => {
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b']' | b'}' | b':' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.i += 1;
                }
                true
            }
        }
    }

    fn skip_string(&mut self) -> bool {
        self.i += 1;
        loop {
            match self.peek() {
                None => return false,
                Some(b'\\') => self.i += 2,
                Some(b'"') => {
                    self.i += 1;
                    return true;
                }
                Some(_) => self.i += 1,
            }
        }
    }

    /// A string's decoded text.
    fn string(&mut self) -> Option<String> {
        let start = self.i;
        if self.peek() != Some(b'"') || !self.skip_string() {
            return None;
        }
        let literal = std::str::from_utf8(self.b.get(start..self.i)?).ok()?;
        if !literal.contains('\\') {
            return Some(literal[1..literal.len() - 1].to_owned());
        }
        serde_json::from_str(literal).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &str) -> Vec<Vec<Segment>> {
        serde_json::from_str(list).unwrap()
    }

    fn check(text: &str, list: &str) -> Vec<bool> {
        let p = paths(list);
        let refs: Vec<&[Segment]> = p.iter().map(Vec::as_slice).collect();
        existing(text, &refs)
    }

    /// Which of the paths of `list` a walk of the parsed `text` finds.
    fn walked(text: &str, list: &str) -> Vec<bool> {
        let tree: serde_json::Value = serde_json::from_str(text).unwrap();
        paths(list)
            .iter()
            .map(|p| crate::tree::at(&tree, p).is_some())
            .collect()
    }

    #[test]
    fn finds_what_a_tree_walk_finds() {
        let text = r#" [ {"a" : [1, {"b\u0063": null}], "0": "x", "s": "[]{},\"" }, [], 7, "]" ] "#;
        let list = r#"[[], [0], [0,"a",1,"bc"], [0,"a",1,"bd"], ["0","0"], [0,0], [1,0], [2],
            [2,0], [3], [4], [0,"s"], [0,"s",0], ["1"], [0,"a","1"]]"#;
        let want = walked(text, list);
        assert_eq!(check(text, list), want);
        assert_eq!(
            want,
            [
                true, true, true, false, true, true, false, true, false, true, false, true, false,
                true, true
            ]
        );
    }

    #[test]
    fn deep_documents_and_long_paths_in_one_pass() {
        let depth = 100_000;
        let text = "[".repeat(depth) + "\"[Function]\"" + &"]".repeat(depth);
        let long: Vec<Segment> = vec![Segment::Index(0); depth];
        let too_long: Vec<Segment> = vec![Segment::Index(0); depth + 1];
        let beside: Vec<Segment> = vec![Segment::Index(1)];
        assert_eq!(
            existing(&text, &[&long, &too_long, &beside]),
            [true, false, false]
        );
    }

    #[test]
    fn an_index_spelled_as_a_key_is_read_as_the_tree_walk_reads_it() {
        // `"00"` and `"+1"` name items 0 and 1 of a list (`Segment::as_index`), and the
        // members "00" and "+1" of an object (found by the dnode_value fuzz target).
        let text = r#"[[-2, 5], {"00": 1, "+1": 2, "0": 3}]"#;
        let list =
            r#"[[0,"00"], [0,"+1"], [1,"00"], [1,"+1"], [1,0], [1,"0"], [0,"0"], ["0","00"]]"#;
        let want = walked(text, list);
        assert_eq!(check(text, list), want);
        assert_eq!(want, [true, true, true, true, true, true, true, true]);
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            "[",
            "{\"a\"",
            "[1,",
            "{\"a\":}",
            "\"unterminated",
            "[\"\\",
        ] {
            let _ = check(text, r#"[[0], ["a"], [0, 0]]"#);
        }
    }
}
