//! `collate`: reads the `node: text` output of any node command on stdin, groups the nodes
//! whose output is identical, and prints one block per distinct output, most common first
//! (reference section 17, item 2; Confluent's `collate` and `textgroup.py`).
//!
//! The core is pure and owns no I/O: [`NodeOutputs`] collects lines, [`NodeOutputs::group_by_output`]
//! groups nodes (labelling each group through a caller-supplied function) and [`render`] turns
//! the groups into text, optionally as differences against the most common output; [`collate`]
//! chains them with local abbreviation. [`main`] adds the I/O: stdin, the daemon's
//! `abbreviate` route (`-a`), per-node log files (`-l`) and the live display (`-w`).
//!
//! Differences from Confluent's tool, on purpose: lines that are not of the `node: text` form
//! form their own `UNKNOWN` block, printed last and never merged with, skipped as, or compared
//! against a node group (Confluent files them under a pseudo-node and may even drop them with
//! `-s`); without `-a` node lists are still abbreviated, locally (`n[1:4]` rather than
//! `n1,n2,n3,n4`); blank input lines are ignored; the intraline colouring of `-d` is used only
//! when stdout is a terminal and `NO_COLOR` is unset.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

use super::client::Client;
use super::output::error_text;
use crate::config::noderange::{self, Verbatim};

/// The label of the block holding lines that do not start with a node name (the pseudo-node
/// name Confluent's collate uses for them).
pub const UNPARSABLE_LABEL: &str = "UNKNOWN";

/// The rule printed above and below every group label.
const RULE: &str = "====================================";

/// Unchanged lines shown around each change in `-d` output, as Confluent does.
const CONTEXT_LINES: usize = 3;

/// Above this many cells the line-level LCS table is not built and the differing middle of
/// two outputs is shown as removed then added: it bounds memory (4 bytes a cell) for
/// pathological inputs while covering any output a person would read as a diff.
const MAX_LCS_CELLS: usize = 4_000_000;

/// Replaced runs larger than this many (old, new) line pairs are not searched for similar
/// pairs to interleave; the search costs a character comparison per pair.
const MAX_PAIR_CANDIDATES: usize = 2_500;

/// Lines longer than this (in characters) are compared with a cheap character-count
/// similarity instead of a character LCS, and are not highlighted within the line.
const MAX_INTRALINE_CHARS: usize = 300;

/// The similarity from which a removed and an added line are shown as a changed pair
/// (Python's `difflib.Differ` cut-off, which Confluent's diff uses).
const PAIR_SIMILARITY: f64 = 0.75;

/// How long `-w` waits for more input before redrawing (Confluent uses 250 ms).
const WATCH_HOLDOFF: Duration = Duration::from_millis(250);

const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";
const CLEAR_SCREEN: &str = "\x1b[2J\x1b[;H";

/// How the groups are printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Show every group but the reference one as differences against it (`-d`).
    pub diff: bool,
    /// Do not print the reference group (the most common, or `base_node`'s) (`-s`).
    pub skip_common: bool,
    /// Print `Count: N` under each label (`-c`).
    pub count: bool,
    /// Least common group first (`-r`).
    pub reverse: bool,
    /// Highlight changed characters of paired lines in `-d` output with ANSI colours.
    pub color: bool,
    /// With `diff`, compare against this node's group instead of the most common (`-b`).
    pub base_node: Option<String>,
}

/// Nodes that printed identical output, and that output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputGroup {
    /// Naturally sorted node names.
    pub nodes: Vec<String>,
    /// The output lines, `node:` prefix and common padding removed.
    pub lines: Vec<String>,
    /// The noderange text shown as the group's header.
    pub label: String,
}

/// Input lines collected by node, in arrival order within each node.
#[derive(Debug, Default)]
pub struct NodeOutputs {
    index: HashMap<String, usize>,
    /// Each node with the raw text after its `node:` prefix, one entry per line.
    nodes: Vec<(String, Vec<String>)>,
    unparsable: Vec<String>,
    /// The fewest leading blanks of any non-blank node text: Confluent strips this common
    /// padding so that `n1: x` and `n1:   x` style outputs both collate to `x`.
    padding: Option<usize>,
}

impl NodeOutputs {
    /// Collects every line of `input`.
    pub fn parse(input: &str) -> NodeOutputs {
        let mut outputs = NodeOutputs::default();
        for line in input.lines() {
            outputs.add_line(line);
        }
        outputs
    }

