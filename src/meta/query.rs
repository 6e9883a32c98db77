//! artfs's own search query grammar, parsed once and rendered for each
//! backend: FTS5 `MATCH` expressions (SQLite) and `to_tsquery` strings
//! (PostgreSQL). Both backends parse with [`parse`], so they accept and
//! refuse exactly the same queries; the renderers cannot fail and quote
//! every term, so nothing typed reaches the database's own syntax.
//!
//! Pure code: no database, nothing from the core.
//!
//! # Grammar
//!
//! ```text
//! query  := or
//! or     := and ("OR" and)*
//! and    := item (["AND"] item | ["AND"] "NOT" item)*    first item not NOT
//! item   := term | "(" or ")"
//! term   := [field ":"] (word | word"*" | "\"" phrase "\"" ["*"])
//! field  := names | description | version | custom
//! ```
//!
//! - Keywords are uppercase (`and`, `or`, `not` are words, as in FTS5).
//!   Adjacent items are ANDed. Precedence: NOT binds tightest, then AND,
//!   then OR; parentheses group (at most [`MAX_DEPTH`] deep).
//! - A word is split into pieces the way FTS5's `unicode61` tokenizer
//!   splits text ([`words`]: letters and digits are token characters,
//!   everything else separates) and folded as it folds them ([`fold`]:
//!   lower case, Latin diacritics removed). A word of several pieces
//!   (`README.gz`, `5.2.15`, `day-one`, `a_b`, `col:x`) is the phrase of
//!   its pieces, so plain strings work unquoted. Punctuation alone (`-`)
//!   separates like a space.
//! - `abc*` is a prefix; on a phrase (`"day on"*`, `README.g*`) the last
//!   piece is the prefix.
//! - `field:term` searches one column only (`version:draft*`,
//!   `description:"moon landing"`); a colon after anything else is
//!   punctuation (`10:30` is the phrase `10 30`).
//! - Inside quotes, `""` is a literal quote (a separator, like all
//!   punctuation); FTS5 syntax (`NEAR`, `^`, `{col}`, `+`) has no meaning.
//!
//! # NOT
//!
//! FTS5 has only a binary `a NOT b` (a set difference); a unary NOT would
//! mean "every file except", which neither index answers cheaply. So NOT
//! must follow something in the same AND group to subtract from: `a NOT
//! b`, `a AND NOT b`, `a b NOT c NOT d` (= `(a AND b) NOT (c OR d)`) are
//! accepted; `NOT b`, `(NOT b)`, `a OR NOT b` are refused with an error
//! saying so, by [`parse`], hence on both backends.
//!
//! # PostgreSQL parity
//!
//! [`to_tsquery`] assumes the PostgreSQL index is built as
//! `setweight(to_tsvector('simple', index_text(names)), 'A') || ...` with
//! [`Field::weight`] per column, where [`index_text`] splits and folds
//! documents exactly as [`parse`] does query words. Built straight from
//! the raw text, PostgreSQL's parser keeps `readme.gz`, `5.2.15` and
//! `day-one` as single tokens (file names, versions, hyphenated words),
//! and `simple` keeps diacritics, so it would not match what FTS5
//! matches. A phrase without a field is rendered once per weight, so it
//! never runs from the end of one column into the next (FTS5 never
//! does). tests/pg_harness.rs checks the two renderings on both engines.
//! Left: splitting follows Rust's Unicode tables, FTS5 its own (Unicode
//! 6.1): they agree on Latin, Cyrillic, kana and CJK, and differ on some
//! marks and symbols of other scripts and on unassigned code points;
//! tsvector positions stop at 16383, so a phrase deep in a very long
//! value may not match on PostgreSQL.

use std::fmt::Write as _;

/// Deepest nesting of parentheses accepted (FTS5 refuses expression
/// trees deeper than 256; real queries nest a few levels).
pub const MAX_DEPTH: usize = 32;

/// A column of the search index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Names,
    Description,
    Version,
    Custom,
}

impl Field {
    pub const ALL: [Field; 4] = [
        Field::Names,
        Field::Description,
        Field::Version,
        Field::Custom,
    ];

    /// The column's name (the FTS5 column, the prefix in queries).
    pub fn name(self) -> &'static str {
        match self {
            Field::Names => "names",
            Field::Description => "description",
            Field::Version => "version",
            Field::Custom => "custom",
        }
    }

    /// The tsvector weight the PostgreSQL index gives this column's text.
    pub fn weight(self) -> char {
        match self {
            Field::Names => 'A',
            Field::Description => 'B',
            Field::Version => 'C',
            Field::Custom => 'D',
        }
    }

    fn parse(s: &str) -> Option<Field> {
        Field::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
    }
}

