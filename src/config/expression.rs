//! Attribute expressions: the Python-format-string subset that Confluent accepts in node and
//! group attribute values, such as `{n1:02d}`, `172.17.0.{n1}/16`, `{(n1-1)/42+1}`,
//! `{node[3:]}` or `{node}-{hardwaremanagement.method}`.
//!
//! This module owns the template syntax: parsing a template once into literal text and fields
//! whose expressions are small syntax trees, listing the attributes a template depends on, and
//! evaluating a parsed template for one node with Python's integer, string and format semantics.
//!
//! It must not know the attribute catalogue, aliases, inheritance or storage: attribute names are
//! recorded verbatim and resolved by the caller through [`ExpressionContext`], which also decides
//! whether a name is valid and what a broken attribute means. It never panics on any template.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;

/// Longest format spec (the text after the field's `:`) that Confluent accepts.
pub const MAX_FORMAT_SPEC_LENGTH: usize = 8;

/// Longest formatted field, in characters, that Confluent accepts.
pub const MAX_FIELD_LENGTH: usize = 16384;

/// Deepest expression tree (and deepest bracket nesting) accepted. Evaluation recurses over the
/// tree, so bounding the depth bounds the stack a hostile template can consume.
pub const MAX_EXPRESSION_DEPTH: usize = 64;

/// Longest intermediate string, in bytes, that `replace` or `+` may build. Chained `replace`
/// calls grow a string exponentially, so a limit is needed to keep memory bounded; it is far
/// above [`MAX_FIELD_LENGTH`] so that a long intermediate value can still be sliced down.
pub const MAX_INTERMEDIATE_STRING_BYTES: usize = 1 << 20;

/// The methods a field may call on a value, for error messages.
const METHOD_LIST: &str = "replace, upper, lower, block_number and block_offset";

/// Python keywords, which can never be names in a Python expression.
const PYTHON_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Context in which a template is evaluated: the node and a way to read its other attributes.
pub trait ExpressionContext {
    /// Name of the node the template is evaluated for.
    fn node_name(&self) -> &str;
    /// Effective value of another attribute of the same node (already resolved, aliases handled by
    /// the implementor). Ok(None) when unset (evaluates as empty string). Err(reason) when the name
    /// is invalid or that attribute is itself broken; the reason is wrapped in the evaluation error.
    fn attribute(&self, name: &str) -> Result<Option<Cow<'_, str>>, String>;
}

/// Failure to parse a template. Positions count characters from 0 in the whole template text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionParseError {
    /// A `}` outside a field that is not doubled.
    #[error("single '}}' at position {position}; write '}}}}' for a literal brace")]
    StrayClosingBrace {
        /// Position of the brace.
        position: usize,
    },
    /// A `{` whose field never reaches its closing `}`.
    #[error(
        "field opened at position {position} is never closed; write '{{{{' for a literal brace"
    )]
    UnterminatedField {
        /// Position of the opening brace.
        position: usize,
    },
    /// A field with no expression, such as `{}` or `{:02d}`.
    #[error("empty field at position {position}; a field needs an expression such as {{n1}}")]
    EmptyField {
        /// Position of the opening brace.
        position: usize,
    },
    /// A character that is not part of the expression language.
    #[error("unexpected character '{character}' at position {position}")]
    UnexpectedCharacter {
        /// The offending character.
        character: char,
        /// Its position.
        position: usize,
    },
    /// A valid token in a place where the grammar does not allow it.
    #[error("unexpected '{token}' at position {position}, expected {expected}")]
    UnexpectedToken {
        /// Text of the offending token (`end of text` at the end).
        token: String,
        /// What the grammar allows there.
        expected: &'static str,
        /// Its position.
        position: usize,
    },
    /// A quoted string without its closing quote.
    #[error("string literal starting at position {position} is not closed")]
    UnterminatedString {
        /// Position of the opening quote.
        position: usize,
    },
    /// An integer literal (or `nN` index) that does not fit in 64 bits.
    #[error("integer '{literal}' at position {position} is too large")]
    IntegerTooLarge {
        /// The literal as written.
        literal: String,
        /// Its position.
        position: usize,
    },
    /// A Python keyword such as `lambda` or `if` where a name is expected.
    #[error("'{keyword}' at position {position} is a python keyword, which is not supported")]
    Keyword {
        /// The keyword.
        keyword: String,
        /// Its position.
        position: usize,
    },
    /// A call of a plain name, such as `int(n1)`.
    #[error(
        "function call '{name}(...)' at position {position} is not supported; only the methods {methods} may be called on a value",
        methods = METHOD_LIST
    )]
    FunctionCall {
        /// The called name.
        name: String,
        /// Its position.
        position: usize,
    },
    /// A method call of an unknown method, such as `node.split()`.
    #[error("unknown method '{method}' at position {position}; the methods are {methods}", methods = METHOD_LIST)]
    UnknownMethod {
        /// The method name.
        method: String,
        /// Its position.
        position: usize,
    },
    /// `.name` after something that is not a name and without a call, such as `(node).u`.
    #[error(
        "'.{attribute}' at position {position} follows a value that is not a name; only a method call may follow a value"
    )]
    AttributeOfNonName {
        /// The attribute segment.
        attribute: String,
        /// Its position.
        position: usize,
    },
    /// A method called with the wrong number of arguments.
    #[error("method '{method}' at position {position} takes {expected}, not {found}")]
    MethodArguments {
        /// The method name.
        method: &'static str,
        /// The accepted argument counts, in words.
        expected: &'static str,
        /// The number of arguments given.
        found: usize,
        /// Position of the method name.
        position: usize,
    },
    /// An expression nested deeper than [`MAX_EXPRESSION_DEPTH`].
    #[error(
        "expression at position {position} is nested more than {max} levels deep",
        max = MAX_EXPRESSION_DEPTH
    )]
    NestingTooDeep {
        /// Where the limit was exceeded.
        position: usize,
    },
    /// A format spec longer than [`MAX_FORMAT_SPEC_LENGTH`] characters.
    #[error(
        "format spec '{spec}' at position {position} is longer than {max} characters",
        max = MAX_FORMAT_SPEC_LENGTH
    )]
    FormatSpecTooLong {
        /// The spec as written.
        spec: String,
        /// Position of the spec.
        position: usize,
    },
    /// A format spec that is not in the supported mini-language subset.
    #[error("format spec '{spec}' at position {position} is invalid: {reason}")]
    InvalidFormatSpec {
        /// The spec as written.
        spec: String,
        /// Why it is invalid.
        reason: &'static str,
        /// Position of the spec.
        position: usize,
    },
    /// A `{` inside a format spec (Python's nested replacement fields are not supported).
    #[error("nested field in format spec at position {position} is not supported")]
    NestedFormatField {
        /// Position of the nested brace.
        position: usize,
    },
}

/// Failure to evaluate one field of a template for one node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot evaluate field {{{field}}}: {reason}")]
pub struct ExpressionEvalError {
    /// Text of the field between its braces.
    pub field: String,
    /// What went wrong.
    pub reason: ExpressionEvalFailure,
}

/// Why a field could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionEvalFailure {
    /// Floor division by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// Modulo by zero.
    #[error("modulo by zero")]
    ModuloByZero,
    /// A result outside the 64-bit signed integer range.
    #[error("integer overflow in {operation}")]
    Overflow {
        /// The operation that overflowed.
        operation: &'static str,
    },
    /// A shift by a negative count.
    #[error("negative shift count {count}")]
    NegativeShift {
        /// The count.
        count: i64,
    },
    /// A string used where an integer is needed that does not read as one.
    #[error("'{value}' is not an integer")]
    NotAnInteger {
        /// The string.
        value: String,
    },
    /// `nN` with N larger than the count of numbers in the node name (or `n0` without numbers).
    #[error("node name '{node}' has {count} numbers, so n{index} does not exist")]
    MissingNodeNumber {
        /// The node name.
        node: String,
        /// The requested index.
        index: usize,
        /// How many numbers the name has.
        count: usize,
    },
    /// A number in the node name that does not fit in 64 bits.
    #[error("number '{digits}' in node name '{node}' is too large")]
    NodeNumberTooLarge {
        /// The node name.
        node: String,
        /// The digits.
        digits: String,
    },
    /// A referenced attribute that is invalid or broken, as reported by the context.
    #[error("attribute '{name}' cannot be used: {reason}")]
    AttributeUnavailable {
        /// The referenced name.
        name: String,
        /// The context's reason.
        reason: String,
    },
    /// A string index outside the string.
    #[error("string index {index} is out of range for a string of {length} characters")]
    IndexOutOfRange {
        /// The index as computed.
        index: i64,
        /// The string length in characters.
        length: usize,
    },
    /// A slice with step 0.
    #[error("slice step cannot be zero")]
    ZeroSliceStep,
    /// A string operation applied to an integer.
    #[error("{operation} needs a string, not the integer {value}")]
    NotAString {
        /// The operation (`upper()`, `subscript`, ...).
        operation: &'static str,
        /// The integer.
        value: i64,
    },
    /// An intermediate string longer than [`MAX_INTERMEDIATE_STRING_BYTES`].
    #[error(
        "intermediate string of {length} bytes exceeds the limit of {max} bytes",
        max = MAX_INTERMEDIATE_STRING_BYTES
    )]
    StringTooLong {
        /// The length that would have been built.
        length: usize,
    },
    /// A formatted field longer than [`MAX_FIELD_LENGTH`] characters.
    #[error(
        "formatted field is {length} characters long, more than the limit of {max}",
        max = MAX_FIELD_LENGTH
    )]
    FieldTooLong {
        /// The length (at least) of the formatted field.
        length: usize,
    },
    /// A format spec that does not apply to the kind of value (e.g. a precision for an integer).
    #[error("format spec cannot be applied: {reason}")]
    FormatNotApplicable {
        /// Why.
        reason: &'static str,
    },
}

/// A parsed template: literal text mixed with `{field}` / `{field:spec}` parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    text: String,
    parts: Vec<TemplatePart>,
    references: Vec<String>,
    uses_node_name: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum TemplatePart {
    /// Literal text, with `{{` and `}}` already unescaped.
    Literal(String),
    Field(Field),
}

