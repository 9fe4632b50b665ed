//! Noderange expressions: the grammar that names sets of nodes (`n1-n20`, `r[1-3]u[01-10]`,
//! `compute@rack1,-n5`, `location.rack=7`, `~r1u..`, `rack1>3<6`), its expansion into a
//! de-duplicated, naturally sorted list of canonical node names, the reverse operation
//! (abbreviating a node list into short noderange text), natural ordering, and the rule that
//! decides whether a new node, group or alias name is acceptable.
//!
//! This module owns the grammar and its evaluation rules only. Everything it knows about nodes,
//! groups, aliases and attribute values comes through the [`Universe`] trait, implemented by
//! the configuration store (and by [`Verbatim`] for offline use without one). It must not store
//! or change configuration, and it must not depend on any other module of the crate.
//!
//! Grammar summary (see the reference, section 2): atoms are joined by `,` (union), `,-`
//! (difference) and `@` (intersection), evaluated strictly left to right within a parenthesis
//! level; `<N` (skip the first N) and `>N` (keep only N) end the expression and apply after the
//! natural sort. An atom is, in this order: a regular expression (`/…` or `~…`), an attribute
//! filter (`attr=v`, `attr==v`, `attr!=v`, `attr=~re`, `attr!~re`), a bracketed template
//! (`r[1-3]u[01-10]`), an exact node, alias or group name, a range (`n1:n20`, `n1..n20`,
//! `n1-n20`, `r1u01-r3u10`, `rack1-rack10`) or an increment (`n1+3`).
//!
//! Extensions over the reference: node aliases resolve wherever a node name is accepted; the
//! characters `?`, `\`, `{`, `}` and `|` are accepted inside atoms so that regular expressions
//! and attribute wildcards can use them; errors name the offending token, its position and why
//! it is wrong.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use regex::Regex;

/// How many dynamic groups may be expanded inside one another before expansion gives up.
pub const MAX_DYNAMIC_GROUP_DEPTH: usize = 16;

/// The most names one element (a range, a bracketed template) may generate, the most names a
/// [`Verbatim`] expansion may produce, and the most values the brackets of one noderange may
/// spell out in total. It protects memory against typing mistakes such as
/// `n[1-999999999]`; it is ten times the largest cluster this daemon is sized for.
pub const MAX_GENERATED_NAMES: usize = 1_000_000;

/// Parentheses deeper than this are refused, so that the recursive parser and evaluator can
/// never exhaust the stack on hostile input.
const MAX_PARENTHESIS_DEPTH: usize = 64;

/// Small names up to this many combinations are written out one by one when that is shorter
/// than the bracketed form (`n01,n03` rather than `n[01,03]`).
const MAX_SPELLED_OUT_COMBINATIONS: usize = 8;

/// Stands for "no key prefix": the name cannot be encoded (see [`natural_key_prefix`]). No
/// real prefix equals it, because the first byte of an encoding is 0 or a UTF-8 byte, never
/// 0xFF.
const UNSORTABLE: u128 = u128::MAX;

type NameIndex = HashMap<Arc<str>, u128>;

/// Beyond this many gathered names, a list that keeps receiving unions is de-duplicated into
/// an index, so that `compute,compute,…` cannot grow memory without bound.
const UNINDEXED_UNION_LIMIT: usize = 1 << 17;

/// A set of canonical node names, each stored with its natural sort key prefix, computed once
/// when the name is inserted, so that the final sort compares integers instead of walking
/// 100,000 scattered strings again (memory latency, not comparisons, dominates that sort).
///
/// Unions, by far the most common operation, only gather names into `list` (duplicates are
/// removed by the final sort); the hash `index` is built only when a difference or an
/// intersection needs membership tests, and then preferably over the smaller operand.
/// INVARIANT: once `index` exists, `list` is empty and every name lives in the index.
#[derive(Default)]
struct NodeSet {
    list: Vec<(u128, Arc<str>)>,
    index: Option<NameIndex>,
}

impl NodeSet {
    /// The number of names, counting duplicates while not indexed.
    fn gathered(&self) -> usize {
        self.index.as_ref().map_or(self.list.len(), HashMap::len)
    }

    fn reserve(&mut self, additional: usize) {
        match &mut self.index {
            Some(index) => index.reserve(additional),
            None => self.list.reserve(additional),
        }
    }

    fn insert(&mut self, name: Arc<str>) {
        let prefix = natural_key_prefix(&name).unwrap_or(UNSORTABLE);
        self.insert_entry(name, prefix);
    }

    fn insert_entry(&mut self, name: Arc<str>, prefix: u128) {
        match &mut self.index {
            Some(index) => {
                index.insert(name, prefix);
            }
            None => self.list.push((prefix, name)),
        }
    }

    fn for_each_entry<E>(
        &self,
        mut visit: impl FnMut(&Arc<str>, u128) -> Result<(), E>,
    ) -> Result<(), E> {
        for (prefix, name) in &self.list {
            visit(name, *prefix)?;
        }
        for (name, prefix) in self.index.iter().flatten() {
            visit(name, *prefix)?;
        }
        Ok(())
    }

    /// The de-duplicated index, building it from the list if needed.
    fn index(&mut self) -> &mut NameIndex {
        let list = &mut self.list;
        self.index.get_or_insert_with(|| {
            std::mem::take(list)
                .into_iter()
                .map(|(prefix, name)| (name, prefix))
                .collect()
        })
    }

    fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.list.retain(|(_, name)| keep(name));
        if let Some(index) = &mut self.index {
            index.retain(|name, _| keep(name));
        }
    }

    /// Union.
    fn absorb(&mut self, other: NodeSet) {
        if self.gathered() == 0 {
            *self = other;
            return;
        }
        self.reserve(other.gathered());
        for (prefix, name) in other.list {
            self.insert_entry(name, prefix);
        }
        for (name, prefix) in other.index.into_iter().flatten() {
            self.insert_entry(name, prefix);
        }
    }

    /// De-duplicates a list that has grown large through unions.
    fn bound_unions(&mut self) {
        if self.list.len() > UNINDEXED_UNION_LIMIT {
            self.index();
        }
    }

    /// Difference.
    fn subtract(&mut self, mut removed: NodeSet) {
        let removed_count = removed.gathered();
        if removed_count == 0 {
            return;
        }
        match &mut self.index {
            Some(index) if removed_count < index.len() => {
                let _ = removed.for_each_entry(|name, _| {
                    index.remove(name);
                    Ok::<(), ()>(())
                });
            }
            _ => {
                let removed = removed.index();
                self.retain(|name| !removed.contains_key(name));
            }
        }
    }

    /// Intersection: keeps the members of one operand found in the index of the other,
    /// indexing the smaller operand unless the larger one is already indexed.
    fn intersect(self, other: NodeSet) -> NodeSet {
        let (mut small, mut large) = if self.gathered() <= other.gathered() {
            (self, other)
        } else {
            (other, self)
        };
        if let Some(index) = &large.index {
            small.retain(|name| index.contains_key(name));
            small
        } else {
            let index = small.index();
            large.retain(|name| index.contains_key(name));
            large
        }
    }

    /// The distinct names in [`natural_cmp`] order.
    fn into_sorted(self) -> Vec<Arc<str>> {
        let mut keyed = self.list;
        keyed.extend(
            self.index
                .into_iter()
                .flatten()
                .map(|(name, prefix)| (prefix, name)),
        );
        if keyed.iter().any(|(prefix, _)| *prefix == UNSORTABLE) {
            keyed.sort_by(|left, right| natural_cmp(&left.1, &right.1));
        } else {
            keyed.sort_unstable_by(|left, right| {
                left.0
                    .cmp(&right.0)
                    .then_with(|| natural_cmp(&left.1, &right.1))
            });
        }
        // Equal names sort next to each other: `natural_cmp` only ties identical names.
        keyed.dedup_by(|left, right| left.1 == right.1);
        keyed.into_iter().map(|(_, name)| name).collect()
    }
}

impl FromIterator<Arc<str>> for NodeSet {
    fn from_iter<I: IntoIterator<Item = Arc<str>>>(names: I) -> Self {
        let mut set = NodeSet::default();
        for name in names {
            set.insert(name);
        }
        set
    }
}

/// What a noderange is evaluated against: implemented by the configuration store, by
/// [`Verbatim`], and by test fakes.
pub trait Universe {
    /// Canonical node name if `name` is a node name or a node alias.
    fn node(&self, name: &str) -> Option<Arc<str>>;

    /// Group by exact name: static members and the dynamic `noderange` text if the group is
    /// dynamic.
    fn group(&self, name: &str) -> Option<GroupMembers>;

    /// Every group name (for abbreviation).
    fn group_names(&self) -> Vec<Arc<str>>;

    /// Calls `visit` for every node in the configuration (order irrelevant).
    fn for_each_node(&self, visit: &mut dyn FnMut(&Arc<str>));

    /// Effective values of every attribute of `node` whose name matches `attribute_pattern`
    /// (which may contain `*`/`?` wildcards); calls `visit` for each value and stops early
    /// when it returns true. Returns `Ok(true)` if some visit returned true, `Ok(false)`
    /// otherwise, and `Err(reason)` for an invalid attribute name or a forbidden one
    /// (secrets). An attribute that is unset is not visited: the noderange code applies the
    /// "unset compares as the empty string" rule itself.
    fn attribute_matches(
        &self,
        node: &str,
        attribute_pattern: &str,
        visit: &mut dyn FnMut(&str) -> bool,
    ) -> Result<bool, String>;

    /// True for a universe that knows no configuration (see [`Verbatim`]): range forms are
    /// then always expanded, generated names are not checked, and regular expressions,
    /// attribute filters and pagination over all nodes are refused.
    fn is_verbatim(&self) -> bool {
        false
    }