/// One word, prefix or phrase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    /// Only this column (`None`: any).
    pub field: Option<Field>,
    /// The pieces, lower-cased, never empty; more than one is a phrase.
    pub words: Vec<String>,
    /// The last piece is a prefix.
    pub prefix: bool,
}

/// A parsed query. `And` and `Or` have two or more children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    Term(Term),
    And(Vec<Query>),
    Or(Vec<Query>),
    /// Matches of the first that are not matches of the second.
    Not(Box<Query>, Box<Query>),
}

/// Why a query was refused, for people (says how to write it instead).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(msg.into()))
}

const QUOTE_HINT: &str = "put phrases in double quotes: \"moon landing\", \"5.2.15\"";
const NOT_HINT: &str = "NOT excludes from what comes before it in the same group: \
     write `a NOT b` or `a AND NOT b`; a query of exclusions only \
     (`NOT b`, `a OR NOT b`) is not supported";

fn kw_hint(kw: &str) -> String {
    format!("to search for the word itself, quote it: \"{kw}\"")
}

/// Latin letters with diacritics (lower case) by the letter FTS5's
/// `unicode61 remove_diacritics 2` folds them to: taken from SQLite's own
/// tokenizer, and checked against it by tests/pg_harness.rs.
const FOLDS: &[(char, &str)] = &[
    ('a', "àáâãäåāăąǎǟǻȁȃȧḁạảấầẩẫậắằẳẵặ"),
    ('b', "ḃḅḇ"),
    ('c', "çćĉċčḉ"),
    ('d', "ďḋḍḏḑḓ"),
    ('e', "èéêëēĕėęěȅȇȩḕḗḙḛḝẹẻẽếềểễệ"),
    ('f', "ḟ"),
    ('g', "ĝğġģǧǵḡ"),
    ('h', "ĥȟḣḥḧḩḫẖ"),
    ('i', "ìíîïĩīĭįǐȉȋḭḯỉị"),
    ('j', "ĵǰ"),
    ('k', "ķǩḱḳḵ"),
    ('l', "ĺļľḷḹḻḽ"),
    ('m', "ḿṁṃ"),
    ('n', "ñńņňǹṅṇṉṋ"),
    ('o', "òóôõöōŏőơǒǫǭȍȏȫȭȯȱṍṏṑṓọỏốồổỗộớờởỡợ"),
    ('p', "ṕṗ"),
    ('r', "ŕŗřȑȓṙṛṝṟ"),
    ('s', "śŝşšſșṡṣṥṧṩẛ"),
    ('t', "ţťțṫṭṯṱẗ"),
    ('u', "ùúûüũūŭůűųưǔǖǘǚǜȕȗṳṵṷṹṻụủứừửữự"),
    ('v', "ṽṿ"),
    ('w', "ŵẁẃẅẇẉẘ"),
    ('x', "ẋẍ"),
    ('y', "ýÿŷȳẏẙỳỵỷỹ"),
    ('z', "źżžẑẓẕ"),
];

/// The combining marks FTS5 takes as part of a word and then drops
/// (`cafe\u{301}` is `cafe`); the rest of U+0300..U+036F separate.
const MARKS: &str = "\u{300}\u{301}\u{302}\u{303}\u{304}\u{306}\u{307}\u{308}\u{309}\u{30a}\u{30b}\
                     \u{30c}\u{30f}\u{311}\u{31b}\u{323}\u{324}\u{325}\u{326}\u{327}\u{328}\u{32d}\
                     \u{32e}\u{330}\u{331}";

/// Whether `c` is part of a word (FTS5 `unicode61`: categories L*, N* and
/// Co, and the marks it folds away; Rust's alphanumeric differs on a few
/// marks and symbols of other scripts, see the module doc).
pub fn is_word_char(c: char) -> bool {
    if ('\u{300}'..='\u{36F}').contains(&c) {
        return MARKS.contains(c);
    }
    c.is_alphanumeric()
        || matches!(c, '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{FFFFD}' | '\u{100000}'..='\u{10FFFD}')
}

/// The words of `text`, split as the search index splits it (not yet
/// folded: see [`fold`]).
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !is_word_char(c))
        .filter(|w| !w.is_empty())
}