    /// Adds one input line (a trailing newline is ignored). Blank lines carry nothing and are
    /// skipped; lines without a node name go to the unparsable block.
    pub fn add_line(&mut self, line: &str) {
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            return;
        }
        let Some((node, text)) = split_node_line(line) else {
            self.unparsable.push(line.to_string());
            return;
        };
        if !text.trim().is_empty() {
            let blanks = leading_blanks(text);
            self.padding = Some(self.padding.map_or(blanks, |padding| padding.min(blanks)));
        }
        let slot = match self.index.get(node) {
            Some(&slot) => slot,
            None => {
                self.index.insert(node.to_string(), self.nodes.len());
                self.nodes.push((node.to_string(), Vec::new()));
                self.nodes.len() - 1
            }
        };
        if let Some((_, lines)) = self.nodes.get_mut(slot) {
            lines.push(text.to_string());
        }
    }

    /// True when no line (parsable or not) was collected.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.unparsable.is_empty()
    }

    /// True when `node` printed at least one line.
    pub fn contains_node(&self, node: &str) -> bool {
        self.index.contains_key(node)
    }

    /// Lines that did not start with a node name, verbatim.
    pub fn unparsable(&self) -> &[String] {
        &self.unparsable
    }

    /// Groups nodes with identical output. `label` turns a naturally sorted node list into the
    /// group's header. Groups come most common first, ties in natural order of their labels.
    pub fn group_by_output(&self, label: &mut dyn FnMut(&[String]) -> String) -> Vec<OutputGroup> {
        let padding = self.padding.unwrap_or(0);
        let mut by_output: HashMap<Vec<&str>, Vec<&str>> = HashMap::new();
        for (node, lines) in &self.nodes {
            let output: Vec<&str> = lines
                .iter()
                .map(|line| strip_padding(line, padding))
                .collect();
            by_output.entry(output).or_default().push(node);
        }
        let mut groups: Vec<OutputGroup> = by_output
            .into_iter()
            .map(|(lines, nodes)| {
                let mut nodes: Vec<String> = nodes.into_iter().map(str::to_string).collect();
                nodes.sort_by(|a, b| noderange::natural_cmp(a, b));
                let label = label(&nodes);
                OutputGroup {
                    nodes,
                    lines: lines.into_iter().map(str::to_string).collect(),
                    label,
                }
            })
            .collect();
        groups.sort_by(|a, b| {
            b.nodes
                .len()
                .cmp(&a.nodes.len())
                .then_with(|| noderange::natural_cmp(&a.label, &b.label))
                .then_with(|| a.nodes.first().cmp(&b.nodes.first()))
        });
        groups
    }
}

/// Splits `node: text`. The name must be non-empty without blanks and be followed by a blank
/// or the end of the line, so that text such as `http://host` or `Note - x: y` is not
/// mistaken for node output.
fn split_node_line(line: &str) -> Option<(&str, &str)> {
    let (node, text) = line.split_once(':')?;
    if node.is_empty() || node.chars().any(char::is_whitespace) {
        return None;
    }
    if !(text.is_empty() || text.starts_with([' ', '\t'])) {
        return None;
    }
    Some((node, text))
}

fn leading_blanks(text: &str) -> usize {
    text.len() - text.trim_start_matches([' ', '\t']).len()
}

fn strip_padding(text: &str, padding: usize) -> &str {
    // The cut falls inside ASCII blanks, so it is always a character boundary.
    let cut = leading_blanks(text).min(padding);
    text.get(cut..).unwrap_or(text)
}

/// Abbreviates a node list without the daemon: bracket ranges only, no group names.
pub fn local_label(nodes: &[String]) -> String {
    let names: Vec<Arc<str>> = nodes.iter().map(|node| Arc::from(node.as_str())).collect();
    noderange::abbreviate(&names, &Verbatim)
}

/// The whole of `collate` without I/O: input text in, output text out, node lists
/// abbreviated locally.
pub fn collate(input: &str, options: &RenderOptions) -> String {
    let outputs = NodeOutputs::parse(input);
    let groups = outputs.group_by_output(&mut |nodes| local_label(nodes));
    render(&groups, outputs.unparsable(), options)
}