    /// Calls `select` for every node of the whole configuration whose attribute(s) matching
    /// `attribute_pattern` satisfy `accepts` (an unset attribute is tested as ""). The default
    /// goes through [`Universe::for_each_node`] and [`Universe::attribute_matches`]; a universe
    /// holding 100,000 nodes overrides it to resolve the attribute name once and walk its nodes
    /// in one pass.
    fn filter_nodes(
        &self,
        attribute_pattern: &str,
        accepts: &dyn Fn(&str) -> bool,
        select: &mut dyn FnMut(&Arc<str>),
    ) -> Result<(), String> {
        let mut failure = None;
        self.for_each_node(&mut |node| {
            if failure.is_some() {
                return;
            }
            let mut visited = false;
            match self.attribute_matches(node, attribute_pattern, &mut |value| {
                visited = true;
                accepts(value)
            }) {
                Ok(matched) => {
                    if matched || (!visited && accepts("")) {
                        select(node);
                    }
                }
                Err(reason) => failure = Some(reason),
            }
        });
        match failure {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// The members of one group as the universe knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupMembers {
    /// Static members (canonical node names).
    pub nodes: Vec<Arc<str>>,
    /// The dynamic membership noderange, if the group is dynamic.
    pub noderange: Option<String>,
}

/// A universe in which every name is taken verbatim as a node: no configuration, as in the
/// CLI's offline collate/abbreviate use, or when creating nodes from a range.
#[derive(Debug, Clone, Copy, Default)]
pub struct Verbatim;

impl Universe for Verbatim {
    fn node(&self, name: &str) -> Option<Arc<str>> {
        Some(Arc::from(name))
    }

    fn group(&self, _name: &str) -> Option<GroupMembers> {
        None
    }

    fn group_names(&self) -> Vec<Arc<str>> {
        Vec::new()
    }

    fn for_each_node(&self, _visit: &mut dyn FnMut(&Arc<str>)) {}

    fn attribute_matches(
        &self,
        _node: &str,
        _attribute_pattern: &str,
        _visit: &mut dyn FnMut(&str) -> bool,
    ) -> Result<bool, String> {
        Err("attribute filters need a configuration".to_owned())
    }

    fn is_verbatim(&self) -> bool {
        true
    }
}

/// Why a noderange could not be parsed or expanded, or why a name is not acceptable.
/// Positions are 1-based character positions in the text that was parsed.
#[derive(Debug, thiserror::Error)]
pub enum NoderangeError {
    /// The text is empty or only whitespace.
    #[error("empty noderange")]
    Empty,
    /// A character the grammar does not use.
    #[error("unexpected character `{character}` at position {position}")]
    UnexpectedCharacter {
        /// The character.
        character: char,
        /// Its position.
        position: usize,
    },
    /// A token where the grammar does not allow it.
    #[error("`{token}` at position {position}: {reason}")]
    Syntax {
        /// The offending token.
        token: String,
        /// Its position.
        position: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A name that is neither a node, an alias, a group nor a range.
    #[error("`{name}` not a recognized node, group, or alias")]
    UnknownName {
        /// The name as written.
        name: String,
    },
    /// A name generated by a range or a bracketed template that does not exist.
    #[error("`{name}` (from `{expression}`) not a recognized node, group, or alias")]
    UnknownGeneratedName {
        /// The generated name.
        name: String,
        /// The range or template that generated it.
        expression: String,
    },
    /// A range with bounds that cannot work (start after end, non-numeric bounds, …).
    #[error("bad range `{token}`: {reason}")]
    BadRange {
        /// The range as written.
        token: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A regular expression (a `/`/`~` atom or an `=~`/`!~` filter) that does not compile.
    #[error("bad regular expression `{pattern}` in `{token}`")]
    BadRegex {
        /// The atom containing the expression.
        token: String,
        /// The regular expression.
        pattern: String,
        /// Why the regex crate refused it.
        #[source]
        source: regex::Error,
    },
    /// An attribute filter the universe refused (invalid or secret attribute name), or one
    /// with no attribute name.
    #[error("bad attribute filter `{token}`: {reason}")]
    BadAttributeFilter {
        /// The filter as written.
        token: String,
        /// The universe's reason.
        reason: String,
    },
    /// Regular expressions, attribute filters and pagination over all nodes cannot be
    /// evaluated by a [`Verbatim`] universe.
    #[error("`{token}`: {what} need a configuration")]
    NeedsConfiguration {
        /// The atom or noderange concerned.
        token: String,
        /// What needs a configuration.
        what: &'static str,
    },
    /// Dynamic groups whose noderanges refer to each other in a loop.
    #[error("dynamic groups form a cycle: {chain}")]
    DynamicGroupCycle {
        /// The groups of the loop, `a -> b -> a`.
        chain: String,
    },
    /// Dynamic groups nested deeper than [`MAX_DYNAMIC_GROUP_DEPTH`].
    #[error("dynamic group `{group}` is nested more than {limit} levels deep")]
    DynamicGroupTooDeep {
        /// The group that would have been one level too deep.
        group: String,
        /// The limit.
        limit: usize,
    },
    /// The noderange of a dynamic group failed to parse or expand.
    #[error("dynamic group `{group}` has a noderange `{noderange}` that cannot be expanded")]
    DynamicGroup {
        /// The group.
        group: String,
        /// Its noderange text.
        noderange: String,
        /// Why it failed.
        #[source]
        source: Box<NoderangeError>,
    },
    /// An element that would produce more than [`MAX_GENERATED_NAMES`] names, or a noderange
    /// whose brackets together spell out more values than that.
    #[error("`{token}` expands to more than {limit} names")]
    TooManyNames {
        /// The element concerned, or `the noderange` for a limit on the whole text.
        token: String,
        /// The limit.
        limit: usize,
    },
    /// A proposed node, group or alias name that the grammar would misread.
    #[error("`{name}` cannot be used as a name: {reason}")]
    InvalidName {
        /// The proposed name.
        name: String,
        /// Why it is refused.
        reason: String,
    },
}

fn too_many(token: &str) -> NoderangeError {
    NoderangeError::TooManyNames {
        token: token.to_owned(),
        limit: MAX_GENERATED_NAMES,
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetOperator {
    Union,
    Difference,
    Intersection,
}

#[derive(Debug, Clone, Copy)]
enum AtomPiece<'a> {
    Word(&'a str),
    Bracket { body: &'a str, body_position: usize },
}

#[derive(Debug)]
enum TokenKind<'a> {
    Atom(Vec<AtomPiece<'a>>),
    OpenParenthesis,
    CloseParenthesis,
    Operator(SetOperator),
    SkipPage(usize),
    KeepPage(usize),
}

#[derive(Debug)]
struct Token<'a> {
    kind: TokenKind<'a>,
    text: &'a str,
    position: usize,
}

/// Characters that may appear in an atom outside brackets: the reference's set
/// (letters, digits and `~^$/=-_:.*+!`) plus `?` for attribute wildcards and `\{}|` so that
/// regular expressions can use escapes, counted repetitions and alternation.
fn is_atom_character(character: char) -> bool {
    character.is_ascii_alphanumeric() || "~^$/=-_:.*+!?\\{}|".contains(character)
}

fn syntax_error(token: &str, position: usize, reason: impl Into<String>) -> NoderangeError {
    NoderangeError::Syntax {
        token: token.to_owned(),
        position,
        reason: reason.into(),
    }
}

/// Splits `text` into tokens; `first_position` is the position of its first character (1 for
/// a whole noderange, more for the body of a bracket).
fn tokenize(text: &str, first_position: usize) -> Result<Vec<Token<'_>>, NoderangeError> {
    let mut tokens = Vec::new();
    let mut characters = text.char_indices().peekable();
    // The position of the character that `characters.peek()` returns.
    let mut next_position = first_position;
    while let Some(&(start, character)) = characters.peek() {
        let position = next_position;
        characters.next();
        next_position += 1;
        let single = |kind| Token {
            kind,
            text: &text[start..start + 1],
            position,
        };
        match character {
            c if c.is_whitespace() => {}
            '(' => tokens.push(single(TokenKind::OpenParenthesis)),
            ')' => tokens.push(single(TokenKind::CloseParenthesis)),
            '@' => tokens.push(single(TokenKind::Operator(SetOperator::Intersection))),
            ',' => {
                if characters.peek().is_some_and(|&(_, next)| next == '-') {
                    characters.next();
                    next_position += 1;
                    tokens.push(Token {
                        kind: TokenKind::Operator(SetOperator::Difference),
                        text: &text[start..start + 2],
                        position,
                    });
                } else {
                    tokens.push(single(TokenKind::Operator(SetOperator::Union)));
                }
            }
            '<' | '>' => {
                let mut end = start + 1;
                while let Some(&(index, digit)) = characters.peek() {
                    if !digit.is_ascii_digit() {
                        break;
                    }
                    characters.next();
                    next_position += 1;
                    end = index + 1;
                }
                let token_text = &text[start..end];
                let digits = &text[start + 1..end];
                if digits.is_empty() {
                    return Err(syntax_error(
                        token_text,
                        position,
                        "pagination needs a number, as in `<10` or `>10`",
                    ));
                }
                let count: usize = digits
                    .parse()
                    .map_err(|_| syntax_error(token_text, position, "page size is too large"))?;
                let kind = if character == '<' {
                    TokenKind::SkipPage(count)
                } else {
                    TokenKind::KeepPage(count)
                };
                tokens.push(Token {
                    kind,
                    text: token_text,
                    position,
                });
            }
            ']' => {
                return Err(syntax_error("]", position, "`]` without a matching `[`"));
            }
            c if c == '[' || is_atom_character(c) => {
                let mut pieces = Vec::new();
                let mut word_start = start;
                let mut end = start + c.len_utf8();
                let mut pending_bracket = (c == '[').then_some((start, position));
                loop {
                    if let Some((bracket_start, bracket_position)) = pending_bracket.take() {
                        if word_start < bracket_start {
                            pieces.push(AtomPiece::Word(&text[word_start..bracket_start]));
                        }
                        let body_start = bracket_start + 1;
                        let body_position = bracket_position + 1;
                        let mut body_end = None;
                        for (index, inner) in characters.by_ref() {
                            next_position += 1;
                            match inner {
                                ']' => {
                                    body_end = Some(index);
                                    break;
                                }
                                '[' => {
                                    return Err(syntax_error(
                                        "[",
                                        next_position - 1,
                                        "brackets cannot be nested",
                                    ));
                                }
                                _ => {}
                            }
                        }
                        let Some(body_end) = body_end else {
                            return Err(syntax_error(
                                &text[bracket_start..],
                                bracket_position,
                                "`[` without a matching `]`",
                            ));
                        };
                        pieces.push(AtomPiece::Bracket {
                            body: &text[body_start..body_end],
                            body_position,
                        });
                        end = body_end + 1;
                        word_start = end;
                    }
                    match characters.peek() {
                        Some(&(index, '[')) => {
                            pending_bracket = Some((index, next_position));
                            characters.next();
                            next_position += 1;
                        }
                        Some(&(index, next)) if is_atom_character(next) => {
                            characters.next();
                            next_position += 1;
                            end = index + next.len_utf8();
                        }
                        _ => break,
                    }
                }
                if word_start < end {
                    pieces.push(AtomPiece::Word(&text[word_start..end]));
                }
                tokens.push(Token {
                    kind: TokenKind::Atom(pieces),
                    text: &text[start..end],
                    position,
                });
            }
            other => {
                return Err(NoderangeError::UnexpectedCharacter {
                    character: other,
                    position,
                });
            }
        }
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sequence<A> {
    first: Operand<A>,
    rest: Vec<(SetOperator, Operand<A>)>,
}

#[derive(Debug, Clone)]
enum Operand<A> {
    Atom(A),
    Parenthesized(Box<Sequence<A>>),
}

#[derive(Debug, Clone, Copy, Default)]
struct Pagination {
    skip: Option<usize>,
    keep: Option<usize>,
}

impl Pagination {
    fn is_present(self) -> bool {
        self.skip.is_some() || self.keep.is_some()
    }

    /// Skip first, then keep: `>3<6` is the 7th to 9th entry whatever the written order.
    fn apply<T>(self, sorted: &mut Vec<T>) {
        if let Some(skip) = self.skip {
            sorted.drain(..skip.min(sorted.len()));
        }
        if let Some(keep) = self.keep {
            sorted.truncate(keep);
        }
    }
}

/// A parsed expression; `body` is `None` when the expression is only pagination, which pages
/// over all nodes.
#[derive(Debug, Clone)]
struct Expression<A> {
    body: Option<Sequence<A>>,
    pagination: Pagination,
}

/// Turns an atom (its text, position and pieces) into the parser's atom type.
type AtomBuilder<'b, A> =
    dyn FnMut(&str, usize, &[AtomPiece<'_>]) -> Result<A, NoderangeError> + 'b;

struct Parser<'t, 'a> {
    tokens: &'t [Token<'a>],
    index: usize,
}

fn token_error(token: &Token<'_>, reason: &str) -> NoderangeError {
    syntax_error(token.text, token.position, reason)
}

impl<'t, 'a> Parser<'t, 'a> {
    fn new(tokens: &'t [Token<'a>]) -> Self {
        Parser { tokens, index: 0 }
    }

    fn peek(&self) -> Option<&'t Token<'a>> {
        self.tokens.get(self.index)
    }

    fn advance(&mut self) {
        self.index += 1;
    }

    fn parse_top<A>(
        &mut self,
        build: &mut AtomBuilder<'_, A>,
    ) -> Result<Expression<A>, NoderangeError> {
        if self.tokens.is_empty() {
            return Err(NoderangeError::Empty);
        }
        let leading = self.parse_pagination()?;
        if leading.is_present() {
            if let Some(token) = self.peek() {
                return Err(token_error(
                    token,
                    "a noderange that starts with pagination pages over all nodes and cannot \
                     contain anything else",
                ));
            }
            return Ok(Expression {
                body: None,
                pagination: leading,
            });
        }
        let body = self.parse_sequence(build, 0)?;
        let pagination = self.parse_pagination()?;
        if let Some(token) = self.peek() {
            let reason = match token.kind {
                TokenKind::CloseParenthesis => "`)` without a matching `(`",
                _ => "nothing may follow pagination (`<N`, `>N` must end the noderange)",
            };
            return Err(token_error(token, reason));
        }
        Ok(Expression {
            body: Some(body),
            pagination,
        })
    }

    fn parse_pagination(&mut self) -> Result<Pagination, NoderangeError> {
        let mut pagination = Pagination::default();
        while let Some(token) = self.peek() {
            let (slot, count) = match token.kind {
                TokenKind::SkipPage(count) => (&mut pagination.skip, count),
                TokenKind::KeepPage(count) => (&mut pagination.keep, count),
                _ => break,
            };
            if slot.is_some() {
                return Err(token_error(token, "this kind of pagination is given twice"));
            }
            *slot = Some(count);
            self.advance();
        }
        Ok(pagination)
    }

    fn parse_sequence<A>(
        &mut self,
        build: &mut AtomBuilder<'_, A>,
        depth: usize,
    ) -> Result<Sequence<A>, NoderangeError> {
        let first = self.parse_operand(build, depth)?;
        let mut rest = Vec::new();
        while let Some(token) = self.peek() {
            match token.kind {
                TokenKind::Operator(operator) => {
                    self.advance();
                    if self.peek().is_none() {
                        return Err(token_error(token, "nothing follows this operator"));
                    }
                    rest.push((operator, self.parse_operand(build, depth)?));
                }
                TokenKind::Atom(_) | TokenKind::OpenParenthesis => {
                    return Err(token_error(
                        token,
                        "expected an operator (`,`, `,-` or `@`) before this element",
                    ));
                }
                _ => break,
            }
        }
        Ok(Sequence { first, rest })
    }

    fn parse_operand<A>(
        &mut self,
        build: &mut AtomBuilder<'_, A>,
        depth: usize,
    ) -> Result<Operand<A>, NoderangeError> {
        let Some(token) = self.peek() else {
            return Err(NoderangeError::Empty);
        };
        match &token.kind {
            TokenKind::Atom(pieces) => {
                self.advance();
                Ok(Operand::Atom(build(token.text, token.position, pieces)?))
            }
            TokenKind::OpenParenthesis => {
                if depth >= MAX_PARENTHESIS_DEPTH {
                    return Err(token_error(token, "parentheses are nested too deeply"));
                }
                self.advance();
                match self.peek() {
                    None => return Err(token_error(token, "`(` without a matching `)`")),
                    Some(next) if matches!(next.kind, TokenKind::CloseParenthesis) => {
                        return Err(token_error(token, "empty parentheses"));
                    }
                    Some(_) => {}
                }
                let inner = self.parse_sequence(build, depth + 1)?;
                match self.peek() {
                    Some(next) if matches!(next.kind, TokenKind::CloseParenthesis) => {
                        self.advance();
                        Ok(Operand::Parenthesized(Box::new(inner)))
                    }
                    Some(next)
                        if matches!(next.kind, TokenKind::SkipPage(_) | TokenKind::KeepPage(_)) =>
                    {
                        Err(token_error(
                            next,
                            "pagination is only allowed at the end of the whole noderange",
                        ))
                    }
                    _ => Err(token_error(token, "`(` without a matching `)`")),
                }
            }
            TokenKind::CloseParenthesis => Err(token_error(
                token,
                "expected a node, group, range, filter or `(` before `)`",
            )),
            TokenKind::Operator(_) => Err(token_error(
                token,
                "an element (node, group, range, filter or parenthesis) is missing before this \
                 operator",
            )),
            TokenKind::SkipPage(_) | TokenKind::KeepPage(_) => Err(token_error(
                token,
                "pagination is only allowed at the end of the noderange",
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Atoms
// ---------------------------------------------------------------------------------------------

/// One part of a name template: fixed text, an explicit list of alternatives (from a bracket),
/// or a run of numbers written with at least `width` digits (from a range).
#[derive(Debug, Clone)]
enum NamePiece {
    Text(String),
    Choices(Vec<String>),
    Numbers { start: u64, end: u64, width: usize },
}

impl NamePiece {
    fn count(&self) -> Option<usize> {
        match self {
            NamePiece::Text(_) => Some(1),
            NamePiece::Choices(choices) => Some(choices.len()),
            NamePiece::Numbers { start, end, .. } => {
                usize::try_from(end.checked_sub(*start)?.checked_add(1)?).ok()
            }
        }
    }
}

/// Folds single alternatives into the surrounding text, so that the number of pieces (and the
/// recursion depth of [`for_each_name`]) is bounded by the number of real alternatives, which
/// [`MAX_GENERATED_NAMES`] bounds in turn.
fn normalize_pieces(pieces: Vec<NamePiece>) -> Vec<NamePiece> {
    let mut normalized: Vec<NamePiece> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let piece = match piece {
            NamePiece::Choices(mut choices) if choices.len() == 1 => {
                NamePiece::Text(choices.pop().unwrap_or_default())
            }
            NamePiece::Numbers { start, end, width } if start == end => {
                NamePiece::Text(format!("{start:0width$}"))
            }
            other => other,
        };
        match (normalized.last_mut(), piece) {
            (Some(NamePiece::Text(previous)), NamePiece::Text(text)) => previous.push_str(&text),
            (_, piece) => normalized.push(piece),
        }
    }
    normalized
}

fn combination_count(pieces: &[NamePiece]) -> Option<usize> {
    pieces
        .iter()
        .try_fold(1usize, |total, piece| total.checked_mul(piece.count()?))
}

/// Appends `value` zero-padded to `width` digits; the same text as `format!("{value:0width$}")`
/// without the formatting machinery, which matters when generating 100,000 names.
fn push_padded_number(buffer: &mut String, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    let mut rest = value;
    while let Some(next_start) = start.checked_sub(1) {
        start = next_start;
        if let Some(slot) = digits.get_mut(start) {
            // `rest % 10` is a single decimal digit.
            *slot = b'0' + u8::try_from(rest % 10).unwrap_or(0);
        }
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = digits.get(start..).unwrap_or_default();
    for _ in digits.len()..width {
        buffer.push('0');
    }
    buffer.push_str(std::str::from_utf8(digits).unwrap_or_default());
}

/// Calls `visit` with every name the pieces generate (their cartesian product).
fn for_each_name(
    pieces: &[NamePiece],
    buffer: &mut String,
    visit: &mut dyn FnMut(&str) -> Result<(), NoderangeError>,
) -> Result<(), NoderangeError> {
    let Some((piece, rest)) = pieces.split_first() else {
        return visit(buffer);
    };
    let length = buffer.len();
    match piece {
        NamePiece::Text(text) => {
            buffer.push_str(text);
            let result = for_each_name(rest, buffer, visit);
            buffer.truncate(length);
            result
        }
        NamePiece::Choices(choices) => {
            for choice in choices {
                buffer.push_str(choice);
                let result = for_each_name(rest, buffer, visit);
                buffer.truncate(length);
                result?;
            }
            Ok(())
        }
        NamePiece::Numbers { start, end, width } => {
            for number in *start..=*end {
                push_padded_number(buffer, number, *width);
                let result = for_each_name(rest, buffer, visit);
                buffer.truncate(length);
                result?;
            }
            Ok(())
        }
    }
}

#[derive(Debug, Clone)]
enum FilterTest {
    Equal(String),
    NotEqual(String),
    Matches(Regex),
    NotMatches(Regex),
}

impl FilterTest {
    fn accepts(&self, value: &str) -> bool {
        match self {
            FilterTest::Equal(expected) => value == expected,
            FilterTest::NotEqual(expected) => value != expected,
            FilterTest::Matches(regex) => regex.is_match(value),
            FilterTest::NotMatches(regex) => !regex.is_match(value),
        }
    }
}

#[derive(Debug, Clone)]
struct AttributeFilter {
    attribute: String,
    test: FilterTest,
}

#[derive(Debug, Clone)]
enum NodeAtomKind {
    Regex(Regex),
    Filter(AttributeFilter),
    Plain,
    Bracketed(Vec<NamePiece>),
}

#[derive(Debug, Clone)]
struct NodeAtom {
    text: String,
    kind: NodeAtomKind,
}

fn compile_regex(token: &str, pattern: &str) -> Result<Regex, NoderangeError> {
    Regex::new(pattern).map_err(|source| NoderangeError::BadRegex {
        token: token.to_owned(),
        pattern: pattern.to_owned(),
        source,
    })
}

fn is_filter_text(text: &str) -> bool {
    text.contains('=') || text.contains("!~")
}

fn build_node_atom(
    text: &str,
    position: usize,
    pieces: &[AtomPiece<'_>],
    budget: &mut BracketBudget,
) -> Result<NodeAtom, NoderangeError> {
    let atom = |kind| NodeAtom {
        text: text.to_owned(),
        kind,
    };
    if let Some(pattern) = text.strip_prefix(['/', '~']) {
        return Ok(atom(NodeAtomKind::Regex(compile_regex(text, pattern)?)));
    }
    // Like the reference, only the text before the first bracket decides whether this is an
    // attribute filter, so that filter values (regular expressions) may contain brackets.
    let head = match pieces.first() {
        Some(AtomPiece::Word(word)) => word,
        _ => "",
    };
    if is_filter_text(head) {
        return Ok(atom(NodeAtomKind::Filter(parse_filter(text)?)));
    }
    let later_words_filter = pieces
        .iter()
        .skip(1)
        .any(|piece| matches!(piece, AtomPiece::Word(word) if is_filter_text(word)));
    if later_words_filter {
        return Err(NoderangeError::BadAttributeFilter {
            token: text.to_owned(),
            reason: "an attribute name cannot contain brackets".to_owned(),
        });
    }
    if text.starts_with('-') {
        return Err(syntax_error(
            text,
            position,
            "an element cannot start with `-` (write `,-` without a space for a set difference)",
        ));
    }
    if !pieces
        .iter()
        .any(|piece| matches!(piece, AtomPiece::Bracket { .. }))
    {
        return Ok(atom(NodeAtomKind::Plain));
    }
    let mut name_pieces = Vec::with_capacity(pieces.len());
    for piece in pieces {
        name_pieces.push(match piece {
            AtomPiece::Word(word) => NamePiece::Text((*word).to_owned()),
            AtomPiece::Bracket {
                body,
                body_position,
            } => NamePiece::Choices(parse_bracket_body(body, *body_position, budget)?),
        });
    }
    let name_pieces = normalize_pieces(name_pieces);
    match combination_count(&name_pieces) {
        Some(count) if count <= MAX_GENERATED_NAMES => {}
        _ => return Err(too_many(text)),
    }
    Ok(atom(NodeAtomKind::Bracketed(name_pieces)))
}

/// Splits `attr<op>value` at the first operator: attribute names never contain `=` or `!`,
/// while values may contain anything.
fn parse_filter(text: &str) -> Result<AttributeFilter, NoderangeError> {
    let bytes = text.as_bytes();
    let mut found = None;
    for (index, byte) in bytes.iter().enumerate() {
        let next = bytes.get(index + 1).copied();
        let operator = match (byte, next) {
            (b'=', Some(b'=')) => Some(("==", 2)),
            (b'=', Some(b'~')) => Some(("=~", 2)),
            (b'=', _) => Some(("=", 1)),
            (b'!', Some(b'=')) => Some(("!=", 2)),
            (b'!', Some(b'~')) => Some(("!~", 2)),
            _ => None,
        };
        if let Some((operator, length)) = operator {
            found = Some((index, operator, length));
            break;
        }
    }
    let bad = |reason: &str| NoderangeError::BadAttributeFilter {
        token: text.to_owned(),
        reason: reason.to_owned(),
    };
    let Some((index, operator, length)) = found else {
        return Err(bad("no comparison operator"));
    };
    let attribute = &text[..index];
    let value = &text[index + length..];
    if attribute.is_empty() {
        return Err(bad("the attribute name is missing"));
    }
    let test = match operator {
        "==" | "=" => FilterTest::Equal(value.to_owned()),
        "!=" => FilterTest::NotEqual(value.to_owned()),
        "=~" => FilterTest::Matches(compile_regex(text, value)?),
        _ => FilterTest::NotMatches(compile_regex(text, value)?),
    };
    Ok(AttributeFilter {
        attribute: attribute.to_owned(),
        test,
    })
}

// ---------------------------------------------------------------------------------------------
// Bracket bodies: numeric noderanges
// ---------------------------------------------------------------------------------------------

/// How many more bracket values the noderange being parsed may spell out.
///
/// Bracket values are generated while parsing and kept in the parsed noderange, so the
/// per-element limit alone is not enough: a short text with many brackets
/// (`a[1-999999],b[1-999999],…`, or many ranges inside one bracket) would hold a million
/// strings per bracket, gigabytes for a few hundred bytes of input. Every value of every
/// bracket, including values a bracket's own set operations later remove, is charged here.
struct BracketBudget {
    remaining: usize,
}

impl BracketBudget {
    fn new(limit: usize) -> BracketBudget {
        BracketBudget { remaining: limit }
    }

    /// Charges `count` values before they are generated.
    fn spend(&mut self, count: usize) -> Result<(), NoderangeError> {
        self.remaining = self
            .remaining
            .checked_sub(count)
            .ok_or_else(|| too_many("the noderange"))?;
        Ok(())
    }
}

/// Evaluates the body of a bracket (`1-3,7`, `01:10:2`, `(1-9),-5`, `1-20>5`) to its values.
fn parse_bracket_body(
    body: &str,
    body_position: usize,
    budget: &mut BracketBudget,
) -> Result<Vec<String>, NoderangeError> {
    let tokens = tokenize(body, body_position)?;
    let Some(first) = tokens.first() else {
        return Err(syntax_error(
            &format!("[{body}]"),
            body_position.saturating_sub(1),
            "empty brackets",
        ));
    };
    let expression = Parser::new(&tokens).parse_top(&mut |text, position, pieces| {
        build_bracket_atom(text, position, pieces, budget)
    })?;
    let Some(sequence) = &expression.body else {
        return Err(token_error(
            first,
            "pagination inside brackets must follow the values it pages",
        ));
    };
    let mut values: Vec<String> = evaluate_bracket_sequence(sequence, body)?
        .into_iter()
        .collect();
    sort_naturally(&mut values);
    expression.pagination.apply(&mut values);
    Ok(values)
}

fn build_bracket_atom(
    text: &str,
    position: usize,
    pieces: &[AtomPiece<'_>],
    budget: &mut BracketBudget,
) -> Result<Vec<String>, NoderangeError> {
    if text.starts_with(['/', '~']) {
        return Err(syntax_error(
            text,
            position,
            "regular expressions are not allowed inside brackets",
        ));
    }
    if is_filter_text(text) {
        return Err(syntax_error(
            text,
            position,
            "attribute filters are not allowed inside brackets",
        ));
    }
    if pieces
        .iter()
        .any(|piece| matches!(piece, AtomPiece::Bracket { .. }))
    {
        return Err(syntax_error(text, position, "brackets cannot be nested"));
    }
    bracket_values(text, budget)
}

fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// One element of a bracket body: `a-b`, `a:b`, `a..b`, `a:b:step`, `a+count`, or a literal.
fn bracket_values(text: &str, budget: &mut BracketBudget) -> Result<Vec<String>, NoderangeError> {
    let bad = |reason: String| NoderangeError::BadRange {
        token: text.to_owned(),
        reason,
    };
    let number = |part: &str| {
        parse_decimal(part).ok_or_else(|| {
            bad(format!(
                "`{part}` is not a decimal number (bounds inside brackets must be numbers)"
            ))
        })
    };
    if text.contains(':') || text.contains("..") || text.contains('-') {
        let normalized = text.replace('-', ":").replace("..", ":");
        let bounds: Vec<&str> = normalized.split(':').collect();
        let (start_text, end_text, step_text) = match bounds.as_slice() {
            [start, end] => (*start, *end, None),
            [start, end, step] => (*start, *end, Some(*step)),
            _ => {
                return Err(bad(
                    "a range inside brackets has the form `a-b`, `a:b`, `a..b` or `a:b:step`"
                        .to_owned(),
                ));
            }
        };
        let start = number(start_text)?;
        let end = number(end_text)?;
        let step = match step_text {
            None => 1,
            Some(step_text) => number(step_text)?,
        };
        if step == 0 {
            return Err(bad("the step must be at least 1".to_owned()));
        }
        if start > end {
            return Err(bad(format!(
                "start `{start_text}` is greater than end `{end_text}`"
            )));
        }
        let count = (end - start) / step + 1;
        let count = match usize::try_from(count) {
            Ok(count) if count <= MAX_GENERATED_NAMES => count,
            _ => return Err(too_many(text)),
        };
        budget.spend(count)?;
        let width = start_text.len();
        let mut values = Vec::new();
        let mut value = start;
        loop {
            values.push(format!("{value:0width$}"));
            match value.checked_add(step) {
                Some(next) if next <= end => value = next,
                _ => break,
            }
        }
        return Ok(values);
    }
    if let Some((start_text, increment_text)) = text.split_once('+') {
        let start = number(start_text)?;
        let increment = number(increment_text)?;
        let end = start
            .checked_add(increment)
            .ok_or_else(|| bad("the end of the range is too large".to_owned()))?;
        let count = match usize::try_from(increment) {
            Ok(increment) if increment < MAX_GENERATED_NAMES => increment + 1,
            _ => return Err(too_many(text)),
        };
        budget.spend(count)?;
        let width = start_text.len();
        return Ok((start..=end)
            .map(|value| format!("{value:0width$}"))
            .collect());
    }
    budget.spend(1)?;
    Ok(vec![text.to_owned()])
}

fn evaluate_bracket_sequence(
    sequence: &Sequence<Vec<String>>,
    body: &str,
) -> Result<HashSet<String>, NoderangeError> {
    let operand_values = |operand: &Operand<Vec<String>>| match operand {
        Operand::Atom(values) => Ok(values.iter().cloned().collect::<HashSet<String>>()),
        Operand::Parenthesized(inner) => evaluate_bracket_sequence(inner, body),
    };
    let mut current = operand_values(&sequence.first)?;
    for (operator, operand) in &sequence.rest {
        let other = operand_values(operand)?;
        match operator {
            SetOperator::Union => current.extend(other),
            SetOperator::Difference => current.retain(|value| !other.contains(value)),
            SetOperator::Intersection => current.retain(|value| other.contains(value)),
        }
        if current.len() > MAX_GENERATED_NAMES {
            return Err(too_many(body));
        }
    }
    Ok(current)
}

// ---------------------------------------------------------------------------------------------
// Range forms: n1-n20, n1:n20, n1..n20, r1u01-r3u10, rack1-rack10, n1+3
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NamePart<'a> {
    Text(&'a str),
    Digits(&'a str),
}

/// Splits a name into alternating text and digit runs, always starting and ending with a
/// (possibly empty) text run: `r1u01` → `r`, `1`, `u`, `01`, ``. This is the shape of
/// Python's `re.split('([0-9]+)', name)`, which the natural order and ranges are defined on.
struct NameParts<'a> {
    rest: &'a str,
    expect_text: bool,
    done: bool,
}

fn name_parts(name: &str) -> NameParts<'_> {
    NameParts {
        rest: name,
        expect_text: true,
        done: false,
    }
}

impl<'a> Iterator for NameParts<'a> {
    type Item = NamePart<'a>;

    fn next(&mut self) -> Option<NamePart<'a>> {
        if self.done {
            return None;
        }
        if self.expect_text {
            let end = self
                .rest
                .find(|character: char| character.is_ascii_digit())
                .unwrap_or(self.rest.len());
            let (text, rest) = self.rest.split_at(end);
            self.rest = rest;
            if rest.is_empty() {
                self.done = true;
            } else {
                self.expect_text = false;
            }
            Some(NamePart::Text(text))
        } else {
            let end = self
                .rest
                .find(|character: char| !character.is_ascii_digit())
                .unwrap_or(self.rest.len());
            let (digits, rest) = self.rest.split_at(end);
            self.rest = rest;
            self.expect_text = true;
            Some(NamePart::Digits(digits))
        }
    }
}

/// Interprets `text` as a range form. `None`: it does not have the shape of one (the caller
/// then reports an unknown name); `Some(Err)`: it does, but the range is unusable.
fn range_form(text: &str) -> Option<Result<Vec<NamePiece>, NoderangeError>> {
    for delimiter in [":", "..", "-"] {
        if text.contains(delimiter)
            && let Some(result) = delimited_range(text, delimiter)
        {
            return Some(result);
        }
    }
    increment_range(text)
}

fn delimited_range(text: &str, delimiter: &str) -> Option<Result<Vec<NamePiece>, NoderangeError>> {
    // Split at the middle delimiter so that names containing the delimiter themselves
    // (`sw-a1-sw-a5`) still split into two equal halves.
    let occurrences = text.matches(delimiter).count();
    if occurrences.is_multiple_of(2) {
        return None;
    }
    let (middle, _) = text.match_indices(delimiter).nth(occurrences / 2)?;
    let left = &text[..middle];
    let right = &text[middle + delimiter.len()..];
    if left.is_empty() || right.is_empty() {
        return None;
    }
    let left_parts: Vec<NamePart<'_>> = name_parts(left).collect();
    let right_parts: Vec<NamePart<'_>> = name_parts(right).collect();
    if left_parts.len() != right_parts.len() {
        return None;
    }
    let bad = |reason: String| {
        Some(Err(NoderangeError::BadRange {
            token: text.to_owned(),
            reason,
        }))
    };
    let mut pieces = Vec::with_capacity(left_parts.len());
    for (left_part, right_part) in left_parts.into_iter().zip(right_parts) {
        match (left_part, right_part) {
            (NamePart::Text(left_text), NamePart::Text(right_text)) if left_text == right_text => {
                pieces.push(NamePiece::Text(left_text.to_owned()));
            }
            (NamePart::Digits(left_digits), NamePart::Digits(right_digits)) => {
                if left_digits == right_digits {
                    pieces.push(NamePiece::Text(left_digits.to_owned()));
                    continue;
                }
                let (Some(start), Some(end)) =
                    (parse_decimal(left_digits), parse_decimal(right_digits))
                else {
                    return bad("a number is too large".to_owned());
                };
                if start > end {
                    return bad(format!(
                        "start `{left_digits}` is greater than end `{right_digits}`"
                    ));
                }
                if start == end {
                    return bad(format!(
                        "`{left_digits}` and `{right_digits}` are the same number padded \
                         differently"
                    ));
                }
                pieces.push(NamePiece::Numbers {
                    start,
                    end,
                    width: left_digits.len(),
                });
            }
            _ => return None,
        }
    }
    let pieces = normalize_pieces(pieces);
    match combination_count(&pieces) {
        Some(count) if count <= MAX_GENERATED_NAMES => Some(Ok(pieces)),
        _ => Some(Err(too_many(text))),
    }
}

/// `n1+3` → `n1` to `n4`; a domain suffix after the first `.` is kept (`n1.lab+2`).
fn increment_range(text: &str) -> Option<Result<Vec<NamePiece>, NoderangeError>> {
    let (base, increment_text) = text.split_once('+')?;
    if increment_text.is_empty() || !increment_text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let (name, suffix) = base.split_at(base.find('.').unwrap_or(base.len()));
    let prefix = name.trim_end_matches(|character: char| character.is_ascii_digit());
    let digits = &name[prefix.len()..];
    if digits.is_empty() {
        return None;
    }
    let bad = |reason: &str| {
        Some(Err(NoderangeError::BadRange {
            token: text.to_owned(),
            reason: reason.to_owned(),
        }))
    };
    let (Some(start), Some(increment)) = (parse_decimal(digits), parse_decimal(increment_text))
    else {
        return bad("a number is too large");
    };
    let Some(end) = start.checked_add(increment) else {
        return bad("the end of the range is too large");
    };
    let pieces = normalize_pieces(vec![
        NamePiece::Text(prefix.to_owned()),
        NamePiece::Numbers {
            start,
            end,
            width: digits.len(),
        },
        NamePiece::Text(suffix.to_owned()),
    ]);
    match combination_count(&pieces) {
        Some(count) if count <= MAX_GENERATED_NAMES => Some(Ok(pieces)),
        _ => Some(Err(too_many(text))),
    }
}

// ---------------------------------------------------------------------------------------------
// Expansion
// ---------------------------------------------------------------------------------------------

/// A parsed noderange, ready to be expanded against any [`Universe`].
#[derive(Debug, Clone)]
pub struct NodeRange {
    text: String,
    expression: Expression<NodeAtom>,
}

impl NodeRange {
    /// Parses `text`. Syntax errors, bad regular expressions, malformed attribute filters and
    /// bad bracket contents are reported here; unknown names only at expansion.
    pub fn parse(text: &str) -> Result<NodeRange, NoderangeError> {
        NodeRange::parse_within(text, BracketBudget::new(MAX_GENERATED_NAMES))
    }

    fn parse_within(text: &str, mut budget: BracketBudget) -> Result<NodeRange, NoderangeError> {
        let tokens = tokenize(text, 1)?;
        let expression = Parser::new(&tokens).parse_top(&mut |text, position, pieces| {
            build_node_atom(text, position, pieces, &mut budget)
        })?;
        Ok(NodeRange {
            text: text.to_owned(),
            expression,
        })
    }

    /// The text this noderange was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Expand to canonical node names, de-duplicated, naturally sorted (pagination applied
    /// after the sort).
    pub fn expand(&self, universe: &dyn Universe) -> Result<Vec<Arc<str>>, NoderangeError> {
        Evaluation::new(universe).evaluate_sorted(self)
    }
}

/// Convenience: parse `text` and expand it against `universe`.
pub fn expand(text: &str, universe: &dyn Universe) -> Result<Vec<Arc<str>>, NoderangeError> {
    NodeRange::parse(text)?.expand(universe)
}

struct Evaluation<'u> {
    universe: &'u dyn Universe,
    verbatim: bool,
    /// Names that generation (ranges, brackets) may still produce in this whole expansion:
    /// repeating an element must not multiply the work without bound.
    generation_budget: usize,
    /// The dynamic groups being expanded, outermost first, for cycle and depth detection.
    group_stack: Vec<String>,
}

/// Errors about dynamic groups already say which group failed; wrapping them again for every
/// enclosing group would only repeat the chain.
fn wrap_dynamic_group_error(group: &str, noderange: &str, error: NoderangeError) -> NoderangeError {
    match error {
        NoderangeError::DynamicGroupCycle { .. }
        | NoderangeError::DynamicGroupTooDeep { .. }
        | NoderangeError::DynamicGroup { .. } => error,
        other => NoderangeError::DynamicGroup {
            group: group.to_owned(),
            noderange: noderange.to_owned(),
            source: Box::new(other),
        },
    }
}

impl<'u> Evaluation<'u> {
    /// Account for `count` names about to be generated by `token`.
    fn charge_generation(
        &mut self,
        token: &str,
        count: Option<usize>,
    ) -> Result<(), NoderangeError> {
        match count {
            Some(count) if count <= self.generation_budget => {
                self.generation_budget -= count;
                Ok(())
            }
            _ => Err(NoderangeError::TooManyNames {
                token: token.to_owned(),
                limit: MAX_GENERATED_NAMES,
            }),
        }
    }

    fn new(universe: &'u dyn Universe) -> Self {
        Evaluation {
            universe,
            verbatim: universe.is_verbatim(),
            generation_budget: MAX_GENERATED_NAMES,
            group_stack: Vec::new(),
        }
    }

    fn evaluate_sorted(&mut self, range: &NodeRange) -> Result<Vec<Arc<str>>, NoderangeError> {
        let mut names = self.evaluate_body(range)?.into_sorted();
        range.expression.pagination.apply(&mut names);
        Ok(names)
    }

    /// Like [`Self::evaluate_sorted`] but as a set, sorting only when pagination needs it.
    fn evaluate_set(&mut self, range: &NodeRange) -> Result<NodeSet, NoderangeError> {
        if range.expression.pagination.is_present() {
            Ok(self
                .evaluate_sorted(range)?
                .into_iter()
                .collect::<NodeSet>())
        } else {
            self.evaluate_body(range)
        }
    }

    fn evaluate_body(&mut self, range: &NodeRange) -> Result<NodeSet, NoderangeError> {
        match &range.expression.body {
            Some(sequence) => self.evaluate_sequence(sequence, None),
            None => {
                if self.verbatim {
                    return Err(NoderangeError::NeedsConfiguration {
                        token: range.text.clone(),
                        what: "pagination over all nodes",
                    });
                }
                let mut all = NodeSet::default();
                self.universe.for_each_node(&mut |node| {
                    all.insert(node.clone());
                });
                Ok(all)
            }
        }
    }

    /// `restrict`: the caller only uses the result intersected with (or subtracted from) this
    /// set, so regular expressions and filters may test only its members. Set operations
    /// distribute over intersection, which makes this exact.
    fn evaluate_sequence(
        &mut self,
        sequence: &Sequence<NodeAtom>,
        restrict: Option<&NodeSet>,
    ) -> Result<NodeSet, NoderangeError> {
        let mut current = NodeSet::default();
        self.evaluate_operand_into(&sequence.first, restrict, &mut current)?;
        for (operator, operand) in &sequence.rest {
            match operator {
                SetOperator::Union => {
                    self.evaluate_operand_into(operand, restrict, &mut current)?;
                    current.bound_unions();
                }
                SetOperator::Difference => {
                    let mut removed = NodeSet::default();
                    self.evaluate_operand_into(operand, Some(&current), &mut removed)?;
                    current.subtract(removed);
                }
                SetOperator::Intersection => {
                    let mut other = NodeSet::default();
                    self.evaluate_operand_into(operand, Some(&current), &mut other)?;
                    current = current.intersect(other);
                }
            }
            if self.verbatim
                && current.gathered() > MAX_GENERATED_NAMES
                && current.index().len() > MAX_GENERATED_NAMES
            {
                return Err(too_many("the noderange"));
            }
        }
        Ok(current)
    }

    fn evaluate_operand_into(
        &mut self,
        operand: &Operand<NodeAtom>,
        restrict: Option<&NodeSet>,
        out: &mut NodeSet,
    ) -> Result<(), NoderangeError> {
        match operand {
            Operand::Atom(atom) => self.evaluate_atom_into(atom, restrict, out),
            Operand::Parenthesized(inner) => {
                let set = self.evaluate_sequence(inner, restrict)?;
                out.absorb(set);
                Ok(())
            }
        }
    }

    fn evaluate_atom_into(
        &mut self,
        atom: &NodeAtom,
        restrict: Option<&NodeSet>,
        out: &mut NodeSet,
    ) -> Result<(), NoderangeError> {
        match &atom.kind {
            NodeAtomKind::Regex(regex) => {
                if self.verbatim {
                    return Err(NoderangeError::NeedsConfiguration {
                        token: atom.text.clone(),
                        what: "regular expressions",
                    });
                }
                match restrict {
                    Some(candidates) => {
                        let _ = candidates.for_each_entry(|node, prefix| {
                            if regex.is_match(node) {
                                out.insert_entry(node.clone(), prefix);
                            }
                            Ok::<(), ()>(())
                        });
                    }
                    None => self.universe.for_each_node(&mut |node| {
                        if regex.is_match(node) {
                            out.insert(node.clone());
                        }
                    }),
                }
                Ok(())
            }
            NodeAtomKind::Filter(filter) => self.filter_into(atom, filter, restrict, out),
            NodeAtomKind::Plain => self.resolve_plain(&atom.text, None, out),
            NodeAtomKind::Bracketed(pieces) => {
                self.charge_generation(&atom.text, combination_count(pieces))?;
                out.reserve(combination_count(pieces).unwrap_or(0));
                let mut buffer = String::new();
                for_each_name(pieces, &mut buffer, &mut |name| {
                    self.resolve_plain(name, Some(&atom.text), out)
                })
            }
        }
    }

    fn filter_into(
        &self,
        atom: &NodeAtom,
        filter: &AttributeFilter,
        restrict: Option<&NodeSet>,
        out: &mut NodeSet,
    ) -> Result<(), NoderangeError> {
        if self.verbatim {
            return Err(NoderangeError::NeedsConfiguration {
                token: atom.text.clone(),
                what: "attribute filters",
            });
        }
        let universe = self.universe;
        let accepts = |node: &str| -> Result<bool, NoderangeError> {
            let mut visited = false;
            let matched = universe
                .attribute_matches(node, &filter.attribute, &mut |value| {
                    visited = true;
                    filter.test.accepts(value)
                })
                .map_err(|reason| NoderangeError::BadAttributeFilter {
                    token: atom.text.clone(),
                    reason,
                })?;
            // An unset attribute compares as the empty string.
            Ok(matched || (!visited && filter.test.accepts("")))
        };
        match restrict {
            Some(candidates) => {
                candidates.for_each_entry(|node, prefix| {
                    if accepts(node)? {
                        out.insert_entry(node.clone(), prefix);
                    }
                    Ok(())
                })?;
            }
            None => {
                universe
                    .filter_nodes(
                        &filter.attribute,
                        &|value| filter.test.accepts(value),
                        &mut |node| {
                            out.insert(node.clone());
                        },
                    )
                    .map_err(|reason| NoderangeError::BadAttributeFilter {
                        token: atom.text.clone(),
                        reason,
                    })?;
            }
        }
        Ok(())
    }

    /// A plain name, or one generated by a bracketed template (`generated_by`): exact node or
    /// alias, then exact group, then range forms.
    fn resolve_plain(
        &mut self,
        name: &str,
        generated_by: Option<&str>,
        out: &mut NodeSet,
    ) -> Result<(), NoderangeError> {
        let universe = self.universe;
        if self.verbatim {
            // Without a configuration nothing can be looked up, so range forms come first and
            // anything else is taken as written.
            match range_form(name) {
                Some(pieces) => {
                    let pieces = pieces?;
                    self.charge_generation(name, combination_count(&pieces))?;
                    out.reserve(combination_count(&pieces).unwrap_or(0));
                    let mut buffer = String::new();
                    return for_each_name(&pieces, &mut buffer, &mut |generated| {
                        out.insert(
                            universe
                                .node(generated)
                                .unwrap_or_else(|| Arc::from(generated)),
                        );
                        Ok(())
                    });
                }
                None => {
                    out.insert(universe.node(name).unwrap_or_else(|| Arc::from(name)));
                    return Ok(());
                }
            }
        }
        if let Some(node) = universe.node(name) {
            out.insert(node);
            return Ok(());
        }
        if let Some(members) = universe.group(name) {
            return self.expand_group(name, members, out);
        }
        match range_form(name) {
            Some(pieces) => {
                let pieces = pieces?;
                out.reserve(combination_count(&pieces).unwrap_or(0));
                let mut buffer = String::new();
                for_each_name(&pieces, &mut buffer, &mut |generated| {
                    self.resolve_existing(generated, name, out)
                })
            }
            None => Err(match generated_by {
                Some(expression) => NoderangeError::UnknownGeneratedName {
                    name: name.to_owned(),
                    expression: expression.to_owned(),
                },
                None => NoderangeError::UnknownName {
                    name: name.to_owned(),
                },
            }),
        }
    }

    /// A name generated by a range form must be an existing node, alias or group.
    fn resolve_existing(
        &mut self,
        name: &str,
        range: &str,
        out: &mut NodeSet,
    ) -> Result<(), NoderangeError> {
        if let Some(node) = self.universe.node(name) {
            out.insert(node);
            return Ok(());
        }
        if let Some(members) = self.universe.group(name) {
            return self.expand_group(name, members, out);
        }
        Err(NoderangeError::UnknownGeneratedName {
            name: name.to_owned(),
            expression: range.to_owned(),
        })
    }

    fn expand_group(
        &mut self,
        name: &str,
        members: GroupMembers,
        out: &mut NodeSet,
    ) -> Result<(), NoderangeError> {
        out.reserve(members.nodes.len());
        for member in members.nodes {
            out.insert(member);
        }
        let Some(noderange) = members.noderange.filter(|text| !text.trim().is_empty()) else {
            return Ok(());
        };
        if let Some(start) = self.group_stack.iter().position(|group| group == name) {
            let chain: Vec<&str> = self
                .group_stack
                .iter()
                .skip(start)
                .map(String::as_str)
                .chain([name])
                .collect();
            return Err(NoderangeError::DynamicGroupCycle {
                chain: chain.join(" -> "),
            });
        }
        if self.group_stack.len() >= MAX_DYNAMIC_GROUP_DEPTH {
            return Err(NoderangeError::DynamicGroupTooDeep {
                group: name.to_owned(),
                limit: MAX_DYNAMIC_GROUP_DEPTH,
            });
        }
        let wrap = |error| wrap_dynamic_group_error(name, &noderange, error);
        let range = NodeRange::parse(&noderange).map_err(wrap)?;
        self.group_stack.push(name.to_owned());
        let result = self.evaluate_set(&range);
        self.group_stack.pop();
        out.absorb(result.map_err(wrap)?);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Natural order
// ---------------------------------------------------------------------------------------------

fn compare_text(left: &str, right: &str) -> Ordering {
    if left.is_ascii() && right.is_ascii() {
        left.bytes()
            .map(|byte| byte.to_ascii_lowercase())
            .cmp(right.bytes().map(|byte| byte.to_ascii_lowercase()))
    } else {
        left.chars()
            .flat_map(char::to_lowercase)
            .cmp(right.chars().flat_map(char::to_lowercase))
    }
}

fn compare_digits(left: &str, right: &str) -> Ordering {
    let left = left.trim_start_matches('0');
    let right = right.trim_start_matches('0');
    left.len().cmp(&right.len()).then_with(|| left.cmp(right))
}

/// Natural (human) ordering: digit runs compared numerically, text case-insensitively (ties
/// broken by plain byte order so that the order is total): `n2 < n10`, `N1 < n2`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let mut left = name_parts(a);
    let mut right = name_parts(b);
    loop {
        let ordering = match (left.next(), right.next()) {
            (None, None) => break,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(NamePart::Text(x)), Some(NamePart::Text(y))) => compare_text(x, y),
            (Some(NamePart::Digits(x)), Some(NamePart::Digits(y))) => compare_digits(x, y),
            // Both sides alternate text and digits identically, so these cannot happen; they
            // still get a consistent answer.
            (Some(NamePart::Text(_)), Some(NamePart::Digits(_))) => Ordering::Less,
            (Some(NamePart::Digits(_)), Some(NamePart::Text(_))) => Ordering::Greater,
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    a.as_bytes().cmp(b.as_bytes())
}

/// Writes the order-preserving encoding of `name` into `sink`, which returns false to stop
/// early: each text run lowercased and ended by 0, each digit run as (significant length + 1)
/// then its significant digits, and an end marker 0. The plain byte order of two encodings is
/// exactly [`natural_cmp`]'s order (ties apart), because text runs never contain 0 and a length
/// byte is never 0. Returns false if `name` cannot be encoded: it contains a NUL character or
/// a digit run of more than 254 significant digits.
fn encode_natural_key(name: &str, sink: &mut dyn FnMut(u8) -> bool) -> bool {
    if name.contains('\0') {
        return false;
    }
    let mut open = true;
    let mut emit = |byte: u8| {
        if open {
            open = sink(byte);
        }
        open
    };
    for part in name_parts(name) {
        match part {
            NamePart::Text(text) => {
                if text.is_ascii() {
                    for byte in text.bytes() {
                        emit(byte.to_ascii_lowercase());
                    }
                } else {
                    let mut buffer = [0u8; 4];
                    for character in text.chars().flat_map(char::to_lowercase) {
                        for byte in character.encode_utf8(&mut buffer).bytes() {
                            emit(byte);
                        }
                    }
                }
                emit(0);
            }
            NamePart::Digits(digits) => {
                let significant = digits.trim_start_matches('0');
                let Ok(length) = u8::try_from(significant.len() + 1) else {
                    return false;
                };
                emit(length);
                for byte in significant.bytes() {
                    emit(byte);
                }
            }
        }
    }
    emit(0);
    true
}

/// The first 16 bytes of the encoding as a number (zero-padded). Comparing prefixes orders
/// names correctly whenever the prefixes differ; equal prefixes fall back to [`natural_cmp`].
/// `None` when the name cannot be encoded.
fn natural_key_prefix(name: &str) -> Option<u128> {
    if !name.is_ascii() {
        return natural_key_prefix_slow(name);
    }
    // The same encoding as `encode_natural_key`, as a tight loop over ASCII bytes: this runs
    // for every node inserted into a node set.
    let mut prefix = [0u8; 16];
    let mut filled = 0;
    let mut push = |byte: u8| {
        if let Some(slot) = prefix.get_mut(filled) {
            *slot = byte;
            filled += 1;
        }
    };
    let bytes = name.as_bytes();
    let mut index = 0;
    loop {
        while let Some(&byte) = bytes.get(index) {
            if byte.is_ascii_digit() {
                break;
            }
            if byte == 0 {
                return None;
            }
            push(byte.to_ascii_lowercase());
            index += 1;
        }
        push(0);
        if index >= bytes.len() {
            break;
        }
        while bytes.get(index) == Some(&b'0') {
            index += 1;
        }
        let significant_start = index;
        while bytes.get(index).is_some_and(u8::is_ascii_digit) {
            index += 1;
        }
        let significant = bytes.get(significant_start..index).unwrap_or_default();
        push(u8::try_from(significant.len() + 1).ok()?);
        for &digit in significant {
            push(digit);
        }
    }
    push(0);
    Some(u128::from_be_bytes(prefix))
}

fn natural_key_prefix_slow(name: &str) -> Option<u128> {
    let mut prefix = [0u8; 16];
    let mut filled = 0;
    let encodable = encode_natural_key(name, &mut |byte| {
        if let Some(slot) = prefix.get_mut(filled) {
            *slot = byte;
            filled += 1;
        }
        filled < prefix.len()
    });
    encodable.then(|| u128::from_be_bytes(prefix))
}

/// Sorts items by the natural order of a name, computing each name's key prefix once: sorting
/// 100,000 names then costs integer comparisons instead of re-parsing names.
fn sort_by_natural_name<T>(items: &mut Vec<T>, name_of: impl Fn(&T) -> &str) {
    let prefixes: Option<Vec<u128>> = items
        .iter()
        .map(|item| natural_key_prefix(name_of(item)))
        .collect();
    match prefixes {
        Some(prefixes) => {
            let mut keyed: Vec<(u128, T)> = prefixes.into_iter().zip(items.drain(..)).collect();
            keyed.sort_unstable_by(|left, right| {
                left.0
                    .cmp(&right.0)
                    .then_with(|| natural_cmp(name_of(&left.1), name_of(&right.1)))
            });
            items.extend(keyed.into_iter().map(|(_, item)| item));
        }
        None => items.sort_by(|left, right| natural_cmp(name_of(left), name_of(right))),
    }
}

/// Sorts names in [`natural_cmp`] order, computing each name's sort key once (fast for
/// 100,000-node lists).
pub fn sort_naturally<T: AsRef<str>>(names: &mut Vec<T>) {
    sort_by_natural_name(names, |name| name.as_ref());
}

// ---------------------------------------------------------------------------------------------
// Abbreviation (reverse noderange)
// ---------------------------------------------------------------------------------------------

/// A name that parses back as exactly one plain atom (no regex, no filter, no brackets).
fn is_plain_atom(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(is_atom_character)
        && !name.starts_with(['~', '/', '-'])
        && !is_filter_text(name)
}

/// Reverse noderange: short noderange text that expands back to exactly `nodes`. Whole static
/// groups fully contained in the set are used first (largest first); the remaining names are
/// compressed into bracket form by name template, with ranges written `a:b` inside brackets
/// (`r3u[4:6,9],r4u1`), padded and unpadded numbers kept apart (`n[7:8],n[09:20]`). An empty
/// list gives an empty string.
pub fn abbreviate(nodes: &[Arc<str>], universe: &dyn Universe) -> String {
    let mut remaining: HashSet<&str> = nodes.iter().map(|node| node.as_ref()).collect();
    if remaining.is_empty() {
        return String::new();
    }
    let groups = choose_groups(&mut remaining, universe);
    let mut tokens = compress_names(groups.iter().map(|group| group.as_ref()).collect());
    tokens.extend(compress_names(remaining.into_iter().collect()));
    tokens.join(",")
}

/// Greedily picks static groups (largest first) whose members are all still uncovered, and
/// removes their members from `remaining`. Groups whose name is also a node or alias name are
/// skipped, because the name would expand to the node.
fn choose_groups(remaining: &mut HashSet<&str>, universe: &dyn Universe) -> Vec<Arc<str>> {
    let mut candidates: Vec<(Arc<str>, Vec<Arc<str>>)> = Vec::new();
    for name in universe.group_names() {
        if !is_plain_atom(&name) || universe.node(&name).is_some() {
            continue;
        }
        let Some(group) = universe.group(&name) else {
            continue;
        };
        let dynamic = group
            .noderange
            .as_deref()
            .is_some_and(|text| !text.trim().is_empty());
        if dynamic || group.nodes.is_empty() || group.nodes.len() > remaining.len() {
            continue;
        }
        candidates.push((name, group.nodes));
    }
    candidates.sort_by(|left, right| {
        right
            .1
            .len()
            .cmp(&left.1.len())
            .then_with(|| natural_cmp(&left.0, &right.0))
    });
    let mut chosen = Vec::new();
    for (name, members) in candidates {
        if members.len() > remaining.len() {
            continue;
        }
        if members
            .iter()
            .all(|member| remaining.contains(member.as_ref()))
        {
            for member in &members {
                remaining.remove(member.as_ref());
            }
            chosen.push(name);
            if remaining.is_empty() {
                break;
            }
        }
    }
    chosen
}

/// The numbers at one position of a template: (value, text as written), sorted.
type FieldValues<'a> = Vec<(u64, &'a str)>;

/// One output token under construction: a set of values per number position.
type Entry<'a> = Vec<FieldValues<'a>>;

/// Compresses names into tokens, sorted by the natural order of each token's first name.
fn compress_names(names: Vec<&str>) -> Vec<String> {
    let mut tokens: Vec<(String, String)> = Vec::new();
    let mut templates: HashMap<Vec<&str>, Vec<FieldValues<'_>>> = HashMap::new();
    for name in names {
        match split_template(name) {
            Some((texts, numbers)) if !numbers.is_empty() => {
                templates.entry(texts).or_default().push(numbers);
            }
            _ => tokens.push((name.to_owned(), name.to_owned())),
        }
    }
    for (texts, rows) in templates {
        compress_template(&texts, rows, &mut tokens);
    }
    sort_by_natural_name(&mut tokens, |(first, _)| first);
    tokens.into_iter().map(|(_, text)| text).collect()
}

/// `r3u04` → texts `["r", "u", ""]`, numbers `[(3, "3"), (4, "04")]`.
fn split_template(name: &str) -> Option<(Vec<&str>, FieldValues<'_>)> {
    if !is_plain_atom(name) {
        return None;
    }
    let mut texts = Vec::new();
    let mut numbers = Vec::new();
    for part in name_parts(name) {
        match part {
            NamePart::Text(text) => texts.push(text),
            NamePart::Digits(digits) => numbers.push((parse_decimal(digits)?, digits)),
        }
    }
    Some((texts, numbers))
}

fn digit_count(mut value: u64) -> usize {
    let mut count = 1;
    while value >= 10 {
        value /= 10;
        count += 1;
    }
    count
}

/// True if `text` (whose value is `value`) is what a bracket range with bound width `width`
/// writes for `value`: zero-padded to `width` digits, never truncated.
fn is_written_with_width(value: u64, text: &str, width: usize) -> bool {
    text.len() == width.max(digit_count(value))
}

/// Maximal runs of consecutive numbers that a bracket range `start:end` reproduces exactly
/// (the range takes its width from the start), as (first index, last index) pairs.
fn number_runs(values: &[(u64, &str)]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut run_start = 0;
    for index in 1..=values.len() {
        let continues = match (
            values.get(run_start),
            values.get(index - 1),
            values.get(index),
        ) {
            (Some(first), Some(previous), Some(next)) => {
                previous.0.checked_add(1) == Some(next.0)
                    && is_written_with_width(next.0, next.1, first.1.len())
            }
            _ => false,
        };
        if !continues {
            runs.push((run_start, index - 1));
            run_start = index;
        }
    }
    runs
}

/// Padded runs (first value with a leading zero) go into one token per width and unpadded
/// ones into another, as the reference writes them (`n[7:8],n[09:20]`).
fn split_by_padding<'a>(values: &[(u64, &'a str)]) -> Vec<FieldValues<'a>> {
    let mut classes: BTreeMap<Option<usize>, FieldValues<'a>> = BTreeMap::new();
    for (first, last) in number_runs(values) {
        let Some(run) = values.get(first..=last) else {
            continue;
        };
        let class = run
            .first()
            .filter(|(_, text)| text.len() > 1 && text.starts_with('0'))
            .map(|(_, text)| text.len());
        classes.entry(class).or_default().extend_from_slice(run);
    }
    classes.into_values().collect()
}

/// Merges the names of one template position by position, from the last number to the first:
/// names that agree on every other position share one bracket for this position. Because the
/// other positions are identical, the cartesian product of the merged entry is exactly the
/// union of the merged names.
fn compress_template<'a>(
    texts: &[&'a str],
    rows: Vec<FieldValues<'a>>,
    tokens: &mut Vec<(String, String)>,
) {
    let field_count = texts.len().saturating_sub(1);
    let mut entries: Vec<Entry<'a>> = rows
        .into_iter()
        .map(|numbers| numbers.into_iter().map(|number| vec![number]).collect())
        .collect();
    for position in (0..field_count).rev() {
        let mut merged: HashMap<Entry<'a>, FieldValues<'a>> = HashMap::new();
        for mut fields in entries {
            let Some(field) = fields.get_mut(position) else {
                continue;
            };
            let values = std::mem::take(field);
            merged.entry(fields).or_default().extend(values);
        }
        entries = Vec::new();
        for (fields, mut values) in merged {
            values.sort_unstable();
            values.dedup();
            for class in split_by_padding(&values) {
                let mut entry = fields.clone();
                if let Some(field) = entry.get_mut(position) {
                    *field = class;
                }
                entries.push(entry);
            }
        }
    }
    for entry in entries {
        render_entry(texts, &entry, tokens);
    }
}

fn render_field(values: &[(u64, &str)], out: &mut String) {
    if let [(_, single)] = values {
        out.push_str(single);
        return;
    }
    out.push('[');
    for (index, (first, last)) in number_runs(values).into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        let (Some((_, first_text)), Some((_, last_text))) = (values.get(first), values.get(last))
        else {
            continue;
        };
        out.push_str(first_text);
        if last > first {
            out.push(':');
            out.push_str(last_text);
        }
    }
    out.push(']');
}

fn render_entry(texts: &[&str], entry: &Entry<'_>, tokens: &mut Vec<(String, String)>) {
    let mut bracketed = String::new();
    let mut first_name = String::new();
    let mut pieces = Vec::with_capacity(texts.len() * 2);
    for (index, text) in texts.iter().enumerate() {
        bracketed.push_str(text);
        first_name.push_str(text);
        pieces.push(NamePiece::Text((*text).to_owned()));
        if let Some(values) = entry.get(index) {
            render_field(values, &mut bracketed);
            if let Some((_, first)) = values.first() {
                first_name.push_str(first);
            }
            pieces.push(NamePiece::Choices(
                values.iter().map(|(_, text)| (*text).to_owned()).collect(),
            ));
        }
    }
    // Brackets holding only isolated values (`n[01,03]`) are spelled out when that is shorter
    // (`n01,n03`); brackets with ranges keep the reference's form (`n[7:8]`).
    let only_isolated_values = entry.iter().all(|values| {
        number_runs(values)
            .iter()
            .all(|(first, last)| first == last)
    });
    let count = combination_count(&pieces).unwrap_or(usize::MAX);
    if only_isolated_values && count > 1 && count <= MAX_SPELLED_OUT_COMBINATIONS {
        let mut names = Vec::with_capacity(count);
        let mut buffer = String::new();
        // Collecting names cannot fail.
        let _ = for_each_name(&pieces, &mut buffer, &mut |name| {
            names.push(name.to_owned());
            Ok(())
        });
        let spelled_out_length =
            names.iter().map(String::len).sum::<usize>() + names.len().saturating_sub(1);
        if spelled_out_length < bracketed.len() {
            tokens.extend(names.into_iter().map(|name| (name.clone(), name)));
            return;
        }
    }
    tokens.push((first_name, bracketed));
}

// ---------------------------------------------------------------------------------------------
// Name validation
// ---------------------------------------------------------------------------------------------

/// Accepts `name` as a new node, group or alias name only if the grammar reads it back as
/// exactly that name: a single plain atom of letters, digits, `-`, `_`, `.`, `:` and `+`, not
/// starting with `-`, and not shaped like a range (`n1-n5`, `n1:n5`, `n1..n5`, `n1+3`).
pub fn validate_name(name: &str) -> Result<(), NoderangeError> {
    let invalid = |reason: String| {
        Err(NoderangeError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("a name cannot be empty".to_owned());
    }
    if name.starts_with(['~', '/']) {
        return invalid("a leading `~` or `/` marks a regular expression".to_owned());
    }
    for character in name.chars() {
        match character {
            c if c.is_ascii_alphanumeric() || "-_.:+".contains(c) => {}
            c if c.is_whitespace() => return invalid("a name cannot contain spaces".to_owned()),
            ',' | '@' | '(' | ')' | '<' | '>' | '[' | ']' => {
                return invalid(format!("`{character}` is a noderange operator"));
            }
            '=' | '!' => {
                return invalid(format!("`{character}` marks an attribute filter"));
            }
            '*' | '?' => return invalid("wildcards are not allowed in names".to_owned()),
            other => {
                return invalid(format!(
                    "`{other}` is not allowed (use letters, digits, `-`, `_`, `.`, `:` and `+`)"
                ));
            }
        }
    }
    if name.starts_with('-') {
        return invalid("a leading `-` would be read as a set difference after `,`".to_owned());
    }
    if range_form(name).is_some() {
        return invalid("it has the form of a range and would be expanded as one".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Instant;

    /// A configuration fake shaped like the real store: nodes keyed by their interned name
    /// (with their attributes), an alias index, static and dynamic groups.
    #[derive(Default)]
    struct FakeUniverse {
        nodes: HashMap<Arc<str>, Vec<(String, String)>>,
        aliases: HashMap<Arc<str>, Arc<str>>,
        groups: HashMap<String, GroupMembers>,
    }

    fn wildcard_matches(pattern: &str, text: &str) -> bool {
        let pattern: Vec<char> = pattern.chars().collect();
        let text: Vec<char> = text.chars().collect();
        let (mut p, mut t, mut star, mut mark) = (0, 0, None, 0);
        while t < text.len() {
            if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
                p += 1;
                t += 1;
            } else if p < pattern.len() && pattern[p] == '*' {
                star = Some(p);
                mark = t;
                p += 1;
            } else if let Some(s) = star {
                p = s + 1;
                mark += 1;
                t = mark;
            } else {
                return false;
            }
        }
        while p < pattern.len() && pattern[p] == '*' {
            p += 1;
        }
        p == pattern.len()
    }

    impl FakeUniverse {
        fn add_node(&mut self, name: &str) -> Arc<str> {
            let node: Arc<str> = Arc::from(name);
            self.nodes.insert(node.clone(), Vec::new());
            node
        }
        fn add_alias(&mut self, alias: &str, node: &str) {
            let canonical = self.node(node).expect("aliased node exists");
            self.aliases.insert(Arc::from(alias), canonical);
        }
        fn add_group(&mut self, name: &str, members: &[String]) {
            let nodes = members
                .iter()
                .map(|m| self.node(m).expect("member exists"))
                .collect();
            self.groups.insert(
                name.to_owned(),
                GroupMembers {
                    nodes,
                    noderange: None,
                },
            );
        }
        fn add_dynamic_group(&mut self, name: &str, noderange: &str) {
            self.groups.insert(
                name.to_owned(),
                GroupMembers {
                    nodes: Vec::new(),
                    noderange: Some(noderange.to_owned()),
                },
            );
        }
        fn set(&mut self, node: &str, attribute: &str, value: &str) {
            self.nodes
                .get_mut(node)
                .expect("node exists")
                .push((attribute.to_owned(), value.to_owned()));
        }
    }

    impl Universe for FakeUniverse {
        fn node(&self, name: &str) -> Option<Arc<str>> {
            if let Some((key, _)) = self.nodes.get_key_value(name) {
                return Some(key.clone());
            }
            self.aliases.get(name).cloned()
        }
        fn group(&self, name: &str) -> Option<GroupMembers> {
            self.groups.get(name).cloned()
        }
        fn group_names(&self) -> Vec<Arc<str>> {
            self.groups
                .keys()
                .map(|name| Arc::from(name.as_str()))
                .collect()
        }
        fn for_each_node(&self, visit: &mut dyn FnMut(&Arc<str>)) {
            for node in self.nodes.keys() {
                visit(node);
            }
        }
        fn attribute_matches(
            &self,
            node: &str,
            attribute_pattern: &str,
            visit: &mut dyn FnMut(&str) -> bool,
        ) -> Result<bool, String> {
            if attribute_pattern.is_empty()
                || !attribute_pattern
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._*?".contains(c))
            {
                return Err(format!(
                    "`{attribute_pattern}` is not a valid attribute name"
                ));
            }
            if attribute_pattern.starts_with("secret.") {
                return Err("secret attributes cannot be filtered".to_owned());
            }
            let Some(attributes) = self.nodes.get(node) else {
                return Ok(false);
            };
            let wildcard = attribute_pattern.contains(['*', '?']);
            for (name, value) in attributes {
                let selected = if wildcard {
                    wildcard_matches(attribute_pattern, name)
                } else {
                    name == attribute_pattern
                };
                if selected && visit(value) {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }

    fn numbered(prefix: &str, range: std::ops::RangeInclusive<u32>) -> Vec<String> {
        range.map(|n| format!("{prefix}{n}")).collect()
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn r_nodes(rack: u32) -> Vec<String> {
        (1..=10).map(|u| format!("r{rack}u{u:02}")).collect()
    }

    /// The example cluster: racks of `n` nodes, `r<rack>u<unit>` nodes, storage `s` nodes.
    fn cluster() -> FakeUniverse {
        let mut universe = FakeUniverse::default();
        for name in numbered("n", 1..=40) {
            universe.add_node(&name);
        }
        for rack in 1..=3 {
            for name in r_nodes(rack) {
                universe.add_node(&name);
            }
        }
        for name in numbered("s", 1..=15)
            .into_iter()
            .chain(numbered("s", 100..=105))
        {
            universe.add_node(&name);
        }
        universe.add_node("a1-a2");
        universe.add_node("a1");
        universe.add_node("a2");
        universe.add_alias("login", "n40");
        universe.add_alias("gpu1", "n38");
        universe.add_alias("gpu2", "n39");
        for rack in 1..=4 {
            let first = (rack - 1) * 10 + 1;
            universe.add_group(&format!("rack{rack}"), &numbered("n", first..=first + 9));
        }
        universe.add_group("storage", &numbered("s", 1..=5));
        let mut compute = numbered("n", 1..=40);
        for rack in 1..=3 {
            compute.extend(r_nodes(rack));
        }
        universe.add_group("compute", &compute);
        universe.add_dynamic_group("firstthree", "rack1>3");
        universe.add_dynamic_group("mixed", "storage,login");
        universe.add_dynamic_group("loopa", "loopb");
        universe.add_dynamic_group("loopb", "n1,loopa");
        universe.add_dynamic_group("broken", "n1,(");
        universe.add_dynamic_group("ghostly", "n1,ghost");
        for depth in 0..20 {
            universe.add_dynamic_group(&format!("deep{depth}"), &format!("deep{}", depth + 1));
        }
        universe.add_dynamic_group("deep20", "n1");
        for n in 1..=40u32 {
            let name = format!("n{n}");
            universe.set(&name, "location.rack", &((n - 1) / 10 + 1).to_string());
            universe.set(&name, "location.row", if n <= 20 { "12" } else { "13" });
        }
        for (rack, value) in [(1, "7"), (2, "9"), (3, "10")] {
            for name in r_nodes(rack) {
                universe.set(&name, "location.rack", value);
            }
        }
        for n in 1..=5 {
            universe.set(&format!("n{n}"), "net.eth0.switch", "switch1");
        }
        for n in 6..=8 {
            universe.set(&format!("n{n}"), "net.ib0.switch", "switch1");
        }
        universe.set("n9", "net.ib0.switch", "switch2");
        for node in ["n3", "n4", "n15", "s1"] {
            universe.set(node, "console.logging", "full");
        }
        universe.set("n1", "secret.hardwaremanagementpassword", "hunter2");
        universe
    }

    fn sorted(mut names: Vec<String>) -> Vec<String> {
        sort_naturally(&mut names);
        names.dedup();
        names
    }

    fn expand_strings(text: &str, universe: &dyn Universe) -> Vec<String> {
        match expand(text, universe) {
            Ok(nodes) => nodes.iter().map(|node| node.to_string()).collect(),
            Err(error) => panic!("`{text}` failed: {error}"),
        }
    }

    fn expand_error(text: &str, universe: &dyn Universe) -> NoderangeError {
        match expand(text, universe) {
            Ok(nodes) => panic!("`{text}` unexpectedly gave {nodes:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn man_page_examples() {
        let universe = cluster();
        let all_r: Vec<String> = (1..=3).flat_map(r_nodes).collect();
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("n1", strings(&["n1"])),
            ("rack1", numbered("n", 1..=10)),
            ("n1:n20", numbered("n", 1..=20)),
            ("n1-n20", numbered("n", 1..=20)),
            ("n1..n20", numbered("n", 1..=20)),
            ("n[1-20]", numbered("n", 1..=20)),
            ("r[1-3]u[01-10]", all_r.clone()),
            ("~r1u..", r_nodes(1)),
            ("location.rack=7", r_nodes(1)),
            ("net.*switch=switch1", numbered("n", 1..=8)),
            (
                "n1,n2,rack1,storage,location.rack=9,~s1..,n20-n30",
                numbered("n", 1..=10)
                    .into_iter()
                    .chain(numbered("s", 1..=5))
                    .chain(r_nodes(2))
                    .chain(numbered("s", 100..=105))
                    .chain(numbered("n", 20..=30))
                    .collect(),
            ),
            (
                "rack1,-n2",
                strings(&["n1"])
                    .into_iter()
                    .chain(numbered("n", 3..=10))
                    .collect(),
            ),
            (
                "compute,-location.row=12",
                numbered("n", 21..=40)
                    .into_iter()
                    .chain(all_r.clone())
                    .collect(),
            ),
            ("compute@rack1", numbered("n", 1..=10)),
            ("location.rack=10@compute", r_nodes(3)),
            (
                "rack1,-(console.logging=full@compute)",
                strings(&["n1", "n2"])
                    .into_iter()
                    .chain(numbered("n", 5..=10))
                    .collect(),
            ),
            ("rack1>3<6", strings(&["n7", "n8", "n9"])),
        ];
        for (text, expected) in cases {
            assert_eq!(
                expand_strings(text, &universe),
                sorted(expected),
                "for `{text}`"
            );
        }
    }

    #[test]
    fn results_are_naturally_sorted_and_deduplicated() {
        let universe = cluster();
        assert_eq!(
            expand_strings("n12,n[1-3],n10,n2,(rack1@n[1-3])", &universe),
            strings(&["n1", "n2", "n3", "n10", "n12"])
        );
        assert_eq!(
            expand_strings("s[1-2],s100,s15,s5", &universe),
            strings(&["s1", "s2", "s5", "s15", "s100"])
        );
    }

    #[test]
    fn left_to_right_without_precedence() {
        let universe = cluster();
        // (rack1 ∪ rack2) ∩ n5-n15, not rack1 ∪ (rack2 ∩ n5-n15).
        assert_eq!(
            expand_strings("rack1,rack2@n5-n15", &universe),
            numbered("n", 5..=15)
        );
        assert_eq!(
            expand_strings("rack1,(rack2@n5-n15)", &universe),
            numbered("n", 1..=15)
        );
        // (rack1 - n1-n5) ∪ n1 versus rack1 - (n1-n5 ∪ n1).
        assert_eq!(
            expand_strings("rack1,-n1-n5,n1", &universe),
            strings(&["n1"])
                .into_iter()
                .chain(numbered("n", 6..=10))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            expand_strings("rack1,-(n1-n5,n1)", &universe),
            numbered("n", 6..=10)
        );
    }

    #[test]
    fn pagination() {
        let universe = cluster();
        assert_eq!(
            expand_strings("rack1>3", &universe),
            strings(&["n1", "n2", "n3"])
        );
        assert_eq!(
            expand_strings("rack1<8", &universe),
            strings(&["n9", "n10"])
        );
        assert_eq!(
            expand_strings("rack1<6>3", &universe),
            strings(&["n7", "n8", "n9"])
        );
        assert_eq!(expand_strings("rack1<20", &universe), Vec::<String>::new());
        // Leading pagination pages over all nodes, naturally sorted.
        assert_eq!(expand_strings(">2", &universe), strings(&["a1", "a1-a2"]));
        assert_eq!(expand_strings("<2>2", &universe), strings(&["a2", "n1"]));
        // Pagination applies to the whole expression, after the sort.
        assert_eq!(
            expand_strings("rack2,rack1>2", &universe),
            strings(&["n1", "n2"])
        );
    }

    #[test]
    fn brackets() {
        let universe = cluster();
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("n[1-10:3]", strings(&["n1", "n4", "n7", "n10"])),
            ("n[1:5,-3]", strings(&["n1", "n2", "n4", "n5"])),
            ("n[1-5@4-9]", strings(&["n4", "n5"])),
            ("n[(1-3),-2,7]", strings(&["n1", "n3", "n7"])),
            ("n[1..3]", strings(&["n1", "n2", "n3"])),
            ("n[1+2]", strings(&["n1", "n2", "n3"])),
            ("n[1-10>2<3]", strings(&["n4", "n5"])),
            (
                "r[1,3]u[09-10]",
                strings(&["r1u09", "r1u10", "r3u09", "r3u10"]),
            ),
            ("rack[1-2]", numbered("n", 1..=20)),
            ("gpu[1-2]", strings(&["n38", "n39"])),
            ("n[1,-1]", Vec::new()),
        ];
        for (text, expected) in cases {
            assert_eq!(
                expand_strings(text, &universe),
                sorted(expected),
                "for `{text}`"
            );
        }
    }

    #[test]
    fn ranges_increments_and_exact_names() {
        let universe = cluster();
        let cases: Vec<(&str, Vec<String>)> = vec![
            (
                "r1u01-r2u02",
                strings(&["r1u01", "r1u02", "r2u01", "r2u02"]),
            ),
            ("r1u09:r1u10", strings(&["r1u09", "r1u10"])),
            ("rack1-rack2", numbered("n", 1..=20)),
            ("n1+3", numbered("n", 1..=4)),
            ("n9+0", strings(&["n9"])),
            // Exact names win over the range reading.
            ("a1-a2", strings(&["a1-a2"])),
            ("a1:a2", strings(&["a1", "a2"])),
        ];
        for (text, expected) in cases {
            assert_eq!(
                expand_strings(text, &universe),
                sorted(expected),
                "for `{text}`"
            );
        }
    }

    #[test]
    fn aliases_resolve_wherever_names_are_accepted() {
        let universe = cluster();
        assert_eq!(expand_strings("login", &universe), strings(&["n40"]));
        assert_eq!(
            expand_strings("gpu1-gpu2", &universe),
            strings(&["n38", "n39"])
        );
        assert_eq!(
            expand_strings("gpu1+1", &universe),
            strings(&["n38", "n39"])
        );
        assert_eq!(expand_strings("rack4,-login,-gpu1", &universe), {
            let mut expected = numbered("n", 31..=37);
            expected.push("n39".to_owned());
            expected
        });
        assert_eq!(expand_strings("login,n40", &universe), strings(&["n40"]));
    }

    #[test]
    fn dynamic_groups() {
        let universe = cluster();
        assert_eq!(
            expand_strings("firstthree", &universe),
            strings(&["n1", "n2", "n3"])
        );
        assert_eq!(
            expand_strings("mixed", &universe),
            sorted(
                numbered("s", 1..=5)
                    .into_iter()
                    .chain(["n40".to_owned()])
                    .collect()
            )
        );
        assert_eq!(
            expand_strings("firstthree,-n2", &universe),
            strings(&["n1", "n3"])
        );
        assert_eq!(expand_strings("deep5", &universe), strings(&["n1"]));

        match expand_error("loopa", &universe) {
            NoderangeError::DynamicGroupCycle { chain } => {
                assert_eq!(chain, "loopa -> loopb -> loopa")
            }
            other => panic!("unexpected {other}"),
        }
        match expand_error("deep0", &universe) {
            NoderangeError::DynamicGroupTooDeep { group, limit } => {
                assert_eq!(limit, MAX_DYNAMIC_GROUP_DEPTH);
                assert_eq!(group, "deep16");
            }
            other => panic!("unexpected {other}"),
        }
        match expand_error("broken", &universe) {
            NoderangeError::DynamicGroup { group, source, .. } => {
                assert_eq!(group, "broken");
                assert!(matches!(*source, NoderangeError::Syntax { .. }), "{source}");
            }
            other => panic!("unexpected {other}"),
        }
        match expand_error("n5,ghostly", &universe) {
            NoderangeError::DynamicGroup {
                group,
                noderange,
                source,
            } => {
                assert_eq!(
                    (group.as_str(), noderange.as_str()),
                    ("ghostly", "n1,ghost")
                );
                assert_eq!(
                    source.to_string(),
                    "`ghost` not a recognized node, group, or alias"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn attribute_filters() {
        let universe = cluster();
        assert_eq!(expand_strings("location.rack==7", &universe), r_nodes(1));
        assert_eq!(
            expand_strings("rack1@location.rack!=1", &universe),
            Vec::<String>::new()
        );
        assert_eq!(expand_strings("compute@location.rack=~^1", &universe), {
            let mut expected = numbered("n", 1..=10);
            expected.extend(r_nodes(3));
            sorted(expected)
        });
        assert_eq!(
            expand_strings("rack1@location.row!~2$", &universe),
            Vec::<String>::new()
        );
        // Unset attributes compare as the empty string.
        assert_eq!(
            expand_strings("rack1@console.logging=", &universe),
            sorted(strings(&["n1", "n2", "n5", "n6", "n7", "n8", "n9", "n10"]))
        );
        assert_eq!(
            expand_strings("rack1@net.*switch!=switch1", &universe),
            strings(&["n9", "n10"])
        );
        // Filter values may contain brackets and `=`.
        assert_eq!(
            expand_strings("rack1@location.rack=~[01]", &universe),
            numbered("n", 1..=10)
        );
        assert_eq!(
            expand_strings("rack1@location.rack=a=b", &universe),
            Vec::<String>::new()
        );
    }

    #[test]
    fn regular_expressions_are_unanchored_searches() {
        let universe = cluster();
        assert_eq!(
            expand_strings("/u10", &universe),
            strings(&["r1u10", "r2u10", "r3u10"])
        );
        assert_eq!(
            expand_strings("~^s10[0-1]$", &universe),
            strings(&["s100", "s101"])
        );
        assert_eq!(
            expand_strings("rack1,-~^n\\d$", &universe),
            strings(&["n10"])
        );
        assert_eq!(
            expand_strings("rack1@~n1", &universe),
            strings(&["n1", "n10"])
        );
    }

    fn assert_syntax(text: &str, expected_token: &str, expected_position: usize) {
        match NodeRange::parse(text) {
            Err(NoderangeError::Syntax {
                token,
                position,
                reason,
            }) => {
                assert_eq!(
                    (token.as_str(), position),
                    (expected_token, expected_position),
                    "for `{text}` ({reason})"
                );
            }
            other => panic!("`{text}`: expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_name_the_token_and_position() {
        assert_syntax("(n1,n2", "(", 1);
        assert_syntax("n1,n2)", ")", 6);
        assert_syntax("n1,(n2,(n3)", "(", 4);
        assert_syntax("n1,,n2", ",", 4);
        assert_syntax(",n1", ",", 1);
        assert_syntax("n1,", ",", 3);
        assert_syntax("n1@", "@", 3);
        assert_syntax("()", "(", 1);
        assert_syntax("n1 n2", "n2", 4);
        assert_syntax("n1,(n2)n3", "n3", 8);
        assert_syntax("rack1>3,n1", ",", 8);
        assert_syntax("(rack1>3)", ">3", 7);
        assert_syntax("<3,n1", ",", 3);
        assert_syntax("n1<", "<", 3);
        assert_syntax("n1<3<4", "<4", 5);
        assert_syntax("n1, -n2", "-n2", 5);
        assert_syntax("n1,]", "]", 4);
        assert_syntax("n[1-3", "[1-3", 2);
        assert_syntax("n[1[2]]", "[", 4);
        assert_syntax("n[]", "[]", 2);
        assert_syntax("n[~1]", "~1", 3);
        assert_syntax("n[a=1]", "a=1", 3);
        assert_syntax("n1,x[1,(2]", "(", 8);
        assert!(matches!(NodeRange::parse(""), Err(NoderangeError::Empty)));
        assert!(matches!(
            NodeRange::parse("   "),
            Err(NoderangeError::Empty)
        ));
        assert!(matches!(
            NodeRange::parse("n1,n%2"),
            Err(NoderangeError::UnexpectedCharacter {
                character: '%',
                position: 5
            })
        ));
        let deep = format!("{}n1{}", "(".repeat(100), ")".repeat(100));
        assert!(matches!(
            NodeRange::parse(&deep),
            Err(NoderangeError::Syntax { .. })
        ));
    }

    #[test]
    fn expansion_errors() {
        let universe = cluster();
        assert_eq!(
            expand_error("nosuch", &universe).to_string(),
            "`nosuch` not a recognized node, group, or alias"
        );
        assert!(matches!(
            expand_error("n5-n1", &universe),
            NoderangeError::BadRange { token, .. } if token == "n5-n1"
        ));
        assert!(matches!(
            expand_error("n1-n01", &universe),
            NoderangeError::BadRange { .. }
        ));
        assert!(matches!(
            expand_error("n[5-1]", &universe),
            NoderangeError::BadRange { .. }
        ));
        assert!(matches!(
            expand_error("n[1-5:0]", &universe),
            NoderangeError::BadRange { .. }
        ));
        assert!(matches!(
            expand_error("n[a-c]", &universe),
            NoderangeError::BadRange { .. }
        ));
        assert!(matches!(
            expand_error("n[1-2-3-4]", &universe),
            NoderangeError::BadRange { .. }
        ));
        assert_eq!(
            expand_error("n39-n41", &universe).to_string(),
            "`n41` (from `n39-n41`) not a recognized node, group, or alias"
        );
        assert_eq!(
            expand_error("rack1-rack5", &universe).to_string(),
            "`rack5` (from `rack1-rack5`) not a recognized node, group, or alias"
        );
        assert_eq!(
            expand_error("r[1-3]u[09-11]", &universe).to_string(),
            "`r1u11` (from `r[1-3]u[09-11]`) not a recognized node, group, or alias"
        );
        assert!(matches!(
            expand_error("n1-m5", &universe),
            NoderangeError::UnknownName { .. }
        ));
        assert!(matches!(
            expand_error("~*n", &universe),
            NoderangeError::BadRegex { .. }
        ));
        assert!(matches!(
            expand_error("location.rack=~*", &universe),
            NoderangeError::BadRegex { .. }
        ));
        for text in [
            "secret.hardwaremanagementpassword=x",
            "Location.Rack=1",
            "=x",
        ] {
            assert!(
                matches!(
                    expand_error(text, &universe),
                    NoderangeError::BadAttributeFilter { .. }
                ),
                "{text}"
            );
        }
        // The universe's reason is carried.
        assert!(
            expand_error("rack1@secret.*=x", &universe)
                .to_string()
                .contains("secret attributes cannot be filtered")
        );
        assert!(matches!(
            expand_error("n[1]x=3", &universe),
            NoderangeError::BadAttributeFilter { .. }
        ));
        assert!(matches!(
            NodeRange::parse("n[1-2000000]"),
            Err(NoderangeError::TooManyNames { .. })
        ));
        assert!(matches!(
            expand_error("x1-x99999999", &Verbatim),
            NoderangeError::TooManyNames { .. }
        ));
        assert!(matches!(
            expand_error("n[1-1000]u[1-1000]x[1-2]", &universe),
            NoderangeError::TooManyNames { .. }
        ));
    }

    /// Found by the `noderange` fuzz target: brackets each under the per-element limit used to
    /// add up without bound while parsing (30 copies of `x[1-999999]`, 409 bytes of text,
    /// took 46 s and 1.9 GB), because parsing keeps every bracket value. One noderange may
    /// now spell out at most `MAX_GENERATED_NAMES` bracket values in total.
    #[test]
    fn generated_names_are_limited_per_expansion() {
        // 30 elements of a million names each: refused quickly instead of generating 30M.
        let text = (0..30)
            .map(|i| format!("a{i}[1-1000][1-1000]"))
            .collect::<Vec<_>>()
            .join(",");
        let started = std::time::Instant::now();
        assert!(matches!(
            expand(&text, &Verbatim),
            Err(NoderangeError::TooManyNames { .. })
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // A single large element is still allowed.
        assert_eq!(
            expand("n[1-1000]x[1-100]", &Verbatim).unwrap().len(),
            100_000
        );
    }

    #[test]
    fn bracket_values_are_limited_per_noderange() {
        let over_budget = |result: Result<NodeRange, NoderangeError>| {
            matches!(
                result,
                Err(NoderangeError::TooManyNames { ref token, .. }) if token == "the noderange"
            )
        };
        assert!(over_budget(NodeRange::parse("a[1-500000],b[1-500001]")));
        // Every form of bracket value is charged, wherever the bracket is, against one
        // budget for the whole text (here a budget of 10 values).
        let parse_within_ten = |text: &str| NodeRange::parse_within(text, BracketBudget::new(10));
        for text in [
            "a[1-5],b[1-5]",
            "a[1-5,6-10]",
            "a[1-4],(b[1+5])",
            "a[1-3]b[1-3]c[1-3],x",
            "a[1,2,3,4,5,6,7,8,9,10]",
            "a[1-10],-b,c@d",
        ] {
            assert!(parse_within_ten(text).is_ok(), "{text}");
        }
        for text in [
            "a[1-5],b[1-6]",
            "a[1-5,6-11]",
            "a[1-5,-1-6]",
            "a[1-4],(b[1+6])",
            "a[1-3]b[1-3]c[1-3]d[1-2]",
            "a[1,2,3,4,5,6,7,8,9,10,11]",
            "a[1-10],b[1]",
        ] {
            assert!(over_budget(parse_within_ten(text)), "{text}");
        }
    }

    #[test]
    fn verbatim_universe() {
        assert_eq!(
            expand_strings("n[1-3],x5-x7,n1+2", &Verbatim),
            strings(&["n1", "n2", "n3", "x5", "x6", "x7"])
        );
        assert_eq!(
            expand_strings("r1u01-r2u02", &Verbatim),
            strings(&["r1u01", "r1u02", "r2u01", "r2u02"])
        );
        assert_eq!(
            expand_strings("foo-bar,web", &Verbatim),
            strings(&["foo-bar", "web"])
        );
        assert_eq!(
            expand_strings("n1.lab+2", &Verbatim),
            strings(&["n1.lab", "n2.lab", "n3.lab"])
        );
        assert_eq!(
            expand_strings("n[1-5],-n[2-3]", &Verbatim),
            strings(&["n1", "n4", "n5"])
        );
        for text in ["~x", "a=b", "<3"] {
            assert!(
                matches!(
                    expand_error(text, &Verbatim),
                    NoderangeError::NeedsConfiguration { .. }
                ),
                "{text}"
            );
        }
        assert_eq!(
            expand_error("a=b", &Verbatim).to_string(),
            "`a=b`: attribute filters need a configuration"
        );
        assert!(Verbatim.attribute_matches("x", "a", &mut |_| true).is_err());
    }

    #[test]
    fn padded_numbers_match_format() {
        for (value, width) in [
            (0, 0),
            (0, 1),
            (7, 3),
            (42, 1),
            (100_000, 2),
            (u64::MAX, 25),
            (u64::MAX, 0),
        ] {
            let mut buffer = String::from("n");
            push_padded_number(&mut buffer, value, width);
            assert_eq!(buffer, format!("n{value:0width$}"));
        }
    }

    #[test]
    fn natural_order() {
        let mut names = strings(&[
            "n10", "N2", "n1", "n01", "a", "", "n2", "b1", "B1", "1", "n1a",
        ]);
        sort_naturally(&mut names);
        assert_eq!(
            names,
            strings(&[
                "", "1", "a", "B1", "b1", "n01", "n1", "n1a", "N2", "n2", "n10"
            ])
        );
        assert_eq!(natural_cmp("r1u10", "r1u9"), Ordering::Greater);
        assert_eq!(natural_cmp("r2u1", "r10u1"), Ordering::Less);
        assert_eq!(natural_cmp("x", "x"), Ordering::Equal);
        let huge = format!("n{}", "9".repeat(300));
        assert_eq!(natural_cmp("n5", &huge), Ordering::Less);
        let mut with_fallback = vec![huge.clone(), "n5".to_owned(), "a\0".to_owned()];
        sort_naturally(&mut with_fallback);
        assert_eq!(with_fallback, vec!["a\0".to_owned(), "n5".to_owned(), huge]);
    }

    fn arcs(names: &[String]) -> Vec<Arc<str>> {
        names.iter().map(|name| Arc::from(name.as_str())).collect()
    }

    #[test]
    fn abbreviation_examples() {
        let cases: Vec<(Vec<String>, &str)> = vec![
            (strings(&["r3u4", "r5u6"]), "r3u4,r5u6"),
            (strings(&["r3u4s1", "r5u6s3"]), "r3u4s1,r5u6s3"),
            (
                strings(&["r3u4s1", "r3u4s2", "r5u4s3"]),
                "r3u4s[1:2],r5u4s3",
            ),
            (
                strings(&["r3u4", "r3u5", "r3u6", "r3u9", "r4u1"]),
                "r3u[4:6,9],r4u1",
            ),
            (strings(&["n01", "n2", "n03"]), "n01,n2,n03"),
            (
                strings(&["n7", "n8"])
                    .into_iter()
                    .chain((9..=20).map(|n| format!("n{n:02}")))
                    .collect(),
                "n[7:8],n[09:20]",
            ),
            ((1..=3).flat_map(r_nodes).collect(), "r[1:3]u[01:10]"),
            (numbered("n", 1..=100_000), "n[1:100000]"),
            (strings(&["login", "n1", "n2"]), "login,n[1:2]"),
            (strings(&["x1.lab", "x2.lab", "x3.lab"]), "x[1:3].lab"),
            (Vec::new(), ""),
        ];
        for (names, expected) in cases {
            let nodes = arcs(&names);
            let text = abbreviate(&nodes, &Verbatim);
            assert_eq!(text, expected);
            if !names.is_empty() {
                assert_eq!(expand_strings(&text, &Verbatim), sorted(names));
            }
        }
    }

    #[test]
    fn abbreviation_uses_whole_groups_largest_first() {
        let universe = cluster();
        let check = |names: Vec<String>, expected: &str| {
            let text = abbreviate(&arcs(&names), &universe);
            assert_eq!(text, expected);
            assert_eq!(expand_strings(&text, &universe), sorted(names));
        };
        check(numbered("n", 1..=11), "rack1,n11");
        check(numbered("n", 1..=20), "rack[1:2]");
        let mut everything: Vec<String> = numbered("n", 1..=40);
        everything.extend((1..=3).flat_map(r_nodes));
        everything.push("s1".to_owned());
        check(everything, "compute,s1");
        check(numbered("s", 1..=6), "storage,s6");
        check(strings(&["a1", "a1-a2", "n40"]), "a1,a1-a2,n40");
    }

    #[test]
    fn name_validation() {
        for good in [
            "n1",
            "r1u01",
            "compute",
            "sw-1",
            "web-server",
            "rack1-pdu1",
            "n1.lab",
            "a_b",
            "5",
            "a+b",
            "a..b",
        ] {
            assert!(validate_name(good).is_ok(), "{good} should be accepted");
        }
        for bad in [
            "", "n 1", "n1,n2", "a@b", "(a)", "n[1]", "a=b", "a!b", "~n1", "/n1", "-n1", "n*",
            "n?", "n1-n5", "n1:n5", "n1..n5", "n1+3", "a-a", "1-2", "n<3", "né",
        ] {
            assert!(
                matches!(validate_name(bad), Err(NoderangeError::InvalidName { .. })),
                "{bad:?} should be refused"
            );
        }
        // Every accepted name expands back to exactly itself.
        let mut universe = FakeUniverse::default();
        for good in [
            "sw-1",
            "web-server",
            "rack1-pdu1",
            "n1.lab",
            "a+b",
            "a..b",
            "5",
        ] {
            universe.add_node(good);
            assert_eq!(expand_strings(good, &universe), strings(&[good]));
        }
    }

    /// A cluster of the size the daemon is designed for.
    fn large_cluster() -> FakeUniverse {
        let mut universe = FakeUniverse::default();
        let mut all = Vec::with_capacity(100_000);
        for n in 1..=100_000u32 {
            let node = universe.add_node(&format!("n{n}"));
            let rack = (n - 1) / 100 + 1;
            universe.set(&node, "location.rack", &rack.to_string());
            all.push(node);
        }
        for rack in 0..1000usize {
            let members = all[rack * 100..(rack + 1) * 100].to_vec();
            universe.groups.insert(
                format!("rack{}", rack + 1),
                GroupMembers {
                    nodes: members,
                    noderange: None,
                },
            );
        }
        universe.groups.insert(
            "compute".to_owned(),
            GroupMembers {
                nodes: all,
                noderange: None,
            },
        );
        universe
    }

    #[test]
    fn large_cluster_expressions() {
        let universe = large_cluster();
        // Each expression runs twice: the first run also pays for warming the allocator.
        let timed = |text: &str| {
            let mut durations = Vec::new();
            let mut result = Vec::new();
            for _ in 0..2 {
                let started = Instant::now();
                result = expand(text, &universe).expect(text);
                durations.push(started.elapsed());
            }
            println!(
                "expanding `{text}` took {durations:?} ({} nodes)",
                result.len()
            );
            result
        };
        let all = timed("n1-n100000");
        assert_eq!(all.len(), 100_000);
        assert_eq!(
            (&*all[0], &*all[9], &*all[99_999]),
            ("n1", "n10", "n100000")
        );
        assert!(
            all.windows(2)
                .all(|pair| natural_cmp(&pair[0], &pair[1]) == Ordering::Less)
        );
        let racks = timed("rack[1-100]");
        assert_eq!(racks.len(), 10_000);
        assert_eq!((&*racks[0], &*racks[9_999]), ("n1", "n10000"));
        let rack7: Vec<String> = numbered("n", 601..=700);
        let intersection = timed("compute@rack7");
        assert_eq!(
            intersection
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            rack7
        );
        let filtered = timed("location.rack=7,-n5");
        assert_eq!(
            filtered.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            rack7
        );
        let filtered = timed("location.rack=1,-n5");
        assert_eq!(filtered.len(), 99);
        assert!(!filtered.iter().any(|n| &**n == "n5"));
        let started = Instant::now();
        let text = abbreviate(&all, &universe);
        println!("abbreviating all nodes took {:?}", started.elapsed());
        assert_eq!(text, "compute");
        let started = Instant::now();
        let text = abbreviate(&racks, &universe);
        println!("abbreviating rack[1-100] took {:?}", started.elapsed());
        assert_eq!(text, "rack[1:100]");
    }

    /// Names over a few templates, some padded, some in several forms (`n1`, `n01`).
    fn name_pool() -> Vec<String> {
        let mut pool = numbered("n", 0..=120);
        pool.extend((0..=30).map(|n| format!("n{n:02}")));
        for rack in 1..=4 {
            pool.extend((1..=12).map(|u| format!("r{rack}u{u}")));
        }
        pool.extend((1..=12).map(|u| format!("r1u{u:02}")));
        pool.extend((0..=60).map(|n| format!("c{n:03}")));
        pool.extend((1..=20).map(|n| format!("x{n}.lab")));
        pool.extend(strings(&["login", "mgmt"]));
        sorted(pool)
    }

    fn pool_universe(pool: &[String], groups: &[Vec<String>]) -> FakeUniverse {
        let mut universe = FakeUniverse::default();
        for name in pool {
            universe.add_node(name);
        }
        for (index, members) in groups.iter().enumerate() {
            universe.add_group(&format!("grp{index}"), members);
        }
        universe.add_dynamic_group("dyn", "n1-n5");
        universe
    }

    /// An expression tree for the oracle test: an atom (by index) or a parenthesis level.
    #[derive(Clone, Debug)]
    enum Tree {
        Atom(usize),
        Sequence(Box<Tree>, Vec<(SetOperator, Tree)>),
    }

    /// Atoms of every kind whose meaning the other tests pin down.
    const ORACLE_ATOMS: [&str; 14] = [
        "rack1",
        "rack2",
        "n5-n25",
        "~n1",
        "location.row=12",
        "storage",
        "compute",
        "~s",
        "login",
        "n[1-30:3]",
        "location.rack!=2",
        "firstthree",
        "mixed",
        "console.logging=full",
    ];

    fn tree_strategy() -> impl Strategy<Value = Tree> {
        let leaf = (0..ORACLE_ATOMS.len()).prop_map(Tree::Atom);
        leaf.prop_recursive(3, 24, 4, |inner| {
            let operator = prop_oneof![
                Just(SetOperator::Union),
                Just(SetOperator::Difference),
                Just(SetOperator::Intersection)
            ];
            (
                inner.clone(),
                proptest::collection::vec((operator, inner), 0..4),
            )
                .prop_map(|(first, rest)| Tree::Sequence(Box::new(first), rest))
        })
    }

    fn render(tree: &Tree, parenthesize: bool) -> String {
        match tree {
            Tree::Atom(index) => ORACLE_ATOMS[*index].to_owned(),
            Tree::Sequence(first, rest) => {
                let mut text = render(first, true);
                for (operator, operand) in rest {
                    text.push_str(match operator {
                        SetOperator::Union => ",",
                        SetOperator::Difference => ",-",
                        SetOperator::Intersection => "@",
                    });
                    text.push_str(&render(operand, true));
                }
                if parenthesize {
                    format!("({text})")
                } else {
                    text
                }
            }
        }
    }

    fn oracle(
        tree: &Tree,
        atoms: &[std::collections::BTreeSet<String>],
    ) -> std::collections::BTreeSet<String> {
        match tree {
            Tree::Atom(index) => atoms[*index].clone(),
            Tree::Sequence(first, rest) => {
                let mut current = oracle(first, atoms);
                for (operator, operand) in rest {
                    let other = oracle(operand, atoms);
                    current = match operator {
                        SetOperator::Union => current.union(&other).cloned().collect(),
                        SetOperator::Difference => current.difference(&other).cloned().collect(),
                        SetOperator::Intersection => {
                            current.intersection(&other).cloned().collect()
                        }
                    };
                }
                current
            }
        }
    }

    #[test]
    fn node_set_deduplicates_long_union_lists() {
        let mut set = NodeSet::default();
        for _ in 0..3 {
            for n in 0..50_000 {
                set.insert(Arc::from(format!("n{n}").as_str()));
            }
            set.bound_unions();
        }
        assert!(set.index.is_some());
        assert_eq!(set.gathered(), 50_000);
        assert_eq!(set.into_sorted().len(), 50_000);
    }

    proptest! {
        #[test]
        fn expressions_match_a_left_to_right_oracle(tree in tree_strategy()) {
            let universe = cluster();
            let atoms: Vec<std::collections::BTreeSet<String>> = ORACLE_ATOMS
                .iter()
                .map(|atom| expand_strings(atom, &universe).into_iter().collect())
                .collect();
            let text = render(&tree, false);
            let expected = sorted(oracle(&tree, &atoms).into_iter().collect());
            prop_assert_eq!(expand_strings(&text, &universe), expected, "for {}", text);
        }

        #[test]
        fn node_set_operations_match_plain_sets(
            left in proptest::collection::vec(0u8..24, 0..40),
            right in proptest::collection::vec(0u8..24, 0..40),
            left_indexed in any::<bool>(),
            right_indexed in any::<bool>(),
            operator in 0u8..3,
        ) {
            let build = |numbers: &[u8], indexed: bool| {
                let mut set: NodeSet =
                    numbers.iter().map(|n| Arc::from(format!("n{n}").as_str())).collect();
                if indexed {
                    set.index();
                }
                set
            };
            let plain = |numbers: &[u8]| -> std::collections::BTreeSet<String> {
                numbers.iter().map(|n| format!("n{n}")).collect()
            };
            let mut left_set = build(&left, left_indexed);
            let right_set = build(&right, right_indexed);
            let (left_plain, right_plain) = (plain(&left), plain(&right));
            let expected: Vec<String> = match operator {
                0 => {
                    left_set.absorb(right_set);
                    left_plain.union(&right_plain).cloned().collect()
                }
                1 => {
                    left_set.subtract(right_set);
                    left_plain.difference(&right_plain).cloned().collect()
                }
                _ => {
                    left_set = left_set.intersect(right_set);
                    left_plain.intersection(&right_plain).cloned().collect()
                }
            };
            let actual: Vec<String> = left_set.into_sorted().iter().map(|n| n.to_string()).collect();
            prop_assert_eq!(actual, sorted(expected));
        }

        #[test]
        fn abbreviation_round_trips(
            mask in proptest::collection::vec(any::<bool>(), 300),
            group_masks in proptest::collection::vec(
                (proptest::collection::vec(any::<bool>(), 300), any::<bool>()), 0..5),
        ) {
            let pool = name_pool();
            let chosen: Vec<String> = pool
                .iter()
                .zip(mask.iter().chain(std::iter::repeat(&false)))
                .filter(|(_, keep)| **keep)
                .map(|(name, _)| name.clone())
                .collect();
            let groups: Vec<Vec<String>> = group_masks
                .iter()
                .map(|(group_mask, inside)| {
                    pool.iter()
                        .zip(group_mask.iter().chain(std::iter::repeat(&false)))
                        .filter(|(name, member)| **member && (!inside || chosen.contains(name)))
                        .map(|(name, _)| name.clone())
                        .collect()
                })
                .collect();
            let nodes = arcs(&chosen);
            for universe in [pool_universe(&pool, &[]), pool_universe(&pool, &groups)] {
                let text = abbreviate(&nodes, &universe);
                if chosen.is_empty() {
                    prop_assert_eq!(text, "");
                } else {
                    let expanded = expand(&text, &universe)
                        .map_err(|error| TestCaseError::fail(format!("`{text}`: {error}")))?;
                    let expanded: Vec<String> = expanded.iter().map(|n| n.to_string()).collect();
                    prop_assert_eq!(&expanded, &sorted(chosen.clone()), "text {}", text);
                }
            }
            let text = abbreviate(&nodes, &Verbatim);
            if !chosen.is_empty() {
                let expanded: Vec<String> =
                    expand_strings(&text, &Verbatim).into_iter().collect();
                prop_assert_eq!(&expanded, &sorted(chosen.clone()), "text {}", text);
            }
        }

        #[test]
        fn sort_key_agrees_with_natural_cmp(a in "[a-zA-Z0-9_.éÉ]{0,8}", b in "[a-zA-Z0-9_.éÉ]{0,8}") {
            let ordering = natural_cmp(&a, &b);
            prop_assert_eq!(ordering, natural_cmp(&b, &a).reverse());
            prop_assert_eq!(ordering == Ordering::Equal, a == b);
            let full_key = |name: &str| {
                let mut key = Vec::new();
                encode_natural_key(name, &mut |byte| {
                    key.push(byte);
                    true
                })
                .then_some(key)
            };
            let (Some(key_a), Some(key_b)) = (full_key(&a), full_key(&b)) else {
                return Err(TestCaseError::fail("keys exist for these names"));
            };
            // Equal encodings mean equal natural keys; the byte tie-break then decides.
            prop_assert_eq!(key_a.cmp(&key_b).then_with(|| a.as_bytes().cmp(b.as_bytes())), ordering);
            let (Some(prefix_a), Some(prefix_b)) = (natural_key_prefix(&a), natural_key_prefix(&b)) else {
                return Err(TestCaseError::fail("prefixes exist for these names"));
            };
            prop_assert_eq!(Some(prefix_a), natural_key_prefix_slow(&a));
            prop_assert_eq!(Some(prefix_b), natural_key_prefix_slow(&b));
            if prefix_a != prefix_b {
                prop_assert_eq!(prefix_a.cmp(&prefix_b), ordering);
            }
        }

        #[test]
        fn never_panics(text in "[a-z0-9,@()<>\\[\\]:.~=!+*? -]{0,30}") {
            let universe = cluster();
            let _ = expand(&text, &universe);
            let _ = expand(&text, &Verbatim);
            let _ = validate_name(&text);
        }

        #[test]
        fn never_panics_on_any_text(text in "\\PC{0,30}") {
            let _ = expand(&text, &Verbatim);
            let _ = expand(&text, &cluster());
        }
    }
}