#[derive(Debug, Clone, PartialEq)]
struct Field {
    expression: Expression,
    spec: Option<FormatSpec>,
    /// Byte range of the field text between its braces, for error messages.
    source: Range<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Expression {
    Integer(i64),
    String(String),
    NodeName,
    /// `nN`: 1-based index of a number in the node name, 0 for the last one.
    NodeNumber(usize),
    Attribute(String),
    Negate(Box<Expression>),
    Binary {
        operator: BinaryOperator,
        left: Box<Expression>,
        right: Box<Expression>,
    },
    Index {
        target: Box<Expression>,
        index: Box<Expression>,
    },
    Slice {
        target: Box<Expression>,
        start: Option<Box<Expression>>,
        stop: Option<Box<Expression>>,
        step: Option<Box<Expression>>,
    },
    Method {
        target: Box<Expression>,
        method: Method,
        arguments: Vec<Expression>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryOperator {
    Add,
    Subtract,
    Multiply,
    FloorDivide,
    Modulo,
    ShiftLeft,
    ShiftRight,
    BitAnd,
    BitXor,
    BitOr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Replace,
    Upper,
    Lower,
    BlockNumber,
    BlockOffset,
}

impl Method {
    fn from_name(name: &str) -> Option<Method> {
        match name {
            "replace" => Some(Method::Replace),
            "upper" => Some(Method::Upper),
            "lower" => Some(Method::Lower),
            "block_number" => Some(Method::BlockNumber),
            "block_offset" => Some(Method::BlockOffset),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Method::Replace => "replace",
            Method::Upper => "upper",
            Method::Lower => "lower",
            Method::BlockNumber => "block_number",
            Method::BlockOffset => "block_offset",
        }
    }

    /// Accepted argument counts, and the same in words for the error message.
    fn arity(self) -> (Range<usize>, &'static str) {
        match self {
            Method::Replace => (2..4, "2 or 3 arguments"),
            Method::Upper | Method::Lower => (0..1, "no arguments"),
            Method::BlockNumber | Method::BlockOffset => (1..2, "1 argument"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
    /// Padding between the sign (and base prefix) and the digits.
    AfterSign,
    Center,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sign {
    Plus,
    Minus,
    Space,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FormatType {
    Decimal,
    LowerHex,
    UpperHex,
    Octal,
    Binary,
    String,
}

impl FormatType {
    fn is_integer(self) -> bool {
        !matches!(self, FormatType::String)
    }
}

/// Parsed `[[fill]align][sign][#][0][width][,][.precision][type]`.
#[derive(Debug, Clone, PartialEq)]
struct FormatSpec {
    fill: Option<char>,
    align: Option<Align>,
    sign: Option<Sign>,
    alternate: bool,
    zero_padding: bool,
    width: usize,
    thousands_separator: bool,
    precision: Option<usize>,
    format_type: Option<FormatType>,
}

impl Template {
    /// Parses a template. Plain text without fields is a valid template (see [`Self::literal`]).
    pub fn parse(text: &str) -> Result<Template, ExpressionParseError> {
        let bytes = text.as_bytes();
        let mut parts = Vec::new();
        let mut collector = ReferenceCollector::default();
        let mut literal = String::new();
        let mut run_start = 0;
        let mut position = 0;
        // Braces are ASCII, so scanning bytes never splits a multi-byte character.
        while let Some(&byte) = bytes.get(position) {
            match byte {
                b'{' | b'}' => {
                    literal.push_str(text.get(run_start..position).unwrap_or_default());
                    if bytes.get(position + 1) == Some(&byte) {
                        literal.push(char::from(byte));
                        position += 2;
                    } else if byte == b'}' {
                        return Err(ExpressionParseError::StrayClosingBrace {
                            position: char_position(text, position),
                        });
                    } else {
                        if !literal.is_empty() {
                            parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
                        }
                        let (field, end) = parse_field(text, position, &mut collector)?;
                        parts.push(TemplatePart::Field(field));
                        position = end;
                    }
                    run_start = position;
                }
                _ => position += 1,
            }
        }
        literal.push_str(text.get(run_start..).unwrap_or_default());
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        Ok(Template {
            text: text.to_owned(),
            parts,
            references: collector.references,
            uses_node_name: collector.uses_node_name,
        })
    }

    /// True if the text contains at least one `{field}` (then it is an expression); false for plain text.
    pub fn is_expression(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, TemplatePart::Field(_)))
    }

    /// The literal value of a template without fields (with `{{`/`}}` unescaped).
    pub fn literal(&self) -> Option<String> {
        let mut literal = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => literal.push_str(text),
                TemplatePart::Field(_) => return None,
            }
        }
        Some(literal)
    }

    /// Attribute names referenced by the fields, deduplicated, in first-use order (not node/nodename/nN).
    pub fn references(&self) -> &[String] {
        &self.references
    }

    /// True if any field depends on the node name (node, nodename, nN).
    pub fn uses_node_name(&self) -> bool {
        self.uses_node_name
    }

    /// Evaluates the template for the node described by `context`.
    pub fn evaluate(&self, context: &dyn ExpressionContext) -> Result<String, ExpressionEvalError> {
        let mut evaluator = Evaluator::new(context);
        let mut output = String::with_capacity(self.text.len() + 16);
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => output.push_str(text),
                TemplatePart::Field(field) => {
                    evaluator
                        .write_field(&mut output, field)
                        .map_err(|reason| ExpressionEvalError {
                            field: self
                                .text
                                .get(field.source.clone())
                                .unwrap_or_default()
                                .to_owned(),
                            reason,
                        })?;
                }
            }
        }
        Ok(output)
    }

    /// The original text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.text)
    }
}

/// Escape a literal so that it parses back as itself (double the braces).
pub fn escape_literal(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if character == '{' || character == '}' {
            escaped.push(character);
        }
        escaped.push(character);
    }
    escaped
}

/// Converts a byte offset into a character position for error messages.
fn char_position(text: &str, byte_offset: usize) -> usize {
    text.get(..byte_offset)
        .map_or(byte_offset, |prefix| prefix.chars().count())
}

// ------------------------------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------------------------------

/// Collects the attribute names a template references, deduplicated in first-use order.
#[derive(Default)]
struct ReferenceCollector {
    references: Vec<String>,
    /// Only built once there are many references, so that the common case of a few references
    /// costs no hashing, while a template with thousands of references is not quadratic.
    seen: Option<HashSet<String>>,
    uses_node_name: bool,
}

impl ReferenceCollector {
    const LINEAR_SEARCH_LIMIT: usize = 16;