/// A word as the index keeps it: lower case, Latin diacritics removed as
/// FTS5 removes them (`Über` is `uber`). May be empty (marks alone).
pub fn fold(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars().flat_map(char::to_lowercase) {
        if c.is_ascii() {
            out.push(c);
        } else if !MARKS.contains(c) {
            let base = FOLDS.iter().find(|(_, from)| from.contains(c));
            // The micro sign is folded to the Greek letter, as in FTS5.
            out.push(base.map_or(if c == 'µ' { 'μ' } else { c }, |&(to, _)| to));
        }
    }
    out
}

/// The folded words of `text`.
fn folded(text: &str) -> Vec<String> {
    words(text).map(fold).filter(|w| !w.is_empty()).collect()
}

/// `text` as the index sees it: its folded words separated by single
/// spaces (what a PostgreSQL index hands to `to_tsvector('simple', ...)`).
pub fn index_text(text: &str) -> String {
    folded(text).join(" ")
}

#[derive(Debug, PartialEq)]
enum Tok {
    Open,
    Close,
    And,
    Or,
    Not,
    Term(Term),
}

fn lex(q: &str) -> Result<Vec<Tok>, QueryError> {
    let mut toks = Vec::new();
    let mut it = q.char_indices().peekable();
    while let Some(&(start, c)) = it.peek() {
        match c {
            c if c.is_whitespace() => {
                it.next();
            }
            '(' => {
                it.next();
                toks.push(Tok::Open);
            }
            ')' => {
                it.next();
                toks.push(Tok::Close);
            }
            '"' => {
                let term = lex_phrase(q, &mut it, None)?;
                toks.push(Tok::Term(term));
            }
            _ => {
                let mut end = q.len();
                while let Some(&(i, c)) = it.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '"') {
                        end = i;
                        break;
                    }
                    it.next();
                }
                let raw = &q[start..end];
                match raw {
                    "AND" => toks.push(Tok::And),
                    "OR" => toks.push(Tok::Or),
                    "NOT" => toks.push(Tok::Not),
                    // Punctuation alone separates, like whitespace.
                    _ if !raw.contains(is_word_char) => {}
                    _ => toks.push(Tok::Term(bare_term(q, raw, &mut it)?)),
                }
            }
        }
    }
    Ok(toks)
}

type Chars<'a> = std::iter::Peekable<std::str::CharIndices<'a>>;

/// A bare token: `[field:]word[*]`, or `field:` right before a quote.
fn bare_term(q: &str, raw: &str, it: &mut Chars) -> Result<Term, QueryError> {
    if let Some((name, rest)) = raw.split_once(':') {
        if let Some(field) = Field::parse(name) {
            if !rest.is_empty() {
                return word_term(raw, rest, Some(field));
            }
            if matches!(it.peek(), Some((_, '"'))) {
                return lex_phrase(q, it, Some(field));
            }
            return err(format!(
                "`{raw}` needs a word, prefix or \"phrase\" right after the colon \
                 (a field applies to one term: {name}:draft*, {name}:\"moon landing\"); \
                 to search for the text itself, quote it: \"{raw}\""
            ));
        }
    }
    word_term(raw, raw, None)
}

fn word_term(raw: &str, text: &str, field: Option<Field>) -> Result<Term, QueryError> {
    let stem = text.trim_end_matches('*');
    let prefix = stem.len() != text.len();
    let words = folded(stem);
    if words.is_empty() {
        return err(format!("`{raw}` has no letters or digits to search for"));
    }
    Ok(Term {
        field,
        words,
        prefix,
    })
}

