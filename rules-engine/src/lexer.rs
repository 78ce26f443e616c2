//! The tokenizer shared by metric conditions (`avg(5m) > 0.9`) and log filters
//! (`message =~ "ERROR" and host.name != "db-1"`), both read when rules load.

use std::fmt;

/// One token of an expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    /// A name: `value`, `avg`, `and`, or a field such as `host.name`.
    Word(String),
    /// Text starting with a digit: a number (`0.9`, `9.5e9`) or a duration (`5m`).
    Number(String),
    /// A quoted string, with `\"`, `\'` and `\\` unescaped; any other backslash is
    /// kept as written, so regex escapes such as `\d` need no doubling.
    Str(String),
    /// An operator, a parenthesis or a comma.
    Op(&'static str),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(text) | Token::Number(text) => f.write_str(text),
            Token::Str(text) => write!(f, "{text:?}"),
            Token::Op(op) => f.write_str(op),
        }
    }
}

/// Operators, longest first so that `>=` is not read as `>` then `=`.
const OPERATORS: [&str; 15] = [
    ">=", "<=", "==", "!=", "=~", "!~", ">", "<", "+", "-", "*", "/", "(", ")", ",",
];

/// Why an expression could not be read, and where (a byte offset into it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

impl SyntaxError {
    /// A message for a person: what is wrong, and the text from where it is wrong.
    pub(crate) fn describe(&self, text: &str) -> String {
        let rest = text.get(self.offset..).unwrap_or("").trim();
        if rest.is_empty() {
            format!("{} at the end", self.message)
        } else {
            format!("{} at `{rest}`", self.message)
        }
    }
}

/// Splits `text` into tokens, each with the byte offset where it starts.
pub(crate) fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = scan(text, start, |c| {
                c.is_ascii_alphanumeric() || c == '_' || c == '.'
            });
            tokens.push((start, Token::Word(text[start..end].to_owned())));
            skip_to(&mut chars, end);
        } else if c.is_ascii_digit() {
            let mut end = scan(text, start, |c| c.is_ascii_alphanumeric() || c == '.');
            // An exponent with a sign: `1e-5`, `9.5E+9`.
            let bytes = text.as_bytes();
            if matches!(bytes[end - 1], b'e' | b'E')
                && matches!(bytes.get(end), Some(b'+' | b'-'))
                && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
            {
                end = scan(text, end + 1, |c| c.is_ascii_digit());
            }
            tokens.push((start, Token::Number(text[start..end].to_owned())));
            skip_to(&mut chars, end);
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c2)) = chars.next() {
                match c2 {
                    '\\' => match chars.next() {
                        Some((_, escaped @ ('"' | '\'' | '\\'))) => value.push(escaped),
                        Some((_, other)) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => break,
                    },
                    _ if c2 == c => {
                        closed = true;
                        break;
                    }
                    _ => value.push(c2),
                }
            }
            if !closed {
                return Err(SyntaxError {
                    offset: start,
                    message: "unclosed string".to_owned(),
                });
            }
            tokens.push((start, Token::Str(value)));
        } else if let Some(op) = OPERATORS.iter().find(|op| text[start..].starts_with(*op)) {
            tokens.push((start, Token::Op(op)));
            skip_to(&mut chars, start + op.len());
        } else {
            return Err(SyntaxError {
                offset: start,
                message: format!("unexpected character `{c}`"),
            });
        }
    }
    Ok(tokens)
}

/// The end of the run of characters from `start` that satisfy `accept`.
fn scan(text: &str, start: usize, accept: impl Fn(char) -> bool) -> usize {
    text[start..]
        .char_indices()
        .find(|(_, c)| !accept(*c))
        .map_or(text.len(), |(index, _)| start + index)
}

fn skip_to(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>, end: usize) {
    while chars.next_if(|(index, _)| *index < end).is_some() {}
}

/// A position in a token list, with the helpers both expression parsers need.
#[derive(Debug)]
pub(crate) struct Cursor {
    tokens: Vec<(usize, Token)>,
    position: usize,
    /// Length of the text, the offset reported for errors at the end.
    end: usize,
}

impl Cursor {
    pub(crate) fn new(text: &str) -> Result<Self, SyntaxError> {
        Ok(Cursor {
            tokens: tokenize(text)?,
            position: 0,
            end: text.len(),
        })
    }

    pub(crate) fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.position).map(|(_, token)| token)
    }

    pub(crate) fn next(&mut self) -> Option<Token> {
        let token = self
            .tokens
            .get(self.position)
            .map(|(_, token)| token.clone());
        if token.is_some() {
            self.position += 1;
        }
        token
    }

    /// Consumes the operator `op` if it is next.
    pub(crate) fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Token::Op(next)) if *next == op) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    /// Consumes the word `word` if it is next.
    pub(crate) fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(next)) if next == word) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.position >= self.tokens.len()
    }

    /// An error at the next token (or at the end).
    pub(crate) fn error(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            offset: self
                .tokens
                .get(self.position)
                .map_or(self.end, |(offset, _)| *offset),
            message: message.into(),
        }
    }

    /// An error at the token just consumed.
    pub(crate) fn error_before(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            offset: self.tokens[self.position.saturating_sub(1)].0,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<Token> {
        tokenize(text)
            .unwrap()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    #[test]
    fn splits_conditions_and_filters() {
        assert_eq!(
            tokens("avg(5m) >= 9.5e+9*2"),
            vec![
                Token::Word("avg".into()),
                Token::Op("("),
                Token::Number("5m".into()),
                Token::Op(")"),
                Token::Op(">="),
                Token::Number("9.5e+9".into()),
                Token::Op("*"),
                Token::Number("2".into()),
            ]
        );
        assert_eq!(
            tokens(r#"host.name =~ "web-\d+" and message != 'it\'s'"#),
            vec![
                Token::Word("host.name".into()),
                Token::Op("=~"),
                Token::Str(r"web-\d+".into()),
                Token::Word("and".into()),
                Token::Word("message".into()),
                Token::Op("!="),
                Token::Str("it's".into()),
            ]
        );
    }

    #[test]
    fn errors_point_at_the_bad_text() {
        let text = r#"message =~ "ERROR"#;
        let error = tokenize(text).unwrap_err();
        assert_eq!(error.describe(text), r#"unclosed string at `"ERROR`"#);
        let text = "value > 4 ; 5";
        assert_eq!(
            tokenize(text).unwrap_err().describe(text),
            "unexpected character `;` at `; 5`"
        );
    }
}