    fn add(&mut self, name: &str) {
        match &mut self.seen {
            Some(seen) => {
                if seen.insert(name.to_owned()) {
                    self.references.push(name.to_owned());
                }
            }
            None => {
                if self.references.iter().any(|known| known == name) {
                    return;
                }
                self.references.push(name.to_owned());
                if self.references.len() > Self::LINEAR_SEARCH_LIMIT {
                    self.seen = Some(self.references.iter().cloned().collect());
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Integer,
    String,
    Name,
    Plus,
    Minus,
    Star,
    Slash,
    DoubleSlash,
    Percent,
    ShiftLeft,
    ShiftRight,
    Ampersand,
    Caret,
    Pipe,
    OpenParen,
    CloseParen,
    OpenBracket,
    CloseBracket,
    Comma,
    Dot,
    Colon,
    CloseBrace,
    End,
}

/// One token and its byte range in the template text.
#[derive(Debug, Clone, Copy)]
struct Lexeme {
    token: Token,
    start: usize,
    end: usize,
}

/// Reads the token at `position` (after spaces and tabs). Lexing is a pure function of the
/// position so that the parser can look ahead by lexing again without any buffer.
fn lex(text: &str, mut position: usize) -> Result<Lexeme, ExpressionParseError> {
    let bytes = text.as_bytes();
    while matches!(bytes.get(position), Some(b' ' | b'\t')) {
        position += 1;
    }
    let start = position;
    let Some(&first) = bytes.get(position) else {
        return Ok(Lexeme {
            token: Token::End,
            start,
            end: start,
        });
    };
    let second = bytes.get(position + 1).copied();
    let run_length = |predicate: fn(&u8) -> bool| {
        bytes
            .iter()
            .skip(position)
            .take_while(|byte| predicate(byte))
            .count()
    };
    let (token, length) = match first {
        b'0'..=b'9' => (Token::Integer, run_length(u8::is_ascii_digit)),
        b'a'..=b'z' | b'A'..=b'Z' | b'_' => (
            Token::Name,
            run_length(|byte| byte.is_ascii_alphanumeric() || *byte == b'_'),
        ),
        b'\'' | b'"' => {
            let mut index = position + 1;
            loop {
                match bytes.get(index) {
                    None => {
                        return Err(ExpressionParseError::UnterminatedString {
                            position: char_position(text, start),
                        });
                    }
                    // Quote and backslash are ASCII and never continuation bytes, so skipping
                    // one byte after a backslash cannot make a quote inside a character match.
                    Some(b'\\') => index += 2,
                    Some(&byte) if byte == first => break,
                    Some(_) => index += 1,
                }
            }
            (Token::String, index + 1 - position)
        }
        b'+' => (Token::Plus, 1),
        b'-' => (Token::Minus, 1),
        b'*' => (Token::Star, 1),
        b'/' if second == Some(b'/') => (Token::DoubleSlash, 2),
        b'/' => (Token::Slash, 1),
        b'%' => (Token::Percent, 1),
        b'<' if second == Some(b'<') => (Token::ShiftLeft, 2),
        b'>' if second == Some(b'>') => (Token::ShiftRight, 2),
        b'&' => (Token::Ampersand, 1),
        b'^' => (Token::Caret, 1),
        b'|' => (Token::Pipe, 1),
        b'(' => (Token::OpenParen, 1),
        b')' => (Token::CloseParen, 1),
        b'[' => (Token::OpenBracket, 1),
        b']' => (Token::CloseBracket, 1),
        b',' => (Token::Comma, 1),
        b'.' => (Token::Dot, 1),
        b':' => (Token::Colon, 1),
        b'}' => (Token::CloseBrace, 1),
        _ => {
            let character = text
                .get(position..)
                .and_then(|rest| rest.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            return Err(ExpressionParseError::UnexpectedCharacter {
                character,
                position: char_position(text, position),
            });
        }
    };
    Ok(Lexeme {
        token,
        start,
        end: start + length,
    })
}

/// Binary operators by precedence level, lowest first, as in Python.
const PRECEDENCE_LEVELS: [&[(Token, BinaryOperator)]; 6] = [
    &[(Token::Pipe, BinaryOperator::BitOr)],
    &[(Token::Caret, BinaryOperator::BitXor)],
    &[(Token::Ampersand, BinaryOperator::BitAnd)],
    &[
        (Token::ShiftLeft, BinaryOperator::ShiftLeft),
        (Token::ShiftRight, BinaryOperator::ShiftRight),
    ],
    &[
        (Token::Plus, BinaryOperator::Add),
        (Token::Minus, BinaryOperator::Subtract),
    ],
    &[
        (Token::Star, BinaryOperator::Multiply),
        (Token::Slash, BinaryOperator::FloorDivide),
        (Token::DoubleSlash, BinaryOperator::FloorDivide),
        (Token::Percent, BinaryOperator::Modulo),
    ],
];

/// An expression together with the depth of its tree.
struct Parsed {
    expression: Expression,
    depth: usize,
}

/// Recursive-descent parser for one field, reading tokens straight from the template text.
struct FieldParser<'t, 'c> {
    text: &'t str,
    position: usize,
    nesting: usize,
    collector: &'c mut ReferenceCollector,
}

/// Parses the field whose `{` is at byte `open`; returns it and the byte offset after its `}`.
fn parse_field(
    text: &str,
    open: usize,
    collector: &mut ReferenceCollector,
) -> Result<(Field, usize), ExpressionParseError> {
    let mut parser = FieldParser {
        text,
        position: open + 1,
        nesting: 0,
        collector,
    };
    let first = parser.peek()?;
    match first.token {
        Token::CloseBrace | Token::Colon => {
            return Err(ExpressionParseError::EmptyField {
                position: char_position(text, open),
            });
        }
        Token::End => {
            return Err(ExpressionParseError::UnterminatedField {
                position: char_position(text, open),
            });
        }
        _ => {}
    }
    let expression = parser.parse_binary(0)?.expression;
    let after = parser.peek()?;
    match after.token {
        Token::CloseBrace => Ok((
            Field {
                expression,
                spec: None,
                source: open + 1..after.start,
            },
            after.end,
        )),
        Token::Colon => {
            let spec_start = after.end;
            let spec_end = text
                .as_bytes()
                .iter()
                .skip(spec_start)
                .position(|&byte| byte == b'}' || byte == b'{')
                .map(|offset| spec_start + offset);
            match spec_end {
                None => Err(ExpressionParseError::UnterminatedField {
                    position: char_position(text, open),
                }),
                Some(end) if text.as_bytes().get(end) == Some(&b'{') => {
                    Err(ExpressionParseError::NestedFormatField {
                        position: char_position(text, end),
                    })
                }
                Some(end) => {
                    let spec_text = text.get(spec_start..end).unwrap_or_default();
                    let spec = parse_format_spec(spec_text, char_position(text, spec_start))?;
                    Ok((
                        Field {
                            expression,
                            spec,
                            source: open + 1..end,
                        },
                        end + 1,
                    ))
                }
            }
        }
        Token::End => Err(ExpressionParseError::UnterminatedField {
            position: char_position(text, open),
        }),
        _ => Err(parser.unexpected(after, "an operator, ':' or '}'")),
    }
}

impl FieldParser<'_, '_> {
    fn peek(&self) -> Result<Lexeme, ExpressionParseError> {
        lex(self.text, self.position)
    }

    fn lexeme_text(&self, lexeme: Lexeme) -> &str {
        self.text.get(lexeme.start..lexeme.end).unwrap_or_default()
    }

    fn unexpected(&self, lexeme: Lexeme, expected: &'static str) -> ExpressionParseError {
        // A keyword out of place (`{n1 if n1 else 2}`) is best explained as unsupported syntax.
        if lexeme.token == Token::Name
            && let Err(keyword) = self.check_not_keyword(lexeme)
        {
            return keyword;
        }
        let token = if lexeme.token == Token::End {
            "end of text".to_owned()
        } else {
            self.lexeme_text(lexeme).to_owned()
        };
        ExpressionParseError::UnexpectedToken {
            token,
            expected,
            position: char_position(self.text, lexeme.start),
        }
    }

    fn expect(&mut self, token: Token, expected: &'static str) -> Result<(), ExpressionParseError> {
        let lexeme = self.peek()?;
        if lexeme.token != token {
            return Err(self.unexpected(lexeme, expected));
        }
        self.position = lexeme.end;
        Ok(())
    }

    /// Enters one level of bracket or unary nesting; the parser recursion is bounded by this.
    fn enter(&mut self, byte_position: usize) -> Result<(), ExpressionParseError> {
        self.nesting += 1;
        if self.nesting > MAX_EXPRESSION_DEPTH {
            return Err(ExpressionParseError::NestingTooDeep {
                position: char_position(self.text, byte_position),
            });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting = self.nesting.saturating_sub(1);
    }

    /// Builds a node one level above its deepest child, refusing trees deeper than the limit.
    fn node(
        &self,
        expression: Expression,
        deepest_child: usize,
        byte_position: usize,
    ) -> Result<Parsed, ExpressionParseError> {
        let depth = deepest_child + 1;
        if depth > MAX_EXPRESSION_DEPTH {
            return Err(ExpressionParseError::NestingTooDeep {
                position: char_position(self.text, byte_position),
            });
        }
        Ok(Parsed { expression, depth })
    }

    fn parse_binary(&mut self, level: usize) -> Result<Parsed, ExpressionParseError> {
        let Some(operators) = PRECEDENCE_LEVELS.get(level) else {
            return self.parse_unary();
        };
        let mut left = self.parse_binary(level + 1)?;
        loop {
            let lexeme = self.peek()?;
            let Some(&(_, operator)) = operators.iter().find(|(token, _)| *token == lexeme.token)
            else {
                return Ok(left);
            };
            self.position = lexeme.end;
            let right = self.parse_binary(level + 1)?;
            left = self.node(
                Expression::Binary {
                    operator,
                    left: Box::new(left.expression),
                    right: Box::new(right.expression),
                },
                left.depth.max(right.depth),
                lexeme.start,
            )?;
        }
    }

    fn parse_unary(&mut self) -> Result<Parsed, ExpressionParseError> {
        let lexeme = self.peek()?;
        if lexeme.token != Token::Minus {
            return self.parse_postfix();
        }
        self.position = lexeme.end;
        self.enter(lexeme.start)?;
        let operand = self.parse_unary()?;
        self.leave();
        self.node(
            Expression::Negate(Box::new(operand.expression)),
            operand.depth,
            lexeme.start,
        )
    }

    fn parse_postfix(&mut self) -> Result<Parsed, ExpressionParseError> {
        let mut value = self.parse_primary()?;
        loop {
            let lexeme = self.peek()?;
            match lexeme.token {
                Token::OpenBracket => {
                    self.position = lexeme.end;
                    self.enter(lexeme.start)?;
                    value = self.parse_subscript(value, lexeme.start)?;
                    self.leave();
                }
                Token::Dot => {
                    let name = lex(self.text, lexeme.end)?;
                    if name.token != Token::Name {
                        return Err(self.unexpected(name, "a method name"));
                    }
                    let name_text = self.lexeme_text(name);
                    let open = lex(self.text, name.end)?;
                    if open.token != Token::OpenParen {
                        return Err(ExpressionParseError::AttributeOfNonName {
                            attribute: name_text.to_owned(),
                            position: char_position(self.text, name.start),
                        });
                    }
                    let Some(method) = Method::from_name(name_text) else {
                        return Err(ExpressionParseError::UnknownMethod {
                            method: name_text.to_owned(),
                            position: char_position(self.text, name.start),
                        });
                    };
                    self.position = open.end;
                    self.enter(open.start)?;
                    value = self.parse_method_call(value, method, name.start)?;
                    self.leave();
                }
                _ => return Ok(value),
            }
        }
    }

    /// Parses the inside of `[...]` after the opening bracket, and the closing bracket.
    fn parse_subscript(
        &mut self,
        target: Parsed,
        open: usize,
    ) -> Result<Parsed, ExpressionParseError> {
        let mut deepest = target.depth;
        let mut optional_part = |parser: &mut Self,
                                 terminators: &[Token]|
         -> Result<Option<Box<Expression>>, ExpressionParseError> {
            let lexeme = parser.peek()?;
            if terminators.contains(&lexeme.token) {
                return Ok(None);
            }
            let parsed = parser.parse_binary(0)?;
            deepest = deepest.max(parsed.depth);
            Ok(Some(Box::new(parsed.expression)))
        };
        let first = self.peek()?;
        if first.token == Token::CloseBracket {
            return Err(self.unexpected(first, "an index or a slice"));
        }
        let start = optional_part(self, &[Token::Colon])?;
        let after_start = self.peek()?;
        match (after_start.token, start) {
            (Token::CloseBracket, Some(index)) => {
                self.position = after_start.end;
                self.node(
                    Expression::Index {
                        target: Box::new(target.expression),
                        index,
                    },
                    deepest,
                    open,
                )
            }
            (Token::Colon, start) => {
                self.position = after_start.end;
                let stop = optional_part(self, &[Token::Colon, Token::CloseBracket])?;
                let mut step = None;
                let separator = self.peek()?;
                if separator.token == Token::Colon {
                    self.position = separator.end;
                    step = optional_part(self, &[Token::CloseBracket])?;
                }
                self.expect(Token::CloseBracket, "']'")?;
                self.node(
                    Expression::Slice {
                        target: Box::new(target.expression),
                        start,
                        stop,
                        step,
                    },
                    deepest,
                    open,
                )
            }
            _ => Err(self.unexpected(after_start, "':' or ']'")),
        }
    }

    /// Parses the arguments after `name(` and the closing parenthesis.
    fn parse_method_call(
        &mut self,
        target: Parsed,
        method: Method,
        name_start: usize,
    ) -> Result<Parsed, ExpressionParseError> {
        let mut arguments = Vec::new();
        let mut deepest = target.depth;
        loop {
            let lexeme = self.peek()?;
            if lexeme.token == Token::CloseParen {
                self.position = lexeme.end;
                break;
            }
            let argument = self.parse_binary(0)?;
            deepest = deepest.max(argument.depth);
            arguments.push(argument.expression);
            let separator = self.peek()?;
            match separator.token {
                Token::Comma => self.position = separator.end,
                Token::CloseParen => {}
                _ => return Err(self.unexpected(separator, "',' or ')'")),
            }
        }
        let (accepted, expected) = method.arity();
        if !accepted.contains(&arguments.len()) {
            return Err(ExpressionParseError::MethodArguments {
                method: method.name(),
                expected,
                found: arguments.len(),
                position: char_position(self.text, name_start),
            });
        }
        self.node(
            Expression::Method {
                target: Box::new(target.expression),
                method,
                arguments,
            },
            deepest,
            name_start,
        )
    }

    fn parse_primary(&mut self) -> Result<Parsed, ExpressionParseError> {
        let lexeme = self.peek()?;
        let leaf = |expression| Parsed {
            expression,
            depth: 1,
        };
        match lexeme.token {
            Token::Integer => {
                self.position = lexeme.end;
                let literal = self.lexeme_text(lexeme);
                let value =
                    literal
                        .parse::<i64>()
                        .map_err(|_| ExpressionParseError::IntegerTooLarge {
                            literal: literal.to_owned(),
                            position: char_position(self.text, lexeme.start),
                        })?;
                Ok(leaf(Expression::Integer(value)))
            }
            Token::String => {
                self.position = lexeme.end;
                Ok(leaf(Expression::String(unescape_string_literal(
                    self.lexeme_text(lexeme),
                ))))
            }
            Token::OpenParen => {
                self.position = lexeme.end;
                self.enter(lexeme.start)?;
                let inner = self.parse_binary(0)?;
                self.expect(Token::CloseParen, "an operator or ')'")?;
                self.leave();
                Ok(inner)
            }
            Token::Name => self.parse_name(lexeme),
            _ => Err(self.unexpected(lexeme, "a name, a number, a string or '('")),
        }
    }

    /// Parses a possibly dotted name. A dotted name is an attribute reference unless its last
    /// segment is followed by `(`: `x.y.z(...)` is the method `z` called on the name `x.y`.
    fn parse_name(&mut self, first: Lexeme) -> Result<Parsed, ExpressionParseError> {
        self.check_not_keyword(first)?;
        let mut end = first.end;
        loop {
            let dot = lex(self.text, end)?;
            if dot.token != Token::Dot {
                break;
            }
            let segment = lex(self.text, dot.end)?;
            if segment.token != Token::Name {
                return Err(self.unexpected(segment, "a name after '.'"));
            }
            if lex(self.text, segment.end)?.token == Token::OpenParen {
                break;
            }
            self.check_not_keyword(segment)?;
            end = segment.end;
        }
        if end == first.end && lex(self.text, end)?.token == Token::OpenParen {
            return Err(ExpressionParseError::FunctionCall {
                name: self.lexeme_text(first).to_owned(),
                position: char_position(self.text, first.start),
            });
        }
        self.position = end;
        // Spaces around the dots are legal in Python; the recorded name has none.
        let name: String = self
            .text
            .get(first.start..end)
            .unwrap_or_default()
            .chars()
            .filter(|character| *character != ' ' && *character != '\t')
            .collect();
        let expression = if name == "node" || name == "nodename" {
            self.collector.uses_node_name = true;
            Expression::NodeName
        } else if let Some(digits) = name
            .strip_prefix('n')
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        {
            let index =
                digits
                    .parse::<usize>()
                    .map_err(|_| ExpressionParseError::IntegerTooLarge {
                        literal: name.clone(),
                        position: char_position(self.text, first.start),
                    })?;
            self.collector.uses_node_name = true;
            Expression::NodeNumber(index)
        } else {
            self.collector.add(&name);
            Expression::Attribute(name)
        };
        Ok(Parsed {
            expression,
            depth: 1,
        })
    }

    fn check_not_keyword(&self, lexeme: Lexeme) -> Result<(), ExpressionParseError> {
        let text = self.lexeme_text(lexeme);
        if PYTHON_KEYWORDS.contains(&text) {
            return Err(ExpressionParseError::Keyword {
                keyword: text.to_owned(),
                position: char_position(self.text, lexeme.start),
            });
        }
        Ok(())
    }
}

/// Decodes a quoted literal (quotes included) with Python's common backslash escapes; unknown
/// escapes keep their backslash, as Python does.
fn unescape_string_literal(quoted: &str) -> String {
    let inner = quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default();
    let mut value = String::with_capacity(inner.len());
    let mut characters = inner.chars();
    while let Some(character) = characters.next() {
        if character != '\\' {
            value.push(character);
            continue;
        }
        match characters.next() {
            Some('n') => value.push('\n'),
            Some('t') => value.push('\t'),
            Some('r') => value.push('\r'),
            Some('0') => value.push('\0'),
            Some(escaped @ ('\\' | '\'' | '"')) => value.push(escaped),
            Some(other) => {
                value.push('\\');
                value.push(other);
            }
            None => value.push('\\'),
        }
    }
    value
}

/// Parses a format spec; an empty spec means no spec at all.
fn parse_format_spec(
    spec: &str,
    position: usize,
) -> Result<Option<FormatSpec>, ExpressionParseError> {
    if spec.is_empty() {
        return Ok(None);
    }
    let characters: Vec<char> = spec.chars().collect();
    if characters.len() > MAX_FORMAT_SPEC_LENGTH {
        return Err(ExpressionParseError::FormatSpecTooLong {
            spec: spec.to_owned(),
            position,
        });
    }
    let invalid = |reason| ExpressionParseError::InvalidFormatSpec {
        spec: spec.to_owned(),
        reason,
        position,
    };
    let align_of = |character: Option<&char>| match character {
        Some('<') => Some(Align::Left),
        Some('>') => Some(Align::Right),
        Some('=') => Some(Align::AfterSign),
        Some('^') => Some(Align::Center),
        _ => None,
    };
    let mut index = 0;
    let mut fill = None;
    let mut align = None;
    if let Some(second_align) = align_of(characters.get(1)) {
        fill = characters.first().copied();
        align = Some(second_align);
        index = 2;
    } else if let Some(first_align) = align_of(characters.first()) {
        align = Some(first_align);
        index = 1;
    }
    let sign = match characters.get(index) {
        Some('+') => Some(Sign::Plus),
        Some('-') => Some(Sign::Minus),
        Some(' ') => Some(Sign::Space),
        _ => None,
    };
    if sign.is_some() {
        index += 1;
    }
    let alternate = characters.get(index) == Some(&'#');
    if alternate {
        index += 1;
    }
    let zero_padding = characters.get(index) == Some(&'0');
    if zero_padding {
        index += 1;
    }
    let mut width = 0usize;
    while let Some(digit) = characters.get(index).and_then(|c| c.to_digit(10)) {
        // At most 8 digits, so this cannot overflow; saturate anyway rather than trust that.
        width = width
            .saturating_mul(10)
            .saturating_add(usize::try_from(digit).unwrap_or(0));
        index += 1;
    }
    let thousands_separator = characters.get(index) == Some(&',');
    if thousands_separator {
        index += 1;
    }
    let mut precision = None;
    if characters.get(index) == Some(&'.') {
        index += 1;
        let mut value = 0usize;
        let mut digits = 0;
        while let Some(digit) = characters.get(index).and_then(|c| c.to_digit(10)) {
            value = value
                .saturating_mul(10)
                .saturating_add(usize::try_from(digit).unwrap_or(0));
            digits += 1;
            index += 1;
        }
        if digits == 0 {
            return Err(invalid("'.' must be followed by a precision"));
        }
        precision = Some(value);
    }
    let format_type = match characters.get(index..) {
        Some([]) | None => None,
        Some(['d']) => Some(FormatType::Decimal),
        Some(['x']) => Some(FormatType::LowerHex),
        Some(['X']) => Some(FormatType::UpperHex),
        Some(['o']) => Some(FormatType::Octal),
        Some(['b']) => Some(FormatType::Binary),
        Some(['s']) => Some(FormatType::String),
        Some(_) => {
            return Err(invalid(
                "expected [[fill]align][sign][#][0][width][,][.precision][type] with type one of d x X o b s",
            ));
        }
    };
    // Combinations that Python rejects whatever the value are rejected now rather than at
    // every evaluation.
    if let Some(kind) = format_type {
        if kind.is_integer() && precision.is_some() {
            return Err(invalid("a precision is not allowed with an integer type"));
        }
        if thousands_separator && kind != FormatType::Decimal && kind.is_integer() {
            return Err(invalid("',' is only allowed with type 'd' or no type"));
        }
        if kind == FormatType::String {
            if sign.is_some() {
                return Err(invalid("a sign is not allowed with type 's'"));
            }
            if alternate {
                return Err(invalid("'#' is not allowed with type 's'"));
            }
            if thousands_separator {
                return Err(invalid("',' is not allowed with type 's'"));
            }
            if align == Some(Align::AfterSign) {
                return Err(invalid("'=' alignment is not allowed with type 's'"));
            }
        }
    }
    Ok(Some(FormatSpec {
        fill,
        align,
        sign,
        alternate,
        zero_padding,
        width,
        thousands_separator,
        precision,
        format_type,
    }))
}

// ------------------------------------------------------------------------------------------------
// Evaluation
// ------------------------------------------------------------------------------------------------

/// A value during evaluation. Strings borrow from the template or the context when they can.
#[derive(Debug)]
enum Value<'a> {
    Integer(i64),
    String(Cow<'a, str>),
}

impl Value<'_> {
    /// The value as an integer; strings (attribute values) are read like Python's `int()`.
    fn to_integer(&self) -> Result<i64, ExpressionEvalFailure> {
        match self {
            Value::Integer(value) => Ok(*value),
            Value::String(text) => parse_integer_string(text),
        }
    }
}

/// Reads a string as Python's `int()` would for the forms that occur in attribute values:
/// surrounding whitespace, an optional sign and decimal digits.
fn parse_integer_string(text: &str) -> Result<i64, ExpressionEvalFailure> {
    let trimmed = text.trim();
    trimmed.parse::<i64>().map_err(|error| match error.kind() {
        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
            ExpressionEvalFailure::Overflow {
                operation: "integer conversion",
            }
        }
        _ => ExpressionEvalFailure::NotAnInteger {
            value: text.to_owned(),
        },
    })
}

/// Byte spans of the digit runs of the node name, found once per evaluation and only when a
/// field needs them. The first few are kept inline so that typical names need no allocation.
struct NodeNumbers<'a> {
    node_name: &'a str,
    scanned: bool,
    inline_spans: [(usize, usize); NodeNumbers::INLINE_SPANS],
    inline_count: usize,
    extra_spans: Vec<(usize, usize)>,
}

impl<'a> NodeNumbers<'a> {
    const INLINE_SPANS: usize = 8;

    fn new(node_name: &'a str) -> Self {
        NodeNumbers {
            node_name,
            scanned: false,
            inline_spans: [(0, 0); Self::INLINE_SPANS],
            inline_count: 0,
            extra_spans: Vec::new(),
        }
    }

    fn scan(&mut self) {
        self.scanned = true;
        let bytes = self.node_name.as_bytes();
        let mut position = 0;
        while position < bytes.len() {
            if !bytes.get(position).is_some_and(u8::is_ascii_digit) {
                position += 1;
                continue;
            }
            let start = position;
            while bytes.get(position).is_some_and(u8::is_ascii_digit) {
                position += 1;
            }
            if let Some(slot) = self.inline_spans.get_mut(self.inline_count) {
                *slot = (start, position);
                self.inline_count += 1;
            } else {
                self.extra_spans.push((start, position));
            }
        }
    }

    fn count(&self) -> usize {
        self.inline_count + self.extra_spans.len()
    }

    /// The `index`-th number (1-based; 0 is the last one), as Python's `n<index>`.
    fn get(&mut self, index: usize) -> Result<i64, ExpressionEvalFailure> {
        if !self.scanned {
            self.scan();
        }
        let count = self.count();
        let zero_based = if index == 0 {
            count.checked_sub(1)
        } else if index <= count {
            Some(index - 1)
        } else {
            None
        };
        let span = zero_based.and_then(|position| {
            if position < self.inline_count {
                self.inline_spans.get(position).copied()
            } else {
                self.extra_spans.get(position - self.inline_count).copied()
            }
        });
        let Some((start, end)) = span else {
            return Err(ExpressionEvalFailure::MissingNodeNumber {
                node: self.node_name.to_owned(),
                index,
                count,
            });
        };
        let digits = self.node_name.get(start..end).unwrap_or_default();
        // Leading zeros are fine (`node007` gives 7); only overflow can fail.
        digits
            .parse::<i64>()
            .map_err(|_| ExpressionEvalFailure::NodeNumberTooLarge {
                node: self.node_name.to_owned(),
                digits: digits.to_owned(),
            })
    }
}

struct Evaluator<'a> {
    context: &'a dyn ExpressionContext,
    node_name: &'a str,
    node_numbers: NodeNumbers<'a>,
}

impl<'a> Evaluator<'a> {
    fn new(context: &'a dyn ExpressionContext) -> Self {
        let node_name = context.node_name();
        Evaluator {
            context,
            node_name,
            node_numbers: NodeNumbers::new(node_name),
        }
    }

    fn write_field(
        &mut self,
        output: &mut String,
        field: &'a Field,
    ) -> Result<(), ExpressionEvalFailure> {
        let value = self.value(&field.expression)?;
        let start = output.len();
        match &field.spec {
            None => match &value {
                Value::Integer(integer) => push_decimal(output, *integer),
                Value::String(text) => output.push_str(text),
            },
            Some(spec) => write_formatted(output, &value, spec)?,
        }
        let written = output.get(start..).unwrap_or_default();
        // Characters never outnumber bytes, so counting is only needed for long fields.
        if written.len() > MAX_FIELD_LENGTH {
            let length = written.chars().count();
            if length > MAX_FIELD_LENGTH {
                output.truncate(start);
                return Err(ExpressionEvalFailure::FieldTooLong { length });
            }
        }
        Ok(())
    }

    fn value(&mut self, expression: &'a Expression) -> Result<Value<'a>, ExpressionEvalFailure> {
        match expression {
            Expression::Integer(value) => Ok(Value::Integer(*value)),
            Expression::String(text) => Ok(Value::String(Cow::Borrowed(text))),
            Expression::NodeName => Ok(Value::String(Cow::Borrowed(self.node_name))),
            Expression::NodeNumber(index) => self.node_numbers.get(*index).map(Value::Integer),
            Expression::Attribute(name) => match self.context.attribute(name) {
                Ok(Some(text)) => Ok(Value::String(text)),
                Ok(None) => Ok(Value::String(Cow::Borrowed(""))),
                Err(reason) => Err(ExpressionEvalFailure::AttributeUnavailable {
                    name: name.clone(),
                    reason,
                }),
            },
            Expression::Negate(operand) => {
                let operand = self.value(operand)?.to_integer()?;
                operand
                    .checked_neg()
                    .map(Value::Integer)
                    .ok_or(ExpressionEvalFailure::Overflow {
                        operation: "negation",
                    })
            }
            Expression::Binary {
                operator,
                left,
                right,
            } => {
                let left = self.value(left)?;
                let right = self.value(right)?;
                binary(*operator, left, right)
            }
            Expression::Index { target, index } => {
                let target = self.value(target)?;
                let index = self.value(index)?.to_integer()?;
                let text = string_operand(target, "subscript")?;
                index_string(text, index).map(Value::String)
            }
            Expression::Slice {
                target,
                start,
                stop,
                step,
            } => {
                let target = self.value(target)?;
                let start = self.optional_integer(start.as_deref())?;
                let stop = self.optional_integer(stop.as_deref())?;
                let step = self.optional_integer(step.as_deref())?;
                let text = string_operand(target, "slice")?;
                slice_string(text, start, stop, step).map(Value::String)
            }
            Expression::Method {
                target,
                method,
                arguments,
            } => {
                let target = self.value(target)?;
                self.call_method(target, *method, arguments)
            }
        }
    }

    fn optional_integer(
        &mut self,
        expression: Option<&'a Expression>,
    ) -> Result<Option<i64>, ExpressionEvalFailure> {
        expression
            .map(|expression| self.value(expression)?.to_integer())
            .transpose()
    }

    fn call_method(
        &mut self,
        target: Value<'a>,
        method: Method,
        arguments: &'a [Expression],
    ) -> Result<Value<'a>, ExpressionEvalFailure> {
        match method {
            Method::Upper => {
                let text = string_operand(target, "upper()")?;
                Ok(Value::String(Cow::Owned(text.to_uppercase())))
            }
            Method::Lower => {
                let text = string_operand(target, "lower()")?;
                Ok(Value::String(Cow::Owned(text.to_lowercase())))
            }
            Method::Replace => {
                let text = string_operand(target, "replace()")?;
                let mut values = Vec::with_capacity(arguments.len());
                for argument in arguments {
                    values.push(self.value(argument)?);
                }
                let mut values = values.into_iter();
                let (Some(old), Some(new)) = (values.next(), values.next()) else {
                    // The parser enforces the arity; this only guards against a bug.
                    return Ok(Value::String(text));
                };
                let old = string_operand(old, "replace() argument")?;
                let new = string_operand(new, "replace() argument")?;
                let count = values.next().map(|count| count.to_integer()).transpose()?;
                replace(text, &old, &new, count).map(Value::String)
            }
            Method::BlockNumber | Method::BlockOffset => {
                let value = target.to_integer()?;
                // The parser enforces one argument; a missing one would divide by nothing.
                let Some(size) = arguments.first() else {
                    return Err(ExpressionEvalFailure::DivisionByZero);
                };
                let size = self.value(size)?.to_integer()?;
                let base = value
                    .checked_sub(1)
                    .ok_or(ExpressionEvalFailure::Overflow {
                        operation: method.name(),
                    })?;
                let result = if method == Method::BlockNumber {
                    floor_divide(base, size)?
                } else {
                    python_modulo(base, size)?
                };
                result
                    .checked_add(1)
                    .map(Value::Integer)
                    .ok_or(ExpressionEvalFailure::Overflow {
                        operation: method.name(),
                    })
            }
        }
    }
}

fn string_operand<'a>(
    value: Value<'a>,
    operation: &'static str,
) -> Result<Cow<'a, str>, ExpressionEvalFailure> {
    match value {
        Value::String(text) => Ok(text),
        Value::Integer(value) => Err(ExpressionEvalFailure::NotAString { operation, value }),
    }
}