/// A quoted phrase from its opening quote (`""` inside is a literal
/// quote), then an optional `*`.
fn lex_phrase(q: &str, it: &mut Chars, field: Option<Field>) -> Result<Term, QueryError> {
    let (open, _) = it.next().expect("at a quote");
    let mut text = String::new();
    loop {
        match it.next() {
            None => {
                return err(format!(
                    "unterminated quote (`{}`); {QUOTE_HINT}",
                    &q[open..]
                ))
            }
            Some((_, '"')) => {
                if matches!(it.peek(), Some((_, '"'))) {
                    it.next();
                    text.push('"');
                } else {
                    break;
                }
            }
            Some((_, c)) => text.push(c),
        }
    }
    let prefix = matches!(it.peek(), Some((_, '*')));
    while matches!(it.peek(), Some((_, '*'))) {
        it.next();
    }
    let words = folded(&text);
    if words.is_empty() {
        return err(format!(
            "the phrase \"{text}\" has no letters or digits to search for"
        ));
    }
    Ok(Term {
        field,
        words,
        prefix,
    })
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get_mut(self.pos)?;
        self.pos += 1;
        // Taken once: replace with a cheap placeholder.
        Some(std::mem::replace(t, Tok::Close))
    }

    /// Whether an operand can start at the current token.
    fn at_operand(&self) -> bool {
        matches!(self.peek(), Some(Tok::Open | Tok::Term(_)))
    }

    fn or(&mut self, depth: usize) -> Result<Query, QueryError> {
        let mut items = vec![self.and(depth)?];
        while matches!(self.peek(), Some(Tok::Or)) {
            self.next();
            if matches!(self.peek(), Some(Tok::Not)) {
                return err(format!("`OR NOT` is not supported: {NOT_HINT}"));
            }
            if !self.at_operand() {
                return err(format!("OR needs a term after it; {}", kw_hint("OR")));
            }
            items.push(self.and(depth)?);
        }
        Ok(flat(items, true))
    }

    fn and(&mut self, depth: usize) -> Result<Query, QueryError> {
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        loop {
            match self.peek() {
                None | Some(Tok::Close | Tok::Or) => break,
                Some(Tok::And) => {
                    self.next();
                    if pos.is_empty() {
                        return err(format!("AND needs a term before it; {}", kw_hint("AND")));
                    }
                    if !self.at_operand() && !matches!(self.peek(), Some(Tok::Not)) {
                        return err(format!("AND needs a term after it; {}", kw_hint("AND")));
                    }
                }
                Some(Tok::Not) => {
                    self.next();
                    if pos.is_empty() {
                        return err(NOT_HINT);
                    }
                    if !self.at_operand() {
                        return err(format!("NOT needs a term after it; {}", kw_hint("NOT")));
                    }
                    neg.push(self.item(depth)?);
                }
                Some(_) => pos.push(self.item(depth)?),
            }
        }
        if pos.is_empty() {
            // Only reachable at the start of a group or after OR, both
            // checked by the callers; kept as a guard.
            return err("empty query");
        }
        let base = flat(pos, false);
        Ok(if neg.is_empty() {
            base
        } else {
            Query::Not(Box::new(base), Box::new(flat(neg, true)))
        })
    }

    fn item(&mut self, depth: usize) -> Result<Query, QueryError> {
        match self.next() {
            Some(Tok::Term(t)) => Ok(Query::Term(t)),
            Some(Tok::Open) => {
                if depth >= MAX_DEPTH {
                    return err(format!(
                        "nested too deeply (at most {MAX_DEPTH} parentheses)"
                    ));
                }
                match self.peek() {
                    Some(Tok::Close) => return err("empty parentheses"),
                    Some(Tok::Or) => {
                        return err(format!("OR needs a term before it; {}", kw_hint("OR")))
                    }
                    Some(Tok::And) => {
                        return err(format!("AND needs a term before it; {}", kw_hint("AND")))
                    }
                    None => return err("unbalanced parentheses: missing `)`"),
                    _ => {}
                }
                let q = self.or(depth + 1)?;
                match self.next() {
                    Some(Tok::Close) => Ok(q),
                    _ => err("unbalanced parentheses: missing `)`"),
                }
            }
            // The callers check `at_operand` first.
            _ => err("a term was expected"),
        }
    }
}

/// `items` joined by OR (`or`) or AND; one item is itself; nested groups
/// of the same operator are merged (keeps the tree shallow).
fn flat(items: Vec<Query>, or: bool) -> Query {
    if items.len() == 1 {
        return items.into_iter().next().unwrap();
    }
    let mut out = Vec::with_capacity(items.len());
    for q in items {
        match (q, or) {
            (Query::Or(v), true) | (Query::And(v), false) => out.extend(v),
            (q, _) => out.push(q),
        }
    }
    if or {
        Query::Or(out)
    } else {
        Query::And(out)
    }
}

/// [`parse`] for a search both doors answer: a refusal is EINVAL (400
/// over HTTP) with "malformed search query: ..." on every engine.
pub fn parse_search(query: &str) -> crate::types::error::Result<Query> {
    parse(query).map_err(|e| {
        tracing::debug!(query, error = %e, "search query refused");
        crate::types::error::Error::posix_msg(libc::EINVAL, format!("malformed search query: {e}"))
    })
}

