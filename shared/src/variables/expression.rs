//! GitLab's CI/CD variable expression language, the language of `rules:if`
//! and `only:variables`: parsed once into an [`Expression`], evaluated
//! against a variable lookup.
//!
//! Grammar (GitLab's `Gitlab::Ci::Pipeline::Expression`), lowest precedence
//! first:
//!
//! ```text
//! or      := and ( "||" and )*
//! and     := compare ( "&&" compare )*
//! compare := operand ( ( "==" | "!=" | "=~" | "!~" ) operand )?
//! operand := $VAR | ${VAR} | "string" | 'string' | null | /regex/flags | "(" or ")"
//! ```
//!
//! Values follow GitLab: an undefined variable is null; a variable alone is
//! true when it is defined and non-empty; `=~` with an undefined left side is
//! false (so `!~` is true). Regular expressions use the `regex` crate, whose
//! syntax is close to the RE2 syntax GitLab uses; matching is unanchored.

use regex::Regex;
use std::borrow::Cow;

/// Longest expression accepted, in characters; keeps parsing and regex
/// compilation cheap on hostile input.
const MAX_LENGTH: usize = 4096;

/// Deepest parenthesis nesting accepted.
const MAX_NESTING: usize = 32;

/// Largest compiled regex accepted (the `regex` crate's size limit).
const MAX_REGEX_SIZE: usize = 1 << 20;

/// A parse error with the 0-based character offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {})", .offset + 1)]
pub struct ExpressionError {
    pub offset: usize,
    pub message: String,
}

/// A parsed expression, ready to evaluate many times.
#[derive(Debug, Clone)]
pub struct Expression {
    root: Node,
}

#[derive(Debug, Clone)]
enum Node {
    Variable(String),
    String(String),
    Null,
    Pattern(Pattern),
    Equals(Box<Node>, Box<Node>, bool),
    Matches(Box<Node>, Box<Node>, bool),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
}

/// A compiled `/regex/flags`.
#[derive(Debug, Clone)]
pub struct Pattern {
    regex: Regex,
}

impl Pattern {
    /// Parses `/source/flags` as written in a pipeline (also used for
    /// `only: refs` regexes). Flags: `i` (case-insensitive), `m` (Ruby's
    /// multiline: `.` matches a newline), `x` (extended).
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let body = text
            .strip_prefix('/')
            .ok_or_else(|| "a regular expression must start with /".to_owned())?;
        let end = body
            .rfind('/')
            .ok_or_else(|| "a regular expression must end with /".to_owned())?;
        Pattern::compile(&body[..end], &body[end + 1..])
    }

    fn compile(source: &str, flags: &str) -> Result<Pattern, String> {
        let mut builder = regex::RegexBuilder::new(source);
        builder.size_limit(MAX_REGEX_SIZE);
        for flag in flags.chars() {
            match flag {
                'i' => builder.case_insensitive(true),
                'm' => builder.dot_matches_new_line(true),
                'x' => builder.ignore_whitespace(true),
                other => return Err(format!("unknown regular expression flag {other}")),
            };
        }
        builder
            .build()
            .map(|regex| Pattern { regex })
            .map_err(|error| {
                // The regex crate's message draws the pattern over several
                // lines; its last line says what is wrong.
                let text = error.to_string();
                let reason = text.lines().last().unwrap_or_default();
                let reason = reason.strip_prefix("error: ").unwrap_or(reason);
                format!("invalid regular expression /{source}/: {reason}")
            })
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// What an operand evaluates to.
#[derive(Debug, Clone)]
enum Value<'a> {
    Null,
    String(Cow<'a, str>),
    Pattern(Cow<'a, Pattern>),
    Bool(bool),
}

impl Value<'_> {
    fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::String(text) => !text.is_empty(),
            Value::Pattern(_) => true,
            Value::Bool(value) => *value,
        }
    }
}

