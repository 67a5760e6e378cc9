//! A small Rust lexer for the tidy rules: identifiers and punctuation with their line, and each
//! line's comment text, with string, char and byte literals and comments kept out of the tokens.
//!
//! Why not `syn`: the rules need comments (`// SAFETY:`), which `syn` drops, and they look at
//! tokens inside macro calls (`cfg!(...)`), which `syn` leaves unparsed; a lexer that only has
//! to tell code from comments and literals is enough, and it is fast (the whole workspace in
//! milliseconds). It never fails: an unterminated literal or block comment runs to the end of
//! the file (the compiler reports those).

/// What a token is. Literals (strings, chars, numbers) keep no text: no rule looks inside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    Ident(&'a str),
    Punct(char),
    Literal,
}

/// A token and the 1-based line it starts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: Kind<'a>,
    pub line: usize,
}

impl Token<'_> {
    pub fn is_ident(&self, name: &str) -> bool {
        self.kind == Kind::Ident(name)
    }

    pub fn is_punct(&self, c: char) -> bool {
        self.kind == Kind::Punct(c)
    }
}

/// A lexed file.
#[derive(Debug, Default)]
pub struct Lexed<'a> {
    pub tokens: Vec<Token<'a>>,
    /// Per line (index 0 is line 1): the text of the comments on it, concatenated.
    pub comments: Vec<String>,
    /// Per line: whether any token (or part of a multi-line literal) is on it.
    pub code: Vec<bool>,
}

impl Lexed<'_> {
    /// The comment text on 1-based `line` ("" if none).
    pub fn comment(&self, line: usize) -> &str {
        line.checked_sub(1)
            .and_then(|i| self.comments.get(i))
            .map_or("", String::as_str)
    }

    /// Whether 1-based `line` has code on it.
    pub fn has_code(&self, line: usize) -> bool {
        line.checked_sub(1)
            .and_then(|i| self.code.get(i))
            .copied()
            .unwrap_or(false)
    }

    /// The last token on 1-based `line`, if any.
    pub fn last_token_on(&self, line: usize) -> Option<&Token<'_>> {
        let end = self.tokens.partition_point(|t| t.line <= line);
        self.tokens[..end].last().filter(|t| t.line == line)
    }
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next char.
    pos: usize,
    line: usize,
    out: Lexed<'a>,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn line_slot(&mut self) -> usize {
        let i = self.line - 1;
        if self.out.comments.len() <= i {
            self.out.comments.resize(i + 1, String::new());
            self.out.code.resize(i + 1, false);
        }
        i
    }

    fn mark_code(&mut self) {
        let i = self.line_slot();
        self.out.code[i] = true;
    }

    fn push(&mut self, kind: Kind<'a>, line: usize) {
        self.out.tokens.push(Token { kind, line });
    }

    fn comment_char(&mut self, c: char) {
        if c != '\n' {
            let i = self.line_slot();
            self.out.comments[i].push(c);
        }
    }

    fn line_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' {
                break;
            }
            self.bump();
            self.comment_char(c);
        }
    }

    /// After `/*`: to the matching `*/` (block comments nest).
    fn block_comment(&mut self) {
        self.comment_char('/');
        self.comment_char('*');
        let mut depth = 1usize;
        while let Some(c) = self.bump() {
            self.comment_char(c);
            if c == '/' && self.peek() == Some('*') {
                self.bump();
                self.comment_char('*');
                depth += 1;
            } else if c == '*' && self.peek() == Some('/') {
                self.bump();
                self.comment_char('/');
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
        }
    }

    /// After the opening `"` of a string with escapes: to the closing `"`.
    fn quoted(&mut self) {
        while let Some(c) = self.bump() {
            self.mark_code();
            match c {
                '\\' => {
                    self.bump();
                }
                '"' => return,
                _ => {}
            }
        }
    }

    /// At the `#`s or `"` of a raw string (after `r`, `br` or `cr`): to its closing quote.
    fn raw(&mut self) {
        let mut hashes = 0usize;
        while self.peek() == Some('#') {
            self.bump();
            hashes += 1;
        }
        if self.bump() != Some('"') {
            return; // `r#ident` is handled before; anything else is not Rust.
        }
        'outer: while let Some(c) = self.bump() {
            self.mark_code();
            if c == '"' {
                for n in 0..hashes {
                    if self.peek_at(n) != Some('#') {
                        continue 'outer;
                    }
                }
                for _ in 0..hashes {
                    self.bump();
                }
                return;
            }
        }
    }

    /// At a `'`: a char literal (`'x'`, `'\n'`, `'\u{1F600}'`) or a lifetime/label (`'a`).
    fn quote(&mut self) {
        let line = self.line;
        self.bump();
        match (self.peek(), self.peek_at(1)) {
            (Some('\\'), _) => {
                self.bump();
                self.bump();
                while let Some(c) = self.bump() {
                    if c == '\'' || c == '\n' {
                        break;
                    }
                }
                self.push(Kind::Literal, line);
            }
            (Some(c), Some('\'')) if c != '\n' => {
                self.bump();
                self.bump();
                self.push(Kind::Literal, line);
            }
            // A lifetime or label: the name that follows is lexed as an identifier.
            _ => self.push(Kind::Punct('\''), line),
        }
    }

    fn run(mut self) -> Lexed<'a> {
        while let Some(c) = self.peek() {
            let line = self.line;
            let start = self.pos;
            if c == '\n' {
                self.line_slot();
                self.bump();
                continue;
            }
            if c.is_whitespace() {
                self.bump();
                continue;
            }
            if c == '/' && self.peek_at(1) == Some('/') {
                self.line_comment();
                continue;
            }
            if c == '/' && self.peek_at(1) == Some('*') {
                self.bump();
                self.bump();
                self.block_comment();
                continue;
            }
            self.mark_code();
            if c == '"' {
                self.bump();
                self.quoted();
                self.push(Kind::Literal, line);
            } else if c == '\'' {
                self.quote();
            } else if c.is_ascii_digit() {
                while self.peek().is_some_and(is_ident_char) {
                    self.bump();
                }
                self.push(Kind::Literal, line);
            } else if is_ident_start(c) {
                while self.peek().is_some_and(is_ident_char) {
                    self.bump();
                }
                let word = &self.src[start..self.pos];
                let next = self.peek();
                let after = self.peek_at(1);
                match (word, next) {
                    ("r", Some('#')) if after.is_some_and(is_ident_start) => {
                        // A raw identifier: `r#type` is the identifier `type`.
                        self.bump();
                        let from = self.pos;
                        while self.peek().is_some_and(is_ident_char) {
                            self.bump();
                        }
                        self.push(Kind::Ident(&self.src[from..self.pos]), line);
                    }
                    ("r" | "br" | "cr", Some('#' | '"')) => {
                        self.raw();
                        self.push(Kind::Literal, line);
                    }
                    ("b" | "c", Some('"')) => {
                        self.bump();
                        self.quoted();
                        self.push(Kind::Literal, line);
                    }
                    ("b", Some('\'')) => {
                        self.quote();
                        // `quote` pushed the literal (a byte char is never a lifetime).
                    }
                    _ => self.push(Kind::Ident(word), line),
                }
            } else {
                self.bump();
                self.push(Kind::Punct(c), line);
            }
        }
        if !self.src.is_empty() && !self.src.ends_with('\n') {
            self.line_slot(); // the last line, without its newline
        }
        self.out
    }
}