/// Parse a query (see the module doc). Refusals say what is wrong and how
/// to write it instead.
pub fn parse(query: &str) -> Result<Query, QueryError> {
    let toks = lex(query)?;
    if toks.is_empty() {
        return err("empty query (no letters or digits to search for)");
    }
    let mut p = Parser { toks, pos: 0 };
    match p.peek() {
        Some(Tok::Or) => return err(format!("OR needs a term before it; {}", kw_hint("OR"))),
        Some(Tok::And) => return err(format!("AND needs a term before it; {}", kw_hint("AND"))),
        Some(Tok::Close) => return err("unbalanced parentheses: `)` without `(`"),
        _ => {}
    }
    let q = p.or(0)?;
    if p.pos < p.toks.len() {
        // `or` stops only at the end or at a `)` it did not open.
        return err("unbalanced parentheses: `)` without `(`");
    }
    Ok(q)
}

/// The query as an FTS5 `MATCH` expression: every term a double-quoted
/// string, every compound operand in parentheses.
pub fn to_fts5(q: &Query) -> String {
    let mut out = String::new();
    fts5(q, &mut out);
    out
}

fn fts5(q: &Query, out: &mut String) {
    let child = |q: &Query, out: &mut String| {
        if matches!(q, Query::Term(_)) {
            fts5(q, out);
        } else {
            out.push('(');
            fts5(q, out);
            out.push(')');
        }
    };
    match q {
        Query::Term(t) => {
            if let Some(f) = t.field {
                let _ = write!(out, "{} : ", f.name());
            }
            out.push('"');
            out.push_str(&t.words.join(" ").replace('"', "\"\""));
            out.push('"');
            if t.prefix {
                out.push_str(" *");
            }
        }
        Query::And(v) | Query::Or(v) => {
            let op = if matches!(q, Query::And(_)) {
                " AND "
            } else {
                " OR "
            };
            for (i, c) in v.iter().enumerate() {
                if i > 0 {
                    out.push_str(op);
                }
                child(c, out);
            }
        }
        Query::Not(a, b) => {
            child(a, out);
            out.push_str(" NOT ");
            child(b, out);
        }
    }
}

/// The query as a PostgreSQL `to_tsquery('simple', ...)` string: `&`, `|`,
/// `& !`, `<->` between a phrase's pieces, `:*` for a prefix, a weight
/// letter for a field; every lexeme single-quoted.
pub fn to_tsquery(q: &Query) -> String {
    let mut out = String::new();
    tsquery(q, &mut out);
    out
}

/// `'a':W <-> 'b':*W`: the pieces in order, the last maybe a prefix, all
/// of weight `weight` (any weight when `None`).
fn phrase(t: &Term, weight: Option<char>, out: &mut String) {
    for (i, w) in t.words.iter().enumerate() {
        if i > 0 {
            out.push_str(" <-> ");
        }
        out.push('\'');
        out.push_str(&w.replace('\\', "\\\\").replace('\'', "''"));
        out.push('\'');
        let last_prefix = t.prefix && i + 1 == t.words.len();
        if last_prefix || weight.is_some() {
            out.push(':');
            if last_prefix {
                out.push('*');
            }
            if let Some(w) = weight {
                out.push(w);
            }
        }
    }
}