fn binary<'a>(
    operator: BinaryOperator,
    left: Value<'a>,
    right: Value<'a>,
) -> Result<Value<'a>, ExpressionEvalFailure> {
    if operator == BinaryOperator::Add
        && let (Value::String(left), Value::String(right)) = (&left, &right)
    {
        let length = left.len() + right.len();
        if length > MAX_INTERMEDIATE_STRING_BYTES {
            return Err(ExpressionEvalFailure::StringTooLong { length });
        }
        let mut joined = String::with_capacity(length);
        joined.push_str(left);
        joined.push_str(right);
        return Ok(Value::String(Cow::Owned(joined)));
    }
    let left = left.to_integer()?;
    let right = right.to_integer()?;
    let overflow = |operation| ExpressionEvalFailure::Overflow { operation };
    let result = match operator {
        BinaryOperator::Add => left.checked_add(right).ok_or(overflow("addition"))?,
        BinaryOperator::Subtract => left.checked_sub(right).ok_or(overflow("subtraction"))?,
        BinaryOperator::Multiply => left.checked_mul(right).ok_or(overflow("multiplication"))?,
        BinaryOperator::FloorDivide => floor_divide(left, right)?,
        BinaryOperator::Modulo => python_modulo(left, right)?,
        BinaryOperator::ShiftLeft => shift_left(left, right)?,
        BinaryOperator::ShiftRight => shift_right(left, right)?,
        BinaryOperator::BitAnd => left & right,
        BinaryOperator::BitXor => left ^ right,
        BinaryOperator::BitOr => left | right,
    };
    Ok(Value::Integer(result))
}