/// Lex `src`. Never fails; see the module's doc.
pub fn lex(src: &str) -> Lexed<'_> {
    Lexer {
        src,
        pos: 0,
        line: 1,
        out: Lexed::default(),
    }
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idents<'a>(lexed: &Lexed<'a>) -> Vec<(&'a str, usize)> {
        lexed
            .tokens
            .iter()
            .filter_map(|t| match t.kind {
                Kind::Ident(name) => Some((name, t.line)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn literals_and_comments_hide_their_words() {
        let src = r####"let a = "unsafe { }"; // unsafe here
/* unsafe /* nested unsafe */ still comment */ let b = r#"unsafe "quoted" "#;
let c = '"'; let d = b'\''; let e = br##"x"# unsafe"##; let f = "\" unsafe";
fn g<'a>(x: &'a str) -> char { 'u' }
let h = c"unsafe"; let i = r#unsafe;
"####;
        let lexed = lex(src);
        let words = idents(&lexed);
        assert_eq!(
            words,
            [
                ("let", 1),
                ("a", 1),
                ("let", 2),
                ("b", 2),
                ("let", 3),
                ("c", 3),
                ("let", 3),
                ("d", 3),
                ("let", 3),
                ("e", 3),
                ("let", 3),
                ("f", 3),
                ("fn", 4),
                ("g", 4),
                ("a", 4),
                ("x", 4),
                ("a", 4),
                ("str", 4),
                ("char", 4),
                ("let", 5),
                ("h", 5),
                ("let", 5),
                ("i", 5),
                ("unsafe", 5),
            ]
        );
        assert_eq!(lexed.comment(1), "// unsafe here");
        assert!(lexed.comment(2).starts_with("/* unsafe /* nested"));
        assert!(lexed.has_code(2));
    }

    #[test]
    fn lines_know_their_comments_and_code() {
        let src = "// SAFETY: a\n\n/* one\n   two */\nlet x = \"multi\nline\";\n";
        let lexed = lex(src);
        assert_eq!(lexed.comment(1), "// SAFETY: a");
        assert!(!lexed.has_code(1));
        assert!(!lexed.has_code(2));
        assert_eq!(lexed.comment(3), "/* one");
        assert_eq!(lexed.comment(4), "   two */");
        assert!(!lexed.has_code(4));
        assert!(lexed.has_code(5) && lexed.has_code(6));
        assert_eq!(lexed.tokens.last().map(|t| t.line), Some(6));
        assert_eq!(lexed.last_token_on(5).map(|t| t.kind), Some(Kind::Literal));
        assert_eq!(lexed.last_token_on(2), None);
        // Out-of-range lines are empty, not a panic.
        assert_eq!(lexed.comment(0), "");
        assert!(!lexed.has_code(99));
    }

    #[test]
    fn unterminated_input_does_not_panic() {
        for src in [
            "\"open",
            "/* open",
            "r##\"open\"#",
            "'",
            "b'",
            "r#",
            "'\\",
            "é'",
        ] {
            let _ = lex(src);
        }
    }
}