fn tsquery(q: &Query, out: &mut String) {
    let child = |q: &Query, out: &mut String| {
        if matches!(q, Query::Term(t) if t.words.len() == 1) {
            tsquery(q, out);
        } else {
            out.push('(');
            tsquery(q, out);
            out.push(')');
        }
    };
    match q {
        // A phrase in any column is the phrase within one of them: the
        // columns are concatenated in one tsvector, and a phrase must not
        // run from the end of one into the next (FTS5 never does).
        Query::Term(t) if t.field.is_none() && t.words.len() > 1 => {
            for (i, f) in Field::ALL.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(" | ");
                }
                phrase(t, Some(f.weight()), out);
            }
        }
        Query::Term(t) => phrase(t, t.field.map(Field::weight), out),
        Query::And(v) | Query::Or(v) => {
            let op = if matches!(q, Query::And(_)) {
                " & "
            } else {
                " | "
            };
            for (i, c) in v.iter().enumerate() {
                if i > 0 {
                    out.push_str(op);
                }
                child(c, out);
            }
        }
        Query::Not(a, b) => {
            child(a, out);
            out.push_str(" & !");
            child(b, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fts(q: &str) -> String {
        to_fts5(&parse(q).unwrap_or_else(|e| panic!("{q}: {e}")))
    }

    fn tsq(q: &str) -> String {
        to_tsquery(&parse(q).unwrap_or_else(|e| panic!("{q}: {e}")))
    }

    /// An unfielded phrase: the template with `#` as each weight, ORed.
    fn any(template: &str) -> String {
        Field::ALL
            .map(|f| template.replace('#', &f.weight().to_string()))
            .join(" | ")
    }

    fn refused(q: &str) -> String {
        match parse(q) {
            Ok(p) => panic!("{q:?} accepted as {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn plain_words_and_punctuated_tokens() {
        assert_eq!(fts("apollo"), r#""apollo""#);
        assert_eq!(tsq("apollo"), "'apollo'");
        assert_eq!(fts("README.gz"), r#""readme gz""#);
        assert_eq!(tsq("README.gz"), any("'readme':# <-> 'gz':#"));
        assert_eq!(fts("5.2.15"), r#""5 2 15""#);
        assert_eq!(tsq("5.2.15"), any("'5':# <-> '2':# <-> '15':#"));
        assert_eq!(fts("day-one"), r#""day one""#);
        assert_eq!(fts("a_b"), r#""a b""#);
        assert_eq!(fts("v5.2.15.txt"), r#""v5 2 15 txt""#);
        // Punctuation around a word is dropped.
        assert_eq!(fts("(hello)"), r#""hello""#);
        assert_eq!(fts("-x- ^y"), r#""x" AND "y""#);
    }

    #[test]
    fn case_is_folded_and_keywords_are_uppercase_only() {
        assert_eq!(fts("Apollo MOON"), r#""apollo" AND "moon""#);
        assert_eq!(fts("a and b"), r#""a" AND "and" AND "b""#);
        assert_eq!(fts("a or not b"), r#""a" AND "or" AND "not" AND "b""#);
        assert_eq!(tsq("ÜBER"), "'uber'");
        // Quoted keywords are words.
        assert_eq!(fts(r#"a "OR" b"#), r#""a" AND "or" AND "b""#);
    }

    #[test]
    fn operators_and_precedence() {
        assert_eq!(fts("a b"), r#""a" AND "b""#);
        assert_eq!(fts("a AND b"), r#""a" AND "b""#);
        assert_eq!(fts("a OR b"), r#""a" OR "b""#);
        assert_eq!(fts("a b OR c"), r#"("a" AND "b") OR "c""#);
        assert_eq!(fts("a OR b c"), r#""a" OR ("b" AND "c")"#);
        assert_eq!(fts("a (b OR c)"), r#""a" AND ("b" OR "c")"#);
        assert_eq!(tsq("a (b OR c)"), "'a' & ('b' | 'c')");
        assert_eq!(tsq("a b OR c"), "('a' & 'b') | 'c'");
        // Groups of the same operator merge.
        assert_eq!(fts("(a b) (c d)"), r#""a" AND "b" AND "c" AND "d""#);
        assert_eq!(fts("a OR (b OR c)"), r#""a" OR "b" OR "c""#);
        assert_eq!(fts("((a))"), r#""a""#);
    }

    #[test]
    fn not_subtracts_from_its_group() {
        assert_eq!(fts("a NOT b"), r#""a" NOT "b""#);
        assert_eq!(tsq("a NOT b"), "'a' & !'b'");
        assert_eq!(fts("a AND NOT b"), r#""a" NOT "b""#);
        assert_eq!(fts("a b NOT c NOT d"), r#"("a" AND "b") NOT ("c" OR "d")"#);
        assert_eq!(tsq("a b NOT c NOT d"), "('a' & 'b') & !('c' | 'd')");
        assert_eq!(fts("a NOT b c"), r#"("a" AND "c") NOT "b""#);
        assert_eq!(
            fts("a NOT (b OR c) OR d"),
            r#"("a" NOT ("b" OR "c")) OR "d""#
        );
        assert_eq!(tsq("a NOT (b OR c) OR d"), "('a' & !('b' | 'c')) | 'd'");
        assert_eq!(
            tsq("x NOT day-one"),
            format!("'x' & !({})", any("'day':# <-> 'one':#"))
        );
        for q in ["NOT a", "(NOT a)", "a OR NOT b", "b (NOT a)", "NOT"] {
            let e = refused(q);
            assert!(e.contains("NOT"), "{q}: {e}");
        }
        assert!(refused("a NOT").contains("NOT needs a term after it"));
        assert!(refused("a NOT NOT b").contains("NOT needs a term after it"));
        assert!(refused("a NOT OR b").contains("NOT needs a term after it"));
    }

    #[test]
    fn prefixes() {
        assert_eq!(fts("invoice*"), r#""invoice" *"#);
        assert_eq!(tsq("invoice*"), "'invoice':*");
        assert_eq!(fts("README.g*"), r#""readme g" *"#);
        assert_eq!(tsq("README.g*"), any("'readme':# <-> 'g':*#"));
        assert_eq!(fts(r#""day on"*"#), r#""day on" *"#);
        assert_eq!(fts("ab**"), r#""ab" *"#);
        // A star inside a word separates.
        assert_eq!(fts("a*b"), r#""a b""#);
        // Punctuation alone is a separator.
        assert!(refused("*").contains("empty"));
        assert_eq!(fts("a ***"), r#""a""#);
        assert_eq!(fts("Apollo - mission"), r#""apollo" AND "mission""#);
    }

    #[test]
    fn phrases() {
        assert_eq!(fts(r#""moon landing""#), r#""moon landing""#);
        assert_eq!(tsq(r#""moon landing""#), any("'moon':# <-> 'landing':#"));
        assert_eq!(fts(r#""5.2.15""#), r#""5 2 15""#);
        assert_eq!(fts(r#"  "a   b"  "#), r#""a b""#);
        // A doubled quote inside is a literal quote: a separator.
        assert_eq!(fts(r#""a""b""#), r#""a b""#);
        // Adjacent to a word: two terms.
        assert_eq!(fts(r#"x"y z""#), r#""x" AND "y z""#);
        assert!(refused(r#""""#).contains("no letters or digits"));
        assert!(refused(r#""..." a"#).contains("no letters or digits"));
    }

    #[test]
    fn fields() {
        assert_eq!(fts("version:draft*"), r#"version : "draft" *"#);
        assert_eq!(tsq("version:draft*"), "'draft':*C");
        assert_eq!(fts("Names:README.gz"), r#"names : "readme gz""#);
        assert_eq!(tsq("names:README.gz"), "'readme':A <-> 'gz':A");
        assert_eq!(
            fts(r#"description:"moon landing""#),
            r#"description : "moon landing""#
        );
        assert_eq!(tsq(r#"custom:"a b"*"#), "'a':D <-> 'b':*D");
        assert_eq!(tsq("a NOT version:x"), "'a' & !'x':C");
        // Not a field: the colon is punctuation.
        assert_eq!(fts("col:x"), r#""col x""#);
        assert_eq!(fts("10:30"), r#""10 30""#);
        assert_eq!(fts("https://example.org/a"), r#""https example org a""#);
        let e = refused("version:");
        assert!(
            e.contains("right after the colon") && e.contains("\"version:\""),
            "{e}"
        );
        assert!(refused("version: draft").contains("right after the colon"));
        assert!(refused("version:(a OR b)").contains("one term"));
    }

    #[test]
    fn refusals_say_what_and_how() {
        let e = refused("");
        assert!(e.contains("empty"), "{e}");
        assert!(refused("   ").contains("empty"));
        let e = refused("\"unbalanced");
        assert!(
            e.starts_with("unterminated quote") && e.contains("\"5.2.15\""),
            "{e}"
        );
        assert!(refused("a \"b c").contains("`\"b c`"));
        assert!(refused("(a").contains("missing `)`"));
        assert!(refused("((a)").contains("missing `)`"));
        assert!(refused("a)").contains("`)` without `(`"));
        assert!(refused(")").contains("`)` without `(`"));
        assert!(refused("()").contains("empty parentheses"));
        assert!(refused("a ()").contains("empty parentheses"));
        assert!(refused("(").contains("missing `)`"));
        assert!(refused("a OR").contains("OR needs a term after it"));
        assert!(refused("OR a").contains("OR needs a term before it"));
        assert!(refused("a OR OR b").contains("OR needs a term after it"));
        assert!(refused("a OR ) b").contains("OR needs a term after it"));
        assert!(refused("(OR a)").contains("OR needs a term before it"));
        assert!(refused("a AND").contains("AND needs a term after it"));
        assert!(refused("AND a").contains("AND needs a term before it"));
        assert!(refused("a AND OR b").contains("AND needs a term after it"));
        assert!(refused("a AND AND b").contains("AND needs a term after it"));
        assert!(refused("(AND a)").contains("AND needs a term before it"));
        assert!(refused("a (b OR) c").contains("OR needs a term after it"));
        assert!(refused("--- ...").contains("empty"));
        assert!(refused("version:--").contains("`version:--` has no letters or digits"));
    }

    #[test]
    fn depth_is_bounded_and_long_flat_queries_stay_flat() {
        let ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(fts(&ok), r#""a""#);
        let deep = format!(
            "{}a{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(refused(&deep).contains("nested too deeply"));
        let huge = "(".repeat(100_000);
        assert!(refused(&huge).contains("nested too deeply"));
        let many = vec!["w"; 500].join(" ");
        match parse(&many).unwrap() {
            Query::And(v) => assert_eq!(v.len(), 500),
            q => panic!("{q:?}"),
        }
        let many = vec!["w"; 500].join(" OR ");
        assert!(matches!(parse(&many).unwrap(), Query::Or(v) if v.len() == 500));
    }

    #[test]
    fn database_syntax_is_never_passed_through() {
        // FTS5 operators, column filters, initial-token and NEAR groups,
        // and quote games come out as plain quoted words.
        assert_eq!(fts(r#"a" OR "b"#), r#""a" AND "or" AND "b""#);
        assert!(refused(r#"a" OR "b""#).starts_with("unterminated quote (`\"`)"));
        assert_eq!(fts("NEAR(a b)"), r#""near" AND "a" AND "b""#);
        assert_eq!(fts("NEAR(a b, 3)"), r#""near" AND "a" AND "b" AND "3""#);
        assert_eq!(fts("^a"), r#""a""#);
        assert_eq!(fts("{names version}:x"), r#""names" AND "version x""#);
        assert_eq!(fts("+a - b"), r#""a" AND "b""#);
        assert_eq!(fts("rowid:1"), r#""rowid 1""#);
        // tsquery syntax.
        assert_eq!(tsq("a&b|!c"), any("'a':# <-> 'b':# <-> 'c':#"));
        assert_eq!(tsq("'x':*A"), any("'x':# <-> 'a':#"));
        assert_eq!(tsq("a<->b"), any("'a':# <-> 'b':#"));
        assert_eq!(tsq(r"it's"), any("'it':# <-> 's':#"));
        assert_eq!(tsq(r"back\slash"), any("'back':# <-> 'slash':#"));
        // Every rendering keeps quotes balanced and holds no raw input.
        for q in [
            r#"a" OR "b"#,
            r#""a "" b""#,
            "x'; DROP TABLE t; --",
            "col:x",
            "NEAR(a b)",
            "^a",
            "a:*",
        ] {
            let f = fts(q);
            assert_eq!(f.matches('"').count() % 2, 0, "{q}: {f}");
            let t = tsq(q);
            assert_eq!(t.matches('\'').count() % 2, 0, "{q}: {t}");
            assert!(!t.contains(';') && !f.contains(';'));
        }
    }

    #[test]
    fn non_ascii_words() {
        // Latin diacritics fold as FTS5 folds them; other letters stay.
        assert_eq!(fts("Über"), r#""uber""#);
        assert_eq!(fts("naïve CAFÉ"), r#""naive" AND "cafe""#);
        assert_eq!(fts("cafe\u{301}s"), r#""cafes""#);
        assert_eq!(
            fts("Đồng ſ ø æ ß"),
            r#""đong" AND "s" AND "ø" AND "æ" AND "ß""#
        );
        assert_eq!(fts("İstanbul"), r#""istanbul""#);
        assert!(refused("\u{301}").contains("no letters or digits"));
        assert_eq!(fts("日本語"), r#""日本語""#);
        assert_eq!(fts("Ελληνικά"), r#""ελληνικά""#);
        assert_eq!(tsq("Москва-2024"), any("'москва':# <-> '2024':#"));
        // Non-ASCII punctuation separates too (em dash, guillemets, NBSP).
        assert_eq!(fts("a—b «c»\u{a0}d"), r#""a b" AND "c" AND "d""#);
        // Private-use characters are word characters, as in unicode61.
        assert_eq!(fts("a\u{E000}b"), "\"a\u{E000}b\"");
    }

    #[test]
    fn index_text_splits_like_queries() {
        assert_eq!(index_text("README.gz"), "readme gz");
        assert_eq!(index_text("  v5.2.15.txt day-one  "), "v5 2 15 txt day one");
        assert_eq!(index_text("Über_naïve"), "uber naive");
        assert_eq!(index_text("a \u{301} b"), "a b");
        assert_eq!(fold("ÀÉÎÕÜ"), "aeiou");
        assert_eq!(fold("Ελληνικά"), "ελληνικά");
        assert_eq!(fold("5µm"), "5μm");
        assert_eq!(index_text("..."), "");
        let w: Vec<&str> = words("a_b c").collect();
        assert_eq!(w, ["a", "b", "c"]);
    }
}