/// Python's `//`: the quotient rounded towards negative infinity.
fn floor_divide(left: i64, right: i64) -> Result<i64, ExpressionEvalFailure> {
    if right == 0 {
        return Err(ExpressionEvalFailure::DivisionByZero);
    }
    let quotient = left
        .checked_div(right)
        .ok_or(ExpressionEvalFailure::Overflow {
            operation: "division",
        })?;
    let remainder = left.wrapping_rem(right);
    if remainder != 0 && ((remainder < 0) != (right < 0)) {
        Ok(quotient - 1)
    } else {
        Ok(quotient)
    }
}

/// Python's `%`: the remainder has the sign of the divisor.
fn python_modulo(left: i64, right: i64) -> Result<i64, ExpressionEvalFailure> {
    if right == 0 {
        return Err(ExpressionEvalFailure::ModuloByZero);
    }
    // `i64::MIN % -1` overflows in Rust but is mathematically 0, which wrapping_rem returns.
    let remainder = left.wrapping_rem(right);
    if remainder != 0 && ((remainder < 0) != (right < 0)) {
        Ok(remainder + right)
    } else {
        Ok(remainder)
    }
}

fn shift_left(value: i64, count: i64) -> Result<i64, ExpressionEvalFailure> {
    if count < 0 {
        return Err(ExpressionEvalFailure::NegativeShift { count });
    }
    if value == 0 {
        return Ok(0);
    }
    let overflow = ExpressionEvalFailure::Overflow {
        operation: "left shift",
    };
    let count = u32::try_from(count).map_err(|_| overflow.clone())?;
    let shifted = value.checked_shl(count).ok_or(overflow.clone())?;
    // checked_shl only rejects counts of 64 or more; bits shifted out must be checked too.
    if shifted >> count != value {
        return Err(overflow);
    }
    Ok(shifted)
}

fn shift_right(value: i64, count: i64) -> Result<i64, ExpressionEvalFailure> {
    if count < 0 {
        return Err(ExpressionEvalFailure::NegativeShift { count });
    }
    // An arithmetic shift floors, as Python's does; past 63 bits only the sign remains.
    let count = u32::try_from(count.min(63)).unwrap_or(63);
    Ok(value >> count)
}

/// A substring of a value, still borrowed when the value was.
fn substring(text: Cow<'_, str>, range: Range<usize>) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(borrowed) => Cow::Borrowed(borrowed.get(range).unwrap_or_default()),
        Cow::Owned(owned) => Cow::Owned(owned.get(range).unwrap_or_default().to_owned()),
    }
}

/// Byte offset of each character of `text`, plus the end offset; None for ASCII text, where
/// character and byte offsets coincide and no table is needed.
fn char_offsets(text: &str) -> Option<Vec<usize>> {
    if text.is_ascii() {
        return None;
    }
    let mut offsets: Vec<usize> = text.char_indices().map(|(offset, _)| offset).collect();
    offsets.push(text.len());
    Some(offsets)
}

fn byte_offset(offsets: Option<&[usize]>, char_index: usize) -> usize {
    match offsets {
        None => char_index,
        Some(offsets) => offsets.get(char_index).copied().unwrap_or_default(),
    }
}

fn length_as_i64(length: usize) -> Result<i64, ExpressionEvalFailure> {
    i64::try_from(length).map_err(|_| ExpressionEvalFailure::Overflow {
        operation: "string length",
    })
}

/// Python's `text[index]` on characters, negative indices counting from the end.
fn index_string(text: Cow<'_, str>, index: i64) -> Result<Cow<'_, str>, ExpressionEvalFailure> {
    let offsets = char_offsets(&text);
    let length = offsets
        .as_ref()
        .map_or(text.len(), |offsets| offsets.len() - 1);
    let signed_length = length_as_i64(length)?;
    let adjusted = if index < 0 {
        index + signed_length
    } else {
        index
    };
    let position = usize::try_from(adjusted)
        .ok()
        .filter(|position| *position < length)
        .ok_or(ExpressionEvalFailure::IndexOutOfRange { index, length })?;
    let start = byte_offset(offsets.as_deref(), position);
    let end = byte_offset(offsets.as_deref(), position + 1);
    Ok(substring(text, start..end))
}

/// Python's `text[start:stop:step]` on characters, with its clamping rules.
fn slice_string(
    text: Cow<'_, str>,
    start: Option<i64>,
    stop: Option<i64>,
    step: Option<i64>,
) -> Result<Cow<'_, str>, ExpressionEvalFailure> {
    let step = step.unwrap_or(1);
    if step == 0 {
        return Err(ExpressionEvalFailure::ZeroSliceStep);
    }
    let offsets = char_offsets(&text);
    let length = offsets
        .as_ref()
        .map_or(text.len(), |offsets| offsets.len() - 1);
    let signed_length = length_as_i64(length)?;
    // The same bounds as CPython's PySlice_AdjustIndices.
    let (lower, upper) = if step > 0 {
        (0, signed_length)
    } else {
        (-1, signed_length - 1)
    };
    let clamp = |bound: i64| {
        if bound < 0 {
            (bound.saturating_add(signed_length)).max(lower)
        } else {
            bound.min(upper)
        }
    };
    let start = start.map_or(if step > 0 { lower } else { upper }, clamp);
    let stop = stop.map_or(if step > 0 { upper } else { lower }, clamp);
    let to_usize = |value: i64| usize::try_from(value).unwrap_or(0);
    if step == 1 {
        let first = to_usize(start);
        let last = to_usize(stop.max(start));
        let range = byte_offset(offsets.as_deref(), first)..byte_offset(offsets.as_deref(), last);
        return Ok(substring(text, range));
    }
    let mut sliced = String::new();
    let mut position = start;
    while (step > 0 && position < stop) || (step < 0 && position > stop) {
        let index = to_usize(position);
        let range =
            byte_offset(offsets.as_deref(), index)..byte_offset(offsets.as_deref(), index + 1);
        sliced.push_str(text.get(range).unwrap_or_default());
        match position.checked_add(step) {
            Some(next) => position = next,
            None => break,
        }
    }
    Ok(Cow::Owned(sliced))
}