impl Expression {
    /// Parses an expression as written after `if:`.
    pub fn parse(text: &str) -> Result<Expression, ExpressionError> {
        if text.chars().count() > MAX_LENGTH {
            return Err(ExpressionError {
                offset: 0,
                message: format!("expression is longer than {MAX_LENGTH} characters"),
            });
        }
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens: &tokens,
            at: 0,
            depth: 0,
            end: text.chars().count(),
        };
        let root = parser.or()?;
        if let Some((offset, token)) = tokens.get(parser.at) {
            return Err(ExpressionError {
                offset: *offset,
                message: format!("unexpected {}", token.describe()),
            });
        }
        Ok(Expression { root })
    }

    /// Evaluates with `lookup` giving a variable's value (`None` when it is
    /// not defined).
    pub fn evaluate(&self, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
        eval(&self.root, lookup).truthy()
    }
}

fn eval<'e>(node: &'e Node, lookup: &dyn Fn(&str) -> Option<String>) -> Value<'e> {
    match node {
        Node::Variable(name) => match lookup(name) {
            Some(value) => Value::String(Cow::Owned(value)),
            None => Value::Null,
        },
        Node::String(text) => Value::String(text.as_str().into()),
        Node::Null => Value::Null,
        Node::Pattern(pattern) => Value::Pattern(Cow::Borrowed(pattern)),
        Node::Equals(left, right, negated) => {
            let equal = match (eval(left, lookup), eval(right, lookup)) {
                (Value::Null, Value::Null) => true,
                (Value::String(a), Value::String(b)) => a == b,
                (Value::Bool(a), Value::Bool(b)) => a == b,
                _ => false,
            };
            Value::Bool(equal != *negated)
        }
        Node::Matches(left, right, negated) => {
            let pattern = match eval(right, lookup) {
                Value::Pattern(pattern) => Some(pattern),
                // GitLab accepts a variable holding `/regex/` on the right.
                Value::String(text) => Pattern::parse(&text).ok().map(Cow::Owned),
                _ => None,
            };
            let matched = match (eval(left, lookup), pattern) {
                (Value::String(text), Some(pattern)) => pattern.is_match(&text),
                _ => false,
            };
            Value::Bool(matched != *negated)
        }
        Node::And(left, right) => {
            Value::Bool(eval(left, lookup).truthy() && eval(right, lookup).truthy())
        }
        Node::Or(left, right) => {
            Value::Bool(eval(left, lookup).truthy() || eval(right, lookup).truthy())
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Variable(String),
    String(String),
    Null,
    Pattern(String, String),
    Equals,
    NotEquals,
    Matches,
    NotMatches,
    And,
    Or,
    Open,
    Close,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Variable(name) => format!("variable ${name}"),
            Token::String(text) => format!("string \"{text}\""),
            Token::Null => "null".to_owned(),
            Token::Pattern(source, flags) => format!("pattern /{source}/{flags}"),
            Token::Equals => "==".to_owned(),
            Token::NotEquals => "!=".to_owned(),
            Token::Matches => "=~".to_owned(),
            Token::NotMatches => "!~".to_owned(),
            Token::And => "&&".to_owned(),
            Token::Or => "||".to_owned(),
            Token::Open => "(".to_owned(),
            Token::Close => ")".to_owned(),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn lex(text: &str) -> Result<Vec<(usize, Token)>, ExpressionError> {
    let chars: Vec<char> = text.chars().collect();
    let error = |offset: usize, message: String| ExpressionError { offset, message };
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let pair = |second: char| chars.get(i + 1) == Some(&second);
        let token = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '$' => {
                let braced = chars.get(i + 1) == Some(&'{');
                let name_start = if braced { i + 2 } else { i + 1 };
                let mut end = name_start;
                while end < chars.len() && is_name_char(chars[end]) {
                    end += 1;
                }
                if end == name_start {
                    return Err(error(start, "expected a variable name after $".to_owned()));
                }
                i = end;
                if braced {
                    if chars.get(i) != Some(&'}') {
                        return Err(error(start, "missing } after ${NAME".to_owned()));
                    }
                    i += 1;
                }
                Token::Variable(chars[name_start..end].iter().collect())
            }
            '"' | '\'' => {
                // GitLab's string lexemes have no escapes: the text runs to
                // the next quote of the same kind.
                let close = chars[i + 1..].iter().position(|&q| q == c);
                let Some(close) = close else {
                    return Err(error(start, "unterminated string".to_owned()));
                };
                let text = chars[i + 1..i + 1 + close].iter().collect();
                i += close + 2;
                Token::String(text)
            }
            '/' => {
                let mut end = i + 1;
                let mut escaped = false;
                while end < chars.len() && (escaped || chars[end] != '/') {
                    escaped = !escaped && chars[end] == '\\';
                    end += 1;
                }
                if end >= chars.len() || end == i + 1 {
                    return Err(error(start, "unterminated regular expression".to_owned()));
                }
                let source: String = chars[i + 1..end].iter().collect();
                let mut flags_end = end + 1;
                while flags_end < chars.len() && chars[flags_end].is_ascii_alphabetic() {
                    flags_end += 1;
                }
                let flags: String = chars[end + 1..flags_end].iter().collect();
                i = flags_end;
                // Compile now so that a bad pattern is a lint error.
                Pattern::compile(&source, &flags).map_err(|message| error(start, message))?;
                Token::Pattern(source, flags)
            }
            '=' if pair('=') => Token::Equals,
            '!' if pair('=') => Token::NotEquals,
            '=' if pair('~') => Token::Matches,
            '!' if pair('~') => Token::NotMatches,
            '&' if pair('&') => Token::And,
            '|' if pair('|') => Token::Or,
            '(' => Token::Open,
            ')' => Token::Close,
            'n' if chars[i..].starts_with(&['n', 'u', 'l', 'l'])
                && !chars.get(i + 4).is_some_and(|&c| is_name_char(c)) =>
            {
                i += 4;
                Token::Null
            }
            other => {
                let hint = if other.is_alphanumeric() {
                    " (variables start with $ and strings are quoted)"
                } else {
                    ""
                };
                return Err(error(start, format!("unexpected character {other}{hint}")));
            }
        };
        if matches!(
            token,
            Token::Equals
                | Token::NotEquals
                | Token::Matches
                | Token::NotMatches
                | Token::And
                | Token::Or
        ) {
            i += 2;
        } else if matches!(token, Token::Open | Token::Close) {
            i += 1;
        }
        tokens.push((start, token));
    }
    Ok(tokens)
}