/// Prints the groups (ordered as [`NodeOutputs::group_by_output`] returns them) and then the
/// unparsable lines, each block as a header, the output and one blank line.
pub fn render(groups: &[OutputGroup], unparsable: &[String], options: &RenderOptions) -> String {
    let mut text = String::new();
    let reference = if options.diff {
        options
            .base_node
            .as_ref()
            .and_then(|base| groups.iter().position(|group| group.nodes.contains(base)))
            .unwrap_or(0)
    } else {
        0
    };
    let mut order: Vec<usize> = (0..groups.len()).collect();
    // The reference group always comes first (last with -r), even when -b picked a smaller
    // group, so that the differences read against what was printed before them.
    if reference != 0 {
        order.retain(|&index| index != reference);
        order.insert(0, reference);
    }
    if options.reverse {
        order.reverse();
    }
    for index in order {
        if options.skip_common && index == reference {
            continue;
        }
        let Some(group) = groups.get(index) else {
            continue;
        };
        push_header(
            &mut text,
            &group.label,
            options.count.then_some(group.nodes.len()),
        );
        if options.diff && index != reference {
            let base: Vec<&str> = groups
                .get(reference)
                .map(|base| base.lines.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let other: Vec<&str> = group.lines.iter().map(String::as_str).collect();
            for line in format_diff(&base, &other, options.color) {
                text.push_str(&line);
                text.push('\n');
            }
        } else {
            for line in &group.lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        text.push('\n');
    }
    if !unparsable.is_empty() {
        push_header(&mut text, UNPARSABLE_LABEL, None);
        for line in unparsable {
            text.push_str(line);
            text.push('\n');
        }
        text.push('\n');
    }
    text
}

fn push_header(text: &mut String, label: &str, count: Option<usize>) {
    text.push_str(RULE);
    text.push('\n');
    text.push_str(label);
    text.push('\n');
    text.push_str(RULE);
    text.push('\n');
    if let Some(count) = count {
        text.push_str(&format!("Count: {count}\n{RULE}\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// Differences
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EditKind {
    Same,
    Removed,
    Added,
}

/// One line of a diff. `changed` marks, per character, what differs from the line it is
/// paired with (empty when the line is not part of a similar pair).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit<'a> {
    kind: EditKind,
    text: &'a str,
    changed: Vec<bool>,
}

impl<'a> Edit<'a> {
    fn plain(kind: EditKind, text: &'a str) -> Edit<'a> {
        Edit {
            kind,
            text,
            changed: Vec::new(),
        }
    }
}

/// Confluent's `-d` format: hunks introduced by `@@`, unchanged lines prefixed with two
/// spaces, removed lines with `- `, added ones with `+ `, and up to three unchanged lines of
/// context around each change.
fn format_diff(old: &[&str], new: &[&str], color: bool) -> Vec<String> {
    let edits = line_edits(old, new);
    let changes: Vec<usize> = edits
        .iter()
        .enumerate()
        .filter(|(_, edit)| edit.kind != EditKind::Same)
        .map(|(index, _)| index)
        .collect();
    let mut lines = Vec::new();
    let mut next_change = 0;
    let mut in_hunk = false;
    for (index, edit) in edits.iter().enumerate() {
        while changes
            .get(next_change)
            .is_some_and(|&change| change + CONTEXT_LINES < index)
        {
            next_change += 1;
        }
        let near_change = changes
            .get(next_change)
            .is_some_and(|&change| change <= index + CONTEXT_LINES);
        if !near_change {
            in_hunk = false;
            continue;
        }
        if !in_hunk {
            lines.push("@@".to_string());
            in_hunk = true;
        }
        let marker = match edit.kind {
            EditKind::Same => "  ",
            EditKind::Removed => "- ",
            EditKind::Added => "+ ",
        };
        let mut line = String::from(marker);
        if color && edit.changed.iter().any(|&changed| changed) {
            highlight(&mut line, edit.text, &edit.changed);
        } else {
            line.push_str(edit.text);
        }
        lines.push(line);
    }
    lines
}

fn highlight(line: &mut String, text: &str, changed: &[bool]) {
    let mut highlighted = false;
    for (character, &is_changed) in text
        .chars()
        .zip(changed.iter().chain(std::iter::repeat(&false)))
    {
        if is_changed != highlighted {
            line.push_str(if is_changed { RED } else { RESET });
            highlighted = is_changed;
        }
        line.push(character);
    }
    if highlighted {
        line.push_str(RESET);
    }
}

/// Line edits turning `old` into `new`: common prefix and suffix, then a longest common
/// subsequence of the middle; each run of removed and added lines between common lines is
/// laid out as `difflib.Differ` does (similar lines paired, otherwise the shorter run first).
fn line_edits<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<Edit<'a>> {
    let prefix = old
        .iter()
        .zip(new.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let old_middle = &old[prefix..old.len() - suffix];
    let new_middle = &new[prefix..new.len() - suffix];
    let mut edits: Vec<Edit<'a>> = old[..prefix]
        .iter()
        .map(|line| Edit::plain(EditKind::Same, line))
        .collect();
    let cells = (old_middle.len() + 1).saturating_mul(new_middle.len() + 1);
    if cells > MAX_LCS_CELLS {
        replace_run(old_middle, new_middle, &mut edits);
    } else {
        middle_edits(old_middle, new_middle, &mut edits);
    }
    edits.extend(
        old[old.len() - suffix..]
            .iter()
            .map(|line| Edit::plain(EditKind::Same, line)),
    );
    edits
}

fn middle_edits<'a>(old: &[&'a str], new: &[&'a str], edits: &mut Vec<Edit<'a>>) {
    let width = new.len() + 1;
    // lengths[i * width + j] is the LCS length of old[i..] and new[j..].
    let mut lengths = vec![0u32; (old.len() + 1) * width];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lengths[i * width + j] = if old[i] == new[j] {
                lengths[(i + 1) * width + j + 1] + 1
            } else {
                lengths[(i + 1) * width + j].max(lengths[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let (mut removed_from, mut added_from) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            replace_run(&old[removed_from..i], &new[added_from..j], edits);
            edits.push(Edit::plain(EditKind::Same, old[i]));
            i += 1;
            j += 1;
            removed_from = i;
            added_from = j;
        } else if j == new.len()
            || (i < old.len() && lengths[(i + 1) * width + j] >= lengths[i * width + j + 1])
        {
            i += 1;
        } else {
            j += 1;
        }
    }
    replace_run(&old[removed_from..], &new[added_from..], edits);
}

/// Lays out a run of removed lines replaced by added lines. The most similar pair (at least
/// [`PAIR_SIMILARITY`]) is shown as `-`/`+` next to each other and the lines before and after
/// it are laid out the same way; without such a pair the shorter run comes first.
fn replace_run<'a>(old: &[&'a str], new: &[&'a str], edits: &mut Vec<Edit<'a>>) {
    if old.is_empty() || new.is_empty() {
        edits.extend(old.iter().map(|line| Edit::plain(EditKind::Removed, line)));
        edits.extend(new.iter().map(|line| Edit::plain(EditKind::Added, line)));
        return;
    }
    let best = if old.len().saturating_mul(new.len()) > MAX_PAIR_CANDIDATES {
        None
    } else {
        most_similar_pair(old, new)
    };
    let Some((old_index, new_index)) = best else {
        if new.len() < old.len() {
            edits.extend(new.iter().map(|line| Edit::plain(EditKind::Added, line)));
            edits.extend(old.iter().map(|line| Edit::plain(EditKind::Removed, line)));
        } else {
            edits.extend(old.iter().map(|line| Edit::plain(EditKind::Removed, line)));
            edits.extend(new.iter().map(|line| Edit::plain(EditKind::Added, line)));
        }
        return;
    };
    replace_run(&old[..old_index], &new[..new_index], edits);
    let (old_line, new_line) = (old[old_index], new[new_index]);
    let (old_changed, new_changed) = character_changes(old_line, new_line);
    edits.push(Edit {
        kind: EditKind::Removed,
        text: old_line,
        changed: old_changed,
    });
    edits.push(Edit {
        kind: EditKind::Added,
        text: new_line,
        changed: new_changed,
    });
    replace_run(&old[old_index + 1..], &new[new_index + 1..], edits);
}

fn most_similar_pair(old: &[&str], new: &[&str]) -> Option<(usize, usize)> {
    let mut best: Option<(f64, usize, usize)> = None;
    for (new_index, new_line) in new.iter().enumerate() {
        for (old_index, old_line) in old.iter().enumerate() {
            let floor = best.map_or(PAIR_SIMILARITY, |(ratio, _, _)| ratio);
            // Cheap upper bounds first, as difflib does, so that the character LCS runs only
            // for candidates that could win.
            let (old_length, new_length) = (old_line.chars().count(), new_line.chars().count());
            let total = old_length + new_length;
            if total == 0 {
                continue;
            }
            let length_bound = 2.0 * old_length.min(new_length) as f64 / total as f64;
            if length_bound < floor || (best.is_some() && length_bound <= floor) {
                continue;
            }
            let ratio = similarity(old_line, new_line);
            if ratio >= PAIR_SIMILARITY && best.is_none_or(|(current, _, _)| ratio > current) {
                best = Some((ratio, old_index, new_index));
            }
        }
    }
    best.map(|(_, old_index, new_index)| (old_index, new_index))
}

/// `2 * matches / total characters`, matches counted by character LCS (by common character
/// counts for long lines).
fn similarity(old: &str, new: &str) -> f64 {
    let old: Vec<char> = old.chars().collect();
    let new: Vec<char> = new.chars().collect();
    let total = old.len() + new.len();
    if total == 0 {
        return 1.0;
    }
    let matches = if old.len() > MAX_INTRALINE_CHARS || new.len() > MAX_INTRALINE_CHARS {
        let mut counts: HashMap<char, isize> = HashMap::new();
        for character in &old {
            *counts.entry(*character).or_default() += 1;
        }
        let mut matches = 0;
        for character in &new {
            let count = counts.entry(*character).or_default();
            if *count > 0 {
                *count -= 1;
                matches += 1;
            }
        }
        matches
    } else {
        character_lcs(&old, &new).0
    };
    2.0 * matches as f64 / total as f64
}

/// The characters of each line that are not part of their LCS.
fn character_changes(old: &str, new: &str) -> (Vec<bool>, Vec<bool>) {
    let old: Vec<char> = old.chars().collect();
    let new: Vec<char> = new.chars().collect();
    if old.len() > MAX_INTRALINE_CHARS || new.len() > MAX_INTRALINE_CHARS {
        return (Vec::new(), Vec::new());
    }
    let (_, old_changed, new_changed) = character_lcs(&old, &new);
    (old_changed, new_changed)
}

fn character_lcs(old: &[char], new: &[char]) -> (usize, Vec<bool>, Vec<bool>) {
    let width = new.len() + 1;
    let mut lengths = vec![0u16; (old.len() + 1) * width];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lengths[i * width + j] = if old[i] == new[j] {
                lengths[(i + 1) * width + j + 1] + 1
            } else {
                lengths[(i + 1) * width + j].max(lengths[i * width + j + 1])
            };
        }
    }
    let mut old_changed = vec![true; old.len()];
    let mut new_changed = vec![true; new.len()];
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < new.len() {
        if old[i] == new[j] {
            old_changed[i] = false;
            new_changed[j] = false;
            i += 1;
            j += 1;
        } else if lengths[(i + 1) * width + j] >= lengths[i * width + j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    (usize::from(lengths[0]), old_changed, new_changed)
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------

#[derive(Parser)]
#[command(
    name = "collate",
    about = "Group identical node output: <other command> | collate [options]",
    override_usage = "<other command> | collate [OPTIONS]"
)]
struct Arguments {
    /// Abbreviate node lists through confluentd (group names included).
    #[arg(short, long)]
    abbreviate: bool,
    /// With -d, compare against this node's output instead of the most common one.
    #[arg(short, long, value_name = "NODE")]
    base: Option<String>,
    /// Show what differs between the most common output and the others.
    #[arg(short, long)]
    diff: bool,
    /// Show intermediate results while input arrives.
    #[arg(short, long)]
    watch: bool,
    /// Print only the number of distinct outputs.
    #[arg(short, long)]
    groupcount: bool,
    /// Do not print the most common output (useful with -d).
    #[arg(short, long)]
    skipcommon: bool,
    /// Show the number of nodes of each group.
    #[arg(short, long)]
    count: bool,
    /// Least common output first, most common last.
    #[arg(short, long)]
    reverse: bool,
    /// Append each node's output to DIR/<node> instead of printing (or to a path template
    /// containing {node}).
    #[arg(short, long, value_name = "DIR")]
    log: Option<String>,
}

/// `collate [-a] [-b NODE] [-d] [-w] [-g] [-s] [-c] [-r] [-l DIR]`.
pub fn main(args: Vec<OsString>) -> i32 {
    let arguments = match Arguments::try_parse_from(args) {
        Ok(arguments) => arguments,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { 2 } else { 0 };
        }
    };
    if std::io::stdin().is_terminal() {
        // Nothing is piped in: waiting for typed node output would only look like a hang.
        eprintln!(
            "collate: reads the output of a node command: <other command> | collate [options]"
        );
        eprintln!("try 'collate --help'");
        return 1;
    }
    if let Some(target) = &arguments.log {
        return write_logs(target);
    }
    let options = RenderOptions {
        diff: arguments.diff,
        skip_common: arguments.skipcommon,
        count: arguments.count,
        reverse: arguments.reverse,
        color: arguments.diff
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none(),
        base_node: arguments.base.clone(),
    };
    let mut labeller = Labeller::new(arguments.abbreviate);
    let mut status = 0;
    let outputs = if arguments.watch {
        watch(&options, arguments.groupcount, &mut labeller)
    } else {
        let mut input = Vec::new();
        if let Err(error) = std::io::stdin().lock().read_to_end(&mut input) {
            eprintln!("Error: cannot read standard input: {error}");
            status = 1;
        }
        let outputs = NodeOutputs::parse(&String::from_utf8_lossy(&input));
        print(&draw(
            &outputs,
            &options,
            arguments.groupcount,
            &mut labeller,
        ));
        outputs
    };
    if let Some(base) = &arguments.base
        && arguments.diff
        && !outputs.contains_node(base)
    {
        eprintln!("Warning: node {base} is not in the input; compared with the most common output");
    }
    if labeller.failed {
        status = 1;
    }
    status
}

fn draw(
    outputs: &NodeOutputs,
    options: &RenderOptions,
    group_count: bool,
    labeller: &mut Labeller,
) -> String {
    if group_count {
        // Labels are not needed to count, so -g never asks the daemon anything.
        let groups = outputs.group_by_output(&mut |_| String::new()).len();
        let unparsable = usize::from(!outputs.unparsable().is_empty());
        return format!("{}\n", groups + unparsable);
    }
    let groups = outputs.group_by_output(&mut |nodes| labeller.label(nodes));
    render(&groups, outputs.unparsable(), options)
}

fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`collate | head`) is not an error worth reporting.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Reads stdin on a helper thread and redraws whenever input pauses for [`WATCH_HOLDOFF`] or
/// has been arriving for that long without a pause.
fn watch(options: &RenderOptions, group_count: bool, labeller: &mut Labeller) -> NodeOutputs {
    let (sender, receiver) = mpsc::channel::<String>();
    // The reader ends at end of input; nothing joins it because the main loop ends then too.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if sender
                        .send(String::from_utf8_lossy(&line).into_owned())
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let mut outputs = NodeOutputs::default();
    let mut pending_since: Option<Instant> = None;
    loop {
        let redraw = match receiver.recv_timeout(WATCH_HOLDOFF) {
            Ok(line) => {
                outputs.add_line(&line);
                let since = *pending_since.get_or_insert_with(Instant::now);
                since.elapsed() >= WATCH_HOLDOFF
            }
            Err(RecvTimeoutError::Timeout) => pending_since.is_some(),
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if redraw {
            pending_since = None;
            print(&format!(
                "{CLEAR_SCREEN}{}",
                draw(&outputs, options, group_count, labeller)
            ));
        }
    }
    if pending_since.is_some() || outputs.is_empty() {
        print(&format!(
            "{CLEAR_SCREEN}{}",
            draw(&outputs, options, group_count, labeller)
        ));
    }
    outputs
}

/// Turns node lists into labels, through the daemon with `-a` (cached, because `-w` asks
/// again for the same groups at every redraw), locally otherwise or once the daemon failed.
struct Labeller {
    use_daemon: bool,
    client: Option<Client>,
    cache: HashMap<Vec<String>, String>,
    failed: bool,
}

impl Labeller {
    fn new(use_daemon: bool) -> Labeller {
        Labeller {
            use_daemon,
            client: None,
            cache: HashMap::new(),
            failed: false,
        }
    }

    fn label(&mut self, nodes: &[String]) -> String {
        if !self.use_daemon || self.failed {
            return local_label(nodes);
        }
        if let Some(label) = self.cache.get(nodes) {
            return label.clone();
        }
        match self.ask_daemon(nodes) {
            Ok(label) => {
                self.cache.insert(nodes.to_vec(), label.clone());
                label
            }
            Err(text) => {
                // One message, then local abbreviation: the grouping is still worth printing.
                eprintln!(
                    "Error: cannot abbreviate through confluentd ({text}); abbreviating locally"
                );
                self.failed = true;
                local_label(nodes)
            }
        }
    }

    fn ask_daemon(&mut self, nodes: &[String]) -> Result<String, String> {
        if self.client.is_none() {
            self.client = Some(Client::connect().map_err(|error| error_text(&error))?);
        }
        let Some(client) = self.client.as_mut() else {
            return Err("no connection".to_string());
        };
        let messages = client
            .request(
                "create",
                "/noderange//abbreviate",
                json!({ "nodes": nodes }),
            )
            .map_err(|error| error_text(&error))?;
        for message in &messages {
            if let Some(error) = message.get("error").and_then(Value::as_str) {
                return Err(error.to_string());
            }
            if let Some(label) = message.get("noderange").and_then(Value::as_str) {
                return Ok(label.to_string());
            }
        }
        Err("the daemon sent no noderange".to_string())
    }
}

/// `-l`: append each line to its node's file as it arrives, print nothing (as Confluent
/// does). Only the single blank after `node:` is removed, because lines are written before
/// the rest of the input could show a wider common padding.
fn write_logs(target: &str) -> i32 {
    let template = target.contains("{node}") || target.contains("{nodename}");
    if !template && let Err(error) = std::fs::create_dir_all(target) {
        eprintln!("Error: cannot create {target}: {error}");
        return 1;
    }
    let mut failed: HashSet<String> = HashSet::new();
    let mut stdin = std::io::stdin().lock();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match stdin.read_until(b'\n', &mut raw) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                eprintln!("Error: cannot read standard input: {error}");
                return 1;
            }
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let (node, text) = match split_node_line(line) {
            Some((node, text)) => (node, text.strip_prefix(' ').unwrap_or(text)),
            None => (UNPARSABLE_LABEL, line),
        };
        if failed.contains(node) {
            continue;
        }
        let result = log_path(target, template, node).and_then(|path| append_line(&path, text));
        if let Err(text) = result {
            eprintln!("{node}: Error: {text}");
            failed.insert(node.to_string());
        }
    }
    i32::from(!failed.is_empty())
}

/// The log file of `node`. Node names come from untrusted text, so a name that could leave
/// the directory (`..`, a `/`) is refused rather than written.
fn log_path(target: &str, template: bool, node: &str) -> Result<PathBuf, String> {
    if node == "." || node == ".." || node.contains(['/', '\0']) {
        return Err(format!("'{node}' cannot be used as a file name"));
    }
    Ok(if template {
        PathBuf::from(target.replace("{nodename}", node).replace("{node}", node))
    } else {
        Path::new(target).join(node)
    })
}

fn append_line(path: &Path, text: &str) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    writeln!(file, "{text}").map_err(|error| format!("cannot write {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> RenderOptions {
        RenderOptions::default()
    }

    fn block(label: &str, lines: &[&str]) -> String {
        let mut text = format!("{RULE}\n{label}\n{RULE}\n");
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push('\n');
        text
    }

    const POWER: &str = "n1: on\nn2: on\nn3: on\nn4: on\nn5: off\nn6: off\nn7: on\n\
                         n8: on\nn9: on\nn10: on\nn11: on\nn12: on\n";

    #[test]
    fn groups_most_common_first_as_in_the_manual() {
        let expected = block("n[1:4,7:12]", &["on"]) + &block("n[5:6]", &["off"]);
        assert_eq!(collate(POWER, &options()), expected);
    }

    #[test]
    fn reverse_puts_most_common_last() {
        let reversed = RenderOptions {
            reverse: true,
            ..options()
        };
        let expected = block("n[5:6]", &["off"]) + &block("n[1:4,7:12]", &["on"]);
        assert_eq!(collate(POWER, &reversed), expected);
    }

    #[test]
    fn count_and_skip_common() {
        let counted = RenderOptions {
            count: true,
            skip_common: true,
            ..options()
        };
        let expected = format!("{RULE}\nn[5:6]\n{RULE}\nCount: 2\n{RULE}\noff\n\n");
        assert_eq!(collate(POWER, &counted), expected);
        let reversed = RenderOptions {
            reverse: true,
            ..counted
        };
        assert_eq!(collate(POWER, &reversed), expected);
    }

    #[test]
    fn multi_line_outputs_compare_whole_and_keep_line_order() {
        let input = "n2: a\nn1: a\nn2: b\nn1: b\nn3: a\nn3: c\n";
        let expected = block("n[1:2]", &["a", "b"]) + &block("n3", &["a", "c"]);
        assert_eq!(collate(input, &options()), expected);
    }

    #[test]
    fn ties_are_ordered_naturally_by_label() {
        let input = "n10: x\nn9: y\nn2: z\n";
        let expected = block("n2", &["z"]) + &block("n9", &["y"]) + &block("n10", &["x"]);
        assert_eq!(collate(input, &options()), expected);
    }

    #[test]
    fn unparsable_lines_are_kept_in_their_own_block_last() {
        let input = "n1: ok\nTraceback (most recent call last):\nhttp://example\nn2: ok\n\n   \n";
        let expected = block("n[1:2]", &["ok"])
            + &block(
                UNPARSABLE_LABEL,
                &["Traceback (most recent call last):", "http://example"],
            );
        assert_eq!(collate(input, &options()), expected);
        // -s skips the most common node group, never the unparsable lines.
        let skipped = RenderOptions {
            skip_common: true,
            count: true,
            ..options()
        };
        assert_eq!(
            collate("garbage\n", &skipped),
            block(UNPARSABLE_LABEL, &["garbage"])
        );
    }

    #[test]
    fn common_padding_is_removed_once() {
        // Every line has at least two blanks after the colon: both are padding, the extra
        // indentation of the second line is content.
        let input = "n1:  a\nn1:    b\nn2:  a\nn2:    b\n";
        assert_eq!(collate(input, &options()), block("n[1:2]", &["a", "  b"]));
        // Empty output lines do not count towards the padding.
        let input = "n1: a\nn1:\nn2: a\nn2:\n";
        assert_eq!(collate(input, &options()), block("n[1:2]", &["a", ""]));
    }

    #[test]
    fn node_names_need_a_blank_or_end_after_the_colon() {
        assert_eq!(split_node_line("n1: x"), Some(("n1", " x")));
        assert_eq!(split_node_line("n1:"), Some(("n1", "")));
        assert_eq!(split_node_line("n1:\tx"), Some(("n1", "\tx")));
        assert_eq!(split_node_line("n1:x"), None);
        assert_eq!(split_node_line(": x"), None);
        assert_eq!(split_node_line("two words: x"), None);
        assert_eq!(split_node_line("no colon"), None);
    }

    #[test]
    fn empty_input_prints_nothing() {
        assert_eq!(collate("", &options()), "");
        assert_eq!(collate("\n\n", &options()), "");
    }

    #[test]
    fn diff_matches_the_manual_example() {
        let common = [
            "Processors.ProcessorPerformanceStates=Enable",
            "Processors.C-States=Enable",
            "Processors.PackageACPIC-StateLimit=ACPI C3",
            "Processors.C1EnhancedMode=Enable",
            "Processors.Hyper-Threading=Enable",
            "Processors.ExecuteDisableBit=Enable",
            "Processors.IntelVirtualizationTechnology=Enable",
        ];
        let mut input = String::new();
        for node in ["n1", "n2", "n4"] {
            for line in common {
                input.push_str(&format!("{node}: {line}\n"));
            }
        }
        for line in common {
            let line = line.replace("C1EnhancedMode=Enable", "C1EnhancedMode=Disable");
            let line = line.replace("Hyper-Threading=Enable", "Hyper-Threading=Disable");
            input.push_str(&format!("n3: {line}\n"));
        }
        let diff = RenderOptions {
            diff: true,
            skip_common: true,
            ..options()
        };
        let expected = block(
            "n3",
            &[
                "@@",
                "  Processors.ProcessorPerformanceStates=Enable",
                "  Processors.C-States=Enable",
                "  Processors.PackageACPIC-StateLimit=ACPI C3",
                "- Processors.C1EnhancedMode=Enable",
                "+ Processors.C1EnhancedMode=Disable",
                "- Processors.Hyper-Threading=Enable",
                "+ Processors.Hyper-Threading=Disable",
                "  Processors.ExecuteDisableBit=Enable",
                "  Processors.IntelVirtualizationTechnology=Enable",
            ],
        );
        assert_eq!(collate(&input, &diff), expected);
    }

    #[test]
    fn diff_splits_distant_changes_into_hunks() {
        let old: Vec<String> = (1..=20).map(|n| format!("line {n}")).collect();
        let mut new = old.clone();
        new[1] = "line two".to_string();
        new.remove(15);
        let old: Vec<&str> = old.iter().map(String::as_str).collect();
        let new: Vec<&str> = new.iter().map(String::as_str).collect();
        let lines = format_diff(&old, &new, false);
        assert_eq!(
            lines,
            [
                "@@",
                "  line 1",
                "- line 2",
                "+ line two",
                "  line 3",
                "  line 4",
                "  line 5",
                "@@",
                "  line 13",
                "  line 14",
                "  line 15",
                "- line 16",
                "  line 17",
                "  line 18",
                "  line 19",
            ]
        );
    }

    #[test]
    fn dissimilar_replacements_show_the_shorter_run_first() {
        let lines = format_diff(&["same", "alpha", "beta"], &["same", "0123456789"], false);
        assert_eq!(lines, ["@@", "  same", "+ 0123456789", "- alpha", "- beta"]);
        let lines = format_diff(&["same", "alpha"], &["same", "0123", "4567"], false);
        assert_eq!(lines, ["@@", "  same", "- alpha", "+ 0123", "+ 4567"]);
    }

    #[test]
    fn diff_of_added_and_removed_lines() {
        assert_eq!(
            format_diff(&["a"], &["a", "b"], false),
            ["@@", "  a", "+ b"]
        );
        assert_eq!(
            format_diff(&["a", "b"], &["b"], false),
            ["@@", "- a", "  b"]
        );
        assert_eq!(format_diff(&[], &["x"], false), ["@@", "+ x"]);
    }

    #[test]
    fn colour_marks_only_the_changed_characters() {
        let lines = format_diff(&["state: on"], &["state: off"], true);
        assert_eq!(
            lines,
            [
                "@@".to_string(),
                format!("- state: o{RED}n{RESET}"),
                format!("+ state: o{RED}ff{RESET}"),
            ]
        );
    }

    #[test]
    fn base_node_chooses_the_reference_group() {
        let input = "n1: on\nn2: on\nn3: off\n";
        let based = RenderOptions {
            diff: true,
            base_node: Some("n3".to_string()),
            ..options()
        };
        let expected = block("n3", &["off"]) + &block("n[1:2]", &["@@", "- off", "+ on"]);
        assert_eq!(collate(input, &based), expected);
        // Without -d the base node changes nothing, as in Confluent.
        let plain = RenderOptions {
            diff: false,
            ..based
        };
        assert_eq!(
            collate(input, &plain),
            block("n[1:2]", &["on"]) + &block("n3", &["off"])
        );
    }

    #[test]
    fn reverse_diff_prints_the_reference_last() {
        let input = "n1: on\nn2: on\nn3: off\n";
        let reversed = RenderOptions {
            diff: true,
            reverse: true,
            ..options()
        };
        let expected = block("n3", &["@@", "- on", "+ off"]) + &block("n[1:2]", &["on"]);
        assert_eq!(collate(input, &reversed), expected);
    }

    #[test]
    fn labels_come_from_the_given_function() {
        let outputs = NodeOutputs::parse(POWER);
        let groups = outputs.group_by_output(&mut |nodes| nodes.join("+"));
        assert_eq!(groups[0].label, "n1+n2+n3+n4+n7+n8+n9+n10+n11+n12");
        assert_eq!(groups[1].nodes, ["n5", "n6"]);
    }

    #[test]
    fn large_outputs_stay_bounded() {
        // 3,000 lines against 3,000 different lines exceeds the LCS cap: still a valid diff.
        let old: Vec<String> = (0..3_000).map(|n| format!("old {n}")).collect();
        let new: Vec<String> = (0..3_000).map(|n| format!("new {n}")).collect();
        let old: Vec<&str> = old.iter().map(String::as_str).collect();
        let new: Vec<&str> = new.iter().map(String::as_str).collect();
        let edits = line_edits(&old, &new);
        assert_eq!(edits.len(), 6_000);
        assert!(
            edits[..3_000]
                .iter()
                .all(|edit| edit.kind == EditKind::Removed)
        );
    }

    #[test]
    fn log_paths_refuse_escaping_names() {
        assert_eq!(
            log_path("/tmp/logs", false, "n1"),
            Ok(PathBuf::from("/tmp/logs/n1"))
        );
        assert_eq!(
            log_path("/tmp/{node}.log", true, "n1"),
            Ok(PathBuf::from("/tmp/n1.log"))
        );
        assert!(log_path("/tmp/logs", false, "..").is_err());
        assert!(log_path("/tmp/logs", false, "a/b").is_err());
    }
}