/// Python's `str.replace(old, new[, count])`, refusing results beyond the intermediate limit.
fn replace<'a>(
    text: Cow<'a, str>,
    old: &str,
    new: &str,
    count: Option<i64>,
) -> Result<Cow<'a, str>, ExpressionEvalFailure> {
    // A negative count means "all", as in Python.
    let limit = count.and_then(|count| usize::try_from(count).ok());
    if limit == Some(0) || !text.contains(old) {
        return Ok(text);
    }
    if new.len() > old.len() {
        let occurrences = if old.is_empty() {
            text.chars().count() + 1
        } else {
            text.matches(old).count()
        };
        let occurrences = limit.map_or(occurrences, |limit| occurrences.min(limit));
        let length = occurrences
            .checked_mul(new.len() - old.len())
            .and_then(|growth| growth.checked_add(text.len()))
            .unwrap_or(usize::MAX);
        if length > MAX_INTERMEDIATE_STRING_BYTES {
            return Err(ExpressionEvalFailure::StringTooLong { length });
        }
    }
    Ok(Cow::Owned(match limit {
        Some(limit) => text.replacen(old, new, limit),
        None => text.replace(old, new),
    }))
}

// ------------------------------------------------------------------------------------------------
// Formatting
// ------------------------------------------------------------------------------------------------

/// Digits of `magnitude` in `radix` (2 to 16), most significant first, in a stack buffer.
struct Digits {
    buffer: [u8; 64],
    start: usize,
}

impl Digits {
    fn new(mut magnitude: u64, radix: u64, uppercase: bool) -> Digits {
        const LOWER: &[u8; 16] = b"0123456789abcdef";
        const UPPER: &[u8; 16] = b"0123456789ABCDEF";
        let table = if uppercase { UPPER } else { LOWER };
        let mut digits = Digits {
            buffer: [b'0'; 64],
            start: 64,
        };
        // A u64 has at most 64 binary digits, so the buffer always has room; the `get_mut`
        // keeps that reasoning from becoming a panic if it were ever wrong.
        loop {
            let digit = usize::try_from(magnitude % radix).unwrap_or(0);
            let Some(start) = digits.start.checked_sub(1) else {
                break;
            };
            if let Some(slot) = digits.buffer.get_mut(start) {
                *slot = table.get(digit).copied().unwrap_or(b'?');
            }
            digits.start = start;
            magnitude /= radix;
            if magnitude == 0 {
                break;
            }
        }
        digits
    }

    fn as_bytes(&self) -> &[u8] {
        self.buffer.get(self.start..).unwrap_or_default()
    }
}

fn push_decimal(output: &mut String, value: i64) {
    if value < 0 {
        output.push('-');
    }
    for &digit in Digits::new(value.unsigned_abs(), 10, false).as_bytes() {
        output.push(char::from(digit));
    }
}

fn push_repeated(output: &mut String, character: char, count: usize) {
    output.extend(std::iter::repeat_n(character, count));
}

fn write_formatted(
    output: &mut String,
    value: &Value<'_>,
    spec: &FormatSpec,
) -> Result<(), ExpressionEvalFailure> {
    // Refuse before padding so that a width such as 99999999 never allocates.
    if spec.width > MAX_FIELD_LENGTH {
        return Err(ExpressionEvalFailure::FieldTooLong { length: spec.width });
    }
    match value {
        Value::Integer(integer) => write_integer(output, *integer, spec),
        Value::String(text) => match spec.format_type {
            // Python's int() coercion of strings that read as integers, as Confluent does.
            Some(kind) if kind.is_integer() => {
                write_integer(output, parse_integer_string(text)?, spec)
            }
            _ => write_string(output, text, spec),
        },
    }
}

fn write_integer(
    output: &mut String,
    value: i64,
    spec: &FormatSpec,
) -> Result<(), ExpressionEvalFailure> {
    let kind = spec.format_type.unwrap_or(FormatType::Decimal);
    let (radix, uppercase, prefix) = match kind {
        FormatType::Decimal => (10, false, ""),
        FormatType::LowerHex => (16, false, "0x"),
        FormatType::UpperHex => (16, true, "0X"),
        FormatType::Octal => (8, false, "0o"),
        FormatType::Binary => (2, false, "0b"),
        FormatType::String => {
            return Err(ExpressionEvalFailure::FormatNotApplicable {
                reason: "type 's' cannot format an integer",
            });
        }
    };
    if spec.precision.is_some() {
        return Err(ExpressionEvalFailure::FormatNotApplicable {
            reason: "a precision is not allowed for an integer",
        });
    }
    let prefix = if spec.alternate { prefix } else { "" };
    let sign = match (value < 0, spec.sign) {
        (true, _) => Some('-'),
        (false, Some(Sign::Plus)) => Some('+'),
        (false, Some(Sign::Space)) => Some(' '),
        (false, _) => None,
    };
    let digits = Digits::new(value.unsigned_abs(), radix, uppercase);
    let digits = digits.as_bytes();
    // Python's '0' flag: zero fill unless a fill is given, '=' alignment unless one is given.
    let fill = spec
        .fill
        .unwrap_or(if spec.zero_padding { '0' } else { ' ' });
    let align = spec.align.unwrap_or(if spec.zero_padding {
        Align::AfterSign
    } else {
        Align::Right
    });
    let head_length = usize::from(sign.is_some()) + prefix.len();
    let grouped_length = |count: usize| {
        if spec.thousands_separator {
            count + count.saturating_sub(1) / 3
        } else {
            count
        }
    };
    let mut digit_count = digits.len();
    // With zero fill after the sign, Python pads with grouped zeros ("00,001,234").
    if spec.thousands_separator && fill == '0' && align == Align::AfterSign {
        while head_length + grouped_length(digit_count) < spec.width {
            digit_count += 1;
        }
    }
    let body_length = head_length + grouped_length(digit_count);
    let padding = spec.width.saturating_sub(body_length);
    let (left_padding, middle_padding, right_padding) = match align {
        Align::Left => (0, 0, padding),
        Align::Right => (padding, 0, 0),
        Align::AfterSign => (0, padding, 0),
        Align::Center => (padding / 2, 0, padding - padding / 2),
    };
    push_repeated(output, fill, left_padding);
    if let Some(sign) = sign {
        output.push(sign);
    }
    output.push_str(prefix);
    push_repeated(output, fill, middle_padding);
    let leading_zeros = digit_count - digits.len();
    let all_digits = std::iter::repeat_n(b'0', leading_zeros).chain(digits.iter().copied());
    for (position, digit) in all_digits.enumerate() {
        if spec.thousands_separator && position > 0 && (digit_count - position).is_multiple_of(3) {
            output.push(',');
        }
        output.push(char::from(digit));
    }
    push_repeated(output, fill, right_padding);
    Ok(())
}