struct Parser<'t> {
    tokens: &'t [(usize, Token)],
    at: usize,
    depth: usize,
    end: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(_, token)| token)
    }

    fn offset(&self) -> usize {
        self.tokens
            .get(self.at)
            .map_or(self.end, |(offset, _)| *offset)
    }

    fn or(&mut self) -> Result<Node, ExpressionError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            left = Node::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, ExpressionError> {
        let mut left = self.compare()?;
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            left = Node::And(Box::new(left), Box::new(self.compare()?));
        }
        Ok(left)
    }

    fn compare(&mut self) -> Result<Node, ExpressionError> {
        let left = self.operand()?;
        let (regex, negated) = match self.peek() {
            Some(Token::Equals) => (false, false),
            Some(Token::NotEquals) => (false, true),
            Some(Token::Matches) => (true, false),
            Some(Token::NotMatches) => (true, true),
            _ => return Ok(left),
        };
        self.at += 1;
        let (left, right) = (Box::new(left), Box::new(self.operand()?));
        Ok(if regex {
            Node::Matches(left, right, negated)
        } else {
            Node::Equals(left, right, negated)
        })
    }

    fn operand(&mut self) -> Result<Node, ExpressionError> {
        let offset = self.offset();
        let Some(token) = self.peek().cloned() else {
            return Err(ExpressionError {
                offset,
                message: "expression ends where a value was expected".to_owned(),
            });
        };
        self.at += 1;
        match token {
            Token::Variable(name) => Ok(Node::Variable(name)),
            Token::String(text) => Ok(Node::String(text)),
            Token::Null => Ok(Node::Null),
            Token::Pattern(source, flags) => Pattern::compile(&source, &flags)
                .map(Node::Pattern)
                .map_err(|message| ExpressionError { offset, message }),
            Token::Open => {
                self.depth += 1;
                if self.depth > MAX_NESTING {
                    return Err(ExpressionError {
                        offset,
                        message: format!("parentheses nest deeper than {MAX_NESTING} levels"),
                    });
                }
                let inner = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(ExpressionError {
                        offset: self.offset(),
                        message: "missing )".to_owned(),
                    });
                }
                self.at += 1;
                self.depth -= 1;
                Ok(inner)
            }
            other => Err(ExpressionError {
                offset,
                message: format!("expected a value, found {}", other.describe()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn check(text: &str, vars: &[(&str, &str)]) -> bool {
        let vars: HashMap<&str, &str> = vars.iter().copied().collect();
        let expression = Expression::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        expression.evaluate(&|name| vars.get(name).map(|v| (*v).to_owned()))
    }

    #[test]
    fn comparisons() {
        let vars = [("BRANCH", "main"), ("EMPTY", "")];
        assert!(check("$BRANCH == \"main\"", &vars));
        assert!(check("${BRANCH} == 'main'", &vars));
        assert!(check("'main' == $BRANCH", &vars));
        assert!(!check("$BRANCH != \"main\"", &vars));
        assert!(check("$UNSET == null", &vars));
        assert!(!check("$EMPTY == null", &vars));
        assert!(check("$EMPTY == ''", &vars));
        assert!(check("$UNSET == $ALSO_UNSET", &vars));
        assert!(!check("$UNSET == ''", &vars));
    }

    #[test]
    fn presence_is_defined_and_non_empty() {
        let vars = [("SET", "x"), ("EMPTY", "")];
        assert!(check("$SET", &vars));
        assert!(!check("$EMPTY", &vars));
        assert!(!check("$UNSET", &vars));
        assert!(!check("null", &vars));
    }

    #[test]
    fn regex_matching_with_flags() {
        let vars = [("REF", "Release-1.2"), ("PAT", "/^release/i")];
        assert!(check("$REF =~ /^Release-\\d/", &vars));
        assert!(!check("$REF =~ /^release/", &vars));
        assert!(check("$REF =~ /^release/i", &vars));
        assert!(check("$REF !~ /^main$/", &vars));
        assert!(!check("$UNSET =~ /.*/", &vars));
        assert!(check("$UNSET !~ /.*/", &vars));
        assert!(check("$REF =~ $PAT", &vars));
        assert!(check("$REF =~ /a\\/b|lease/", &vars));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let vars = [("A", "1")];
        // false && false || true == (false && false) || true
        assert!(check("$X && $Y || $A", &vars));
        assert!(!check("$X && ($Y || $A)", &vars));
        assert!(check("$A || $X && $Y", &vars));
        assert!(check("($A == '1' || $X) && $A", &vars));
    }

    #[test]
    fn parse_errors_say_where() {
        let error = |text: &str| Expression::parse(text).unwrap_err().to_string();
        assert_eq!(
            error("$A == main"),
            "unexpected character m (variables start with $ and strings are quoted) (at character 7)"
        );
        assert_eq!(
            error("$A =="),
            "expression ends where a value was expected (at character 6)"
        );
        assert_eq!(error("($A"), "missing ) (at character 4)");
        assert_eq!(error("$A == 'x"), "unterminated string (at character 7)");
        assert!(error("$A =~ /(/").contains("invalid regular expression"));
        assert!(error("$A =~ /x/q").contains("unknown regular expression flag q"));
        assert_eq!(error("$A $B"), "unexpected variable $B (at character 4)");
        assert!(error(&"(".repeat(100)).contains("nest deeper"));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in [
            "",
            "$",
            "${",
            "${A",
            "/",
            "//",
            "'",
            "&&",
            "== ==",
            "null null",
            "é",
            "$é",
        ] {
            let _ = Expression::parse(text);
        }
    }
}