fn write_string(
    output: &mut String,
    text: &str,
    spec: &FormatSpec,
) -> Result<(), ExpressionEvalFailure> {
    let not_applicable = |reason| Err(ExpressionEvalFailure::FormatNotApplicable { reason });
    if spec.sign.is_some() {
        return not_applicable("a sign is not allowed for a string");
    }
    if spec.alternate {
        return not_applicable("'#' is not allowed for a string");
    }
    if spec.thousands_separator {
        return not_applicable("',' is not allowed for a string");
    }
    if spec.align == Some(Align::AfterSign) {
        return not_applicable("'=' alignment is not allowed for a string");
    }
    let text = match spec.precision {
        Some(precision) => text
            .char_indices()
            .nth(precision)
            .map_or(text, |(end, _)| text.get(..end).unwrap_or_default()),
        None => text,
    };
    if spec.width == 0 {
        output.push_str(text);
        return Ok(());
    }
    // Since Python 3.10 the '0' flag only sets the fill for strings; they stay left-aligned.
    let fill = spec
        .fill
        .unwrap_or(if spec.zero_padding { '0' } else { ' ' });
    let padding = spec.width.saturating_sub(text.chars().count());
    let (left_padding, right_padding) = match spec.align.unwrap_or(Align::Left) {
        Align::Left | Align::AfterSign => (0, padding),
        Align::Right => (padding, 0),
        Align::Center => (padding / 2, padding - padding / 2),
    };
    push_repeated(output, fill, left_padding);
    output.push_str(text);
    push_repeated(output, fill, right_padding);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A node with a name and a map of attributes; names starting with `broken.` fail.
    struct FakeNode {
        name: String,
        attributes: HashMap<String, String>,
    }

    impl FakeNode {
        fn new(name: &str, attributes: &[(&str, &str)]) -> Self {
            FakeNode {
                name: name.to_owned(),
                attributes: attributes
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                    .collect(),
            }
        }
    }

    impl ExpressionContext for FakeNode {
        fn node_name(&self) -> &str {
            &self.name
        }

        fn attribute(&self, name: &str) -> Result<Option<Cow<'_, str>>, String> {
            if name.starts_with("broken.") {
                return Err("expression is broken".to_owned());
            }
            Ok(self
                .attributes
                .get(name)
                .map(|value| Cow::Borrowed(value.as_str())))
        }
    }

    fn evaluate(template: &str, node: &FakeNode) -> Result<String, ExpressionEvalError> {
        Template::parse(template)
            .unwrap_or_else(|error| panic!("{template:?} should parse: {error}"))
            .evaluate(node)
    }

    fn value_of(template: &str, node_name: &str) -> String {
        let node = FakeNode::new(node_name, &[]);
        evaluate(template, &node)
            .unwrap_or_else(|error| panic!("{template:?} on {node_name} failed: {error}"))
    }

    fn eval_failure(template: &str, node: &FakeNode) -> ExpressionEvalFailure {
        match evaluate(template, node) {
            Ok(value) => panic!("{template:?} should fail, gave {value:?}"),
            Err(error) => error.reason,
        }
    }

    fn parse_error(template: &str) -> ExpressionParseError {
        match Template::parse(template) {
            Ok(parsed) => panic!("{template:?} should not parse, gave {parsed:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn format_spec_examples_of_the_reference() {
        assert_eq!(value_of("{n1:02d}", "n7"), "07");
        assert_eq!(value_of("{n1:02d}", "n123"), "123");
        assert_eq!(value_of("{n1:x}", "n255"), "ff");
        assert_eq!(value_of("{n1:X}", "n255"), "FF");
        assert_eq!(value_of("{n1:02x}", "n10"), "0a");
        assert_eq!(value_of("r{n1:02d}", "node3"), "r03");
    }

    #[test]
    fn arithmetic_examples_of_the_reference() {
        assert_eq!(value_of("{(n1-1)/42+1}", "n1"), "1");
        assert_eq!(value_of("{(n1-1)/42+1}", "n42"), "1");
        assert_eq!(value_of("{(n1-1)/42+1}", "n43"), "2");
        assert_eq!(value_of("{(n1-1)%42+1}", "n42"), "42");
        assert_eq!(value_of("{(n1-1)%42+1}", "n43"), "1");
        assert_eq!(value_of("{(n1-1)//42+1}", "n85"), "3");
    }

    #[test]
    fn slice_examples_of_the_reference() {
        assert_eq!(value_of("{node[3:]}", "abc123"), "123");
        assert_eq!(value_of("{node[-2:]}", "abc123"), "23");
        assert_eq!(value_of("{node[1]}", "abc123"), "b");
        assert_eq!(value_of("{node[1:4]}", "abc123"), "bc1");
        assert_eq!(value_of("{node[::2]}", "abc123"), "ac2");
        assert_eq!(value_of("{node[::-1]}", "abc123"), "321cba");
        assert_eq!(value_of("{node[-1]}", "abc123"), "3");
        assert_eq!(value_of("{node[10:]}", "abc"), "");
        assert_eq!(value_of("{node[-10:2]}", "abc"), "ab");
        assert_eq!(value_of("{node[2:1]}", "abc"), "");
        assert_eq!(value_of("{node[:-1]}", "abc"), "ab");
        assert_eq!(value_of("{node[5:0:-2]}", "abcdef"), "fdb");
        assert_eq!(value_of("{node[1:]}", "ééa"), "éa");
        assert_eq!(value_of("{node[1]}", "aéb"), "é");
    }

    #[test]
    fn mixed_fields_and_attribute_examples_of_the_reference() {
        let node = FakeNode::new(
            "r3u4",
            &[("hardwaremanagement.method", "ipmi"), ("location.u", "17")],
        );
        assert_eq!(
            evaluate("{node}-{hardwaremanagement.method}", &node).ok(),
            Some("r3u4-ipmi".to_owned())
        );
        assert_eq!(
            evaluate("172.17.0.{n1}/16", &node).ok(),
            Some("172.17.0.3/16".to_owned())
        );
        assert_eq!(evaluate("{location.u}", &node).ok(), Some("17".to_owned()));
        assert_eq!(
            evaluate("{location.u+1}", &node).ok(),
            Some("18".to_owned())
        );
        assert_eq!(
            evaluate("{location.u:03d}", &node).ok(),
            Some("017".to_owned())
        );
        assert_eq!(evaluate("{nodename}", &node).ok(), Some("r3u4".to_owned()));
        // An unset attribute is the empty string.
        assert_eq!(
            evaluate("[{net.pxe.hwaddr}]", &node).ok(),
            Some("[]".to_owned())
        );
    }

    #[test]
    fn node_numbers() {
        assert_eq!(value_of("{n1}{n2}{n3}{n4}", "b1o2r3u4"), "1234");
        assert_eq!(value_of("{n0}", "b1o2r3u4"), "4");
        assert_eq!(value_of("{n2}", "rack12node007"), "7");
        assert_eq!(value_of("{n01}", "x5"), "5");
        let many = "a1a2a3a4a5a6a7a8a9a10a11";
        assert_eq!(value_of("{n9}-{n11}-{n0}-{n8}", many), "9-11-11-8");
        let node = FakeNode::new("r3u4", &[]);
        assert_eq!(
            eval_failure("{n5}", &node),
            ExpressionEvalFailure::MissingNodeNumber {
                node: "r3u4".to_owned(),
                index: 5,
                count: 2
            }
        );
        assert!(matches!(
            eval_failure("{n0}", &FakeNode::new("mgmt", &[])),
            ExpressionEvalFailure::MissingNodeNumber { count: 0, .. }
        ));
        assert!(matches!(
            eval_failure("{n1}", &FakeNode::new("n99999999999999999999", &[])),
            ExpressionEvalFailure::NodeNumberTooLarge { .. }
        ));
    }

    #[test]
    fn methods() {
        assert_eq!(value_of("{n1.block_number(4)}", "n1"), "1");
        assert_eq!(value_of("{n1.block_number(4)}", "n4"), "1");
        assert_eq!(value_of("{n1.block_number(4)}", "n5"), "2");
        assert_eq!(value_of("{n1.block_offset(4)}", "n4"), "4");
        assert_eq!(value_of("{n1.block_offset(4)}", "n5"), "1");
        assert_eq!(value_of("{node.upper()}", "Rack1"), "RACK1");
        assert_eq!(value_of("{node.lower()}", "Rack1"), "rack1");
        assert_eq!(value_of("{node.replace('r', 'R')}", "rack1r"), "Rack1R");
        assert_eq!(value_of("{node.replace(\"r\", \"\", 1)}", "rrr"), "rr");
        assert_eq!(
            value_of("{node.upper().replace('N','X')}", "node1"),
            "XODE1"
        );
        assert_eq!(value_of("{node[1:].upper()}", "abc"), "BC");
        assert_eq!(value_of("{(node).upper()}", "abc"), "ABC");
        let node = FakeNode::new("n1", &[("location.u", "9"), ("custom.a.b", "Hi")]);
        assert_eq!(
            evaluate("{location.u.block_number(4)}", &node).ok(),
            Some("3".to_owned())
        );
        assert_eq!(
            evaluate("{custom.a.b.lower()}", &node).ok(),
            Some("hi".to_owned())
        );
        let template = Template::parse("{location.u.block_offset(4)}").ok();
        assert_eq!(
            template.as_ref().map(Template::references),
            Some(&["location.u".to_owned()][..])
        );
    }

    #[test]
    fn integer_semantics_follow_python() {
        assert_eq!(value_of("{-7/2}", "x"), "-4");
        assert_eq!(value_of("{7/-2}", "x"), "-4");
        assert_eq!(value_of("{-7%3}", "x"), "2");
        assert_eq!(value_of("{7%-3}", "x"), "-2");
        assert_eq!(value_of("{1+2*3}", "x"), "7");
        assert_eq!(value_of("{10-4-3}", "x"), "3");
        assert_eq!(value_of("{1<<4|1}", "x"), "17");
        assert_eq!(value_of("{6&3^1}", "x"), "3");
        assert_eq!(value_of("{-8>>1}", "x"), "-4");
        assert_eq!(value_of("{1 >> 100}", "x"), "0");
        assert_eq!(value_of("{--5}", "x"), "5");
        assert_eq!(value_of("{-n1*2}", "n3"), "-6");
        assert_eq!(value_of("{'a' + 'b'}", "x"), "ab");
        assert_eq!(value_of("{node + '-bmc'}", "x1"), "x1-bmc");
    }

    #[test]
    fn format_specs() {
        assert_eq!(value_of("{n1:>5}", "n42"), "   42");
        assert_eq!(value_of("{n1:<5}|", "n42"), "42   |");
        assert_eq!(value_of("{n1:^6}", "n42"), "  42  ");
        assert_eq!(value_of("{n1:*^7}", "n42"), "**42***");
        assert_eq!(value_of("{-n1:05}", "n42"), "-0042");
        assert_eq!(value_of("{n1:+d}", "n42"), "+42");
        assert_eq!(value_of("{n1: d}", "n42"), " 42");
        assert_eq!(value_of("{n1:#x}", "n255"), "0xff");
        assert_eq!(value_of("{n1:#06x}", "n255"), "0x00ff");
        assert_eq!(value_of("{n1:o}", "n8"), "10");
        assert_eq!(value_of("{n1:b}", "n5"), "101");
        assert_eq!(value_of("{n1:,}", "n1234567"), "1,234,567");
        assert_eq!(value_of("{n1:010,}", "n1234"), "00,001,234");
        assert_eq!(value_of("{-n1:x}", "n255"), "-ff");
        assert_eq!(value_of("{node:.2}", "abcd"), "ab");
        assert_eq!(value_of("{node:>6s}", "abcd"), "  abcd");
        assert_eq!(value_of("{node:6}|", "abcd"), "abcd  |");
        assert_eq!(value_of("{node[1:]:d}", "n042"), "42");
        assert_eq!(value_of("{n1:}", "n3"), "3");
        let node = FakeNode::new("n1", &[("location.u", "12")]);
        assert_eq!(evaluate("{location.u:x}", &node).ok(), Some("c".to_owned()));
    }

    #[test]
    fn escaping() {
        let template = Template::parse("{{literal}} {n1} }}").ok();
        assert_eq!(
            template
                .as_ref()
                .map(|t| t.evaluate(&FakeNode::new("n5", &[]))),
            Some(Ok("{literal} 5 }".to_owned()))
        );
        let plain = Template::parse("a{{b}}c").ok();
        assert_eq!(plain.as_ref().map(Template::is_expression), Some(false));
        assert_eq!(
            plain.as_ref().and_then(Template::literal),
            Some("a{b}c".to_owned())
        );
        assert_eq!(
            plain.as_ref().map(|t| t.evaluate(&FakeNode::new("x", &[]))),
            Some(Ok("a{b}c".to_owned()))
        );
        assert_eq!(escape_literal("a{b}}c"), "a{{b}}}}c");
        let expression = Template::parse("x{n1}").ok();
        assert_eq!(expression.as_ref().map(Template::is_expression), Some(true));
        assert_eq!(expression.as_ref().and_then(Template::literal), None);
        assert_eq!(expression.as_ref().map(Template::text), Some("x{n1}"));
    }

    #[test]
    fn references_are_deduplicated_in_first_use_order() {
        let template = Template::parse(
            "{location.u}-{bmc}{n1}{node}{location.u}{custom.a.b:>3}{net.pxe.hwaddr.upper()}",
        )
        .ok();
        let references: Vec<&str> = template
            .as_ref()
            .map(|t| t.references().iter().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            references,
            ["location.u", "bmc", "custom.a.b", "net.pxe.hwaddr"]
        );
        assert_eq!(template.as_ref().map(Template::uses_node_name), Some(true));
        let without_node = Template::parse("{bmcuser}").ok();
        assert_eq!(
            without_node.as_ref().map(Template::uses_node_name),
            Some(false)
        );
        let numbers_only = Template::parse("{n0}").ok();
        assert_eq!(
            numbers_only.as_ref().map(Template::uses_node_name),
            Some(true)
        );
        assert_eq!(numbers_only.as_ref().map(|t| t.references().len()), Some(0));
        let many: String = (0..40).map(|i| format!("{{custom.a{}}}", i % 20)).collect();
        let parsed = Template::parse(&many).ok();
        assert_eq!(parsed.as_ref().map(|t| t.references().len()), Some(20));
        assert_eq!(
            parsed
                .as_ref()
                .and_then(|t| t.references().get(19).cloned()),
            Some("custom.a19".to_owned())
        );
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            parse_error("abc{n1"),
            ExpressionParseError::UnterminatedField { position: 3 }
        );
        assert_eq!(
            parse_error("abc{"),
            ExpressionParseError::UnterminatedField { position: 3 }
        );
        assert_eq!(
            parse_error("{n1:02d"),
            ExpressionParseError::UnterminatedField { position: 0 }
        );
        assert_eq!(
            parse_error("ab}c"),
            ExpressionParseError::StrayClosingBrace { position: 2 }
        );
        assert_eq!(
            parse_error("{}"),
            ExpressionParseError::EmptyField { position: 0 }
        );
        assert_eq!(
            parse_error("x{:02d}"),
            ExpressionParseError::EmptyField { position: 1 }
        );
        assert_eq!(
            parse_error("{node.split()}"),
            ExpressionParseError::UnknownMethod {
                method: "split".to_owned(),
                position: 6
            }
        );
        assert_eq!(
            parse_error("{n1:>0000000009}"),
            ExpressionParseError::FormatSpecTooLong {
                spec: ">0000000009".to_owned(),
                position: 4
            }
        );
        assert!(Template::parse("{n1:>0000009}").is_ok());
        assert_eq!(
            parse_error("{n1 $ 2}"),
            ExpressionParseError::UnexpectedCharacter {
                character: '$',
                position: 4
            }
        );
        assert_eq!(
            parse_error("{n1 n2}"),
            ExpressionParseError::UnexpectedToken {
                token: "n2".to_owned(),
                expected: "an operator, ':' or '}'",
                position: 4
            }
        );
        assert!(matches!(
            parse_error("{int(n1)}"),
            ExpressionParseError::FunctionCall { .. }
        ));
        assert!(matches!(
            parse_error("{lambda: 1}"),
            ExpressionParseError::Keyword { .. }
        ));
        assert!(matches!(
            parse_error("{n1 if n1 else 2}"),
            ExpressionParseError::Keyword { .. }
        ));
        assert!(matches!(
            parse_error("{n1 < 2}"),
            ExpressionParseError::UnexpectedCharacter { character: '<', .. }
        ));
        assert!(matches!(
            parse_error("{n1 == 2}"),
            ExpressionParseError::UnexpectedCharacter { character: '=', .. }
        ));
        assert!(matches!(
            parse_error("{n1 ** 2}"),
            ExpressionParseError::UnexpectedToken { .. }
        ));
        assert!(matches!(
            parse_error("{(node).u}"),
            ExpressionParseError::AttributeOfNonName { .. }
        ));
        assert!(matches!(
            parse_error("{node.upper().x}"),
            ExpressionParseError::AttributeOfNonName { .. }
        ));
        assert!(matches!(
            parse_error("{node.upper(1)}"),
            ExpressionParseError::MethodArguments { found: 1, .. }
        ));
        assert!(matches!(
            parse_error("{node.replace('a')}"),
            ExpressionParseError::MethodArguments { found: 1, .. }
        ));
        assert!(matches!(
            parse_error("{node['a}"),
            ExpressionParseError::UnterminatedString { .. }
        ));
        assert!(matches!(
            parse_error("{node[]}"),
            ExpressionParseError::UnexpectedToken { .. }
        ));
        assert!(matches!(
            parse_error("{n1!r}"),
            ExpressionParseError::UnexpectedCharacter { character: '!', .. }
        ));
        assert!(matches!(
            parse_error("{n1:{n2}}"),
            ExpressionParseError::NestedFormatField { .. }
        ));
        assert!(matches!(
            parse_error("{n1:q}"),
            ExpressionParseError::InvalidFormatSpec { .. }
        ));
        assert!(matches!(
            parse_error("{n1:.2d}"),
            ExpressionParseError::InvalidFormatSpec { .. }
        ));
        assert!(matches!(
            parse_error("{n1:,x}"),
            ExpressionParseError::InvalidFormatSpec { .. }
        ));
        assert!(matches!(
            parse_error("{99999999999999999999}"),
            ExpressionParseError::IntegerTooLarge { .. }
        ));
        assert!(matches!(
            parse_error("{1.5}"),
            ExpressionParseError::UnexpectedToken { .. }
        ));
        assert!(matches!(
            parse_error("{é}"),
            ExpressionParseError::UnexpectedCharacter {
                character: 'é',
                position: 1
            }
        ));
        let deep = format!("{{{}1{}}}", "(".repeat(200), ")".repeat(200));
        assert!(matches!(
            parse_error(&deep),
            ExpressionParseError::NestingTooDeep { .. }
        ));
        let long_chain = format!("{{1{}}}", "+1".repeat(1000));
        assert!(matches!(
            parse_error(&long_chain),
            ExpressionParseError::NestingTooDeep { .. }
        ));
        let message = parse_error("{node.split()}").to_string();
        assert!(message.contains("split"), "{message}");
    }

    #[test]
    fn evaluation_errors() {
        let node = FakeNode::new(
            "r3u4",
            &[
                ("location.u", "twelve"),
                ("custom.big", "9223372036854775807"),
            ],
        );
        assert_eq!(
            eval_failure("{n1/0}", &node),
            ExpressionEvalFailure::DivisionByZero
        );
        assert_eq!(
            eval_failure("{n1%(n2-4)}", &node),
            ExpressionEvalFailure::ModuloByZero
        );
        assert_eq!(
            eval_failure("{n1.block_number(0)}", &node),
            ExpressionEvalFailure::DivisionByZero
        );
        assert_eq!(
            eval_failure("{location.u+1}", &node),
            ExpressionEvalFailure::NotAnInteger {
                value: "twelve".to_owned()
            }
        );
        assert!(matches!(
            eval_failure("{location.u:d}", &node),
            ExpressionEvalFailure::NotAnInteger { .. }
        ));
        assert!(matches!(
            eval_failure("{node+1}", &node),
            ExpressionEvalFailure::NotAnInteger { .. }
        ));
        assert_eq!(
            eval_failure("{node[4]}", &node),
            ExpressionEvalFailure::IndexOutOfRange {
                index: 4,
                length: 4
            }
        );
        assert_eq!(
            eval_failure("{node[-5]}", &node),
            ExpressionEvalFailure::IndexOutOfRange {
                index: -5,
                length: 4
            }
        );
        assert_eq!(
            eval_failure("{node[::0]}", &node),
            ExpressionEvalFailure::ZeroSliceStep
        );
        assert!(matches!(
            eval_failure("{n5}", &node),
            ExpressionEvalFailure::MissingNodeNumber { .. }
        ));
        assert_eq!(
            eval_failure("{broken.attr}-x", &node),
            ExpressionEvalFailure::AttributeUnavailable {
                name: "broken.attr".to_owned(),
                reason: "expression is broken".to_owned()
            }
        );
        assert!(matches!(
            eval_failure("{custom.big+1}", &node),
            ExpressionEvalFailure::Overflow { .. }
        ));
        assert!(matches!(
            eval_failure("{1<<63}", &node),
            ExpressionEvalFailure::Overflow { .. }
        ));
        assert!(matches!(
            eval_failure("{-9223372036854775807-2}", &node),
            ExpressionEvalFailure::Overflow { .. }
        ));
        assert!(matches!(
            eval_failure("{1<<-1}", &node),
            ExpressionEvalFailure::NegativeShift { .. }
        ));
        assert!(matches!(
            eval_failure("{n1.upper()}", &node),
            ExpressionEvalFailure::NotAString { .. }
        ));
        assert!(matches!(
            eval_failure("{n1[0]}", &node),
            ExpressionEvalFailure::NotAString { .. }
        ));
        assert!(matches!(
            eval_failure("{n1:s}", &node),
            ExpressionEvalFailure::FormatNotApplicable { .. }
        ));
        assert!(matches!(
            eval_failure("{node:+}", &node),
            ExpressionEvalFailure::FormatNotApplicable { .. }
        ));
        assert!(matches!(
            eval_failure("{n1:.3}", &node),
            ExpressionEvalFailure::FormatNotApplicable { .. }
        ));
        assert!(matches!(
            eval_failure("{n1:99999999}", &node),
            ExpressionEvalFailure::FieldTooLong { .. }
        ));
        assert!(matches!(
            eval_failure("{n1:16385}", &node),
            ExpressionEvalFailure::FieldTooLong { length: 16385 }
        ));
        assert!(evaluate("{n1:16384}", &node).is_ok());
        let growing = format!("{{node{}}}", ".replace('r', 'rrrrrrrr')".repeat(10));
        assert!(matches!(
            eval_failure(&growing, &node),
            ExpressionEvalFailure::StringTooLong { .. }
        ));
        let error = evaluate("a{(n1-1)/0}b", &node).err();
        assert_eq!(
            error.as_ref().map(|error| error.field.as_str()),
            Some("(n1-1)/0")
        );
        assert_eq!(
            error.map(|error| error.to_string()),
            Some("cannot evaluate field {(n1-1)/0}: division by zero".to_owned())
        );
    }

    #[test]
    fn whitespace_and_strings() {
        assert_eq!(value_of("{ n1 + 1 }", "n1"), "2");
        assert_eq!(value_of("{node.replace(':', '}')}", "a:b"), "a}b");
        assert_eq!(value_of(r#"{'it\'s'}"#, "x"), "it's");
        assert_eq!(value_of(r"{'a\nb'}", "x"), "a\nb");
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let _ = Template::parse(&text);
        }

        #[test]
        fn parse_and_evaluate_never_panic_on_expression_like_text(
            text in r#"[{}a-z0-9nN:()\[\]+\-*/%<>&^|., '"_]{0,40}"#,
            node_name in "[a-z0-9é]{0,12}",
        ) {
            if let Ok(template) = Template::parse(&text) {
                let node = FakeNode::new(&node_name, &[("a", "12"), ("a.b", "x")]);
                let _ = template.evaluate(&node);
            }
        }

        #[test]
        fn escaped_literal_round_trips(text in any::<String>()) {
            let template = Template::parse(&escape_literal(&text));
            prop_assert!(template.is_ok());
            let template = template.ok();
            prop_assert_eq!(template.as_ref().map(Template::is_expression), Some(false));
            prop_assert_eq!(template.and_then(|t| t.literal()), Some(text));
        }

        #[test]
        fn integer_formats_match_rust_formatting(value in any::<i64>(), width in 0usize..30) {
            let node = FakeNode::new("x", &[("v", &value.to_string())]);
            let decimal = evaluate(&format!("{{v:0{width}d}}"), &node).ok();
            prop_assert_eq!(decimal, Some(format!("{value:0width$}")));
            let hexadecimal = evaluate(&format!("{{v:>{width}x}}"), &node).ok();
            let sign = if value < 0 { "-" } else { "" };
            let expected = format!("{sign}{:x}", value.unsigned_abs());
            prop_assert_eq!(hexadecimal, Some(format!("{expected:>width$}")));
        }

        #[test]
        fn floor_division_and_modulo_are_consistent(left in any::<i64>(), right in any::<i64>()) {
            if let (Ok(quotient), Ok(remainder)) = (floor_divide(left, right), python_modulo(left, right)) {
                prop_assert_eq!(i128::from(quotient) * i128::from(right) + i128::from(remainder), i128::from(left));
                prop_assert!(remainder == 0 || (remainder < 0) == (right < 0));
            }
        }
    }
}
